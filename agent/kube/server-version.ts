// Kubernetes version truth: which API server minors each publishing mode is valid on, read from
// the server at start (GET /version), so a mode the server's validation would reject is refused
// with a clear error instead of a publisher retrying forever. The range is what conformance
// checks with each minor's own k8s.io/kubernetes/pkg/apis/resource/validation (docs/conformance.md).
import type { KubeConfig } from "@kubernetes/client-node";
import { loadClientNode } from "./client-node.js";
import { TesseraError } from "../common/errors.js";
import { kubeApiError } from "./api-error.js";
import type { DeviceTaint } from "./types.js";

/** Lowest supported minor of Kubernetes 1.x for everything (resource.k8s.io/v1 is GA in 1.34). */
export const MIN_MINOR = 34;
/** `--mig-mode dynamic`: counter sets in their own slices (the KEP-4815 layout of 1.35+), accepted
 *  by the default gates of 1.36+ (1.35 drops them unless DRAPartitionableDevices is switched on,
 *  which the version does not tell). Conformance Tier 5 checks this against each minor. */
export const MIN_MINOR_DYNAMIC_MIG = 36;
/** `--gpu-sharing consumable`: allowMultipleAllocations and request policies, kept by default from this minor. */
export const MIN_MINOR_CONSUMABLE = 36;

/** Device taints with effect `None` (informational: an unknown XID) validate from this minor; 1.34
 *  knows only NoSchedule and NoExecute and would reject the whole slice. */
export const MIN_MINOR_TAINT_EFFECT_NONE = 35;

export interface ServerVersion {
  major: number;
  minor: number;
  gitVersion: string;
}

/** Parses version.Info; managed offerings print minors like "35+". */
export function parseServerVersion(info: { major?: unknown; minor?: unknown; gitVersion?: unknown }): ServerVersion | undefined {
  const major = Number.parseInt(String(info.major ?? ""), 10);
  const minor = Number.parseInt(String(info.minor ?? ""), 10);
  if (!Number.isInteger(major) || !Number.isInteger(minor)) return undefined;
  return { major, minor, gitVersion: typeof info.gitVersion === "string" ? info.gitVersion : `v${major}.${minor}` };
}

export async function readServerVersion(kc: KubeConfig, timeoutMs = 10_000): Promise<ServerVersion | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TesseraError("TESSERA_KUBE_TIMEOUT", `the API server did not answer GET /version within ${timeoutMs / 1000} s; check --kube and the network`)), timeoutMs);
  });
  const call = loadClientNode().then((k) => kc.makeApiClient(k.VersionApi).getCode());
  try {
    return parseServerVersion(await Promise.race([call, timeout]));
  } catch (err) {
    throw kubeApiError(err, { verb: "get", group: "", resource: "version", what: "reading the API server version" });
  } finally {
    clearTimeout(timer);
    call.catch(() => undefined);
  }
}

/** Refuses a publishing mode the server's minor cannot validate. */
export function assertModeSupported(v: ServerVersion, mode: { migMode: "static" | "dynamic"; gpuSharing?: "none" | "consumable" }): void {
  if (v.major !== 1 || v.minor < MIN_MINOR) {
    throw new TesseraError("TESSERA_CONFIG", `the API server is ${v.gitVersion}; Tessera needs Kubernetes 1.${MIN_MINOR} or later (resource.k8s.io/v1); see docs/install.md`);
  }
  if (mode.migMode === "dynamic" && v.minor < MIN_MINOR_DYNAMIC_MIG) {
    throw new TesseraError(
      "TESSERA_CONFIG",
      `--mig-mode=dynamic: the API server is ${v.gitVersion}, whose ResourceSlice validation rejects Tessera's partitionable layout (counter sets in their own slices, accepted by default from Kubernetes 1.${MIN_MINOR_DYNAMIC_MIG}); use --mig-mode static on this cluster or upgrade it`,
    );
  }
  if (mode.gpuSharing === "consumable" && v.minor < MIN_MINOR_CONSUMABLE) {
    throw new TesseraError(
      "TESSERA_CONFIG",
      `--gpu-sharing=consumable: the API server is ${v.gitVersion}, which drops shareable devices (allowMultipleAllocations) unless DRAConsumableCapacity is on; Tessera publishes them from Kubernetes 1.${MIN_MINOR_CONSUMABLE}; use --gpu-sharing none on this cluster or upgrade it`,
    );
  }
}

/** The taints this server's validation accepts: below 1.35, effect None is left out of the slices
 *  (it stays in `diag health`, the health stream and metrics). Unknown version: the newest rules. */
export function publishableTaints(taints: ReadonlyMap<string, readonly DeviceTaint[]>, v: ServerVersion | undefined): ReadonlyMap<string, readonly DeviceTaint[]> {
  if (!v || v.minor >= MIN_MINOR_TAINT_EFFECT_NONE) return taints;
  const out = new Map<string, readonly DeviceTaint[]>();
  for (const [device, ts] of taints) {
    const kept = ts.filter((t) => t.effect !== "None");
    if (kept.length > 0) out.set(device, kept);
  }
  return out;
}
