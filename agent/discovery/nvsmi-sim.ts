// A simulated nvidia-smi: the fixture backend's "real tool". It answers the commands Tessera runs
// (`-q -x`, `-L`, `mig -lgi`, `mig -lci`, `mig -cgi`, `mig -dci`, `mig -dgi`,
// `compute-policy --set-timeslice`, `compute-policy -l`, `-i <id> -c <mode>`, `--query-gpu=...`) from a fixture node
// folder plus a small MIG state file, in the real tool's output formats, and refuses what the real
// tool refuses (an overlapping or invalid placement, destroying a GPU instance that still has
// compute instances, MIG commands on a GPU whose MIG mode is off). The same state machine serves
// `--discovery fixture:<name>` in-process and the executable test/support/nvidia-smi-sim, so a
// fixture flow and a test of the real seam see one behaviour.
//
// What is simulated, not captured: the create/destroy messages follow public transcripts of the
// real tool; the exit codes of refusals (2 for invalid arguments, 255 otherwise) are our choice,
// since no capture shows them. GPU instance ids follow the driver's numbering by placement, as the
// real A100 capture and public transcripts agree: size 8 -> 0, size 4 -> 1 + start/4,
// size 2 -> 3 + start/2, size 1 -> 7 + start. compute-policy and compute mode: nvsmi-sim-policy.ts
// (which texts are the real tool's and which are modelled).
import { createHash } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, fsyncSync } from "node:fs";
import * as path from "node:path";
import { migFamilyFor, profileMemoryBytes, type MigProfile } from "./mig-profiles.js";
import { enginesOf, type MigEngines } from "./model.js";
import { parseListGpus, parseMigLgi } from "./nvsmi-text.js";
import { parseNvidiaSmiXml, type XmlGpu } from "./nvsmi-xml.js";
import { answerQuery, gpuBlockOf, readFaults, withoutRemoved } from "./nvsmi-sim-health.js";
import { computeModeOf, computePolicy, QUERY_COMPUTE_MODE, setComputeMode, type SimPolicyDeps, type SimPolicyState } from "./nvsmi-sim-policy.js";

export interface SimInstance extends MigEngines {
  gi: number;
  ci: number;
  profileId: number;
  profileName: string;
  start: number;
  size: number;
  computeSlices: number;
  uuid: string;
  memoryMiB: number;
}

export interface SimState extends SimPolicyState {
  version: 1;
  /** Bumped by every create; part of new MIG UUIDs (a re-created instance gets a new UUID). */
  seq: number;
  gpus: Record<string, { instances: SimInstance[] }>;
}

export interface SimResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface SimulatedNvidiaSmi {
  run(args: readonly string[]): SimResult;
}

interface FixtureFiles {
  xml: string;
  list?: string;
  lgi?: string;
}

const MIB = 1024 * 1024;
const MEMORY_SLICES = 8;
const COMPUTE_SLICES = 7;

function readIf(file: string): string | undefined {
  return existsSync(file) ? readFileSync(file, "utf8") : undefined;
}

function readFixture(dir: string): FixtureFiles {
  const xml = readIf(path.join(dir, "nvidia-smi-q-x.xml"));
  if (xml === undefined) throw new Error(`fixture ${dir} has no nvidia-smi-q-x.xml`);
  const f: FixtureFiles = { xml };
  const list = readIf(path.join(dir, "nvidia-smi-L.txt"));
  const lgi = readIf(path.join(dir, "nvidia-smi-mig-lgi.txt"));
  if (list !== undefined) f.list = list;
  if (lgi !== undefined) f.lgi = lgi;
  return f;
}

export function giIdFor(start: number, size: number): number {
  if (size >= 8) return 0;
  if (size >= 4) return 1 + Math.floor(start / 4);
  if (size >= 2) return 3 + Math.floor(start / 2);
  return 7 + start;
}

