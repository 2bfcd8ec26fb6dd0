// The routing simulator (bench/sim): vLLM KV-cache semantics, the engine-step cost model,
// admission and preemption, determinism of whole runs (with the real WASM router), and the
// validation gate on the reference workload W1, and the saturation guard on the hot prefix W5.
import t from "tap";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createKvCache, createKeyInterner } from "../bench/sim/kv-cache.js";
import { createServer, DEFAULT_ENGINE, stepTime, type LiveRequest, type SimServer } from "../bench/sim/server.js";
import { addRequest, buildWorkload, promptBytes, type RequestSpec } from "../bench/sim/workloads.js";
import { knee, percentile, simulate } from "../bench/sim/engine.js";
import { createRouterPool } from "../bench/sim/router-pool.js";
import { ROUTER_NAMES } from "../bench/sim/routers.js";
import { DEFAULT_ROUTER_CONFIG } from "../agent/routing/index.js";
import { AIBRIX_BLOCK_BYTES, AIBRIX_IMBALANCE_ABS_COUNT, GIE_BLOCK_BYTES, GIE_WEIGHTS, chainHashes, createAibrixRouter, createAibrixTable, createGieIndex, createGieRouter, createLru, gieScores, sampleStdDev } from "../bench/sim/peer-routers.js";
import { createRng } from "../bench/sim/prng.js";
import type { EndpointState } from "../agent/routing/types.js";

const cfg = DEFAULT_ENGINE;

/** Requests whose token IDs are 0..n-1 offset by `base` (same base = same prompt). */
function specs(defs: { base: number; prompt: number; output: number }[]): RequestSpec[] {
  const out: RequestSpec[] = [];
  const keys = createKeyInterner();
  const seq = (from: number, n: number): Int32Array => Int32Array.from({ length: n }, (_, i) => from + i);
  for (const d of defs) addRequest(out, keys, seq(d.base, d.prompt), seq(1_000_000 + out.length * 1000, d.output));
  return out;
}

function live(spec: RequestSpec, at = 0): LiveRequest {
  return { spec, server: 0, replica: 0, arrivedAt: at, admittedAt: Number.NaN, firstTokenAt: Number.NaN, finishedAt: Number.NaN, hitTokens: 0, computed: 0, target: 0, generated: 0, committed: 0, table: [], admissions: 0 };
}

/** Runs a server until idle; returns step durations and finished requests in order. */
function drain(s: SimServer, now = 0): { steps: number[]; done: LiveRequest[]; now: number } {
  const steps: number[] = [];
  const done: LiveRequest[] = [];
  for (let dt = s.startStep(now); dt >= 0; dt = s.startStep(now)) {
    steps.push(dt);
    now += dt;
    done.push(...s.finishStep(now));
  }
  return { steps, done, now };
}

t.test("kv cache: only committed full blocks hit, and hits stop at the first miss", async (t) => {
  const kv = createKvCache(8, 100);
  const keys = Int32Array.from([1, 2, 3]);
  const table = kv.acquire(keys, 0, 3);
  t.equal(kv.freeCount(), 5);
  t.equal(kv.lookup(keys, 3), 0, "allocated but not computed: no hit");
  kv.commit(table, 0, 1);
  kv.commit(table, 1, 2);
  t.equal(kv.lookup(keys, 3), 2);
  t.equal(kv.lookup(keys, 1), 1, "capped by maxBlocks");
  t.equal(kv.lookup(Int32Array.from([1, 9, 2]), 3), 1, "chained: a miss ends the prefix");
  kv.release(table);
  t.equal(kv.freeCount(), 8, "released blocks are free (and still cached)");
  t.equal(kv.lookup(keys, 3), 2);
});

t.test("kv cache: LRU frees tail first, evicts least recent first, never evicts held blocks", async (t) => {
  const kv = createKvCache(4, 100);
  const a = Int32Array.from([10, 11]);
  const ta = kv.acquire(a, 0, 2);
  kv.commit(ta, 0, 10);
  kv.commit(ta, 1, 11);
  kv.release(ta); // free queue: 2 never-used blocks, then 11 (tail freed first), then 10
  const b = Int32Array.from([20, 21, 22]);
  t.ok(kv.canAcquire(b, 0, 3));
  const tb = kv.acquire(b, 0, 3);
  t.equal(kv.lookup(a, 2), 1, "the suffix block (11) went first, the prefix block (10) survives");
  t.notOk(kv.canAcquire(Int32Array.from([30, 31]), 0, 2), "blocks held by a running request are not evictable");
  t.notOk(kv.canAcquire(Int32Array.from([10, 30]), 1, 1), "an idle hit cannot double as a fresh block");
  const tc = kv.acquire(Int32Array.from([10, 30]), 1, 0);
  t.equal(kv.freeCount(), 0, "a hit on an idle block takes it off the free queue");
  kv.release(tb); // uncached blocks go to the head: reused before any cached block
  const td = kv.acquire(Int32Array.from([40]), 0, 1);
  t.equal(kv.lookup(a, 2), 1, "block 10 pinned by C is untouched");
  kv.release(td);
  kv.release(tc);
  t.equal(kv.freeCount(), 4);
});

