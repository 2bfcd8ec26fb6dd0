// Periodic health queries through the nvidia-smi seam discovery uses (the real executable, or a
// fixture's simulated one): one `--query-gpu` call for every GPU, CSV without header or units.
// A GPU the driver lost prints, instead of its row,
//   Unable to determine the device handle for GPU 0000:3B:00.0: GPU is lost.  Reboot the system to recover this GPU
// (and nvidia-smi exits 15). A GPU with neither a row nor such a line, or every GPU when the call
// times out, did not answer. Values: numbers, Yes/No, Active/Not Active, [N/A] when unsupported.
import type { ExecFn, ExecOptions } from "../discovery/exec.js";
import type { TaintEffect } from "./types.js";

export const HEALTH_QUERY_FIELDS = [
  "pci.bus_id",
  "ecc.errors.uncorrected.volatile.total",
  "retired_pages.pending",
  "remapped_rows.pending",
  "remapped_rows.failure",
  "clocks_event_reasons.hw_slowdown",
  "clocks_event_reasons.hw_thermal_slowdown",
  "clocks_event_reasons.hw_power_brake_slowdown",
] as const;

export const HEALTH_QUERY_ARGS = [`--query-gpu=${HEALTH_QUERY_FIELDS.join(",")}`, "--format=csv,noheader,nounits"] as const;

/** One GPU's answer; `values` by field name as printed. */
export interface GpuQueryResult {
  pciBusId: string;
  /** "ok", the driver's reason when it lost the GPU, or "no answer". */
  status: "ok" | "lost" | "no-answer";
  detail?: string;
  values?: Record<string, string>;
}

/** A condition a query result shows, as a taint reason with its effect. */
export interface QueryCondition {
  reason: "gpu-lost" | "unresponsive" | "ecc-uncorrectable" | "row-remap-failure" | "row-remap-pending" | "retired-pages-pending" | "hw-slowdown";
  effect: TaintEffect;
  value: string;
  message: string;
}

/** nvidia-smi's bus id (00000000:3B:00.0) in sysfs form (0000:3b:00.0). */
export const normalBusId = (id: string): string => id.trim().toLowerCase().replace(/^0000(?=[0-9a-f]{4}:)/, "");

const LOST = /Unable to determine the device handle for GPU ?([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]): (.*)$/;

/** Parses one answer for the GPUs we expect (by sysfs bus id). */
export function parseHealthQuery(stdout: string, stderr: string, expected: readonly string[]): GpuQueryResult[] {
  const rows = new Map<string, GpuQueryResult>();
  for (const raw of `${stdout}\n${stderr}`.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const lost = LOST.exec(line);
    if (lost) {
      const id = normalBusId(lost[1] as string);
      rows.set(id, { pciBusId: id, status: "lost", detail: (lost[2] as string).replace(/\s+/g, " ").slice(0, 200) });
      continue;
    }
    const cells = line.split(",").map((c) => c.trim());
    if (cells.length !== HEALTH_QUERY_FIELDS.length) continue;
    const id = normalBusId(cells[0] as string);
    const values: Record<string, string> = {};
    HEALTH_QUERY_FIELDS.forEach((f, i) => (values[f] = (cells[i] as string).slice(0, 32)));
    if (!rows.has(id)) rows.set(id, { pciBusId: id, status: "ok", values });
  }
  return expected.map((id) => rows.get(id) ?? { pciBusId: id, status: "no-answer", detail: "no row for this GPU in the nvidia-smi answer" });
}

/** The conditions one GPU's answer shows (empty: healthy by every query). */
export function queryConditions(r: GpuQueryResult): QueryCondition[] {
  if (r.status === "lost") return [{ reason: "gpu-lost", effect: "NoExecute", value: "lost", message: `nvidia-smi: ${r.detail ?? "GPU is lost"}` }];
  if (r.status === "no-answer") return [{ reason: "unresponsive", effect: "NoSchedule", value: "no-answer", message: `nvidia-smi: ${r.detail ?? "no answer"}` }];
  const v = r.values ?? {};
  const out: QueryCondition[] = [];
  const ecc = Number(v["ecc.errors.uncorrected.volatile.total"]);
  if (Number.isFinite(ecc) && ecc > 0) out.push({ reason: "ecc-uncorrectable", effect: "NoExecute", value: String(ecc), message: `nvidia-smi: ${ecc} uncorrectable ECC error(s) since the driver loaded` });
  if (v["remapped_rows.failure"] === "Yes") out.push({ reason: "row-remap-failure", effect: "NoExecute", value: "yes", message: "nvidia-smi: row remapping failed" });
  if (v["remapped_rows.pending"] === "Yes") out.push({ reason: "row-remap-pending", effect: "NoSchedule", value: "yes", message: "nvidia-smi: a row remap is pending (takes effect at the next GPU reset)" });
  if (v["retired_pages.pending"] === "Yes") out.push({ reason: "retired-pages-pending", effect: "NoSchedule", value: "yes", message: "nvidia-smi: a page retirement is pending (takes effect at the next GPU reset)" });
  const slow = ["hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"].filter((k) => v[`clocks_event_reasons.${k}`] === "Active");
  if (slow.length > 0) out.push({ reason: "hw-slowdown", effect: "NoSchedule", value: slow[0]?.replace(/_/g, "-") ?? "hw-slowdown", message: `nvidia-smi: clocks held down by hardware (${slow.join(", ")})` });
  return out;
}

/** Runs the query; a timeout or a failure to run makes every expected GPU a "no-answer". */
export async function runHealthQuery(exec: ExecFn, bin: string, expected: readonly string[], opts: ExecOptions): Promise<GpuQueryResult[]> {
  try {
    const r = await exec(bin, HEALTH_QUERY_ARGS, opts);
    return parseHealthQuery(r.stdout, r.stderr, expected);
  } catch (err) {
    const why = (err as Error).message.slice(0, 200);
    return expected.map((id) => ({ pciBusId: id, status: "no-answer" as const, detail: why }));
  }
}
