// The best peers' prefix-cache routers, as simulator baselines, written from their documented
// algorithms and default constants (no upstream code copied; each constant cites its source):
//
//  gie-prefix     the Gateway API Inference Extension's EPP default profile: approximate
//                 prefix-cache scorer + queue scorer + KV-cache utilization scorer, max-score picker.
//                 kubernetes-sigs/gateway-api-inference-extension v1.3.1 (commit fea5e3db),
//                 pkg/epp/scheduling/framework/plugins/multi/prefix/{plugin,indexer}.go,
//                 .../plugins/scorer/{queue,kvcache_utilization}.go, .../plugins/picker/max_score_picker.go,
//                 config/charts/inferencepool/templates/epp-config.yaml (the weights).
//  aibrix-prefix  AIBrix's prefix-cache router (local indexer, character tokenizer).
//                 vllm-project/aibrix at commit e3e10f9e (after v0.7.0),
//                 pkg/plugins/gateway/algorithms/prefix_cache.go, least_request.go, util.go,
//                 pkg/utils/prefixcacheindexer/hash.go, pkg/utils/lrustore/lru_store.go.
//
// Both see what a gateway sees: the scraped snapshot (waiting queue, KV usage) and their own
// in-flight counts. Block hashes only need equality, so both use one 53-bit chained hash of our
// own instead of xxHash64 (a collision is ~2^-53 per pair: no effect on the figures).
import type { EndpointState } from "../../agent/routing/types.js";
import type { Rng } from "./prng.js";

// ---- GIE v1.3.1 constants --------------------------------------------------------------------
/** prefix/plugin.go DefaultBlockSize: 64 characters (vLLM's 16-token block × 4 characters a token).
 *  With AutoTune (DefaultConfig.AutoTune = true) it is the server's cache block size × 4, which for
 *  the simulated vLLM (16-token blocks, 4 bytes a token) is the same 64 bytes. */
export const GIE_BLOCK_BYTES = 64;
/** prefix/plugin.go DefaultMaxPrefixBlocks. */
export const GIE_MAX_PREFIX_BLOCKS = 256;
/** prefix/plugin.go DefaultLRUCapacityPerServer; AutoTune replaces it by the server's
 *  vllm num_gpu_blocks, which the simulator passes as capacityBlocks. */
export const GIE_LRU_CAPACITY_PER_SERVER = 31_250;
/** epp-config.yaml default profile: queue-scorer 2, kv-cache-utilization-scorer 2, prefix-cache-scorer 3. */
export const GIE_WEIGHTS = { queue: 2, kvCache: 2, prefix: 3 } as const;

// ---- AIBrix (e3e10f9e) constants -------------------------------------------------------------
/** prefixcacheindexer/hash.go defaultPrefixCacheBlockSize: 4 tokens of the character tokenizer,
 *  i.e. 4 bytes (the README's table says 128; the code's default is 4, and the code is what runs). */
export const AIBRIX_BLOCK_BYTES = 4;
/** hash.go defaultPrefixCacheBlockNumber: one LRU of block hashes shared by all pods. */
export const AIBRIX_BLOCK_NUMBER = 200_000;
/** prefix_cache.go defaultPodRunningRequestImbalanceAbsCount (README: 16; code: 8). */
export const AIBRIX_IMBALANCE_ABS_COUNT = 8;
/** prefix_cache.go defaultStandardDeviationFactor (README: 2; code: 1). */
export const AIBRIX_STDDEV_FACTOR = 1;
// Not modelled: hash.go's 20-minute idle eviction of blocks (defaultPrefixCacheEvictionDurationInMins);
// a simulated run lasts a few minutes of simulated time, so it would never fire.

