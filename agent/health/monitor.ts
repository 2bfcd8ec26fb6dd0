// Device health for one node: the three sources (kernel log XIDs, periodic nvidia-smi queries, GPUs
// gone from discovery) feed the taint keeper; every change is persisted (health.json), announced
// to the caller (republish the slices), to the kubelet's health stream, to metrics and as an
// Event. Sources run on their own timers with timeouts and never block a caller: a burst of kernel
// log records is handled in batches with the event loop free in between.
import type { AgentMetrics } from "../common/agent-metrics.js";
import { noMetrics } from "../common/agent-metrics.js";
import type { DurableFs } from "../common/durable-fs.js";
import { describeChain } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import type { ExecFn } from "../discovery/exec.js";
import type { Gpu, Inventory } from "../discovery/model.js";
import type { EventRecorder } from "../kube/events.js";
import type { DeviceTaint } from "../kube/types.js";
import { createKeeper, taintsByDevice, TAINT_KEY_PREFIX, type HealthFile, type Keeper, type Transition } from "./keeper.js";
import { parseXid, pciDevicePart, startKmsgReader, type KmsgReader, type KmsgRecord } from "./kmsg.js";
import { queryConditions, runHealthQuery } from "./query.js";
import { createHealthWriter, HEALTH_FILE, readHealthFile } from "./store.js";
import { removeStaleTempFiles } from "../common/stale-temp.js";
import type { DeviceHealthEntry, HealthFeed, HealthTarget } from "./types.js";
import { classifyXid } from "./xid.js";

export interface HealthMonitorOptions {
  nodeName: string;
  stateDir: string;
  bootId: string;
  holdDownMs: number;
  /** Milliseconds between nvidia-smi health queries. */
  intervalMs: number;
  log: Logger;
  now?: () => Date;
  /** Kernel log to tail for XIDs; undefined: none. */
  kmsgPath?: string;
  kmsgPollMs?: number;
  /** The nvidia-smi seam; undefined: no queries. */
  query?: { exec: ExecFn; bin: string; timeoutMs: number };
  /** The inventory at start (the GPUs XIDs and queries are mapped to until the next one). */
  inventory: Inventory;
  /** Published devices, with the GPU (and GI) each lives on. */
  targets: () => HealthTarget[];
  /** Taints changed: republish. */
  onTaintsChanged: () => void;
  metrics?: AgentMetrics;
  events?: EventRecorder;
  fs?: DurableFs;
  /** Milliseconds between hold-down sweeps; default 1000 (a cleared taint is republished within it). */
  sweepMs?: number;
  /** Changes within this many milliseconds are republished and persisted together; default 100. */
  coalesceMs?: number;
}

export interface HealthMonitor {
  feed: HealthFeed;
  /** Taints of every published device that has any. */
  taints(): Map<string, DeviceTaint[]>;
  /** A new inventory from discovery: GPUs it lacks are "gone" (and kept published, tainted). */
  inventoryChanged(inv: Inventory): void;
  /** The GPUs discovery lost that are still published with their `gone` taint. */
  ghosts(): Gpu[];
  /** One health query now (also runs every interval). */
  check(): Promise<void>;
  /** Clears what the hold-down allows now (also runs every sweepMs). */
  sweep(): void;
  /** Resolves once the kernel log read everything readable when called. */
  kmsgDrained(): Promise<void>;
  /** Resolves when every change so far is durable in health.json and handed to the publisher. */
  flushed(): Promise<void>;
  keeper: Keeper;
  stop(): Promise<void>;
}

