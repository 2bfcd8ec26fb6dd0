// Keeps this node's ResourceSlices equal to what the inventory says, in the cluster or the store.
// One sync loop: list (this node, our driver) -> plan -> create/update/delete -> done. It runs on
// start, on every inventory change, and when a watch shows a slice of ours deleted or changed by
// someone else (the kubelet deletes a node's slices when it restarts). Failures never escape:
// 409 re-reads and retries at once, other errors back off (capped) and retry; the agent stays up.
//
// Pool generation: kept when no slice is added or removed and at most one slice changes; otherwise
// +1 and every slice rewritten with the new generation and resourceSliceCount.
import { describeChain } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { silentLogger } from "../common/log.js";
import type { Inventory } from "../discovery/model.js";
import type { DeviceTaint, OwnerReference, ResourceSlice } from "../kube/types.js";
import { statusOf, type SliceBackend } from "./backend.js";
import { buildResourceSlices, type BuildOptions } from "./build.js";

export interface PublisherOptions extends Omit<BuildOptions, "generation" | "ownerReference" | "taints"> {
  /** Device taints read at every build (device health); resync() after they change. */
  taints?: () => ReadonlyMap<string, readonly DeviceTaint[]>;
  backend: SliceBackend;
  inventory: Inventory;
  logger?: Logger;
  backoffInitialMs?: number; // default 500
  backoffMaxMs?: number; // default 30 000
  /** Delay between seeing a foreign change and resyncing (coalesces bursts); default 200 ms. */
  debounceMs?: number;
  /** Publish an owner reference to the Node (cluster only); default true. */
  ownerReference?: boolean;
  /** A sync that has not finished by then counts as failed and is retried (a black-holed API
   *  connection must not stall publishing, or shutdown, forever); default 30 000. */
  syncTimeoutMs?: number;
  /** Told about every sync attempt (metrics). */
  onSync?: (outcome: "ok" | "error", seconds: number) => void;
}

export interface PublisherStatus {
  generation: number;
  slices: number;
  lastSyncAt?: Date;
  lastError?: string;
  syncs: number;
}

export interface SlicePublisher {
  /** A new inventory; republishes when the slices it gives differ. */
  update(inv: Inventory): void;
  /** Force a sync now (e.g. after SIGHUP). */
  resync(): void;
  /** Resolves after the next sync that leaves the backend equal to the desired slices. */
  synced(): Promise<void>;
  status(): PublisherStatus;
  /** Stops syncing; waits up to deadlineMs (default 2 s) for a sync in flight. */
  stop(deadlineMs?: number): Promise<void>;
}

export interface SyncPlan {
  generation: number;
  create: ResourceSlice[];
  update: ResourceSlice[]; // carry the existing resourceVersion
  delete: string[];
}

/** `desired` is a subset of `actual` (fields the server adds, like metadata.uid, are ignored). */
export function covers(actual: unknown, desired: unknown): boolean {
  if (desired === null || typeof desired !== "object") return actual === desired;
  if (Array.isArray(desired)) return Array.isArray(actual) && actual.length === desired.length && desired.every((d, i) => covers(actual[i], d));
  if (actual === null || typeof actual !== "object" || Array.isArray(actual)) return false;
  const a = actual as Record<string, unknown>;
  return Object.entries(desired as Record<string, unknown>).every(([k, v]) => v === undefined || covers(a[k], v));
}

function same(existing: ResourceSlice, want: ResourceSlice): boolean {
  const ownersOk = want.metadata.ownerReferences === undefined || covers(existing.metadata.ownerReferences, want.metadata.ownerReferences);
  // Devices and counters are compared both ways: a field we dropped must disappear too.
  return ownersOk && covers(existing.spec, want.spec) && covers(want.spec, stripUnset(existing.spec, want.spec));
}

/** Keeps only the keys of `actual` that `want` also knows at the top level (server defaults are ignored). */
function stripUnset(actual: ResourceSlice["spec"], want: ResourceSlice["spec"]): ResourceSlice["spec"] {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(actual)) if (k in want) out[k] = (actual as unknown as Record<string, unknown>)[k];
  return out as unknown as ResourceSlice["spec"];
}