/** The state the fixture's own captures describe (no state file yet). */
export function initialState(files: FixtureFiles): SimState {
  const xml = parseNvidiaSmiXml(files.xml, "fixture");
  const listed = files.list !== undefined ? parseListGpus(files.list) : [];
  const rows = files.lgi !== undefined ? parseMigLgi(files.lgi) : [];
  const gpus: SimState["gpus"] = {};
  for (const g of xml.gpus) {
    const family = migFamilyFor(g.pciDeviceId, g.productName);
    const l = listed.find((x) => x.uuid === g.uuid);
    const instances: SimInstance[] = [];
    for (const m of g.migDevices) {
      const row = rows.find((r) => r.gpuIndex === g.index && r.gpuInstanceId === m.gpuInstanceId);
      if (!row) continue;
      const p = family?.profiles.find((x) => x.profileId === row.profileId);
      instances.push({
        gi: m.gpuInstanceId,
        ci: m.computeInstanceId,
        profileId: row.profileId,
        profileName: row.profileName,
        start: row.placementStart,
        size: row.placementSize,
        computeSlices: p?.computeSlices ?? 1,
        uuid: l?.migs.find((x) => x.deviceIndex === m.index)?.uuid ?? migUuid(g.uuid, m.gpuInstanceId, m.computeInstanceId, 0),
        memoryMiB: Math.round(m.memoryBytes / MIB),
        ...enginesOf(m),
      });
    }
    gpus[g.uuid] = { instances };
  }
  return { version: 1, seq: 0, gpus };
}

