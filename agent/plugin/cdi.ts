// CDI: one spec file per claim, written from a PreparedClaim and nothing else. Deterministic
// output (same claim -> byte-identical file) so re-prepare can compare bytes. Also reads the
// NVIDIA Container Toolkit's specs to learn which nvidia.com/gpu=<uuid> IDs exist.
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import { ensureDirDurable, removeFileDurable, stageFileAtomic, type StagedFile } from "../common/atomic-file.js";
import { nodeDurableFs, type DurableFs } from "../common/durable-fs.js";
import { TesseraError } from "../common/errors.js";
import { MPS_CONTAINER_LOG_DIR, MPS_CONTAINER_PIPE_DIR, MPS_CONTAINER_SHM_DIR } from "../sharing/mps.js";
import { assertClaimUID, CDI_KIND, isClaimUID, CDI_VENDOR, cdiDeviceName, TOOLKIT_KIND, type PreparedClaim, type PreparedDevice } from "./prepared.js";

/** Device nodes every CUDA container needs besides its GPU's own node. */
export const CONTROL_NODES = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"] as const;

export interface CdiDeviceNode {
  path: string;
}
export interface CdiMount {
  hostPath: string;
  containerPath: string;
  options: string[];
}
export interface CdiContainerEdits {
  env?: string[];
  deviceNodes?: CdiDeviceNode[];
  mounts?: CdiMount[];
}
export interface CdiSpec {
  cdiVersion: string;
  kind: string;
  devices: { name: string; containerEdits: CdiContainerEdits }[];
  containerEdits: CdiContainerEdits;
}

export function specFileName(claimUID: string): string {
  assertClaimUID(claimUID);
  return `${CDI_VENDOR}-claim_${claimUID}.json`;
}

/** The claim UID a file name in --cdi-root is our spec of, or undefined for anyone else's file. */
export function specFileUID(fileName: string): string | undefined {
  const prefix = `${CDI_VENDOR}-claim_`;
  if (!fileName.startsWith(prefix) || !fileName.endsWith(".json")) return undefined;
  const uid = fileName.slice(prefix.length, -".json".length);
  return isClaimUID(uid) ? uid : undefined;
}

export function specPath(cdiRoot: string, claimUID: string): string {
  return path.join(cdiRoot, specFileName(claimUID));
}

/**
 * The lowest cdiVersion whose rules accept what we write: 0.3.0 covers env + deviceNodes(path);
 * 0.5.0 is needed once a device name starts with a digit (UIDs often do). We never use
 * annotations, hostPath, mount types or dotted classes, so nothing later is required.
 */
export function minCdiVersion(deviceNames: readonly string[]): string {
  return deviceNames.some((n) => !/^[A-Za-z]/.test(n)) ? "0.5.0" : "0.3.0";
}

function uniq(xs: readonly string[]): string[] {
  return [...new Set(xs)];
}

/**
 * The per-device variable that names one device's UUID in the container:
 * TESSERA_DEVICE_<claim UID, no dashes>_<device name>, upper case, '-' -> '_'. Unique per claim and
 * device, so several claims injected into one container never set the same key (CDI keeps only
 * the last value of a key that appears twice).
 */
export function deviceEnvName(claimUID: string, deviceName: string): string {
  return `TESSERA_DEVICE_${claimUID.replace(/-/g, "")}_${deviceName}`.toUpperCase().replace(/[^A-Z0-9_]/g, "_");
}

/**
 * Spec-level env: the same value in every claim's spec, so any number of claims merge. `void`
 * tells the NVIDIA Container Toolkit's legacy hook to inject nothing on its own (an image's
 * NVIDIA_VISIBLE_DEVICES=all would otherwise hand the container every GPU of the node); the
 * devices a container sees are exactly the device nodes CDI injects, and the driver libraries come
 * from the toolkit's own CDI device (nvidia.com/gpu=<uuid>, added to cdiDeviceIds when present).
 */
export const SPEC_ENV = ["NVIDIA_VISIBLE_DEVICES=void"] as const;

