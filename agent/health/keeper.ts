// The taint keeper: turns evidence (XID events, query conditions, a GPU gone from discovery) into
// taint records, clears a record only once its condition has been absent for the hold-down
// period, and answers which taints and which health state each published device has. Pure state
// over an injected clock; persistence is the caller's (store.ts), through `toFile` / `fromFile`.
//   scope: the GPU's device name (gpu-3) or one MIG GPU instance of it (gpu-3/gi5)
//   a GPU's records cover all of its devices (MIG devices, placements); a GI's only that instance
import type { DeviceTaint } from "../kube/types.js";
import { EFFECT_SEVERITY, type DeviceHealthEntry, type DeviceHealthState, type HealthSource, type HealthTarget, type TaintEffect } from "./types.js";

/** Every taint Tessera sets has this key prefix (docs/contracts.md). */
export const TAINT_KEY_PREFIX = "gpu.tessera.dev/";
/** resource.k8s.io/v1 DeviceTaintsMaxLength. */
export const MAX_TAINTS_PER_DEVICE = 16;

export interface TaintRecord {
  scope: string;
  /** The key's suffix: xid, gpu-lost, ecc-uncorrectable, gone, ... */
  reason: string;
  effect: TaintEffect;
  value: string;
  message: string;
  source: HealthSource;
  timeAdded: string;
  /** When the condition was last seen (an XID: its arrival). The hold-down runs from here. */
  lastSeen: string;
  /** A level condition seen by the latest check; XID events are never "active" after they arrive. */
  active: boolean;
}

export interface XidEvidence {
  code: number;
  at: string;
  effect: TaintEffect;
  message: string;
  gi?: number;
  ci?: number;
}

export interface QueryEvidence {
  at: string;
  status: string;
  detail?: string;
  values?: Record<string, string>;
}

export interface GpuEvidence {
  lastXid?: XidEvidence;
  query?: QueryEvidence;
  goneSince?: string;
}

/** The persisted form (health.json in the state dir). */
export interface HealthFile {
  version: 1;
  bootId?: string;
  /** Sequence number of the last kernel log record handled in this boot. */
  kmsgSeq?: number;
  taints: TaintRecord[];
  evidence: Record<string, GpuEvidence>;
}

export interface Transition {
  /** changed: the same taint key got another effect or value. */
  kind: "tainted" | "changed" | "cleared";
  record: TaintRecord;
}

export const gpuScope = (gpu: string, gi?: number): string => (gi === undefined ? gpu : `${gpu}/gi${gi}`);
const scopeGpu = (scope: string): string => scope.split("/")[0] as string;

/** A taint value is a label value: 63 characters of [A-Za-z0-9-_.], alphanumeric at both ends. */
export function taintValue(v: string): string {
  const s = v.replace(/[^A-Za-z0-9._-]+/g, "-").slice(0, 63).replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, "");
  return s;
}

export interface Keeper {
  /** An XID on a GPU (or one of its GIs); lower-severity XIDs do not replace a worse one. */
  xid(gpu: string, e: { code: number; gi?: number; ci?: number; effect: TaintEffect; message: string }): Transition[];
  /** The full set of conditions one source sees now for one GPU scope (level-triggered). */
  level(scope: string, source: HealthSource, conditions: readonly { reason: string; effect: TaintEffect; value: string; message: string }[]): Transition[];
  query(gpu: string, e: Omit<QueryEvidence, "at">): void;
  gone(gpu: string, since: boolean): void;
  /** Clears records inactive for the hold-down period. */
  sweep(): Transition[];
  taintsFor(t: HealthTarget): DeviceTaint[];
  recordsFor(t: HealthTarget): TaintRecord[];
  healthOf(t: HealthTarget): DeviceHealthEntry;
  evidence(gpu: string): GpuEvidence;
  file(): HealthFile;
  setKmsgSeq(seq: number): void;
}