/** Chained block hashes of `bytes`: hash(i) = mix(hash(i-1), block i), seeded; a short tail is dropped. */
export function chainHashes(bytes: Uint8Array, blockBytes: number, maxBlocks: number, seed: number): number[] {
  const n = Math.min(Math.floor(bytes.length / blockBytes), maxBlocks);
  const out = new Array<number>(n);
  let lo = seed | 0;
  let hi = Math.imul(seed ^ 0x5bd1e995, 0x27d4eb2d) | 0;
  for (let b = 0; b < n; b++) {
    const off = b * blockBytes;
    for (let i = 0; i < blockBytes; i += 4) {
      const w = ((bytes[off + i] as number) | ((bytes[off + i + 1] as number) << 8) | ((bytes[off + i + 2] as number) << 16) | ((bytes[off + i + 3] as number) << 24)) | 0;
      lo = Math.imul(lo ^ w, 0x9e3779b1);
      lo = (lo << 13) | (lo >>> 19);
      hi = Math.imul(hi ^ w ^ lo, 0x85ebca77);
      hi = (hi << 17) | (hi >>> 15);
    }
    lo = fmix32(lo ^ hi);
    hi = fmix32(hi + lo);
    out[b] = (hi >>> 11) * 4294967296 + (lo >>> 0); // 53 bits: exact as a JS number
  }
  return out;
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) | 0;
}

/** A seed from a string (GIE: the first hash is the model name's). */
function stringSeed(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h | 0;
}

export interface PeerRouter {
  /** Index of the chosen endpoint; indexes the prompt there (as both do right after routing). */
  pick(prompt: Uint8Array, states: readonly EndpointState[]): number;
}

// ---- GIE ------------------------------------------------------------------------------------------

/** An LRU of 53-bit numeric keys and int32 values with O(1) amortized touch and eviction: an
 *  open-addressing table in typed arrays (linear probing, backward-shift deletion; JS Maps of
 *  200,000 number keys made AIBrix's 1-token blocks too slow to simulate) and a FIFO of
 *  (key, stamp) touches whose stale entries are skipped at eviction. */
export function createLru(capacity: number, onEvict: (key: number, value: number) => void = () => undefined): {
  touch(key: number, value: number): void;
  /** touch(key, (old value or 0) | bits) with one probe. */
  touchOr(key: number, bits: number): void;
  /** The value, or -1 when absent. */
  get(key: number): number;
  has(key: number): boolean;
  readonly size: number;
} {
  let slots = 16;
  while (slots < capacity * 2 + 2) slots *= 2;
  const mask = slots - 1;
  const keys = new Float64Array(slots);
  const vals = new Int32Array(slots);
  const stamps = new Float64Array(slots);
  const used = new Uint8Array(slots);
  let size = 0;
  let fifoKeys: number[] = [];
  let fifoStamps: number[] = [];
  let head = 0;
  let clock = 0;
  const home = (key: number): number => Math.imul(key & 0x3fffffff, 0x9e3779b1) >>> 0 & mask;
  const slotOf = (key: number): number => {
    for (let i = home(key); ; i = (i + 1) & mask) {
      if (used[i] === 0) return ~i; // absent: where it would go
      if (keys[i] === key) return i;
    }
  };
  const removeAt = (slot: number): void => {
    used[slot] = 0;
    size--;
    for (let j = (slot + 1) & mask; used[j] === 1; j = (j + 1) & mask) {
      const k = home(keys[j] as number);
      // move j back to the hole unless its home lies cyclically in (slot, j]
      const between = slot <= j ? k > slot && k <= j : k > slot || k <= j;
      if (between) continue;
      keys[slot] = keys[j] as number;
      vals[slot] = vals[j] as number;
      stamps[slot] = stamps[j] as number;
      used[slot] = 1;
      used[j] = 0;
      slot = j;
    }
  };
  const touch = (key: number, value: number, or: boolean): void => {
      const stamp = ++clock;
      let i = slotOf(key);
      if (i < 0) {
        i = ~i;
        used[i] = 1;
        keys[i] = key;
        vals[i] = 0;
        size++;
      }
      vals[i] = or ? (vals[i] as number) | value : value;
      stamps[i] = stamp;
      fifoKeys.push(key);
      fifoStamps.push(stamp);
      while (size > capacity) {
        const k = fifoKeys[head] as number;
        const st = fifoStamps[head] as number;
        head++;
        const at = slotOf(k);
        if (at >= 0 && stamps[at] === st) {
          const v = vals[at] as number;
          removeAt(at);
          onEvict(k, v);
        }
      }
      if (head > 1 << 16 && head * 2 > fifoKeys.length) {
        fifoKeys = fifoKeys.slice(head);
        fifoStamps = fifoStamps.slice(head);
        head = 0;
      }
  };
  return {
    touch: (key, value) => touch(key, value, false),
    touchOr: (key, bits) => touch(key, bits, true),
    get(key) {
      const i = slotOf(key);
      return i < 0 ? -1 : (vals[i] as number);
    },
    has: (key) => slotOf(key) >= 0,
    get size() {
      return size;
    },
  };
}

