// The simulated nvidia-smi's health side: `--query-gpu=<fields> --format=csv,noheader,nounits`
// answered from the fixture's own XML (ECC counters, retired pages, remapped rows, clocks event
// reasons of each <gpu> block), and faults a test or an operator injects through a JSON file:
//   { "lost": ["0000:53:00.0"], "removed": ["0000:64:00.0"], "ecc": { "0000:75:00.0": 2 },
//     "remapPending": [...], "hwSlowdown": [...] }
// lost: the GPU's row is replaced by the driver's "Unable to determine the device handle for GPU
// <bus>: GPU is lost.  Reboot the system to recover this GPU" line and the call exits 15 (what
// nvidia-smi documents for a GPU that fell off the bus); removed: the GPU is gone from `-q -x`, `-L`
// and queries, as when the driver no longer enumerates it. What is simulated, not captured: the
// exact placement of the lost line among the rows, and `-L` keeping the remaining GPUs' indexes.
import { existsSync, readFileSync } from "node:fs";
import type { XmlGpu } from "./nvsmi-xml.js";

export interface SimFaults {
  lost?: string[];
  removed?: string[];
  ecc?: Record<string, number>;
  remapPending?: string[];
  hwSlowdown?: string[];
}

export interface SimAnswer {
  stdout: string;
  stderr: string;
  code: number;
}

export function readFaults(file: string | undefined): SimFaults {
  if (!file || !existsSync(file)) return {};
  const f = JSON.parse(readFileSync(file, "utf8")) as SimFaults;
  if (typeof f !== "object" || f === null) throw new Error(`${file}: not a simulated nvidia-smi faults file`);
  return f;
}

const has = (list: string[] | undefined, g: XmlGpu): boolean => (list ?? []).some((x) => x.toLowerCase() === g.pciBusId || x === g.uuid);
/** nvidia-smi prints bus ids with an 8-digit domain, upper case. */
const smiBusId = (g: XmlGpu): string => `0000${g.pciBusId}`.toUpperCase();

/** The <gpu> block of one GPU (by its lower-case bus id, 0000:53:00.0) in the fixture XML. */
export function gpuBlockOf(xml: string, pciBusId: string): string {
  const at = xml.toUpperCase().indexOf(`<GPU ID="0000${pciBusId.toUpperCase()}">`);
  if (at < 0) return "";
  const end = xml.indexOf("</gpu>", at);
  return xml.slice(at, end < 0 ? undefined : end);
}

function elem(block: string, path: string[]): string | undefined {
  let b = block;
  for (const tag of path) {
    const m = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(b);
    if (!m) return undefined;
    b = m[1] as string;
  }
  return b.trim();
}

const csv = (v: string | undefined): string => (v === undefined || v === "N/A" || v === "" ? "[N/A]" : v);

/** What the query answers from the simulator's state rather than the XML. */
export interface QueryState {
  /** `-i <id>`: the GPUs it names, or a refusal. */
  select(id: string | undefined): XmlGpu[] | { code: number; message: string };
  /** `compute_mode` as the tool prints it (Default, Exclusive_Process, Prohibited). */
  computeMode(g: XmlGpu): string;
}