export function createKeeper(opts: { now: () => Date; holdDownMs: number; initial?: HealthFile; bootId?: string }): Keeper {
  const initial = opts.initial;
  const records: TaintRecord[] = initial ? initial.taints.map((r) => ({ ...r })) : [];
  const evidence: Record<string, GpuEvidence> = initial ? structuredClone(initial.evidence) : {};
  // A record file from another boot still holds its taints (a GPU that failed before a reboot is
  // suspect until proven healthy), but its kernel log sequence numbers mean nothing now.
  let kmsgSeq = initial && initial.bootId === opts.bootId ? initial.kmsgSeq : undefined;
  const iso = (): string => opts.now().toISOString();
  const ev = (gpu: string): GpuEvidence => (evidence[gpu] ??= {});
  const find = (scope: string, reason: string): TaintRecord | undefined => records.find((r) => r.scope === scope && r.reason === reason);

  function recordsFor(t: HealthTarget): TaintRecord[] {
    return records
      .filter((r) => r.scope === t.gpu || (t.gi !== undefined && r.scope === gpuScope(t.gpu, t.gi)))
      .sort((a, b) => EFFECT_SEVERITY[b.effect] - EFFECT_SEVERITY[a.effect] || a.reason.localeCompare(b.reason))
      .slice(0, MAX_TAINTS_PER_DEVICE);
  }

  return {
    xid(gpu, e) {
      const at = iso();
      ev(gpu).lastXid = { code: e.code, at, effect: e.effect, message: e.message, ...(e.gi !== undefined ? { gi: e.gi } : {}), ...(e.ci !== undefined ? { ci: e.ci } : {}) };
      const scope = gpuScope(gpu, e.gi);
      const r = find(scope, "xid");
      if (r && EFFECT_SEVERITY[r.effect] > EFFECT_SEVERITY[e.effect]) return [];
      if (r) {
        const changed = r.effect !== e.effect || r.value !== taintValue(String(e.code));
        Object.assign(r, { effect: e.effect, value: taintValue(String(e.code)), message: e.message, lastSeen: at });
        return changed ? [{ kind: "changed", record: r }] : [];
      }
      const rec: TaintRecord = { scope, reason: "xid", effect: e.effect, value: taintValue(String(e.code)), message: e.message, source: "kmsg", timeAdded: at, lastSeen: at, active: false };
      records.push(rec);
      return [{ kind: "tainted", record: rec }];
    },
    level(scope, source, conditions) {
      const at = iso();
      const out: Transition[] = [];
      for (const c of conditions) {
        const r = find(scope, c.reason);
        if (r) {
          if (r.effect !== c.effect || r.value !== taintValue(c.value)) out.push({ kind: "changed", record: r });
          Object.assign(r, { effect: c.effect, value: taintValue(c.value), message: c.message, lastSeen: at, active: true, source });
        } else {
          const rec: TaintRecord = { scope, reason: c.reason, effect: c.effect, value: taintValue(c.value), message: c.message, source, timeAdded: at, lastSeen: at, active: true };
          records.push(rec);
          out.push({ kind: "tainted", record: rec });
        }
      }
      for (const r of records) if (r.scope === scope && r.source === source && r.active && !conditions.some((c) => c.reason === r.reason)) r.active = false;
      return out;
    },
    query(gpu, e) {
      ev(gpu).query = { at: iso(), ...e };
    },
    gone(gpu, isGone) {
      if (isGone) ev(gpu).goneSince ??= iso();
      else delete ev(gpu).goneSince;
    },
    sweep() {
      const now = opts.now().getTime();
      const out: Transition[] = [];
      for (let i = records.length - 1; i >= 0; i--) {
        const r = records[i] as TaintRecord;
        if (!r.active && now - Date.parse(r.lastSeen) >= opts.holdDownMs) {
          records.splice(i, 1);
          out.push({ kind: "cleared", record: r });
        }
      }
      return out;
    },
    recordsFor,
    taintsFor: (t) => recordsFor(t).map((r) => ({ key: TAINT_KEY_PREFIX + r.reason, ...(r.value ? { value: r.value } : {}), effect: r.effect, timeAdded: r.timeAdded })),
    healthOf(t) {
      const rs = recordsFor(t);
      const q = evidence[t.gpu]?.query;
      const bad = rs.filter((r) => r.effect !== "None");
      const health: DeviceHealthState = bad.length > 0 ? "UNHEALTHY" : q === undefined && rs.length === 0 ? "UNKNOWN" : "HEALTHY";
      const message = rs.map((r) => `${TAINT_KEY_PREFIX}${r.reason}=${r.value}:${r.effect} (${r.active ? "active" : `last seen ${r.lastSeen}`}): ${r.message}`).join("; ");
      const last = [...rs.map((r) => r.lastSeen), q?.at].filter((x): x is string => x !== undefined).sort().pop();
      return { device: t.device, health, lastUpdated: Math.floor((last ? Date.parse(last) : opts.now().getTime()) / 1000), message: message || (q === undefined ? "no health check has answered yet" : "") };
    },
    evidence: (gpu) => structuredClone(evidence[gpu] ?? {}),
    file: () => ({ version: 1, ...(opts.bootId !== undefined ? { bootId: opts.bootId } : {}), ...(kmsgSeq !== undefined ? { kmsgSeq } : {}), taints: records.map((r) => ({ ...r })), evidence: structuredClone(evidence) }),
    setKmsgSeq(seq) {
      kmsgSeq = seq;
    },
  };
}

/** Taints of every target that has any, by device name: what the slices publish. */
export function taintsByDevice(keeper: Keeper, targets: readonly HealthTarget[]): Map<string, DeviceTaint[]> {
  const out = new Map<string, DeviceTaint[]>();
  for (const t of targets) {
    const ts = keeper.taintsFor(t);
    if (ts.length > 0) out.set(t.device, ts);
  }
  return out;
}

/** The taints a health file holds now, by device name, as the agent publishes them (no clearing:
 *  that is the running agent's hold-down to decide). `diag slices` and `diag health` read this. */
export function recordedTaints(file: HealthFile | undefined, targets: readonly HealthTarget[], now: () => Date = () => new Date()): Map<string, DeviceTaint[]> {
  if (!file) return new Map();
  return taintsByDevice(createKeeper({ now, holdDownMs: Number.MAX_SAFE_INTEGER, initial: file }), targets);
}

/** The kernel log sequence number already handled in this boot (records at or below it are skipped). */
export function handledSeq(file: HealthFile | undefined, bootId: string | undefined): number | undefined {
  return file && file.bootId === bootId ? file.kmsgSeq : undefined;
}

export { scopeGpu };