t.test("engine steps: step = t0 + a_p x prefill + a_d x decodes; TTFT of a lone request", async (t) => {
  const s = createServer(0, 16 * 1000, 100, cfg);
  const [spec] = specs([{ base: 0, prompt: 100, output: 3 }]);
  const r = live(spec as RequestSpec);
  s.enqueue(r);
  const { steps, done, now } = drain(s);
  t.same(steps, [stepTime(cfg, 100, 0), stepTime(cfg, 0, 1), stepTime(cfg, 0, 1)], "one prefill step, then one decode per token");
  t.equal(stepTime(cfg, 100, 2), cfg.t0 + cfg.aPrefill * 100 + cfg.aDecode * 2);
  t.equal(r.firstTokenAt, steps[0], "the prefill step samples the first token");
  t.equal(done[0], r);
  t.equal(r.finishedAt, now);
});

t.test("chunked prefill: a 10,000-token prompt takes an 8,192-token step then the rest", async (t) => {
  const s = createServer(0, 16 * 2000, 1000, cfg);
  const [spec] = specs([{ base: 0, prompt: 10_000, output: 1 }]);
  s.enqueue(live(spec as RequestSpec));
  const { steps } = drain(s);
  t.same(steps, [stepTime(cfg, 8192, 0), stepTime(cfg, 1808, 0)]);
});

t.test("prefix cache: the same prompt again skips all full blocks but the one holding the last token", async (t) => {
  const s = createServer(0, 16 * 1000, 200, cfg);
  const [a, b, c] = specs([{ base: 0, prompt: 100, output: 2 }, { base: 0, prompt: 100, output: 2 }, { base: 0, prompt: 96, output: 2 }]);
  const ra = live(a as RequestSpec);
  s.enqueue(ra);
  drain(s);
  const rb = live(b as RequestSpec);
  const rc = live(c as RequestSpec);
  s.enqueue(rb);
  s.enqueue(rc);
  const { steps } = drain(s);
  t.equal(ra.hitTokens, 0);
  t.equal(rb.hitTokens, 96, "6 full blocks of 100 tokens");
  t.equal(rc.hitTokens, 80, "96 tokens = 6 full blocks, but the last token is always recomputed");
  t.equal(steps[0], stepTime(cfg, 4 + 16, 0), "only uncached tokens are prefilled");
});

t.test("admission: waits until free blocks cover the uncached tokens, FIFO, nobody overtakes", async (t) => {
  const s = createServer(0, 16 * 10, 200, cfg); // 10 blocks
  const [a, b, c] = specs([{ base: 0, prompt: 100, output: 50 }, { base: 5000, prompt: 64, output: 2 }, { base: 9000, prompt: 10, output: 2 }]);
  const [ra, rb, rc] = [live(a as RequestSpec), live(b as RequestSpec), live(c as RequestSpec)];
  s.enqueue(ra);
  s.enqueue(rb);
  s.enqueue(rc);
  s.startStep(0);
  t.same([s.running.length, s.waiting.length], [1, 2], "B needs 4 blocks, 3 are free; C (1 block) waits behind B");
  s.finishStep(1);
  drain(s, 1);
  t.ok(rb.admittedAt >= ra.finishedAt, "B admitted once A released its blocks");
  t.ok(rc.admittedAt >= rb.admittedAt, "FIFO");
  t.equal(s.counters.preemptions, 0);
});

t.test("preemption: decode growth with no free block requeues the newest request, which still completes", async (t) => {
  const s = createServer(0, 16 * 10, 200, cfg);
  const [a, b] = specs([{ base: 0, prompt: 64, output: 60 }, { base: 5000, prompt: 64, output: 60 }]);
  const [ra, rb] = [live(a as RequestSpec), live(b as RequestSpec)];
  s.enqueue(ra);
  s.enqueue(rb);
  const { done } = drain(s);
  t.ok(s.counters.preemptions >= 1);
  t.same(done.map((r) => r.spec.id).sort(), [0, 1]);
  t.same([ra.generated, rb.generated], [60, 60]);
  t.equal(s.kv.freeCount(), 10, "every block back");
});