function field(name: string, g: XmlGpu, block: string, faults: SimFaults, state?: QueryState): string | undefined {
  switch (name) {
    case "compute_mode":
      return state?.computeMode(g);
    case "pci.bus_id":
      return smiBusId(g);
    case "uuid":
      return g.uuid;
    case "index":
      return String(g.index);
    case "ecc.errors.uncorrected.volatile.total": {
      const injected = Object.entries(faults.ecc ?? {}).find(([k]) => k.toLowerCase() === g.pciBusId || k === g.uuid)?.[1];
      if (injected !== undefined) return String(injected);
      const vol = ["dram_uncorrectable", "sram_uncorrectable_parity", "sram_uncorrectable_secded"].map((t) => elem(block, ["ecc_errors", "volatile", t]));
      if (vol.every((v) => v === undefined || !/^\d+$/.test(v))) return "[N/A]";
      return String(vol.reduce((n, v) => n + (v && /^\d+$/.test(v) ? Number(v) : 0), 0));
    }
    case "retired_pages.pending":
      return csv(elem(block, ["retired_pages", "pending_retirement"]));
    case "remapped_rows.pending":
      return has(faults.remapPending, g) ? "Yes" : csv(elem(block, ["remapped_rows", "remapped_row_pending"]));
    case "remapped_rows.failure":
      return csv(elem(block, ["remapped_rows", "remapped_row_failure"]));
    case "clocks_event_reasons.hw_slowdown":
      return has(faults.hwSlowdown, g) ? "Active" : csv(elem(block, ["clocks_event_reasons", "clocks_event_reason_hw_slowdown"]));
    case "clocks_event_reasons.hw_thermal_slowdown":
      return csv(elem(block, ["clocks_event_reasons", "clocks_event_reason_hw_thermal_slowdown"]));
    case "clocks_event_reasons.hw_power_brake_slowdown":
      return csv(elem(block, ["clocks_event_reasons", "clocks_event_reason_hw_power_brake_slowdown"]));
    default:
      return undefined;
  }
}

/** `--query-gpu=...`; undefined when the arguments are not a GPU query. */
export function answerQuery(args: readonly string[], xml: string, all: readonly XmlGpu[], faults: SimFaults, state?: QueryState): SimAnswer | undefined {
  const q = args.find((a) => a.startsWith("--query-gpu="));
  if (!q) return undefined;
  const fields = q.slice("--query-gpu=".length).split(",");
  const format = args.find((a) => a.startsWith("--format="));
  if (format !== "--format=csv,noheader,nounits") return { stdout: "", stderr: `Only --format=csv,noheader,nounits is simulated (got ${format ?? "none"})\n`, code: 2 };
  const i = args.findIndex((a) => a === "-i" || a === "--id");
  const sel = i >= 0 && state ? state.select(args[i + 1]) : [...all];
  if (!Array.isArray(sel)) return { stdout: "", stderr: sel.message + "\n", code: sel.code };
  const gpus: readonly XmlGpu[] = sel;
  const lines: string[] = [];
  let code = 0;
  for (const g of gpus) {
    if (has(faults.removed, g)) continue;
    if (has(faults.lost, g)) {
      lines.push(`Unable to determine the device handle for GPU ${smiBusId(g).slice(4)}: GPU is lost.  Reboot the system to recover this GPU`);
      code = 15;
      continue;
    }
    const block = gpuBlockOf(xml, g.pciBusId);
    const cells: string[] = [];
    for (const f of fields) {
      const v = field(f, g, block, faults, state);
      if (v === undefined) return { stdout: "", stderr: `Field "${f}" is not a valid field to query.\n\n`, code: 2 };
      cells.push(v);
    }
    lines.push(cells.join(", "));
  }
  return { stdout: lines.length ? lines.join("\n") + "\n" : "", stderr: "", code };
}

/** Removed GPUs vanish from `-q -x` and `-L` answers. */
export function withoutRemoved(args: readonly string[], r: SimAnswer, gpus: readonly XmlGpu[], faults: SimFaults): SimAnswer {
  const gone = gpus.filter((g) => has(faults.removed, g));
  if (gone.length === 0 || r.code !== 0) return r;
  let out = r.stdout;
  if (args.includes("-x")) {
    for (const g of gone) out = out.replace(new RegExp(`\\s*<gpu id="${smiBusId(g)}">[\\s\\S]*?</gpu>`, "i"), "");
    out = out.replace(/<attached_gpus>\d+<\/attached_gpus>/, `<attached_gpus>${gpus.length - gone.length}</attached_gpus>`);
  } else if (args.includes("-L")) {
    const lines = out.split("\n");
    const kept: string[] = [];
    let skipping = false;
    for (const l of lines) {
      if (l.startsWith("GPU ")) skipping = gone.some((g) => l.includes(`(UUID: ${g.uuid})`));
      if (!skipping) kept.push(l);
    }
    out = kept.join("\n");
  }
  return { ...r, stdout: out };
}