/** Pure: what to write so `existing` becomes the slices `build(generation)` gives. */
export function planSync(existing: ResourceSlice[], build: (generation: number) => ResourceSlice[], lastGeneration: number): SyncPlan {
  const byName = new Map(existing.map((s) => [s.metadata.name ?? "", s]));
  const current = Math.max(lastGeneration, ...existing.map((s) => s.spec.pool?.generation ?? 0));
  const diff = (want: ResourceSlice[]) => ({
    added: want.filter((s) => !byName.has(s.metadata.name ?? "")),
    changed: want.filter((s) => {
      const e = byName.get(s.metadata.name ?? "");
      return e !== undefined && !same(e, s);
    }),
    removed: [...byName.keys()].filter((n) => !want.some((s) => s.metadata.name === n)),
  });
  const keep = build(Math.max(current, 1));
  const d = diff(keep);
  const withRv = (s: ResourceSlice): ResourceSlice => ({ ...s, metadata: { ...s.metadata, resourceVersion: byName.get(s.metadata.name ?? "")?.metadata.resourceVersion } });
  if (current > 0 && d.added.length === 0 && d.removed.length === 0 && d.changed.length <= 1) {
    return { generation: current, create: [], update: d.changed.map(withRv), delete: [] };
  }
  const generation = current + 1;
  const next = build(generation);
  return {
    generation,
    create: next.filter((s) => !byName.has(s.metadata.name ?? "")),
    update: next.filter((s) => byName.has(s.metadata.name ?? "")).map(withRv),
    delete: [...byName.keys()].filter((n) => !next.some((s) => s.metadata.name === n)),
  };
}