function migUuid(gpuUuid: string, gi: number, ci: number, seq: number): string {
  const h = createHash("sha256").update(`${gpuUuid}/${gi}/${ci}/${seq}`).digest("hex");
  return `MIG-${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const pad2 = (n: number): string => String(n).padStart(2, " ");

function byPlacement(a: SimInstance, b: SimInstance): number {
  return a.start - b.start || a.ci - b.ci;
}

// ---- rendering, in the real tool's formats --------------------------------------------------------

function renderList(gpus: readonly XmlGpu[], state: SimState): string {
  const out: string[] = [];
  for (const g of gpus) {
    out.push(`GPU ${g.index}: ${g.productName} (UUID: ${g.uuid})`);
    const inst = [...(state.gpus[g.uuid]?.instances ?? [])].sort(byPlacement);
    inst.forEach((m, i) => out.push(`  MIG ${m.profileName.padEnd(12)}Device ${pad2(i)}: (UUID: ${m.uuid})`));
  }
  return out.join("\n") + "\n";
}

function renderLgi(gpus: readonly XmlGpu[], state: SimState, only?: XmlGpu): string {
  const rows: string[] = [];
  for (const g of gpus) {
    if (only && g !== only) continue;
    if (g.migMode !== "enabled") continue;
    for (const m of [...(state.gpus[g.uuid]?.instances ?? [])].sort(byPlacement)) {
      if (rows.some((r) => r.startsWith(`${g.index}/${m.gi}/`))) continue; // one row per GI
      rows.push(`${g.index}/${m.gi}/|  ${String(g.index).padStart(2)}  MIG ${m.profileName.padEnd(15)}${String(m.profileId).padStart(2)}${String(m.gi).padStart(9)}          ${m.start}:${m.size}     |`);
    }
  }
  if (!gpus.some((g) => g.migMode === "enabled")) return "No MIG-enabled devices found.\n";
  if (rows.length === 0) return "No GPU instances found: Not Found\n";
  const sep = "+-------------------------------------------------------+";
  const out = [sep, "| GPU instances:                                        |", "| GPU   Name             Profile  Instance   Placement  |", "|                          ID       ID       Start:Size |", "|=======================================================|"];
  rows.forEach((r, i) => {
    if (i > 0) out.push(sep);
    out.push(r.slice(r.indexOf("|")));
  });
  out.push(sep);
  return out.join("\n") + "\n";
}

function renderLci(gpus: readonly XmlGpu[], state: SimState, only?: XmlGpu): string {
  const sep = "+--------------------------------------------------------------------+";
  const rows: string[] = [];
  for (const g of gpus) {
    if ((only && g !== only) || g.migMode !== "enabled") continue;
    for (const m of [...(state.gpus[g.uuid]?.instances ?? [])].sort(byPlacement)) {
      rows.push(`|  ${String(g.index).padStart(2)}     ${String(m.gi).padStart(3)}       MIG ${m.profileName.padEnd(13)} ${String(0).padStart(3)}       ${String(m.ci).padStart(3)}          0:${m.computeSlices}     |`);
    }
  }
  if (!gpus.some((g) => g.migMode === "enabled")) return "No MIG-enabled devices found.\n";
  if (rows.length === 0) return "No compute instances found: Not Found\n";
  const out = [sep, "| Compute instances:                                                 |", "| GPU     GPU       Name             Profile   Instance   Placement  |", "|       Instance                       ID        ID       Start:Size |", "|         ID                                                         |", "|====================================================================|"];
  rows.forEach((r, i) => {
    if (i > 0) out.push(sep);
    out.push(r);
  });
  out.push(sep);
  return out.join("\n") + "\n";
}

function migDeviceXml(m: SimInstance, index: number): string {
  const t = "\t\t\t\t";
  return [
    "\t\t\t<mig_device>",
    `${t}<index>${index}</index>`,
    `${t}<gpu_instance_id>${m.gi}</gpu_instance_id>`,
    `${t}<compute_instance_id>${m.ci}</compute_instance_id>`,
    `${t}<device_attributes>`,
    `${t}\t<shared>`,
    `${t}\t\t<multiprocessor_count>${m.multiprocessors}</multiprocessor_count>`,
    `${t}\t\t<copy_engine_count>${m.copyEngines}</copy_engine_count>`,
    `${t}\t\t<encoder_count>${m.encoders}</encoder_count>`,
    `${t}\t\t<decoder_count>${m.decoders}</decoder_count>`,
    `${t}\t\t<ofa_count>${m.ofaEngines}</ofa_count>`,
    `${t}\t\t<jpg_count>${m.jpegEngines}</jpg_count>`,
    `${t}\t</shared>`,
    `${t}</device_attributes>`,
    `${t}<fb_memory_usage>`,
    `${t}\t<total>${m.memoryMiB} MiB</total>`,
    `${t}\t<reserved>0 MiB</reserved>`,
    `${t}\t<used>0 MiB</used>`,
    `${t}\t<free>${m.memoryMiB} MiB</free>`,
    `${t}</fb_memory_usage>`,
    "\t\t\t</mig_device>",
  ].join("\n");
}

/** The fixture's XML with each GPU's <mig_devices> rendered from the state. */
function renderXml(xml: string, gpus: readonly XmlGpu[], state: SimState): string {
  let out = "";
  let rest = xml;
  for (const g of gpus) {
    const at = rest.indexOf("<gpu ");
    if (at < 0) break;
    const end = rest.indexOf("</gpu>", at);
    if (end < 0) break;
    let block = rest.slice(at, end);
    const inst = [...(state.gpus[g.uuid]?.instances ?? [])].sort(byPlacement);
    const body = inst.length === 0 ? "\n\t\t\tNone\n\t\t" : "\n" + inst.map((m, i) => migDeviceXml(m, i)).join("\n") + "\n\t\t";
    block = block.replace(/<mig_devices>[\s\S]*?<\/mig_devices>/, `<mig_devices>${body}</mig_devices>`);
    out += rest.slice(0, at) + block;
    rest = rest.slice(end);
  }
  return out + rest;
}

// ---- the state machine -----------------------------------------------------------------------------

interface Refusal {
  code: number;
  message: string;
}

function overlaps(a: { start: number; size: number }, b: { start: number; size: number }): boolean {
  return a.start < b.start + b.size && b.start < a.start + a.size;
}

/** Why the profile cannot be placed at start on this GPU now, or undefined when it can. */
function placementRefusal(p: MigProfile | undefined, start: number | undefined, existing: readonly SimInstance[]): string | undefined {
  if (!p) return "Invalid Argument";
  if (start !== undefined && !p.starts.includes(start)) return "Invalid Argument";
  const starts = start !== undefined ? [start] : p.starts;
  const used = existing.reduce((n, m) => n + (existing.findIndex((x) => x.gi === m.gi) === existing.indexOf(m) ? m.computeSlices : 0), 0);
  if (used + p.computeSlices > COMPUTE_SLICES) return "Insufficient Resources";
  if (p.name.endsWith("+me") && existing.some((m) => m.profileName.endsWith("+me"))) return "Insufficient Resources";
  const free = starts.find((s) => s + p.memorySlices <= MEMORY_SLICES && !existing.some((m) => overlaps(m, { start: s, size: p.memorySlices })));
  if (free === undefined) return "Insufficient Resources";
  return undefined;
}

function firstFree(p: MigProfile, start: number | undefined, existing: readonly SimInstance[]): number {
  const starts = start !== undefined ? [start] : p.starts;
  return starts.find((s) => !existing.some((m) => overlaps(m, { start: s, size: p.memorySlices }))) as number;
}

export interface SimOptions {
  /** Fixture node folder (nvidia-smi-q-x.xml, nvidia-smi-L.txt, nvidia-smi-mig-lgi.txt). */
  fixtureDir: string;
  /** MIG state file; absent file = the fixture's own state. Only commands that change MIG write it. */
  stateFile?: string;
  /** Injected faults (a GPU lost, removed, ECC errors; see nvsmi-sim-health.ts), re-read on every call. */
  faultsFile?: string;
}

export function createSimulatedNvidiaSmi(opts: SimOptions): SimulatedNvidiaSmi {
  const files = readFixture(opts.fixtureDir);
  const gpus = parseNvidiaSmiXml(files.xml, "fixture").gpus;

  function load(): SimState | undefined {
    if (!opts.stateFile || !existsSync(opts.stateFile)) return undefined;
    const s = JSON.parse(readFileSync(opts.stateFile, "utf8")) as SimState;
    if (s.version !== 1 || typeof s.gpus !== "object") throw new Error(`${opts.stateFile}: not a simulated nvidia-smi state file`);
    return s;
  }

  function save(s: SimState): void {
    if (!opts.stateFile) throw new Error("the simulated nvidia-smi has no state file: MIG changes cannot be kept");
    mkdirSync(path.dirname(opts.stateFile), { recursive: true });
    const tmp = `${opts.stateFile}.sim-tmp-${process.pid}`;
    const fd = openSync(tmp, "w", 0o600);
    try {
      writeFileSync(fd, JSON.stringify(s, null, 1) + "\n");
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, opts.stateFile);
  }

  /** Serializes writers across processes (the executable may run several times at once). */
  function locked<T>(fn: () => T): T {
    if (!opts.stateFile) return fn();
    const lock = `${opts.stateFile}.lock`;
    mkdirSync(path.dirname(lock), { recursive: true });
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        closeSync(openSync(lock, "wx"));
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        // A holder killed with SIGKILL leaves its lock: older than 10 s means nobody holds it.
        const age = Date.now() - (statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
        if (age > 10_000 || Date.now() > deadline) rmSync(lock, { force: true });
        else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
      }
    }
    try {
      return fn();
    } finally {
      rmSync(lock, { force: true });
    }
  }

  const current = (): SimState => load() ?? initialState(files);

  function selectGpu(id: string | undefined): XmlGpu[] | Refusal {
    if (id === undefined) return [...gpus];
    const g = gpus.find((x) => String(x.index) === id || x.uuid === id || x.pciBusId === id.toLowerCase().replace(/^0000(?=[0-9a-f]{4}:)/, "") || x.pciBusId === id.toLowerCase().replace(/^00000000:/, "0000:"));
    if (!g) return { code: 6, message: `No devices were found` };
    return [g];
  }

  function create(targets: XmlGpu[], tuples: string, withCi: boolean): SimResult {
    return locked(() => {
      const s = current();
      const out: string[] = [];
      for (const g of targets) {
        if (g.migMode !== "enabled") {
          return { stdout: out.join("\n") + (out.length ? "\n" : ""), stderr: `Unable to create a GPU instance on GPU ${pad2(g.index)}: MIG mode is not enabled (Not Supported)\nFailed to create GPU instances: Not Supported\n`, code: 3 };
        }
        const family = migFamilyFor(g.pciDeviceId, g.productName);
        const inst = (s.gpus[g.uuid] ??= { instances: [] }).instances;
        for (const tuple of tuples.split(",")) {
          const [who, where] = tuple.split(":");
          const p = family?.profiles.find((x) => String(x.profileId) === who || x.name === who);
          const start = where === undefined ? undefined : /^\d+$/.test(where) ? Number(where) : -1;
          const why = placementRefusal(p, start, inst);
          if (why || !p) {
            save(s);
            return {
              stdout: out.join("\n") + (out.length ? "\n" : ""),
              stderr: `Unable to create a GPU instance on GPU ${pad2(g.index)} using profile ${who}: ${why}\nFailed to create GPU instances: ${why}\n`,
              code: why === "Invalid Argument" ? 2 : 255,
            };
          }
          const at = firstFree(p, start, inst);
          const gi = giIdFor(at, p.memorySlices);
          s.seq++;
          const m: SimInstance = {
            gi,
            ci: 0,
            profileId: p.profileId,
            profileName: p.name,
            start: at,
            size: p.memorySlices,
            computeSlices: p.computeSlices,
            uuid: migUuid(g.uuid, gi, 0, s.seq),
            memoryMiB: Math.round(profileMemoryBytes(p, g.memoryBytes) / MIB),
            ...enginesOf(p),
          };
          out.push(`Successfully created GPU instance ID ${pad2(gi)} on GPU ${pad2(g.index)} using profile MIG ${p.name} (ID ${pad2(p.profileId)})`);
          if (withCi) {
            inst.push(m);
            out.push(`Successfully created compute instance ID ${pad2(0)} on GPU ${pad2(g.index)} GPU instance ID ${pad2(gi)} using profile MIG ${p.name} (ID ${pad2(0)})`);
          } else {
            // A GI without a compute instance: kept with ci -1 (no device until -cci). Not used by Tessera.
            inst.push({ ...m, ci: -1 });
          }
        }
      }
      save(s);
      return { stdout: out.join("\n") + "\n", stderr: "", code: 0 };
    });
  }

  function destroy(targets: XmlGpu[], what: "ci" | "gi", giList: string | undefined, ciList: string | undefined): SimResult {
    return locked(() => {
      const s = current();
      const out: string[] = [];
      for (const g of targets) {
        if (g.migMode !== "enabled") return { stdout: "", stderr: "No MIG-enabled devices found.\n", code: 6 };
        const inst = (s.gpus[g.uuid] ??= { instances: [] }).instances;
        const gis = giList === undefined ? [...new Set(inst.map((m) => m.gi))] : giList.split(",").map(Number);
        for (const gi of gis) {
          const ofGi = inst.filter((m) => m.gi === gi);
          if (ofGi.length === 0) {
            save(s);
            const noun = what === "ci" ? "compute instances" : "GPU instances";
            return { stdout: out.join("\n") + (out.length ? "\n" : ""), stderr: `Failed to destroy ${noun}: Not Found\n`, code: 6 };
          }
          if (what === "ci") {
            const cis = ciList === undefined ? ofGi.map((m) => m.ci) : ciList.split(",").map(Number);
            for (const ci of cis) {
              const m = ofGi.find((x) => x.ci === ci && ci >= 0);
              if (!m) {
                save(s);
                return { stdout: out.join("\n") + (out.length ? "\n" : ""), stderr: `Unable to destroy compute instance ID ${pad2(ci)} from GPU ${pad2(g.index)} GPU instance ID ${pad2(gi)}: Not Found\nFailed to destroy compute instances: Not Found\n`, code: 6 };
              }
              m.ci = -1; // the GI stays, without a compute instance
              out.push(`Successfully destroyed compute instance ID ${pad2(ci)} from GPU ${pad2(g.index)} GPU instance ID ${pad2(gi)}`);
            }
          } else {
            if (ofGi.some((m) => m.ci >= 0)) {
              save(s);
              return { stdout: out.join("\n") + (out.length ? "\n" : ""), stderr: `Unable to destroy GPU instance ID ${pad2(gi)} from GPU ${pad2(g.index)}: In use by another client\nFailed to destroy GPU instances: In use by another client\n`, code: 255 };
            }
            s.gpus[g.uuid] = { instances: inst.filter((m) => m.gi !== gi) };
            out.push(`Successfully destroyed GPU instance ID ${pad2(gi)} from GPU ${pad2(g.index)}`);
          }
        }
      }
      save(s);
      return { stdout: out.join("\n") + "\n", stderr: "", code: 0 };
    });
  }

  /** The state as the -q -x / -L views see it: GIs without a compute instance have no MIG device. */
  const visible = (s: SimState): SimState => ({ ...s, gpus: Object.fromEntries(Object.entries(s.gpus).map(([k, v]) => [k, { instances: v.instances.filter((m) => m.ci >= 0) }])) });

  const usage = (): SimResult => ({ stdout: "", stderr: "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n", code: 2 });

  const policyDeps: SimPolicyDeps<SimState> = { select: selectGpu, current, change: (fn) => locked(() => fn(current(), save)) };
  const xmlComputeMode = (g: XmlGpu): string | undefined => /<compute_mode>([^<]*)<\/compute_mode>/.exec(gpuBlockOf(files.xml, g.pciBusId))?.[1];

  return {
    run(args) {
      const faults = readFaults(opts.faultsFile);
      const health = answerQuery(args, files.xml, gpus, faults, { select: selectGpu, computeMode: (g) => QUERY_COMPUTE_MODE[computeModeOf(current(), g, xmlComputeMode(g))] });
      if (health) return health;
      return withoutRemoved(args, runCommand(args), gpus, faults);
    },
  };

  function runCommand(args: readonly string[]): SimResult {
    {
      const a = [...args];
      const has = (...names: string[]): boolean => names.some((n) => a.includes(n));
      const value = (...names: string[]): string | undefined => {
        for (const n of names) {
          const i = a.indexOf(n);
          if (i >= 0) return a[i + 1];
        }
        return undefined;
      };
      const state = load();
      if (a[0] === "compute-policy") return computePolicy(policyDeps, a, value, has, usage);
      const mode = value("-c", "--compute-mode") ?? a.find((x) => x.startsWith("--compute-mode="))?.slice("--compute-mode=".length);
      if (a[0] !== "mig" && mode !== undefined) return setComputeMode(policyDeps, value("-i", "--id"), mode);
      if (a[0] !== "mig") {
        if (has("-q", "--query") && has("-x", "--xml-format")) {
          return { stdout: state ? renderXml(files.xml, gpus, visible(state)) : files.xml, stderr: "", code: 0 };
        }
        if (has("-L", "--list-gpus")) return { stdout: state || files.list === undefined ? renderList(gpus, visible(state ?? initialState(files))) : files.list, stderr: "", code: 0 };
        return usage();
      }
      const sel = selectGpu(value("-i", "--id"));
      if (!Array.isArray(sel)) return { stdout: "", stderr: sel.message + "\n", code: sel.code };
      const only = value("-i", "--id") !== undefined ? sel[0] : undefined;
      if (has("-lgi", "--list-gpu-instances")) {
        const text = renderLgi(gpus, state ?? initialState(files), only);
        return { stdout: text, stderr: "", code: text.startsWith("No ") ? 6 : 0 };
      }
      if (has("-lci", "--list-compute-instances")) {
        const text = renderLci(gpus, visible(state ?? initialState(files)), only);
        return { stdout: text, stderr: "", code: text.startsWith("No ") ? 6 : 0 };
      }
      const cgi = value("-cgi", "--create-gpu-instance");
      if (cgi !== undefined) return create(sel, cgi, has("-C", "--default-compute-instance"));
      if (has("-dci", "--destroy-compute-instance")) return destroy(sel, "ci", value("-gi", "--gpu-instance-id"), value("-ci", "--compute-instance-id"));
      if (has("-dgi", "--destroy-gpu-instance")) return destroy(sel, "gi", value("-gi", "--gpu-instance-id"), undefined);
      return usage();
    }
  }
}
