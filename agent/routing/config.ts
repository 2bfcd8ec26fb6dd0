// The routing profile: block hashing, index capacity, scorer weights, the saturation guard and
// the saturation filter. Weights belong to the profile, not to the scorers (which live in the WASM
// core). Validation is strict: an unknown key or an out-of-range number is a TESSERA_CONFIG error.
import { TesseraError } from "../common/errors.js";

export interface RouterWeights {
  prefix: number; // longest matched prefix fraction, 0..1
  queue: number; // vllm:num_requests_waiting, min-max normalized over candidates
  kv: number; // 1 - vllm:kv_cache_usage_perc
  inflight: number; // requests this router has in flight, min-max normalized
}

export interface RouterConfig {
  blockSize: number; // bytes per hashed block (64 = 16 tokens x 4 chars)
  maxBlocks: number; // blocks hashed per prompt at most
  maxEndpoints: number; // endpoints one router can hold at once
  capacityBlocks: number; // default LRU capacity per endpoint, in blocks
  weights: RouterWeights;
  /**
   * Guard: prefix is ignored when the best-prefix endpoint's (waiting + in-flight) exceeds the least
   * loaded one's by more than this. 16, not 8: in-flight includes decoding requests, and at 8 the
   * guard fired on ordinary decode noise; 16 keeps a hot prefix from piling onto one replica
   * (docs/routing-quality.md, "Choosing the guard threshold").
   */
  guardThreshold: number;
  /** Filter: endpoints with (waiting + in-flight) >= this are saturated; 0 turns the filter off. */
  saturationQueue: number;
  /**
   * Cold prefixes (no endpoint holds a block of the prompt): > 0 picks by rendezvous hash of the
   * prompt's first block among the endpoints within this many waiting requests of the shortest
   * queue, so uncoordinated routers (several `tessera epp` replicas) agree; 0 scores them by load.
   */
  coldSlack: number;
}

export const DEFAULT_ROUTER_CONFIG: RouterConfig = {
  blockSize: 64,
  maxBlocks: 256,
  maxEndpoints: 256,
  capacityBlocks: 31_250,
  weights: { prefix: 3, queue: 2, kv: 2, inflight: 1 },
  guardThreshold: 16,
  saturationQueue: 0,
  coldSlack: 0,
};

/** coldSlack of `tessera epp` (several replicas behind one gateway must agree on new prefixes). */
export const PICKER_COLD_SLACK = 4;

export type RouterConfigInput = Partial<Omit<RouterConfig, "weights">> & { weights?: Partial<RouterWeights> };

const INT_LIMITS: Record<string, [number, number]> = {
  blockSize: [1, 1 << 20],
  maxBlocks: [1, 65_536],
  maxEndpoints: [1, 4096],
  capacityBlocks: [0, 1 << 28],
};

function fail(what: string, why: string): never {
  throw new TesseraError("TESSERA_CONFIG", `router config ${what}: ${why}`);
}

function num(where: string, v: unknown, lo: number, hi: number, integer: boolean): number {
  if (typeof v !== "number" || !Number.isFinite(v)) fail(where, `expected a finite number, got ${JSON.stringify(v)}`);
  if (integer && !Number.isInteger(v)) fail(where, `expected a whole number, got ${v}`);
  if (v < lo || v > hi) fail(where, `${v} is outside [${lo}, ${hi}]`);
  return v;
}

/** Defaults filled in, every value checked; throws TESSERA_CONFIG naming the bad key. */
export function resolveRouterConfig(input: RouterConfigInput = {}): RouterConfig {
  const known = new Set(["blockSize", "maxBlocks", "maxEndpoints", "capacityBlocks", "weights", "guardThreshold", "saturationQueue", "coldSlack"]);
  for (const k of Object.keys(input)) if (!known.has(k)) fail(k, `unknown key; expected one of ${[...known].join(", ")}`);
  const out: RouterConfig = { ...DEFAULT_ROUTER_CONFIG, weights: { ...DEFAULT_ROUTER_CONFIG.weights } };
  for (const [k, [lo, hi]] of Object.entries(INT_LIMITS)) {
    const v = (input as Record<string, unknown>)[k];
    if (v !== undefined) (out as unknown as Record<string, number>)[k] = num(k, v, lo, hi, true);
  }
  if (input.guardThreshold !== undefined) out.guardThreshold = num("guardThreshold", input.guardThreshold, 0, 1e9, false);
  if (input.saturationQueue !== undefined) out.saturationQueue = num("saturationQueue", input.saturationQueue, 0, 1e9, false);
  if (input.coldSlack !== undefined) out.coldSlack = num("coldSlack", input.coldSlack, 0, 1e9, false);
  if (input.weights !== undefined) {
    if (input.weights === null || typeof input.weights !== "object") fail("weights", "expected an object");
    for (const [k, v] of Object.entries(input.weights)) {
      if (!(k in out.weights)) fail(`weights.${k}`, "unknown scorer; expected prefix, queue, kv or inflight");
      out.weights[k as keyof RouterWeights] = num(`weights.${k}`, v, 0, 1000, false);
    }
  }
  return out;
}
