// CDI: one spec file per claim, written from a PreparedClaim and nothing else. Deterministic
// output (same claim -> byte-identical file) so re-prepare can compare bytes. Also reads the
// NVIDIA Container Toolkit's specs to learn which nvidia.com/gpu=<uuid> IDs exist.
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import { parse as parseYaml } from "yaml";
import { ensureDirDurable, removeFileDurable, writeFileAtomic } from "../common/atomic-file.js";
import { nodeDurableFs, type DurableFs } from "../common/durable-fs.js";
import { TesseraError } from "../common/errors.js";
import { assertClaimUID, CDI_KIND, CDI_VENDOR, cdiDeviceName, TOOLKIT_KIND, type PreparedClaim, type PreparedDevice } from "./prepared.js";

/** Device nodes every CUDA container needs besides its GPU's own node. */
export const CONTROL_NODES = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"] as const;

export interface CdiDeviceNode {
  path: string;
}
export interface CdiContainerEdits {
  env?: string[];
  deviceNodes?: CdiDeviceNode[];
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

export function buildSpec(claim: PreparedClaim): CdiSpec {
  const seen = new Map<string, PreparedDevice>();
  for (const d of claim.devices) if (!seen.has(d.deviceName)) seen.set(d.deviceName, d);
  const devs = [...seen.values()];
  const devices = devs.map((d) => ({
    name: cdiDeviceName(claim.uid, d.deviceName),
    containerEdits: { deviceNodes: d.deviceNodes.map((p) => ({ path: p })) },
  }));
  // Env lives at spec level: CDI applies it whenever any device of the spec is injected, and one
  // variable listing all devices avoids two devices fighting over NVIDIA_VISIBLE_DEVICES.
  const env = devs.length === 0 ? [] : [`NVIDIA_VISIBLE_DEVICES=${uniq(devs.map((d) => d.uuid)).join(",")}`, `TESSERA_DEVICES=${devs.map((d) => d.deviceName).join(",")}`];
  return {
    cdiVersion: minCdiVersion(devices.map((d) => d.name)),
    kind: CDI_KIND,
    devices,
    containerEdits: { env, deviceNodes: CONTROL_NODES.map((p) => ({ path: p })) },
  };
}

export function renderSpec(claim: PreparedClaim): string {
  return JSON.stringify(buildSpec(claim), null, 2) + "\n";
}

export interface CdiWriter {
  readonly root: string;
  /** Writes the spec unless the file already holds exactly these bytes. Returns true if written. */
  ensure(claim: PreparedClaim): Promise<boolean>;
  remove(claimUID: string): Promise<void>;
  /** UIDs and parsed specs of our claim spec files (for rebuilding a lost checkpoint). */
  list(): Promise<{ uid: string; spec: CdiSpec | undefined }[]>;
}

/** Every read and write of our claim specs goes through `fs` (default: node:fs). */
export function createCdiWriter(root: string, fs: DurableFs = nodeDurableFs): CdiWriter {
  const prefix = `${CDI_VENDOR}-claim_`;
  return {
    root,
    async ensure(claim) {
      const file = specPath(root, claim.uid);
      const text = renderSpec(claim);
      const current = await fs.readFile(file).catch(() => undefined);
      if (current === text) return false;
      try {
        await ensureDirDurable(root, 0o755, fs);
        await writeFileAtomic(file, text, 0o644, fs);
      } catch (err) {
        throw new TesseraError("TESSERA_CDI", `cannot write CDI spec ${file}; check that --cdi-root is writable`, { cause: err });
      }
      return true;
    },
    async remove(uid) {
      // The removal is made durable before the caller drops the checkpoint entry: otherwise a
      // power loss could bring back a spec whose claim the kubelet was told is unprepared.
      await removeFileDurable(specPath(root, uid), fs);
    },
    async list() {
      const names = await fs.readdir(root).catch(() => [] as string[]);
      const out: { uid: string; spec: CdiSpec | undefined }[] = [];
      for (const n of names.sort()) {
        if (!n.startsWith(prefix) || !n.endsWith(".json")) continue;
        const uid = n.slice(prefix.length, -".json".length);
        try {
          assertClaimUID(uid);
        } catch {
          continue;
        }
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