t.test("workloads: text renders 4 bytes per token so 64-byte router blocks align with 16-token blocks", async (t) => {
  const w = buildWorkload("W1", 1, 0.02);
  const [x, y] = w.requests as [RequestSpec, RequestSpec];
  t.equal(promptBytes(x).length, x.promptTokens * 4);
  t.same(Buffer.from(promptBytes(x).subarray(0, 6000 * 4)), Buffer.from(promptBytes(y).subarray(0, 6000 * 4)), "same group: same 6,000-token prefix");
  t.same(x.blocks.subarray(0, 375), y.blocks.subarray(0, 375));
  t.not(x.blocks[375], y.blocks[375], "questions differ");
  const w2 = buildWorkload("W2", 1, 0.01);
  const child = w2.requests.find((r) => r.after >= 0) as RequestSpec;
  const parent = w2.requests[child.after] as RequestSpec;
  t.same(child.tokens.subarray(0, parent.tokens.length), parent.tokens, "a turn extends the previous prompt + answer");
});

t.test("determinism: same seed, same figures (every router, real WASM core); another seed differs", async (t) => {
  const w = buildWorkload("W1", 7, 0.03);
  const pool = createRouterPool();
  const run = (router: (typeof ROUTER_NAMES)[number], seed: number): string => {
    pool.reset();
    return JSON.stringify(simulate(w, router, 12, { seed, makePrefixRouter: pool.make }));
  };
  for (const r of ROUTER_NAMES) t.equal(run(r, 7), run(r, 7), r);
  t.not(run("tessera", 7), run("tessera", 8));
  const tess = JSON.parse(run("tessera", 7)) as { hitRate: number; completed: number };
  const rr = JSON.parse(run("round-robin", 7)) as { hitRate: number };
  t.equal(tess.completed, w.requests.length);
  t.ok(tess.hitRate > rr.hitRate, `prefix routing hits more than round-robin (${tess.hitRate} vs ${rr.hitRate})`);
});

const ep = (i: number, over: Partial<EndpointState> = {}): EndpointState => ({ id: `10.0.0.${i}:8000`, ready: true, waitingRequests: 0, runningRequests: 0, kvCacheUsage: 0, inFlight: 0, ...over });
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

t.test("peer routers: chained block hashes share a prefix exactly as long as the text does; a short tail is dropped", async (t) => {
  const a = chainHashes(text("x".repeat(64 * 3) + "A".repeat(64)), GIE_BLOCK_BYTES, 256, 1);
  const b = chainHashes(text("x".repeat(64 * 3) + "B".repeat(64) + "tail"), GIE_BLOCK_BYTES, 256, 1);
  t.equal(a.length, 4);
  t.equal(b.length, 4, "the 4-byte tail is not a block");
  t.same(a.slice(0, 3), b.slice(0, 3));
  t.not(a[3], b[3]);
  t.equal(chainHashes(text("x".repeat(64 * 300)), GIE_BLOCK_BYTES, 256, 1).length, 256, "capped at maxBlocks");
  t.not(chainHashes(text("x".repeat(64)), 64, 1, 1)[0], chainHashes(text("x".repeat(64)), 64, 1, 2)[0], "the seed (GIE: the model) changes every hash");
});

t.test("peer routers: the typed-array LRU agrees with a reference LRU over 20,000 seeded touches", async (t) => {
  const rng = createRng(5);
  const evicted: number[] = [];
  const lru = createLru(50, (k) => evicted.push(k));
  const ref = new Map<number, number>();
  let mismatches = 0;
  for (let n = 0; n < 20_000; n++) {
    const key = ((rng.int(300) * 2654435761) % 2 ** 40) + rng.int(3) * 2 ** 40; // 53-bit keys, some sharing the low 30 bits
    const v = rng.int(1000);
    lru.touch(key, v);
    ref.delete(key);
    ref.set(key, v);
    if (ref.size > 50) ref.delete(ref.keys().next().value as number);
    if (n % 97 === 0) for (const [k, val] of ref) if (lru.get(k) !== val) mismatches++;
  }
  t.equal(lru.size, 50);
  t.equal(mismatches, 0, "every live key has its latest value");
  let absentHit = 0;
  for (const k of evicted) if (!ref.has(k) && lru.has(k)) absentHit++;
  t.equal(absentHit, 0, "evicted keys are gone");
});