/** GIE's approximate prefix index: hash -> servers, and one LRU of hashes per server whose
 *  eviction removes the server from that hash (indexer.go). */
export function createGieIndex(capacityPerServer: number): {
  add(hashes: readonly number[], server: number): void;
  servers(hash: number): ReadonlySet<number> | undefined;
  size(server: number): number;
} {
  const hashToServers = new Map<number, Set<number>>();
  const lrus: ReturnType<typeof createLru>[] = [];
  return {
    add(hashes, server) {
      const lru = (lrus[server] ??= createLru(capacityPerServer, (oldest) => {
        const set = hashToServers.get(oldest);
        if (set) {
          set.delete(server);
          if (set.size === 0) hashToServers.delete(oldest);
        }
      }));
      for (const h of hashes) lru.touch(h, 1); // re-insert: most recent
      for (const h of hashes) {
        let set = hashToServers.get(h);
        if (!set) hashToServers.set(h, (set = new Set()));
        set.add(server);
      }
    },
    servers: (hash) => hashToServers.get(hash),
    size: (server) => lrus[server]?.size ?? 0,
  };
}

export interface GieOptions {
  model: string;
  /** LRU entries per server (AutoTune: the server's KV blocks; else GIE_LRU_CAPACITY_PER_SERVER). */
  capacityPerServer?: number;
  weights?: { queue: number; kvCache: number; prefix: number };
  rng: Rng;
}

/** The three per-endpoint scores of GIE's default profile, each in [0, 1]. */
export function gieScores(matched: readonly number[], totalBlocks: number, states: readonly EndpointState[]): { prefix: number[]; queue: number[]; kvCache: number[] } {
  let minQ = Infinity;
  let maxQ = -Infinity;
  for (const s of states) {
    minQ = Math.min(minQ, s.waitingRequests);
    maxQ = Math.max(maxQ, s.waitingRequests);
  }
  return {
    prefix: states.map((_, i) => (totalBlocks === 0 ? 0 : (matched[i] ?? 0) / totalBlocks)),
    queue: states.map((s) => (maxQ === minQ ? 1 : (maxQ - s.waitingRequests) / (maxQ - minQ))),
    kvCache: states.map((s) => 1 - s.kvCacheUsage),
  };
}

export function createGieRouter(opts: GieOptions): PeerRouter & { index: ReturnType<typeof createGieIndex> } {
  const w = opts.weights ?? GIE_WEIGHTS;
  const index = createGieIndex(opts.capacityPerServer ?? GIE_LRU_CAPACITY_PER_SERVER);
  const seed = stringSeed(opts.model);
  return {
    index,
    pick(prompt, states) {
      const hashes = chainHashes(prompt, GIE_BLOCK_BYTES, GIE_MAX_PREFIX_BLOCKS, seed);
      // matchLongestPrefix: walk from the first block; stop at the first block no server holds;
      // every server holding block i gets one more matched block
      const matched = new Array<number>(states.length).fill(0);
      for (const h of hashes) {
        const set = index.servers(h);
        if (!set || set.size === 0) break;
        for (const s of set) if (s < matched.length) matched[s] = (matched[s] as number) + 1;
      }
      const sc = gieScores(matched, hashes.length, states);
      // max-score picker: shuffled, then the highest score (ties uniformly at random)
      let best = -Infinity;
      let pick = 0;
      let ties = 0;
      for (let i = 0; i < states.length; i++) {
        if (!(states[i] as EndpointState).ready) continue;
        const total = w.prefix * (sc.prefix[i] as number) + w.queue * (sc.queue[i] as number) + w.kvCache * (sc.kvCache[i] as number);
        if (total > best) {
          best = total;
          pick = i;
          ties = 1;
        } else if (total === best && opts.rng.int(++ties) === 0) pick = i;
      }
      index.add(hashes, pick); // PreRequest: the chosen server now holds the prompt's blocks
      return pick;
    },
  };
}

// ---- AIBrix ----------------------------------------------------------------------------------------

export interface AibrixOptions {
  rng: Rng;
  blockNumber?: number;
  imbalanceAbsCount?: number;
  stddevFactor?: number;
}