export function buildSpec(claim: PreparedClaim): CdiSpec {
  const seen = new Map<string, PreparedDevice>();
  for (const d of claim.devices) if (!seen.has(d.deviceName)) seen.set(d.deviceName, d);
  const devs = [...seen.values()];
  const devices = devs.map((d) => ({
    name: cdiDeviceName(claim.uid, d.deviceName),
    containerEdits: { env: [`${deviceEnvName(claim.uid, d.deviceName)}=${d.uuid}`], deviceNodes: d.deviceNodes.map((p) => ({ path: p })) },
  }));
  const containerEdits: CdiContainerEdits = { env: devs.length === 0 ? [] : [...SPEC_ENV], deviceNodes: CONTROL_NODES.map((p) => ({ path: p })) };
  // MPS: the claim's daemon pipe directory (clients connect to its control socket), log
  // directory and shared memory (the daemon's /dev/shm too), and the client-side limits.
  // Spec-level: any device of the claim brings them.
  if (claim.mps) {
    containerEdits.env = [...(containerEdits.env ?? []), ...claim.mps.env];
    containerEdits.mounts = [
      { hostPath: claim.mps.pipeDir, containerPath: MPS_CONTAINER_PIPE_DIR, options: ["rw", "nosuid", "nodev", "bind"] },
      { hostPath: claim.mps.logDir, containerPath: MPS_CONTAINER_LOG_DIR, options: ["ro", "nosuid", "nodev", "bind"] },
      { hostPath: claim.mps.shmDir, containerPath: MPS_CONTAINER_SHM_DIR, options: ["rw", "nosuid", "nodev", "bind"] },
    ];
  }
  return { cdiVersion: minCdiVersion(devices.map((d) => d.name)), kind: CDI_KIND, devices, containerEdits };
}

export function renderSpec(claim: PreparedClaim): string {
  return JSON.stringify(buildSpec(claim), null, 2) + "\n";
}

export interface StagedSpec {
  /** Makes the spec durable under its name; true if written (false: it already held these bytes). */
  commit(): Promise<boolean>;
  abort(): Promise<void>;
}

export type CdiRemoval = "removed" | "absent" | "root-not-a-directory";

export interface CdiWriter {
  readonly root: string;
  /** Writes the spec unless the file already holds exactly these bytes. Returns true if written. */
  ensure(claim: PreparedClaim): Promise<boolean>;
  /** ensure() in two halves: the spec's bytes written and fsynced to a temp file now (not a spec:
   *  runtimes and list() read only the final name), renamed into place by commit(). */
  stage(claim: PreparedClaim): Promise<StagedSpec>;
  /**
   * Removes the claim's spec. "absent" also when --cdi-root is gone or not a directory (then no
   * spec can exist there); any other failure is a TESSERA_CDI error.
   */
  remove(claimUID: string): Promise<CdiRemoval>;
  /** UIDs and parsed specs of our claim spec files (for rebuilding a lost checkpoint). */
  list(): Promise<{ uid: string; spec: CdiSpec | undefined }[]>;
}