t.test("gie-prefix: same prefix -> same server; per-server LRU eviction; default weights 3/2/2", async (t) => {
  t.same(GIE_WEIGHTS, { prefix: 3, queue: 2, kvCache: 2 });
  const sc = gieScores([4, 0, 2], 4, [ep(0, { waitingRequests: 10 }), ep(1, { waitingRequests: 5, kvCacheUsage: 0.25 }), ep(2)]);
  t.same(sc, { prefix: [1, 0, 0.5], queue: [0, 0.5, 1], kvCache: [1, 0.75, 1] });
  t.same(gieScores([], 0, [ep(0, { waitingRequests: 3 }), ep(1, { waitingRequests: 3 })]).queue, [1, 1], "equal queues score 1");

  const router = createGieRouter({ model: "m", capacityPerServer: 1000, rng: createRng(1) });
  const states = [0, 1, 2, 3].map((i) => ep(i));
  const system = "shared system prompt ".repeat(40);
  const first = router.pick(text(system + "question one"), states);
  for (let i = 0; i < 5; i++) t.equal(router.pick(text(system + `question ${i + 2}`), states), first, "prefix match wins on idle servers");
  // the prefix holder has the longest queue: prefix 3x1 + queue 0 + kv 2 = 5 against 0 + 2 + 2 = 4
  const busy = states.map((s, i) => (i === first ? { ...s, waitingRequests: 8 } : s));
  t.equal(router.pick(text(system + "again"), busy), first, "prefix weight 3 beats queue weight 2");
  // and also the fullest KV cache: 3 + 0 + 2x0.4 = 3.8 against 4
  const full = busy.map((s, i) => (i === first ? { ...s, kvCacheUsage: 0.6 } : s));
  t.not(router.pick(text(system + "once more"), full), first, "queue + KV (2 + 2) beat a full prefix match on a loaded server");

  const idx = createGieIndex(4);
  idx.add([1, 2, 3, 4], 0);
  idx.add([1, 2], 1);
  idx.add([5, 6], 0); // server 0's LRU holds 3, 4, 5, 6: 1 and 2 are evicted there only
  t.same([...(idx.servers(1) ?? [])], [1]);
  t.same([...(idx.servers(5) ?? [])], [0]);
  t.equal(idx.size(0), 4);
});

t.test("aibrix-prefix: same prefix -> same pod; imbalance and mean + 1 sigma send it elsewhere; one shared LRU", async (t) => {
  t.equal(AIBRIX_BLOCK_BYTES, 4);
  t.equal(sampleStdDev([1, 1, 1, 0]), 0.5);
  t.equal(sampleStdDev([7]), 0);
  const router = createAibrixRouter({ rng: createRng(3) });
  const idle = [0, 1, 2, 3].map((i) => ep(i));
  const system = "retrieval context block ".repeat(30);
  const home = router.pick(text(system + "q1"), idle);
  t.equal(router.pick(text(system + "q2"), idle), home, "prefix match");
  const inFlight = (counts: number[]): EndpointState[] => idle.map((s, i) => ({ ...s, inFlight: counts[i] as number }));
  const others = [0, 1, 2, 3].filter((i) => i !== home);
  // home at 1, one other at 0: mean 0.75 + sigma 0.5 = 1.25 >= 1: stays
  const c1 = [1, 1, 1, 1];
  c1[others[0] as number] = 0;
  t.equal(router.pick(text(system + "q3"), inFlight(c1)), home, "within mean + 1 sigma");
  // home at 3, others at 1: mean 1.5 + sigma 1 = 2.5 < 3: least request instead
  const c2 = [1, 1, 1, 1];
  c2[home] = 3;
  t.not(router.pick(text(system + "q4"), inFlight(c2)), home, "over mean + 1 sigma");
  // imbalance: max - min > 8 restricts candidates to the least-loaded pods, whatever they match
  // (without the rule home, at 1, is within mean 3.25 + sigma 4.6 and would stay)
  const fresh = createAibrixRouter({ rng: createRng(4) });
  const home2 = fresh.pick(text(system + "q1"), idle);
  const rest2 = [0, 1, 2, 3].filter((i) => i !== home2);
  const c3 = [0, 0, 0, 0];
  c3[home2] = 1;
  c3[rest2[0] as number] = AIBRIX_IMBALANCE_ABS_COUNT + 2;
  c3[rest2[1] as number] = 0;
  c3[rest2[2] as number] = 2;
  t.equal(fresh.pick(text(system + "q5"), inFlight(c3)), rest2[1], "imbalanced: the least-loaded pod");

  const table = createAibrixTable(3);
  table.add([10, 11, 12], 0);
  table.add([13], 1); // 10 is the least recently put: evicted
  t.equal(table.pods(10), 0);
  t.equal(table.pods(13), 2, "pod 1 as a bitmask");
  table.add([11], 2);
  t.equal(table.pods(11), 1 | 4, "pods accumulate on a block");
  t.equal(table.size(), 3);
});

