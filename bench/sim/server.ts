// One simulated vLLM-like replica: FIFO waiting queue, KV admission, chunked prefill and batched
// decode in engine steps whose duration follows the calibrated cost model. Virtual time only.
import { BLOCK_TOKENS, createKvCache, type KvCache } from "./kv-cache.js";
import type { RequestSpec } from "./workloads.js";

export interface EngineConfig {
  /** Fixed cost of one engine step, s. */
  t0: number;
  /** Cost per prefill token, s. */
  aPrefill: number;
  /** Cost per running decode in a step, s. */
  aDecode: number;
  /** Prefill tokens per step (chunked prefill budget). */
  prefillBudget: number;
  maxRunning: number;
}

/**
 * The issue's literal calibration, "32B model on 2xH100-like": 48.8 us/prefill token (~20,480
 * tokens/s), 15 ms per step, and a per-decode cost that puts a 30-request decode-only step at 24 ms.
 * On W1 it cannot meet the validation gate (docs/routing-quality.md, "Calibration"): by Little's
 * law a 1,000-token answer at >= 15 ms/token keeps >= 300 requests resident at 20 req/s, more KV
 * than 8 x 307,328 tokens hold, so decode and KV, not prefill, set the knee.
 */
export const ISSUE_ENGINE: EngineConfig = { t0: 0.015, aPrefill: 48.8e-6, aDecode: 0.0003, prefillBudget: 8192, maxRunning: 256 };

/**
 * The published calibration: same prefill cost and chunk budget (what the gate's 8 x 20,480 /
 * 7,200 arithmetic assumes), with per-step overhead cut to 2.5 ms and 40 us per running decode so
 * that prefill is the bottleneck. Round-robin on W1 then knees at 18.7-21.2 req/s (seeds 42-46).
 */
export const DEFAULT_ENGINE: EngineConfig = { t0: 0.0025, aPrefill: 48.8e-6, aDecode: 0.00004, prefillBudget: 8192, maxRunning: 256 };

/** Step duration for a step with `prefill` prefill tokens and `decodes` running decodes. */
export function stepTime(cfg: EngineConfig, prefill: number, decodes: number): number {
  return cfg.t0 + cfg.aPrefill * prefill + cfg.aDecode * decodes;
}

export interface LiveRequest {
  spec: RequestSpec;
  server: number;
  /** Router replica that sent it (its in-flight counter). */
  replica: number;
  arrivedAt: number;
  admittedAt: number;
  firstTokenAt: number;
  finishedAt: number;
  /** Prompt tokens found in the cache at first admission. */
  hitTokens: number;
  /** Tokens whose KV is computed. */
  computed: number;
  /** Tokens to prefill before decoding (the prompt, or prompt + output so far after a preemption). */
  target: number;
  generated: number;
  committed: number;
  table: number[];
  admissions: number;
}

export interface ServerCounters {
  prefillTokens: number;
  steps: number;
  preemptions: number;
  busyTime: number;
}

export interface SimServer {
  readonly index: number;
  readonly kv: KvCache;
  readonly waiting: LiveRequest[];
  readonly running: LiveRequest[];
  readonly counters: ServerCounters;
  busy(): boolean;
  enqueue(r: LiveRequest): void;
  /** Plans the next step at `now`; returns its duration, or -1 when there is nothing to do. */
  startStep(now: number): number;
  /** Applies the planned step at its end time; returns the requests that finished. */
  finishStep(now: number): LiveRequest[];
  /** Requests that can never fit (larger than the whole cache), dropped at admission. */
  readonly rejected: LiveRequest[];
}

const blocksFor = (tokens: number): number => Math.ceil(tokens / BLOCK_TOKENS);