/** AIBrix's local prefix table: one LRU of block hashes (capacity blockNumber) -> pods that
 *  were routed a prompt containing that block (a bitmask: the simulator has at most 31 pods).
 *  Put moves a block to the head; Get does not. */
export function createAibrixTable(blockNumber: number): { add(hashes: readonly number[], pod: number): void; pods(hash: number): number; size(): number } {
  const lru = createLru(blockNumber);
  return {
    add(hashes, pod) {
      const bit = 1 << pod;
      for (const h of hashes) lru.touchOr(h, bit);
    },
    pods: (hash) => Math.max(0, lru.get(hash)),
    size: () => lru.size,
  };
}

const mean = (xs: readonly number[]): number => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);
/** util.go standardDeviation: the sample deviation (n - 1), 0 for one value. */
export function sampleStdDev(xs: readonly number[]): number {
  if (xs.length <= 1) return 0;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, x) => a + (x - m) * (x - m), 0) / (xs.length - 1));
}

export function createAibrixRouter(opts: AibrixOptions): PeerRouter & { table: ReturnType<typeof createAibrixTable> } {
  const table = createAibrixTable(opts.blockNumber ?? AIBRIX_BLOCK_NUMBER);
  const imbalanceAbs = opts.imbalanceAbsCount ?? AIBRIX_IMBALANCE_ABS_COUNT;
  const factor = opts.stddevFactor ?? AIBRIX_STDDEV_FACTOR;
  const rng = opts.rng;
  const leastRequest = (ids: readonly number[], counts: readonly number[]): number => {
    let min = Infinity;
    let pick = ids[0] as number;
    let ties = 0;
    for (const i of ids) {
      const c = counts[i] as number;
      if (c < min) {
        min = c;
        pick = i;
        ties = 1;
      } else if (c === min && rng.int(++ties) === 0) pick = i;
    }
    return pick;
  };
  return {
    table,
    pick(prompt, states) {
      const ready: number[] = [];
      for (let i = 0; i < states.length; i++) if ((states[i] as EndpointState).ready) ready.push(i);
      // "running requests" is the gateway's own realtime count of requests it has in flight
      const counts = states.map((s) => s.inFlight);
      const hashes = chainHashes(prompt, AIBRIX_BLOCK_BYTES, Number.MAX_SAFE_INTEGER, 0);
      // load imbalance: max - min > IMBALANCE_ABS_COUNT -> only the least-loaded pods are candidates
      let lo = Infinity;
      let hi = -Infinity;
      for (const i of ready) {
        lo = Math.min(lo, counts[i] as number);
        hi = Math.max(hi, counts[i] as number);
      }
      let candidates = hi - lo > imbalanceAbs ? ready.filter((i) => counts[i] === lo) : ready.slice();
      // seqSearchPrefix: block by block, the candidates shrink to the pods holding every block so
      // far; each keeps the integer percent of the prompt it matched
      const percent = new Map<number, number>();
      for (let b = 0; b < hashes.length && candidates.length > 0; b++) {
        const pods = table.pods(hashes[b] as number);
        if (pods === 0) break;
        const p = Math.floor(((b + 1) * 100) / hashes.length);
        const kept = candidates.filter((c) => ((pods >>> c) & 1) === 1);
        if (kept.length === 0) break;
        for (const c of kept) percent.set(c, p);
        candidates = kept;
      }
      let target: number | undefined;
      if (percent.size > 0) {
        const readyCounts = ready.map((i) => counts[i] as number);
        const limit = mean(readyCounts) + factor * sampleStdDev(readyCounts);
        // shuffled, then stable-sorted: highest percent first, fewer running first
        const order = [...percent.keys()];
        for (let i = order.length - 1; i > 0; i--) {
          const j = rng.int(i + 1);
          [order[i], order[j]] = [order[j] as number, order[i] as number];
        }
        order.sort((a, b) => ((percent.get(b) as number) - (percent.get(a) as number)) || ((counts[a] as number) - (counts[b] as number)));
        target = order.find((i) => (counts[i] as number) <= limit);
      }
      // no match (or no matched pod within the load limit): least running requests of all ready pods
      if (target === undefined) target = leastRequest(ready, counts);
      table.add(hashes, target); // PostRouteUpdate
      return target;
    },
  };
}