t.test("knee arithmetic and percentiles", async (t) => {
  const cases: [number[][], number][] = [
    [[[10, 0.5], [20, 1.5], [30, 2.5]], 25],
    [[[30, 2.5], [10, 0.5], [20, 1]], 20 + (1 / 1.5) * 10],
    [[[10, 3]], 10],
    [[[10, 1], [20, 1.9]], Infinity],
  ];
  for (const [pts, want] of cases) t.equal(knee(pts.map(([rate, p]) => ({ rate: rate as number, ttftP90: p as number }))), want, JSON.stringify(pts));
  t.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90), 9);
  t.equal(percentile([5], 99), 5);
});

t.test("validation gate: round-robin on W1 knees at 18-22 req/s (8 x 20,480 / 7,200 = 22.8 bound)", async (t) => {
  const w = buildWorkload("W1", 42);
  const pts = [14, 17, 20, 22, 25].map((rate) => simulate(w, "round-robin", rate, { seed: 42, makePrefixRouter: () => { throw new Error("unused"); } }));
  const k = knee(pts);
  t.ok(k >= 18 && k <= 22, `knee ${k.toFixed(2)} req/s`);
  t.ok(pts.every((p) => p.completed === w.requests.length), "every request completes");
  t.ok(pts[0] && pts[0].hitRate < 0.2, "round-robin scatters the groups: few hits");
});

t.test("saturation guard: on a hot prefix (W5) the default guard spreads prefill, a guard-off router piles it up", async (t) => {
  // 160 requests sharing one 6,000-token prefix at 40 req/s, seed 42. Measured: default guard (16)
  // 1.00-1.04 max/mean prefill over seeds 7, 42-45; guard off 2.0-2.7; guard 32 about 1.55.
  const w = buildWorkload("W5", 42, 0.2);
  const imbalance = (guardThreshold: number): number => {
    const pool = createRouterPool({ guardThreshold });
    pool.reset();
    const f = simulate(w, "tessera", 40, { seed: 42, makePrefixRouter: pool.make });
    t.equal(f.completed, w.requests.length, `guard ${guardThreshold}: every request completes`);
    return f.imbalance;
  };
  const guarded = imbalance(DEFAULT_ROUTER_CONFIG.guardThreshold);
  const off = imbalance(1e9);
  t.ok(guarded < 1.3, `default guard ${DEFAULT_ROUTER_CONFIG.guardThreshold}: imbalance ${guarded.toFixed(2)} < 1.3`);
  t.ok(off > 1.5, `guard off: imbalance ${off.toFixed(2)} > 1.5 (the workload does pile up without the guard)`);
  const [a, b] = w.requests as [RequestSpec, RequestSpec];
  t.same(a.blocks.subarray(0, 375), b.blocks.subarray(0, 375), "one prefix shared by every request");
  t.not(a.blocks[375], b.blocks[375], "questions differ");
});

t.test("bench --router-config: one checked line for a bad profile, exit 1, before any run", async (t) => {
  const bench = fileURLToPath(new URL("../bench/routing.js", import.meta.url));
  const cases: [string, RegExp][] = [
    ['{"guardThreshhold":8}', /^TESSERA_CONFIG: router config guardThreshhold: unknown key/],
    ['{"weights":{"inflight":-1}}', /^TESSERA_CONFIG: router config weights\.inflight: -1 is outside/],
    ["guard=8", /^TESSERA_USAGE: --router-config guard=8: not JSON/],
    ["[8]", /^TESSERA_USAGE: --router-config \[8\]: expected a JSON object/],
  ];
  for (const [json, want] of cases) {
    const r = spawnSync(process.execPath, [bench, "--quick", "--router-config", json], { encoding: "utf8", timeout: 30_000 });
    t.equal(r.status, 1, `${json}: exit 1`);
    t.match(r.stderr, want, `${json}: the error line`);
    t.notMatch(r.stderr, /routing: seed/, `${json}: rejected before simulating`);
  }
});