/** Every read and write of our claim specs goes through `fs` (default: node:fs). */
export function createCdiWriter(root: string, fs: DurableFs = nodeDurableFs): CdiWriter {
  const stage = async (claim: PreparedClaim): Promise<StagedSpec> => {
    const file = specPath(root, claim.uid);
    const text = renderSpec(claim);
    const current = await fs.readFile(file).catch(() => undefined);
    if (current === text) return { commit: async () => false, abort: async () => undefined };
    const failed = (err: unknown): TesseraError => new TesseraError("TESSERA_CDI", `cannot write CDI spec ${file}; check that --cdi-root is writable`, { cause: err });
    let staged: StagedFile;
    try {
      await ensureDirDurable(root, 0o755, fs);
      staged = await stageFileAtomic(file, text, 0o644, fs);
    } catch (err) {
      throw failed(err);
    }
    return {
      async commit() {
        await staged.commit().catch((err: unknown) => {
          throw failed(err);
        });
        return true;
      },
      abort: () => staged.abort(),
    };
  };
  return {
    root,
    ensure: async (claim) => (await stage(claim)).commit(),
    stage,
    async remove(uid) {
      // The removal is made durable before the caller drops the checkpoint entry: otherwise a
      // power loss could bring back a spec whose claim the kubelet was told is unprepared.
      const file = specPath(root, uid);
      try {
        await removeFileDurable(file, fs);
        return "removed";
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT") return "absent";
        if (code === "ENOTDIR") return "root-not-a-directory";
        throw new TesseraError("TESSERA_CDI", `cannot remove CDI spec ${file} (${code ?? String(err)}); check that --cdi-root is writable`, { cause: err });
      }
    },
    async list() {
      const names = await fs.readdir(root).catch(() => [] as string[]);
      const out: { uid: string; spec: CdiSpec | undefined }[] = [];
      for (const n of names.sort()) {
        const uid = specFileUID(n);
        if (uid === undefined) continue;
        // A torn or garbage spec reads as undefined (parse errors included), never as a throw.
        const spec = await fs
          .readFile(path.join(root, n))
          .then((t) => JSON.parse(t) as CdiSpec)
          .catch(() => undefined);
        out.push({ uid, spec });
      }
      return out;
    },
  };
}

/**
 * Device names (GPU-/MIG- UUIDs) the NVIDIA Container Toolkit's CDI specs define under `dirs`
 * (kind nvidia.com/gpu, generated with the uuid naming strategy). Unreadable files are skipped:
 * a broken toolkit spec must not fail a prepare, it only means no driver-library mounts.
 */
export async function scanToolkitUUIDs(dirs: readonly string[]): Promise<Set<string>> {
  return createToolkitScanner(dirs)();
}

type ToolkitCacheEntry = { mtimeMs: number; size: number; uuids: readonly string[] };

/**
 * scanToolkitUUIDs for the prepare path: a toolkit spec is tens of KB of YAML, and parsing it per
 * claim blocked the event loop for every prepare. Files are re-parsed only when their mtime or
 * size changes, and concurrent prepares share one scan.
 */
export function createToolkitScanner(dirs: readonly string[]): () => Promise<Set<string>> {
  const cache = new Map<string, ToolkitCacheEntry>();
  let inFlight: Promise<Set<string>> | undefined;
  async function uuidsOf(file: string): Promise<readonly string[]> {
    const st = await fsp.stat(file).catch(() => undefined);
    if (!st?.isFile()) return [];
    const hit = cache.get(file);
    if (hit && hit.mtimeMs === st.mtimeMs && hit.size === st.size) return hit.uuids;
    const uuids: string[] = [];
    try {
      // yaml (~9 MB of RSS) is loaded with the first toolkit spec, not at agent start
      const { parse: parseYaml } = await import("yaml");
      const doc = parseYaml(await fsp.readFile(file, "utf8")) as { kind?: unknown; devices?: { name?: unknown }[] } | null;
      if (doc?.kind === TOOLKIT_KIND && Array.isArray(doc.devices)) {
        for (const d of doc.devices) if (typeof d?.name === "string" && /^(GPU|MIG)-/.test(d.name)) uuids.push(d.name);
      }
    } catch {
      // unreadable or not YAML: no IDs from this file (cached too, until it changes)
    }
    cache.set(file, { mtimeMs: st.mtimeMs, size: st.size, uuids });
    return uuids;
  }
  async function scan(): Promise<Set<string>> {
    const out = new Set<string>();
    const seen = new Set<string>();
    for (const dir of dirs) {
      const names = await fsp.readdir(dir).catch(() => [] as string[]);
      for (const n of names) {
        if (!/\.(json|ya?ml)$/.test(n) || n.startsWith(`${CDI_VENDOR}-`)) continue;
        const file = path.join(dir, n);
        seen.add(file);
        for (const u of await uuidsOf(file)) out.add(u);
      }
    }
    for (const f of cache.keys()) if (!seen.has(f)) cache.delete(f);
    return out;
  }
  return () =>
    (inFlight ??= scan().finally(() => {
      inFlight = undefined;
    }));
}
