// `tessera diag health`: every device this node publishes, its health, the evidence behind it (the
// last XID with its time, the last nvidia-smi query), its taints and the prepared claims using it.
// It reads what the running agent keeps in the state dir (health.json, the checkpoint) next to a
// fresh discovery; GPUs the agent still publishes as gone appear too. No agent running: the devices
// show UNKNOWN (no health check has answered) unless an earlier run left records.
import { promises as fsp } from "node:fs";
import type { CliIO } from "./io.js";
import { decodeCheckpoint } from "../plugin/checkpoint.js";
import { createKeeper, scopeGpu, TAINT_KEY_PREFIX, type GpuEvidence, type HealthFile } from "../health/keeper.js";
import { readHealthFile } from "../health/store.js";
import type { HealthTarget } from "../health/types.js";
import { healthTargets } from "../slices/build.js";
import type { DeviceTaint } from "../kube/types.js";
import { discover } from "./diag-node.js";
import { table } from "./view.js";

export interface DeviceHealthReport {
  device: string;
  gpu: string;
  gi?: number;
  health: string;
  message: string;
  taints: DeviceTaint[];
  evidence: GpuEvidence;
  claims: string[];
}

async function preparedClaims(file: string): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  const text = await fsp.readFile(file, "utf8").catch(() => undefined);
  const d = text === undefined ? undefined : decodeCheckpoint(text);
  if (!d?.ok) return out;
  for (const [uid, e] of Object.entries(d.data.claims)) {
    for (const dev of e.devices) out.set(dev.deviceName, [...(out.get(dev.deviceName) ?? []), `${e.namespace}/${e.name} (${uid.slice(0, 8)}, ${e.state})`]);
  }
  return out;
}

/** The rows: published devices, then GPUs only the health records still know (gone from discovery). */
export function healthReport(targets: readonly HealthTarget[], file: HealthFile | undefined, claims: ReadonlyMap<string, string[]>): DeviceHealthReport[] {
  const keeper = createKeeper({ now: () => new Date(), holdDownMs: Number.MAX_SAFE_INTEGER, ...(file ? { initial: file } : {}) });
  const all = [...targets];
  for (const r of file?.taints ?? []) {
    const gpu = scopeGpu(r.scope);
    if (!all.some((t) => t.gpu === gpu)) all.push({ device: gpu, gpu });
  }
  return all.map((t) => {
    const h = keeper.healthOf(t);
    return { ...t, health: h.health, message: h.message, taints: keeper.taintsFor(t), evidence: keeper.evidence(t.gpu), claims: claims.get(t.device) ?? [] };
  });
}

function evidenceText(e: GpuEvidence): string {
  const parts: string[] = [];
  if (e.lastXid) parts.push(`XID ${e.lastXid.code}${e.lastXid.gi !== undefined ? ` (GI ${e.lastXid.gi})` : ""} at ${e.lastXid.at}`);
  if (e.query) parts.push(`nvidia-smi ${e.query.status} at ${e.query.at}${e.query.values ? ` (ECC uncorrected ${e.query.values["ecc.errors.uncorrected.volatile.total"] ?? "?"}, remap pending ${e.query.values["remapped_rows.pending"] ?? "?"})` : e.query.detail ? `: ${e.query.detail}` : ""}`);
  if (e.goneSince) parts.push(`gone from discovery since ${e.goneSince}`);
  return parts.join("; ") || "-";
}

export async function runHealth(argv: string[], io: CliIO): Promise<number> {
  const { cfg, inv, format } = await discover(argv, io, "diag health");
  const loaded = await readHealthFile(cfg.stateDir);
  const rows = healthReport(healthTargets(inv, cfg.migMode, cfg.gpuSharing), loaded.file, await preparedClaims(cfg.checkpointFile));
  if (format === "json") {
    io.stdout(JSON.stringify({ node: cfg.nodeName, stateDir: cfg.stateDir, ...(loaded.problem ? { problem: loaded.problem } : {}), devices: rows }, null, 2) + "\n");
    return 0;
  }
  const taintText = (ts: DeviceTaint[]): string => ts.map((x) => `${x.key.slice(TAINT_KEY_PREFIX.length)}=${x.value ?? ""}:${x.effect}`).join(",") || "-";
  io.stdout(`node ${cfg.nodeName}  health records ${loaded.file ? cfg.stateDir : "none yet (is the agent running with this --state-dir?)"}${loaded.problem ? `  (${loaded.problem})` : ""}\n`);
  io.stdout(table([["DEVICE", "HEALTH", "TAINTS (gpu.tessera.dev/...)", "EVIDENCE", "PREPARED CLAIMS"], ...rows.map((r) => [r.device, r.health, taintText(r.taints), evidenceText(r.evidence), r.claims.join(", ") || "-"])]));
  const why = rows.filter((r) => r.taints.length > 0 && r.device === r.gpu);
  for (const r of why) io.stdout(`${r.device}: ${r.message}\n`);
  return 0;
}
