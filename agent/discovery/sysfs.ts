// sysfs and procfs facts the nvidia-smi XML does not have: NUMA node, local CPUs and PCIe root of
// each GPU, the node's NUMA nodes, and the MIG capability device minors. Roots are injected
// (`--sysfs-root`, a fixture's `sys/` and `proc/`), so tests read fake trees. Missing files are
// "unknown", never errors: a VM often has no NUMA information at all.
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import type { NumaNode } from "./model.js";

export interface PciFacts {
  numaNode?: number; // absent when the kernel says -1 (unknown) or the file is missing
  localCpuList?: string;
  pcieRoot?: string; // "pci0000:00"
}

/** The part of node:fs/promises we use, so tests can inject failures. */
export interface SysFs {
  readFile(p: string, enc: "utf8"): Promise<string>;
  readlink(p: string): Promise<string>;
  readdir(p: string): Promise<string[]>;
}

export const realSysFs: SysFs = {
  readFile: (p, enc) => fsp.readFile(p, enc),
  readlink: (p) => fsp.readlink(p),
  readdir: (p) => fsp.readdir(p),
};

async function readTrim(fs: SysFs, p: string): Promise<string | undefined> {
  try {
    return (await fs.readFile(p, "utf8")).trim();
  } catch {
    return undefined;
  }
}

/** `bus/pci/devices/<bdf>` links to `../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0`; the root is the component after `devices/`. */
export function pcieRootFromLink(target: string): string | undefined {
  const parts = target.split("/");
  const i = parts.lastIndexOf("devices");
  const root = i >= 0 ? parts[i + 1] : undefined;
  return root !== undefined && /^pci[0-9a-f]{4}:[0-9a-f]{2}$/.test(root) ? root : undefined;
}

export async function readPciFacts(fs: SysFs, sysRoot: string, busId: string): Promise<PciFacts> {
  const dev = path.join(sysRoot, "bus", "pci", "devices", busId);
  const facts: PciFacts = {};
  const numa = await readTrim(fs, path.join(dev, "numa_node"));
  if (numa !== undefined && /^\d+$/.test(numa)) facts.numaNode = Number(numa);
  const cpus = await readTrim(fs, path.join(dev, "local_cpulist"));
  if (cpus) facts.localCpuList = cpus;
  try {
    const root = pcieRootFromLink(await fs.readlink(dev));
    if (root) facts.pcieRoot = root;
  } catch {
    // not a link (or missing): PCIe root unknown
  }
  return facts;
}

/** `devices/system/node/node<N>/cpulist`, sorted by id; [] when the directory is missing. */
export async function readNumaNodes(fs: SysFs, sysRoot: string): Promise<NumaNode[]> {
  const dir = path.join(sysRoot, "devices", "system", "node");
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return [];
  }
  const out: NumaNode[] = [];
  for (const n of names) {
    const m = /^node(\d+)$/.exec(n);
    if (!m) continue;
    out.push({ id: Number(m[1]), cpuList: (await readTrim(fs, path.join(dir, n, "cpulist"))) ?? "" });
  }
  return out.sort((a, b) => a.id - b.id);
}

/** key "gpu<minor>/gi<gi>/access" or "gpu<minor>/gi<gi>/ci<ci>/access" -> /dev/nvidia-caps minor. */
export type MigMinors = Map<string, number>;

export function parseMigMinors(textOut: string): MigMinors {
  const out: MigMinors = new Map();
  for (const line of textOut.split(/\r?\n/)) {
    const m = /^(gpu\d+\/gi\d+(?:\/ci\d+)?\/access)\s+(\d+)\s*$/.exec(line.trim());
    if (m) out.set(m[1] as string, Number(m[2]));
  }
  return out;
}

export async function readMigMinors(fs: SysFs, procRoot: string): Promise<MigMinors> {
  const t = await readTrim(fs, path.join(procRoot, "driver", "nvidia-caps", "mig-minors"));
  return t === undefined ? new Map() : parseMigMinors(t);
}

/** Device nodes a container needs for one MIG device: the GI and the CI access capability. */
export function migCapPaths(minors: MigMinors, gpuMinor: number, gi: number, ci: number): string[] {
  const out: string[] = [];
  const giMinor = minors.get(`gpu${gpuMinor}/gi${gi}/access`);
  const ciMinor = minors.get(`gpu${gpuMinor}/gi${gi}/ci${ci}/access`);
  if (giMinor !== undefined) out.push(`/dev/nvidia-caps/nvidia-cap${giMinor}`);
  if (ciMinor !== undefined) out.push(`/dev/nvidia-caps/nvidia-cap${ciMinor}`);
  return out;
}
