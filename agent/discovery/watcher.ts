// Periodic rediscovery for the agent: every --rediscover-interval seconds and on SIGHUP. A failed
// or hanging discovery never replaces a good inventory with an empty node: the last good one is
// kept and the failure is exposed as `condition()` (for logs and diag) until a run succeeds.
import { isTesseraError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { silentLogger } from "../common/log.js";
import type { Discovery } from "./index.js";
import type { DiscoveryCondition, Inventory } from "./model.js";


export interface InventoryWatcher {
  /** First discovery; rejects only if it fails and there is no inventory at all. */
  start(): Promise<Inventory>;
  /** Runs discovery now (the SIGHUP path); resolves with the current (possibly kept) inventory. */
  rediscover(): Promise<Inventory | undefined>;
  /** A discovery that starts after this call (one in flight may predate a change the caller just
   *  made, e.g. a MIG instance it created); resolves with its inventory (the kept one on failure). */
  refresh(): Promise<Inventory | undefined>;
  current(): Inventory | undefined;
  /** Why the last run failed; undefined after a successful run. */
  condition(): DiscoveryCondition | undefined;
  stop(): void;
}

export interface WatcherOptions {
  discovery: Discovery;
  intervalMs: number;
  logger?: Logger;
  /** Called after a successful run whose inventory differs from the previous one. */
  onChange?: (inv: Inventory) => void;
  /** Subscribe to SIGHUP here (pass `process`); removed on stop(). */
  signals?: NodeJS.EventEmitter;
  /** Told about every run: its duration and, on failure, the code (metrics). */
  onRun?: (seconds: number, code?: string) => void;
  setInterval?: (fn: () => void, ms: number) => { unref?: () => void } | NodeJS.Timeout;
  clearInterval?: (t: unknown) => void;
}

/** Compare ignoring host facts (free memory style noise must not republish slices). */
function fingerprint(inv: Inventory): string {
  return JSON.stringify({ ...inv, host: undefined, conditions: undefined });
}

export function createInventoryWatcher(opts: WatcherOptions): InventoryWatcher {
  const log = opts.logger ?? silentLogger;
  let last: Inventory | undefined;
  let cond: DiscoveryCondition | undefined;
  let running: Promise<Inventory | undefined> | undefined;
  let timer: unknown;
  let stopped = false;
  const onHup = (): void => {
    log.info("SIGHUP: rediscovering GPUs");
    void api.rediscover();
  };

  async function runOnce(): Promise<Inventory | undefined> {
    const t0 = performance.now();
    try {
      const inv = await opts.discovery.discover();
      opts.onRun?.((performance.now() - t0) / 1000);
      const changed = last === undefined || fingerprint(last) !== fingerprint(inv);
      last = inv;
      if (cond) log.info("discovery recovered", { previous: cond.code });
      cond = undefined;
      if (changed && !stopped) opts.onChange?.(inv);
      return inv;
    } catch (err) {
      cond = { code: isTesseraError(err) ? err.code : "TESSERA_DISCOVERY", message: err instanceof Error ? err.message : String(err) };
      opts.onRun?.((performance.now() - t0) / 1000, cond.code);
      log.error("discovery failed; keeping the last good inventory", { code: cond.code, detail: cond.message, kept: last !== undefined });
      if (last === undefined) throw err;
      return last;
    }
  }

  const api: InventoryWatcher = {
    async start() {
      const inv = await api.rediscover();
      if (!inv) throw new Error("unreachable: discovery returned nothing");
      if (opts.intervalMs > 0) {
        const set = opts.setInterval ?? setInterval;
        const t = set(() => void api.rediscover().catch(() => undefined), opts.intervalMs);
        (t as { unref?: () => void }).unref?.();
        timer = t;
      }
      opts.signals?.on("SIGHUP", onHup);
      return inv;
    },
    rediscover() {
      // One run at a time: a SIGHUP during a slow run joins it instead of stacking nvidia-smi calls.
      running ??= runOnce().finally(() => {
        running = undefined;
      });
      return running;
    },
    refresh() {
      const inFlight = running?.catch(() => undefined) ?? Promise.resolve(undefined);
      return inFlight.then(() => api.rediscover());
    },
    current: () => last,
    condition: () => cond,
    stop() {
      stopped = true;
      if (timer !== undefined) (opts.clearInterval ?? ((t: unknown) => clearInterval(t as NodeJS.Timeout)))(timer);
      opts.signals?.off("SIGHUP", onHup);
    },
  };
  return api;
}