export async function startHealthMonitor(opts: HealthMonitorOptions): Promise<HealthMonitor> {
  const now = opts.now ?? (() => new Date());
  const metrics = opts.metrics ?? noMetrics;
  const { log } = opts;
  // A temp file a killed predecessor left half-written (before this monitor writes its own).
  await removeStaleTempFiles(opts.stateDir, (target) => target === HEALTH_FILE).catch((err: unknown) => log.warn("cannot clean temp files of the health records", { code: "TESSERA_HEALTH", err: describeChain(err) }));
  const loaded = await readHealthFile(opts.stateDir, opts.fs);
  if (loaded.problem) log.warn("device health records", { code: "TESSERA_HEALTH", detail: loaded.problem });
  const keeper = createKeeper({ now, holdDownMs: opts.holdDownMs, bootId: opts.bootId, ...(loaded.file ? { initial: loaded.file } : {}) });
  const handled = loaded.file?.bootId === opts.bootId ? loaded.file.kmsgSeq : undefined;
  if (loaded.file && loaded.file.taints.length > 0) log.info("device taints restored from the state dir", { taints: loaded.file.taints.length });
  const writer = createHealthWriter(opts.stateDir, opts.fs);
  const subscribers = new Set<() => void>();
  const known = new Map<string, Gpu>();
  const ghosts = new Map<string, Gpu>();
  let lastSent = "";
  let lastPersisted = "";
  let stopped = false;

  const list = (): DeviceHealthEntry[] => opts.targets().map((t) => keeper.healthOf(t));

  // A burst of changes (10,000 kernel log lines) becomes one republish and one durable write per
  // coalescing window, so it never floods the file system the kubelet's prepares need.
  let flushTimer: NodeJS.Timeout | undefined;
  let republish = false;
  let flushWaiters: (() => void)[] = [];
  function flushSoon(taintsChanged: boolean): void {
    republish ||= taintsChanged;
    flushTimer ??= setTimeout(flushNow, opts.coalesceMs ?? 100);
  }
  function flushNow(): void {
    if (flushTimer) clearTimeout(flushTimer);
    flushTimer = undefined;
    persist();
    if (republish) opts.onTaintsChanged();
    republish = false;
    for (const f of flushWaiters.splice(0)) f();
  }

  function persist(): void {
    const file: HealthFile = keeper.file();
    // Query timestamps alone are not worth an fsync every interval.
    const sig = JSON.stringify({ ...file, evidence: Object.fromEntries(Object.entries(file.evidence).map(([k, e]) => [k, { ...e, query: e.query ? { ...e.query, at: "" } : undefined }])) });
    if (sig === lastPersisted) return;
    lastPersisted = sig;
    writer.write(file).catch((err: unknown) => log.warn("cannot write device health records; taints are kept in memory", { code: "TESSERA_HEALTH", err: describeChain(err) }));
  }

  function announce(transitions: readonly Transition[]): void {
    for (const { kind, record } of transitions) {
      const what = `${TAINT_KEY_PREFIX}${record.reason}=${record.value}:${record.effect}`;
      const cleared = kind === "cleared";
      const msg = cleared ? `device ${record.scope}: taint ${what} cleared after ${opts.holdDownMs / 1000} s healthy` : `device ${record.scope} tainted ${what}: ${record.message}`;
      log.info(cleared ? "device taint cleared" : "device tainted", { scope: record.scope, taint: what, detail: record.message });
      const node = { apiVersion: "v1", kind: "Node", name: opts.nodeName };
      if (cleared) opts.events?.normal(node, "DeviceTaintCleared", msg);
      else opts.events?.warn(node, "DeviceTainted", msg);
    }
    flushSoon(transitions.length > 0);
    const entries = list();
    for (const e of entries) metrics.setDeviceHealth(e.device, e.health === "HEALTHY");
    const sig = JSON.stringify(entries.map((e) => [e.device, e.health, e.message]));
    if (sig !== lastSent) {
      lastSent = sig;
      for (const fn of subscribers) fn();
    }
  }

  /** GPU device name by the XID's PCI domain:bus:device. */
  function gpuByPci(pci: string): string | undefined {
    for (const g of known.values()) if (pciDevicePart(g.pciBusId) === pci) return g.name;
    return undefined;
  }

  let seqSeen = handled ?? -1;
  function onRecords(records: KmsgRecord[]): void {
    const out: Transition[] = [];
    let xids = 0;
    for (const r of records) {
      if (r.seq <= seqSeen) continue;
      seqSeen = r.seq;
      const x = parseXid(r.message);
      if (!x) continue;
      xids++;
      const gpu = gpuByPci(x.pci);
      if (!gpu) {
        log.warn("XID for a PCI device that is not one of this node's GPUs", { code: "TESSERA_HEALTH", pci: x.pci, xid: x.code });
        continue;
      }
      const v = classifyXid(x.code, x.detail);
      out.push(...keeper.xid(gpu, { code: x.code, effect: v.effect, message: v.message, ...(x.gi !== undefined ? { gi: x.gi } : {}), ...(x.ci !== undefined ? { ci: x.ci } : {}) }));
    }
    keeper.setKmsgSeq(seqSeen);
    if (xids > 0) announce(out);
  }

  let checking: Promise<void> | undefined;
  async function check(): Promise<void> {
    if (!opts.query || stopped) return;
    checking ??= (async () => {
      const q = opts.query as NonNullable<HealthMonitorOptions["query"]>;
      const live = [...known.values()].filter((g) => !ghosts.has(g.name));
      const results = await runHealthQuery(q.exec, q.bin, live.map((g) => g.pciBusId), { timeoutMs: q.timeoutMs, maxBytes: 1024 * 1024 });
      const out: Transition[] = [];
      results.forEach((r, i) => {
        const gpu = (live[i] as Gpu).name;
        keeper.query(gpu, { status: r.status, ...(r.detail ? { detail: r.detail } : {}), ...(r.values ? { values: r.values } : {}) });
        out.push(...keeper.level(gpu, "nvidia-smi", queryConditions(r)));
      });
      announce(out);
    })().finally(() => (checking = undefined));
    return checking;
  }

  function sweep(): void {
    const out = keeper.sweep();
    if (out.length > 0) announce(out);
  }

  function inventoryChanged(inv: Inventory): void {
    const out: Transition[] = [];
    const present = new Set(inv.gpus.map((g) => g.name));
    for (const g of inv.gpus) {
      known.set(g.name, g);
      ghosts.delete(g.name);
      keeper.gone(g.name, false);
      out.push(...keeper.level(g.name, "discovery", []));
    }
    for (const [name, g] of known) {
      if (present.has(name)) continue;
      ghosts.set(name, g);
      keeper.gone(name, true);
      out.push(...keeper.level(name, "discovery", [{ reason: "gone", effect: "NoExecute", value: "missing", message: `discovery no longer finds ${name} (${g.uuid}, PCI ${g.pciBusId})` }]));
    }
    announce(out);
  }

  inventoryChanged(opts.inventory);
  const reader: KmsgReader | undefined = opts.kmsgPath ? startKmsgReader({ path: opts.kmsgPath, onRecords, log, ...(opts.kmsgPollMs ? { pollMs: opts.kmsgPollMs } : {}) }) : undefined;
  const queryTimer = setInterval(() => void check().catch(() => undefined), opts.intervalMs);
  queryTimer.unref();
  const sweepTimer = setInterval(sweep, opts.sweepMs ?? 1000);
  sweepTimer.unref();

  return {
    feed: {
      list,
      subscribe(fn) {
        subscribers.add(fn);
        return () => subscribers.delete(fn);
      },
    },
    taints: () => taintsByDevice(keeper, opts.targets()),
    inventoryChanged,
    ghosts: () => [...ghosts.values()],
    check,
    sweep,
    kmsgDrained: () => reader?.drained() ?? Promise.resolve(),
    async flushed() {
      if (flushTimer) await new Promise<void>((r) => flushWaiters.push(r));
      await writer.idle();
    },
    keeper,
    async stop() {
      stopped = true;
      reader?.stop();
      clearInterval(queryTimer);
      clearInterval(sweepTimer);
      await checking?.catch(() => undefined);
      if (flushTimer) flushNow();
      await writer.idle();
    },
  };
}