export function createServer(index: number, kvTokens: number, keySpace: number, cfg: EngineConfig): SimServer {
  const kv = createKvCache(Math.floor(kvTokens / BLOCK_TOKENS), keySpace);
  const waiting: LiveRequest[] = [];
  const running: LiveRequest[] = [];
  const rejected: LiveRequest[] = [];
  const counters: ServerCounters = { prefillTokens: 0, steps: 0, preemptions: 0, busyTime: 0 };
  let planned: { req: LiveRequest; chunk: number }[] = [];
  let decoding: LiveRequest[] = [];
  let inStep = false;

  const commitFull = (r: LiveRequest): void => {
    const full = Math.min(Math.floor(r.computed / BLOCK_TOKENS), r.spec.blocks.length);
    while (r.committed < full) {
      kv.commit(r.table, r.committed, r.spec.blocks[r.committed] as number);
      r.committed++;
    }
  };

  const preempt = (victim: LiveRequest): void => {
    // vLLM's recompute preemption: drop the blocks (full ones stay cached), requeue at the front.
    running.splice(running.indexOf(victim), 1);
    kv.release(victim.table);
    victim.computed = 0;
    victim.committed = 0;
    victim.target = victim.spec.promptTokens + victim.generated;
    waiting.unshift(victim);
    counters.preemptions++;
  };

  const tryAdmit = (r: LiveRequest, now: number): boolean => {
    // vLLM never serves the whole prompt from cache: the last token is always recomputed.
    const hit = kv.lookup(r.spec.blocks, Math.floor((r.target - 1) / BLOCK_TOKENS));
    const fresh = blocksFor(r.target) - hit;
    if (!kv.canAcquire(r.spec.blocks, hit, fresh)) return false;
    r.table = kv.acquire(r.spec.blocks, hit, fresh);
    r.computed = hit * BLOCK_TOKENS;
    r.committed = hit;
    if (r.admissions === 0) {
      r.hitTokens = r.computed;
      r.admittedAt = now;
    }
    r.admissions++;
    return true;
  };

  return {
    index,
    kv,
    waiting,
    running,
    rejected,
    counters,
    busy: () => inStep,
    enqueue(r) {
      r.server = index;
      r.target = r.spec.promptTokens;
      waiting.push(r);
    },
    startStep(now) {
      let budget = cfg.prefillBudget;
      const preemptedBefore = counters.preemptions;
      planned = [];
      decoding = [];
      for (let i = 0; i < running.length; i++) {
        const r = running[i] as LiveRequest;
        if (r.computed < r.target) {
          const chunk = Math.min(r.target - r.computed, budget);
          if (chunk > 0) {
            planned.push({ req: r, chunk });
            budget -= chunk;
          }
          continue;
        }
        // A decode writes the KV of token `computed`: make room, preempting the newest if needed.
        let ok = true;
        while (r.table.length < blocksFor(r.computed + 1) && !kv.grow(r.table)) {
          const victim = running[running.length - 1] as LiveRequest;
          preempt(victim);
          if (victim === r) {
            ok = false;
            break;
          }
        }
        if (!ok) break;
        decoding.push(r);
      }
      // As in vLLM, a step that had to preempt admits nobody new.
      const preempted = counters.preemptions > preemptedBefore;
      while (!preempted && waiting.length > 0 && budget > 0 && running.length < cfg.maxRunning) {
        const r = waiting[0] as LiveRequest;
        if (!tryAdmit(r, now)) {
          if (running.length === 0 && blocksFor(r.target) > kv.capacity) {
            waiting.shift();
            rejected.push(r);
            continue;
          }
          break; // FIFO: nobody overtakes the head
        }
        waiting.shift();
        running.push(r);
        const chunk = Math.min(r.target - r.computed, budget);
        planned.push({ req: r, chunk });
        budget -= chunk;
      }
      // Decoders planned before a later preemption may have been evicted: keep only live ones.
      if (preempted) decoding = decoding.filter((r) => running.includes(r));
      const prefill = cfg.prefillBudget - budget;
      if (prefill === 0 && decoding.length === 0) return -1;
      inStep = true;
      const dt = stepTime(cfg, prefill, decoding.length);
      counters.steps++;
      counters.busyTime += dt;
      counters.prefillTokens += prefill;
      return dt;
    },
    finishStep(now) {
      inStep = false;
      const done: LiveRequest[] = [];
      const emit = (r: LiveRequest): void => {
        r.generated++;
        if (r.generated === 1) r.firstTokenAt = now;
        if (r.generated >= r.spec.outputTokens) {
          r.finishedAt = now;
          done.push(r);
        }
      };
      for (const { req, chunk } of planned) {
        if (!running.includes(req)) continue;
        req.computed += chunk;
        commitFull(req);
        if (req.computed === req.target) emit(req);
      }
      for (const r of decoding) {
        r.computed++;
        commitFull(r);
        emit(r);
      }
      for (const r of done) {
        running.splice(running.indexOf(r), 1);
        kv.release(r.table);
      }
      return done;
    },
  };
}
