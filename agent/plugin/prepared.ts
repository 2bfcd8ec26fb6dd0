// The pure core of prepare: ResourceClaim + this node's device facts -> the devices the kubelet
// gets back and the facts the CDI spec is written from. No I/O; serves first prepare,
// re-prepare and restore-after-restart alike.
import { echoInput, TesseraError } from "../common/errors.js";
import type { DeviceFacts, MigLocation } from "../discovery/model.js";
import type { ResourceClaim } from "../kube/types.js";
import { driverConfigs, sharingForDevice, type DeviceSharing } from "../sharing/config.js";

export const CDI_VENDOR = "k8s.gpu.tessera.dev";
export const CDI_CLASS = "claim";
export const CDI_KIND = `${CDI_VENDOR}/${CDI_CLASS}`;
export const TOOLKIT_KIND = "nvidia.com/gpu";

/** One allocated device as prepared: what goes on the wire plus what the CDI spec needs. */
export interface PreparedDevice {
  requestNames: string[];
  poolName: string;
  deviceName: string;
  /** Present only when the allocation result has shareID. */
  shareID?: string;
  adminAccess?: boolean;
  cdiDeviceIds: string[];
  kind: "gpu" | "mig";
  uuid: string;
  gpuMinor: number;
  deviceNodes: string[];
  /** Opaque parameters of our driver that apply to this device, in claim order. */
  configs?: unknown[];
  /** MIG devices: the placement on the GPU and, once it exists, the GI/CI. */
  mig?: PreparedMig;
  /** The GpuConfig/MigDeviceConfig sharing setting that applies to this device (last one wins). */
  sharing?: DeviceSharing;
}

export interface PreparedMig extends MigLocation {
  /** Tessera creates (or created) this instance for the claim and destroys it on unprepare.
   *  Absent for instances that existed before (static MIG, or made by someone else): never touched. */
  owned?: boolean;
}

export interface PreparedClaim {
  uid: string;
  namespace: string;
  name: string;
  devices: PreparedDevice[];
  /** MPS claims: the daemon's host directories and the container's env (CDI mounts them). */
  mps?: { pipeDir: string; logDir: string; shmDir: string; env: string[] };
}

// Kubernetes UIDs are RFC 4122 strings; we accept the general lower-case hex-and-dash shape and
// nothing else, so a UID can never carry "/", "..", or NUL into a file name.
const UID_RE = /^[0-9a-fA-F][0-9a-fA-F-]{0,62}[0-9a-fA-F]$/;

export function isClaimUID(uid: string): boolean {
  return UID_RE.test(uid);
}

export function assertClaimUID(uid: string): void {
  if (!isClaimUID(uid)) {
    throw new TesseraError("TESSERA_CLAIM_INVALID_UID", `claim UID "${echoInput(uid, 80)}" is not a Kubernetes UID (hex digits and '-'); it cannot name a CDI spec file`);
  }
}

export function cdiDeviceName(claimUID: string, deviceName: string): string {
  return `${claimUID}-${deviceName}`;
}

export function claimRef(c: { namespace: string; name: string; uid: string }): string {
  // Entries rebuilt from CDI specs do not know namespace and name.
  const nn = c.name ? `${echoInput(c.namespace)}/${echoInput(c.name)} ` : "";
  return `${nn}(uid ${echoInput(c.uid)})`;
}

// The API server's rules: a namespace is a DNS-1123 label, a claim name a DNS-1123 subdomain.
const NAMESPACE_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** A kubelet-sent namespace/name is one the API server could hold; anything else is refused before use. */
export function assertClaimRef(c: { namespace: string; name: string; uid: string }): void {
  const bad = !NAMESPACE_RE.test(c.namespace) ? `namespace "${echoInput(c.namespace)}"` : !NAME_RE.test(c.name) ? `name "${echoInput(c.name)}"` : undefined;
  if (bad) {
    throw new TesseraError("TESSERA_CLAIM_INVALID_REF", `claim uid ${echoInput(c.uid)}: ${bad} is not a valid Kubernetes ${bad.startsWith("namespace") ? "namespace (DNS-1123 label, at most 63 characters)" : "object name (DNS-1123 subdomain, at most 253 characters)"}; the kubelet sent a claim the API server could not hold`);
  }
}

/**
 * A UID already in the checkpoint belongs to the namespace/name recorded with it; a call naming
 * another claim with that UID must not be answered with the recorded devices. Entries rebuilt
 * from CDI specs do not know their names and adopt the caller's.
 */
export function assertRecordedFor(recorded: { namespace: string; name: string }, want: { uid: string; namespace: string; name: string }): void {
  if (recorded.name === "" || (recorded.namespace === want.namespace && recorded.name === want.name)) return;
  throw new TesseraError(
    "TESSERA_CLAIM_UID_REUSED",
    `uid ${echoInput(want.uid)} is recorded for ResourceClaim ${echoInput(recorded.namespace)}/${echoInput(recorded.name)}, not ${echoInput(want.namespace)}/${echoInput(want.name)}; unprepare the recorded claim first (tessera diag unprepare ${echoInput(recorded.namespace)}/${echoInput(recorded.name)} --uid ${echoInput(want.uid)})`,
  );
}