export function startSlicePublisher(opts: PublisherOptions): SlicePublisher {
  const log = opts.logger ?? silentLogger;
  const backoffInitial = opts.backoffInitialMs ?? 500;
  const backoffMax = opts.backoffMaxMs ?? 30_000;
  const debounceMs = opts.debounceMs ?? 200;
  const syncTimeoutMs = opts.syncTimeoutMs ?? 30_000;
  const backend = opts.backend;
  let inventory = opts.inventory;
  let generation = 0;
  let owner: OwnerReference | undefined;
  let stopped = false;
  let dirty = true;
  let running: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let failures = 0;
  let watchHandle: { stop(): void } | undefined;
  let watchTimer: NodeJS.Timeout | undefined;
  const written = new Set<string>(); // resourceVersions we wrote: our own watch echoes are not foreign changes
  const waiters: (() => void)[] = [];
  const status: PublisherStatus = { generation: 0, slices: 0, syncs: 0 };

  const build = (gen: number): ResourceSlice[] => {
    const o: BuildOptions = { driverName: opts.driverName, nodeName: opts.nodeName, migMode: opts.migMode, gpuSharing: opts.gpuSharing ?? "none", generation: gen };
    if (owner) o.ownerReference = owner;
    if (opts.maxDevicesPerSlice !== undefined) o.maxDevicesPerSlice = opts.maxDevicesPerSlice;
    if (opts.maxDevicesPerSliceWithCounters !== undefined) o.maxDevicesPerSliceWithCounters = opts.maxDevicesPerSliceWithCounters;
    if (opts.taints) o.taints = opts.taints();
    return buildResourceSlices(inventory, o);
  };
  const remember = (s: ResourceSlice): void => {
    if (s.metadata.resourceVersion) written.add(String(s.metadata.resourceVersion));
    if (written.size > 4096) written.delete(written.values().next().value as string);
  };

  /** `run.abandoned` is set when the sync timed out: it then stops before its next write. */
  async function syncOnce(run: { abandoned: boolean }): Promise<void> {
    const live = (): void => {
      if (run.abandoned) throw new Error("abandoned after the sync timeout");
    };
    if (!owner && opts.ownerReference !== false) owner = await backend.ownerReference();
    for (let attempt = 0; ; attempt++) {
      live();
      const existing = await backend.list();
      const plan = planSync(existing, build, generation);
      try {
        for (const s of plan.create) {
          live();
          remember(await backend.create(s));
        }
        for (const s of plan.update) {
          live();
          remember(await backend.update(s));
        }
        for (const n of plan.delete) {
          live();
          await backend.delete(n);
        }
      } catch (err) {
        if ((statusOf(err) === 409 || statusOf(err) === 404) && attempt < 5) {
          log.info("slice conflict; re-reading and retrying", { status: statusOf(err), attempt });
          continue; // someone else wrote (or deleted) in between: re-list and re-plan
        }
        throw err;
      }
      live();
      const writes = plan.create.length + plan.update.length + plan.delete.length;
      if (writes > 0) log.info("published ResourceSlices", { backend: backend.describe, generation: plan.generation, created: plan.create.length, updated: plan.update.length, deleted: plan.delete.length });
      generation = plan.generation;
      status.generation = generation;
      status.slices = build(generation).length;
      return;
    }
  }

  async function boundedSync(): Promise<void> {
    const run = { abandoned: false };
    let timeout: NodeJS.Timeout | undefined;
    const sync = syncOnce(run);
    try {
      await Promise.race([
        sync,
        new Promise<never>((_, reject) => {
          timeout = setTimeout(() => {
            run.abandoned = true;
            reject(new Error(`syncing ResourceSlices did not finish within ${syncTimeoutMs / 1000} s (API server unreachable?)`));
          }, syncTimeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timeout);
      sync.catch(() => undefined); // the abandoned sync's late failure is not an unhandled rejection
    }
  }

  function schedule(ms: number): void {
    if (stopped) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = undefined;
      void loop();
    }, ms);
  }

  async function loop(): Promise<void> {
    if (running || stopped) return;
    running = (async () => {
      while (dirty && !stopped) {
        dirty = false;
        const t0 = performance.now();
        try {
          await boundedSync();
          opts.onSync?.("ok", (performance.now() - t0) / 1000);
          failures = 0;
          status.syncs++;
          status.lastSyncAt = new Date();
          delete status.lastError;
          if (!dirty) for (const w of waiters.splice(0)) w();
        } catch (err) {
          opts.onSync?.("error", (performance.now() - t0) / 1000);
          failures++;
          dirty = true;
          status.lastError = describeChain(err);
          const delay = Math.min(backoffMax, backoffInitial * 2 ** Math.min(failures - 1, 20));
          log.warn("publishing ResourceSlices failed; retrying", { code: "TESSERA_PUBLISH", status: statusOf(err), detail: status.lastError, retryInMs: delay });
          schedule(delay);
          return;
        }
      }
    })().finally(() => {
      running = undefined;
      if (dirty && !stopped && !timer) schedule(0);
    });
    await running;
  }

  function kick(ms = 0): void {
    dirty = true;
    if (!running) schedule(ms);
  }

  async function startWatch(delayFailures = 0): Promise<void> {
    if (!backend.watch || stopped) return;
    const restart = (): void => {
      if (stopped) return;
      const delay = Math.min(backoffMax, backoffInitial * 2 ** Math.min(delayFailures, 20));
      watchTimer = setTimeout(() => {
        watchTimer = undefined;
        kick(); // we may have missed events while the watch was down
        void startWatch(delayFailures + 1);
      }, delay);
    };
    try {
      watchHandle = await backend.watch(
        (type, s) => {
          delayFailures = 0;
          const rv = String(s?.metadata?.resourceVersion ?? "");
          if (type === "DELETED" || ((type === "ADDED" || type === "MODIFIED") && !written.has(rv))) {
            log.info("ResourceSlice changed by someone else; republishing", { type, name: s?.metadata?.name });
            kick(debounceMs);
          }
        },
        (err) => {
          if (stopped) return;
          if (err) log.warn("ResourceSlice watch ended; restarting", { detail: describeChain(err) });
          restart();
        },
      );
      if (stopped) watchHandle.stop();
    } catch (err) {
      log.warn("ResourceSlice watch failed to start; retrying", { detail: describeChain(err) });
      restart();
    }
  }

  kick();
  void startWatch();

  return {
    update(inv) {
      inventory = inv;
      kick();
    },
    resync: () => kick(),
    synced: () =>
      new Promise<void>((resolve) => {
        if (!dirty && !running && status.syncs > 0) resolve();
        else waiters.push(resolve);
      }),
    status: () => ({ ...status }),
    async stop(deadlineMs = 2000) {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (watchTimer) clearTimeout(watchTimer);
      watchHandle?.stop();
      for (const w of waiters.splice(0)) w();
      // A sync stuck on the API must not hold up shutdown (the sockets are removed after this).
      let wait: NodeJS.Timeout | undefined;
      await Promise.race([running?.catch(() => undefined), new Promise<void>((r) => (wait = setTimeout(r, deadlineMs)))]);
      clearTimeout(wait);
    },
  };
}
