// Discovery entry point: `createDiscovery(config, deps).discover()` returns the node's Inventory.
//   --discovery nvidia-smi        runs `nvidia-smi -q -x`, `-L`, `mig -lgi` (no shell, timeout,
//                                 bounded output) and reads sysfs under --sysfs-root
//   --discovery fixture:<name|path>  a simulated nvidia-smi (nvsmi-sim.ts) answers from the files of
//                                 fixtures/nodes/<name>/ (or a path) plus the MIG state the agent
//                                 changed, through the same exec seam and parsers, with the
//                                 fixture's own sys/ and proc/ trees
// `-q -x` failing is fatal for one discover() call (the caller keeps its last good inventory, see
// watcher.ts); `-L` or `mig -lgi` failing only degrades MIG facts and is reported as a condition.
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { NodeConfig } from "../common/config.js";
import { TesseraError, isTesseraError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { silentLogger } from "../common/log.js";
import { assembleInventory } from "./assemble.js";
import { DEFAULT_EXEC_OPTIONS, execChecked, execFile, type ExecFn, type ExecOptions } from "./exec.js";
import { systeminformationHostFacts, type HostFactsFn } from "./host.js";
import type { DiscoveryCondition, HostFacts, Inventory } from "./model.js";
import { isNoMigMessage, parseListGpus, parseMigLgi, type GpuInstanceRow, type ListedGpu } from "./nvsmi-text.js";
import { createSimulatedNvidiaSmi } from "./nvsmi-sim.js";
import { parseNvidiaSmiXml } from "./nvsmi-xml.js";
import { readMigMinors, readNumaNodes, readPciFacts, realSysFs, type PciFacts, type SysFs } from "./sysfs.js";

export interface Discovery {
  discover(): Promise<Inventory>;
}

export interface DiscoveryDeps {
  exec?: ExecFn;
  execOptions?: Partial<ExecOptions>;
  nvidiaSmi?: string; // binary, resolved on PATH by spawn (no shell); default --nvidia-smi
  fs?: SysFs;
  procRoot?: string; // default --proc-root
  hostFacts?: HostFactsFn;
  logger?: Logger;
  fixturesDir?: string; // where fixture:<name> resolves; default <package>/fixtures/nodes
  /** MIG state of a fixture's simulated nvidia-smi; default fixtureStateFile(--state-dir, fixture). */
  fixtureStateFile?: string;
}

/** <package root>/fixtures/nodes, found from this file (dist/agent/discovery/ or agent/discovery/). */
export function defaultFixturesDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (path.basename(dir) === "dist") return path.join(path.dirname(dir), "fixtures", "nodes");
    dir = path.dirname(dir);
  }
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "fixtures", "nodes");
}

export function resolveFixture(spec: string, fixturesDir: string): string {
  const nameOrPath = spec.slice("fixture:".length);
  if (!nameOrPath) throw new TesseraError("TESSERA_CONFIG", "--discovery=fixture: needs a fixture name or path, e.g. fixture:h100-sxm-8x");
  return /^[a-z0-9][a-z0-9-]*$/.test(nameOrPath) ? path.join(fixturesDir, nameOrPath) : path.resolve(nameOrPath);
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await fsp.readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new TesseraError("TESSERA_FIXTURE", `cannot read ${file}`, { cause: err });
  }
}

interface Sources {
  xml: string;
  xmlSource: string;
  listed?: ListedGpu[];
  instances?: GpuInstanceRow[];
  sysRoot: string;
  procRoot: string;
  host: HostFacts;
  conditions: DiscoveryCondition[];
}

function condition(err: unknown, what: string): DiscoveryCondition {
  const code = isTesseraError(err) ? err.code : "TESSERA_DISCOVERY";
  const msg = err instanceof Error ? err.message : String(err);
  return { code, message: `${what}: ${msg}` };
}

/** Where the simulated nvidia-smi of a fixture node keeps its MIG state: the agent's state dir. */
export function fixtureStateFile(stateDir: string, fixtureDir: string): string {
  return path.join(stateDir, `fixture-${path.basename(fixtureDir)}-mig-state.json`);
}

/** Faults injected into a fixture's simulated nvidia-smi (a GPU lost, removed, ECC errors). */
export function fixtureFaultsFile(stateDir: string, fixtureDir: string): string {
  return path.join(stateDir, `fixture-${path.basename(fixtureDir)}-faults.json`);
}

/** The fixture's simulated nvidia-smi as an ExecFn: the same seam the real executable sits behind. */
export function simulatedExec(fixtureDir: string, stateFile: string, faultsFile?: string): ExecFn {
  const sim = createSimulatedNvidiaSmi({ fixtureDir, stateFile, ...(faultsFile ? { faultsFile } : {}) });
  return async (_file, args) => sim.run(args);
}

/** The nvidia-smi this node's agent talks to: the real executable, or a fixture's simulated one. */
export function nvidiaSmiSeam(config: NodeConfig, deps: Pick<DiscoveryDeps, "exec" | "fixturesDir" | "fixtureStateFile"> = {}): { exec: ExecFn; bin: string } {
  if (!config.discovery.startsWith("fixture:")) return { exec: deps.exec ?? execFile, bin: config.nvidiaSmi };
  const dir = resolveFixture(config.discovery, deps.fixturesDir ?? defaultFixturesDir());
  return { exec: deps.exec ?? simulatedExec(dir, deps.fixtureStateFile ?? fixtureStateFile(config.stateDir, dir), fixtureFaultsFile(config.stateDir, dir)), bin: "nvidia-smi" };
}