export interface ComputeOptions {
  /** UUIDs for which an NVIDIA Container Toolkit spec defines nvidia.com/gpu=<uuid>. */
  toolkitUUIDs?: ReadonlySet<string>;
}

/** The object read from the API is the one the kubelet asked for (same UID). */
export function assertSameClaim(claim: ResourceClaim, want: { uid: string; namespace: string; name: string }): void {
  if (claim.metadata.uid !== want.uid) {
    throw new TesseraError("TESSERA_CLAIM_UID_MISMATCH", `ResourceClaim ${claimRef(want)}: the stored object has uid ${echoInput(claim.metadata.uid ?? "(none)")}; the claim was replaced, the kubelet will retry with the new one`);
  }
}

/**
 * Maps every allocation result of `driverName` to a prepared device. Throws TesseraError (not
 * allocated, unknown device); the caller puts the message into that claim's response entry.
 */
export function computePrepared(
  claim: ResourceClaim,
  devices: ReadonlyMap<string, DeviceFacts>,
  driverName: string,
  opts: ComputeOptions = {},
): PreparedClaim {
  const want = { uid: claim.metadata.uid ?? "", namespace: claim.metadata.namespace ?? "", name: claim.metadata.name ?? "" };
  const ref = claimRef(want);
  const allocation = claim.status?.allocation;
  if (!allocation) {
    throw new TesseraError("TESSERA_CLAIM_NOT_ALLOCATED", `ResourceClaim ${ref} is not allocated (no status.allocation); allocate it first (scheduler or \`tessera claims apply\`)`);
  }
  const results = (allocation.devices?.results ?? []).filter((r) => r.driver === driverName);
  const configs = (allocation.devices?.config ?? []).filter((c) => c.opaque?.driver === driverName);
  const ordered = driverConfigs(allocation.devices?.config, driverName);
  const out: PreparedDevice[] = [];
  for (const r of results) {
    const facts = devices.get(r.device);
    if (!facts) {
      const parent = /^(gpu-\d+)-mig-/.exec(r.device)?.[1];
      const gpu = parent !== undefined ? devices.get(parent) : undefined;
      if (gpu?.kind === "gpu") {
        throw new TesseraError(
          "TESSERA_MIG_DISABLED",
          `ResourceClaim ${ref}: allocated MIG device ${r.pool}/${r.device} is on GPU ${parent} (${gpu.uuid}), whose MIG mode is off; Tessera never changes MIG mode: enable it on that GPU (nvidia-smi -i ${gpu.uuid} -mig 1, then a GPU reset) or delete the claim so it is allocated elsewhere`,
        );
      }
      throw new TesseraError("TESSERA_DEVICE_UNKNOWN", `ResourceClaim ${ref}: allocated device ${r.pool}/${r.device} is not on this node; check discovery (\`tessera diag topology\`)`);
    }
    const baseRequest = r.request.split("/")[0] ?? r.request;
    const applicable = configs
      .filter((c) => !c.requests || c.requests.length === 0 || c.requests.includes(r.request) || c.requests.includes(baseRequest))
      .map((c) => c.opaque?.parameters);
    const ids = [`${CDI_KIND}=${cdiDeviceName(want.uid, r.device)}`];
    if (opts.toolkitUUIDs?.has(facts.uuid)) ids.push(`${TOOLKIT_KIND}=${facts.uuid}`);
    const d: PreparedDevice = {
      requestNames: [baseRequest],
      poolName: r.pool,
      deviceName: r.device,
      cdiDeviceIds: ids,
      kind: facts.kind,
      uuid: facts.uuid,
      gpuMinor: facts.gpuMinor,
      deviceNodes: [...facts.deviceNodes],
    };
    if (r.shareID !== undefined) d.shareID = r.shareID;
    if (r.adminAccess) d.adminAccess = true;
    if (applicable.length > 0) d.configs = applicable;
    const sharing = sharingForDevice(ordered, { request: r.request, deviceName: r.device, kind: facts.kind }, ref);
    if (sharing) d.sharing = sharing;
    // A placement without an instance (dynamic MIG): prepare creates it, so it is ours to destroy.
    if (facts.mig) d.mig = facts.mig.gi === undefined ? { ...facts.mig, owned: true } : { ...facts.mig };
    out.push(d);
  }
  return { uid: want.uid, namespace: want.namespace, name: want.name, devices: out };
}

/** Two prepared devices use the same hardware: same device, or a MIG slice of a whole GPU. */
export function overlaps(a: PreparedDevice, b: PreparedDevice): boolean {
  if (a.poolName === b.poolName && a.deviceName === b.deviceName) return true;
  if (a.kind !== b.kind && a.gpuMinor === b.gpuMinor) return true;
  // Two MIG placements of one GPU whose memory slices intersect (e.g. 2g at 0:2 and 1g at 1:1).
  if (a.mig && b.mig && a.mig.gpuUUID === b.mig.gpuUUID && a.mig.start < b.mig.start + b.mig.size && b.mig.start < a.mig.start + a.mig.size) return true;
  return false;
}

/** Sharing is allowed when both sides were allocated as shared (shareID) or for admin access. */
export function exclusive(d: PreparedDevice): boolean {
  return d.shareID === undefined && !d.adminAccess;
}