async function fromFixture(config: NodeConfig, dir: string, deps: DiscoveryDeps): Promise<Sources> {
  if ((await readOptional(path.join(dir, "nvidia-smi-q-x.xml"))) === undefined) {
    // List the fixtures that exist next to it, so the fix is one copy-paste away.
    const known = await fsp.readdir(path.dirname(dir)).catch(() => [] as string[]);
    throw new TesseraError("TESSERA_FIXTURE", `fixture ${dir} has no nvidia-smi-q-x.xml; use a fixture directory or one of: ${known.sort().join(", ") || "(none found)"}`);
  }
  const conditions: DiscoveryCondition[] = [];
  const hostText = await readOptional(path.join(dir, "host.json"));
  let host: HostFacts = {};
  if (hostText !== undefined) {
    try {
      host = JSON.parse(hostText) as HostFacts;
    } catch (err) {
      conditions.push(condition(err, `${dir}/host.json`));
    }
  }
  // The fixture's own captures, answered by the simulated nvidia-smi (MIG changes the agent made
  // are kept in the state dir), read by exactly the code path of the real tool.
  const exec = deps.exec ?? simulatedExec(dir, deps.fixtureStateFile ?? fixtureStateFile(config.stateDir, dir), fixtureFaultsFile(config.stateDir, dir));
  const src = await fromNvidiaSmi(config, { ...deps, exec, nvidiaSmi: `fixture ${path.basename(dir)}: nvidia-smi`, procRoot: path.join(dir, "proc") }, async () => host);
  src.sysRoot = path.join(dir, "sys");
  src.conditions.unshift(...conditions);
  return src;
}

async function fromNvidiaSmi(config: NodeConfig, deps: DiscoveryDeps, host: HostFactsFn): Promise<Sources> {
  const exec = deps.exec ?? execFile;
  const opts: ExecOptions = { ...DEFAULT_EXEC_OPTIONS, ...deps.execOptions };
  const bin = deps.nvidiaSmi ?? config.nvidiaSmi;
  const xml = await execChecked(exec, bin, ["-q", "-x"], opts); // fatal on failure: no GPUs without it
  const conditions: DiscoveryCondition[] = [];
  const src: Sources = { xml, xmlSource: `${bin} -q -x`, sysRoot: config.sysfsRoot, procRoot: deps.procRoot ?? config.procRoot, host: {}, conditions };
  try {
    src.listed = parseListGpus(await execChecked(exec, bin, ["-L"], opts));
  } catch (err) {
    conditions.push(condition(err, `${bin} -L (MIG UUIDs unknown)`));
  }
  try {
    const r = await exec(bin, ["mig", "-lgi"], opts);
    if (r.code === 0 || isNoMigMessage(r.stdout + r.stderr)) src.instances = parseMigLgi(r.stdout);
    else conditions.push({ code: "TESSERA_DISCOVERY", message: `${bin} mig -lgi exited with ${r.code}: ${(r.stderr || r.stdout).trim().split("\n")[0] ?? ""}` });
  } catch (err) {
    conditions.push(condition(err, `${bin} mig -lgi (MIG placements unknown)`));
  }
  try {
    src.host = await host();
  } catch (err) {
    conditions.push(condition(err, "host facts"));
  }
  return src;
}

/** Host facts do not change while the agent runs; read them until one read gives something. */
function cachedHostFacts(read: HostFactsFn): HostFactsFn {
  let facts: HostFacts | undefined;
  return async () => {
    if (facts) return facts;
    const f = await read();
    if (Object.keys(f).length > 0) facts = f;
    return f;
  };
}

export function createDiscovery(config: NodeConfig, deps: DiscoveryDeps = {}): Discovery {
  const fs = deps.fs ?? realSysFs;
  const logger = deps.logger ?? silentLogger;
  const host = cachedHostFacts(deps.hostFacts ?? systeminformationHostFacts());
  return {
    async discover(): Promise<Inventory> {
      const fixture = config.discovery.startsWith("fixture:");
      if (!fixture && config.discovery !== "nvidia-smi") {
        throw new TesseraError("TESSERA_CONFIG", `--discovery=${config.discovery}: expected nvidia-smi or fixture:<name-or-path>`);
      }
      const src = fixture ? await fromFixture(config, resolveFixture(config.discovery, deps.fixturesDir ?? defaultFixturesDir()), deps) : await fromNvidiaSmi(config, deps, host);
      const xml = parseNvidiaSmiXml(src.xml, src.xmlSource);
      // An explicit --sysfs-root other than the default wins over a fixture's own tree.
      const sysRoot = fixture && config.sysfsRoot === "/sys" ? src.sysRoot : config.sysfsRoot;
      const pci = new Map<string, PciFacts>();
      for (const g of xml.gpus) pci.set(g.pciBusId, await readPciFacts(fs, sysRoot, g.pciBusId));
      const inv = assembleInventory({
        nodeName: config.nodeName,
        xml,
        ...(src.listed !== undefined ? { listed: src.listed } : {}),
        ...(src.instances !== undefined ? { instances: src.instances } : {}),
        pci,
        numaNodes: await readNumaNodes(fs, sysRoot),
        migMinors: await readMigMinors(fs, src.procRoot),
        host: src.host,
        conditions: src.conditions,
      });
      for (const c of inv.conditions ?? []) logger.warn("discovery condition", { code: c.code, detail: c.message });
      return inv;
    },
  };
}
