// The WASM routing core through its bridge: xxHash64 against the reference npm implementation,
// chained block hashes, the per-endpoint LRU index, scoring decisions on crafted states, config
// validation, and a flat heap across ten thousand decisions.
import t from "tap";
import xxhash from "xxhash-wasm";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { loadWasmCore } from "../agent/wasm/core.js";
import { createWasmPrefixRouter, routingExports, resolveRouterConfig, canonicalChat, routedRequest, type EndpointState } from "../agent/routing/index.js";

const core = loadWasmCore();
const x = routingExports(core);
const ref = await xxhash();
const enc = new TextEncoder();

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0) / 2 ** 32);
}

function wasmHash(bytes: Uint8Array, seed: bigint): bigint {
  const p = x.routeStage(bytes.length + 1);
  core.u8().set(bytes, p);
  return BigInt.asUintN(64, x.hashXxh64(p, bytes.length, seed));
}

function ep(id: string, over: Partial<EndpointState> = {}): EndpointState {
  return { id, ready: true, waitingRequests: 0, runningRequests: 0, kvCacheUsage: 0, inFlight: 0, ...over };
}

t.test("xxHash64 equals xxhash-wasm for every length 0..300 and big inputs, several seeds", async (t) => {
  const r = rng(7);
  const seeds = [0n, 1n, 0x9e3779b185ebca87n, 2n ** 64n - 1n];
  let checked = 0;
  for (const len of [...Array(301).keys(), 1000, 4096, 65_537]) {
    const b = new Uint8Array(len);
    for (let i = 0; i < len; i++) b[i] = Math.floor(r() * 256);
    for (const seed of seeds) {
      if (wasmHash(b, seed) !== ref.h64Raw(b, seed)) t.fail(`len ${len} seed ${seed}`);
      checked++;
    }
  }
  t.equal(checked, 304 * 4, "all vectors compared");
  t.equal(wasmHash(enc.encode("abc"), 0n), 0x44bc2cf5ad770999n, "published vector for \"abc\"");
  t.equal(wasmHash(new Uint8Array(0), 0n), 0xef46db3751d8e999n, "published vector for the empty input");
});

t.test("chained block hashes: seed chains block to block, only full blocks, at most maxBlocks", async (t) => {
  const text = enc.encode("x".repeat(64 * 5 + 10));
  const seed = ref.h64Raw(enc.encode("model-a"), 0n);
  const p = x.routeStage(text.length + 8 * 10 + 8);
  const out = (p + text.length + 7) & ~7;
  core.u8().set(text, p);
  const n = x.hashChain(p, text.length, seed, 64, 4, out);
  t.equal(n, 4, "capped by maxBlocks");
  let prev = seed;
  for (let i = 0; i < n; i++) {
    prev = ref.h64Raw(text.subarray(i * 64, i * 64 + 64), prev);
    t.equal(core.u64()[(out >>> 3) + i], prev, `block ${i}`);
  }
  t.equal(x.hashChain(p, text.length, seed, 64, 256, out), 5, "partial tail block not hashed");
});

t.test("canonical chat: key order and whitespace do not matter, roles and order do", async (t) => {
  const a = JSON.parse('{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}');
  const b = JSON.parse('{ "messages" : [ { "content":"hi", "role":"user" } , {"content":"yo","role":"assistant"} ] , "model":"m" }');
  t.equal(routedRequest("chat", a)?.prompt, routedRequest("chat", b)?.prompt);
  t.not(canonicalChat([{ role: "user", content: "hi" }]), canonicalChat([{ role: "system", content: "hi" }]));
  t.not(canonicalChat([{ role: "user", content: "a" }, { role: "user", content: "b" }]), canonicalChat([{ role: "user", content: "b" }, { role: "user", content: "a" }]));
  t.equal(canonicalChat([{ role: "user", content: [{ type: "text", text: "hi" }] }]), canonicalChat([{ role: "user", content: "hi" }]));
  t.equal(routedRequest("completions", { model: "m" }), undefined, "no prompt");
  t.equal(routedRequest("chat", [1]), undefined, "not an object");
  t.equal(routedRequest("completions", { model: "m", prompt: "p", cache_salt: "s" })?.salt, "s");
});

t.test("index: LRU per endpoint with capacity; the prompt head outlives its tail", async (t) => {
  const r = createWasmPrefixRouter({ blockSize: 4, capacityBlocks: 4 });
  const e = [ep("a:1")];
  r.route("AAAABBBBCCCCDDDD", "m", e);
  t.equal(r.matchedBlocks("AAAABBBBCCCCDDDD", "m", "a:1"), 4);
  t.equal(r.matchedBlocks("AAAABBBBCCCCDDDD", "other-model", "a:1"), 0, "model seeds the chain");
  t.equal(r.matchedBlocks("AAAABBBBCCCCDDDD", "m", "a:1", "salt"), 0, "salt seeds the chain");
  r.route("AAAABBBBXXXXYYYY", "m", e);
  t.equal(r.indexedBlocks("a:1"), 4, "capacity holds");
  t.equal(r.matchedBlocks("AAAABBBBCCCCDDDD", "m", "a:1"), 2, "the old tail was evicted, the shared head kept");
  t.equal(r.matchedBlocks("AAAABBBBXXXXYYYY", "m", "a:1"), 4);
  r.setCapacity("a:1", 2);
  t.equal(r.indexedBlocks("a:1"), 2);
  t.equal(r.matchedBlocks("AAAABBBBXXXXYYYY", "m", "a:1"), 2, "shrinking keeps the most recent (head) blocks");
  r.setCapacity("a:1", 8);
  r.route("AAAABBBBCCCCDDDD", "m", e);
  t.equal(r.indexedBlocks("a:1"), 4);
  r.removeEndpoint("a:1");
  t.same(r.endpoints(), []);
  r.addEndpoint("a:1");
  t.equal(r.matchedBlocks("AAAABBBBCCCCDDDD", "m", "a:1"), 0, "a removed endpoint forgets its blocks");
});

t.test("index: seeded random workload agrees with a plain LRU model", async (t) => {
  const r = rng(42);
  const cap = 37;
  const router = createWasmPrefixRouter({ blockSize: 2, capacityBlocks: cap, maxBlocks: 64 });
  const model = new Map<string, true>(); // key = prefix string of each block (chained = whole prefix)
  const alphabet = ["ab", "cd", "ef", "gh"];
  for (let step = 0; step < 400; step++) {
    let prompt = "";
    const len = 1 + Math.floor(r() * 12);
    for (let i = 0; i < len; i++) prompt += alphabet[Math.floor(r() * (i < 3 ? 2 : 4))];
    let want = 0;
    while (want < len && model.has(prompt.slice(0, (want + 1) * 2))) want++;
    if (router.matchedBlocks(prompt, "m", "e:1") !== want && step > 0) t.fail(`step ${step}: matched`);
    router.route(prompt, "m", [ep("e:1")]);
    for (let i = len - 1; i >= 0; i--) {
      const k = prompt.slice(0, (i + 1) * 2);
      model.delete(k);
      model.set(k, true);
      if (model.size > cap) model.delete(model.keys().next().value as string);
    }
    if (router.indexedBlocks("e:1") !== model.size) t.fail(`step ${step}: size ${router.indexedBlocks("e:1")} vs ${model.size}`);
  }
  t.equal(router.indexedBlocks("e:1"), cap, "filled to capacity");
});

t.test("index: binary-search prefix match equals a linear walk of a plain LRU model (long chains, self-evicting prompts, resizes)", async (t) => {
  const r = rng(1234);
  let cap = 23;
  const router = createWasmPrefixRouter({ blockSize: 1, capacityBlocks: cap, maxBlocks: 48 });
  const model = new Map<string, true>(); // key = the prefix each block's chained hash stands for
  const linear = (prompt: string): number => {
    let m = 0;
    while (m < Math.min(prompt.length, 48) && model.has(prompt.slice(0, m + 1))) m++;
    return m;
  };
  const prompts: string[] = [];
  let compared = 0;
  for (let step = 0; step < 600; step++) {
    // a recent prompt's prefix (cut anywhere) plus new text, so matches end at every depth
    const base = prompts.length > 0 && r() < 0.8 ? (prompts[Math.floor(r() * prompts.length)] as string) : "";
    let prompt = base.slice(0, Math.floor(r() * (base.length + 1)));
    const extra = Math.floor(r() * 40);
    for (let i = 0; i < extra; i++) prompt += "abc"[Math.floor(r() * 3)];
    if (prompt.length === 0) prompt = "a";
    for (const probe of [prompt, ...prompts.slice(-4)]) {
      if (router.matchedBlocks(probe, "m", "e:1") !== linear(probe)) t.fail(`step ${step}: matched ${router.matchedBlocks(probe, "m", "e:1")} vs ${linear(probe)} for ${probe.length}-block prompt`);
      compared++;
    }
    router.route(prompt, "m", [ep("e:1")]);
    for (let i = Math.min(prompt.length, 48) - 1; i >= 0; i--) {
      const k = prompt.slice(0, i + 1);
      model.delete(k);
      model.set(k, true);
      if (model.size > cap) model.delete(model.keys().next().value as string);
    }
    if (step % 97 === 96) {
      cap = 5 + Math.floor(r() * 40); // shrink or grow: a shrink evicts least recently used first
      router.setCapacity("e:1", cap);
      while (model.size > cap) model.delete(model.keys().next().value as string);
    }
    prompts.push(prompt);
    if (prompts.length > 16) prompts.shift();
  }
  t.equal(compared, 600 * 5 - 10, "every probe compared");
});

t.test("index update left pending by route(): flush() applies it, and no call ever sees the index without it", async (t) => {
  const prompt = "P".repeat(64 * 8);
  const other = "Q".repeat(64 * 8);
  const r = createWasmPrefixRouter({ capacityBlocks: 100 });
  const eps = [ep("a:1"), ep("b:1")];
  const first = r.route(prompt, "m", eps);
  const second = r.route(prompt, "m", eps); // no flush between: the pending endpoint is a candidate
  t.same([second.endpoint, second.matchedBlocks, second.reason], [first.endpoint, 8, "prefix"], "the next decision sees the pending update");
  t.equal(r.flush(), 8, "flush applies the second decision's 8 blocks");
  t.equal(r.flush(), 0, "nothing left pending");
  const rest = eps.filter((e) => e.id !== first.endpoint);
  const otherId = (rest[0] as EndpointState).id;
  const third = "R".repeat(64 * 8);
  r.route(third, "m", eps.filter((e) => e.id === first.endpoint)); // pending on first.endpoint
  t.equal(r.peek(third, "m", rest).matchedBlocks, 0, "a peek without the pending endpoint is unaffected");
  r.route(other, "m", rest); // a new pending update on the other endpoint: the first must not be lost
  t.equal(r.flush(), 8);
  t.equal(r.matchedBlocks(other, "m", otherId), 8);
  t.equal(r.matchedBlocks(third, "m", first.endpoint), 8, "the earlier pending update was applied, not dropped");
  // a pending update for an endpoint that is removed must not land on the next endpoint in its slot
  const r2 = createWasmPrefixRouter({ capacityBlocks: 100 });
  r2.route(prompt, "m", [ep("gone:1")]);
  r2.removeEndpoint("gone:1");
  r2.addEndpoint("new:1");
  r2.flush();
  t.equal(r2.matchedBlocks(prompt, "m", "new:1"), 0, "the slot's new endpoint holds nothing");
  // reads see the update without a flush
  const r3 = createWasmPrefixRouter({ capacityBlocks: 100 });
  r3.route(prompt, "m", [ep("a:1")]);
  t.equal(r3.indexedBlocks("a:1"), 8, "indexedBlocks applies it first");
  r3.route(other, "m", [ep("a:1")]);
  t.equal(r3.matchedBlocks(other, "m", "a:1"), 8, "matchedBlocks applies it first");
});

t.test("scoring decisions on crafted states", async (t) => {
  const prompt = "P".repeat(64 * 8);
  const fresh = () => {
    const r = createWasmPrefixRouter({ guardThreshold: 4 });
    for (const id of ["a:1", "b:1", "c:1"]) r.addEndpoint(id);
    return r;
  };
  const cases: { name: string; states: Partial<EndpointState>[]; want: string; reason: string }[] = [
    { name: "prefix wins over a slightly shorter queue", states: [{ waitingRequests: 2 }, {}, {}], want: "a:1", reason: "prefix" },
    { name: "guard trips when the prefix holder is overloaded", states: [{ waitingRequests: 9 }, { waitingRequests: 1 }, {}], want: "c:1", reason: "guard" },
    { name: "in-flight counts toward the guard", states: [{ inFlight: 6 }, {}, {}], want: "b:1|c:1", reason: "guard" },
    { name: "KV usage alone does not beat the prefix", states: [{ kvCacheUsage: 0.9 }, {}, {}], want: "a:1", reason: "prefix" },
  ];
  for (const c of cases) {
    const r = fresh();
    // seed the prefix on a:1 while it is the only ready endpoint
    r.route(prompt, "m", [ep("a:1")]);
    const states = ["a:1", "b:1", "c:1"].map((id, i) => ep(id, c.states[i]));
    const d = r.route(prompt, "m", states);
    t.match(d.endpoint, new RegExp(`^(${c.want})$`), c.name);
    t.equal(d.reason, c.reason, `${c.name}: reason`);
    t.equal(d.totalBlocks, 8);
  }
  const r = fresh();
  const d = r.route("Q".repeat(640), "m", [ep("a:1", { waitingRequests: 5 }), ep("b:1", { waitingRequests: 1 }), ep("c:1", { waitingRequests: 3 })]);
  t.same([d.endpoint, d.reason, d.matchedBlocks], ["b:1", "load", 0], "no prefix anywhere: shortest queue wins");
  t.equal(r.route("Z", "m", [ep("a:1"), ep("b:1", { ready: false })]).reason, "only", "one ready endpoint");
  t.throws(() => r.route("Z", "m", [ep("a:1", { ready: false })]), { code: "TESSERA_NO_ENDPOINT" });
  const sat = createWasmPrefixRouter({ saturationQueue: 4 });
  t.throws(() => sat.route("Z", "m", [ep("a:1", { waitingRequests: 4 }), ep("b:1", { inFlight: 9 })]), { code: "TESSERA_SATURATED" });
  t.equal(sat.route("Z", "m", [ep("a:1", { waitingRequests: 4 }), ep("b:1", { waitingRequests: 3 })]).endpoint, "b:1", "saturated endpoints are filtered");
});

t.test("ties: idle endpoints, different prefixes spread; the same prefix sticks", async (t) => {
  const r = createWasmPrefixRouter();
  const ids = ["a:1", "b:1", "c:1", "d:1"];
  const counts = new Map<string, number>();
  for (let i = 0; i < 400; i++) {
    const d = r.peek(`prompt number ${i} `.repeat(8), "m", ids.map((id) => ep(id)));
    t.equal(d.reason, "tie");
    counts.set(d.endpoint, (counts.get(d.endpoint) ?? 0) + 1);
  }
  t.equal(counts.size, 4, "every endpoint gets some prefixes");
  for (const [id, n] of counts) t.ok(n > 60 && n < 140, `${id} got ${n} of 400`);
  const first = r.route("shared system prompt ".repeat(20), "m", ids.map((id) => ep(id)));
  const again = r.route("shared system prompt ".repeat(20) + "question 2", "m", ids.map((id) => ep(id, { inFlight: id === first.endpoint ? 1 : 0 })));
  t.equal(again.endpoint, first.endpoint, "the replica holding the prefix serves it again");
  t.equal(again.reason, "prefix");
});

t.test("routers are independent inside one WASM instance", async (t) => {
  const r1 = createWasmPrefixRouter({ blockSize: 8 });
  const r2 = createWasmPrefixRouter({ blockSize: 8 });
  r1.route("0123456789abcdef", "m", [ep("x:1")]);
  t.equal(r1.matchedBlocks("0123456789abcdef", "m", "x:1"), 2);
  r2.addEndpoint("x:1");
  t.equal(r2.matchedBlocks("0123456789abcdef", "m", "x:1"), 0);
  // a third router with huge prompts moves the shared staging buffer; the others must follow it
  const big = createWasmPrefixRouter({ maxBlocks: 65_536 });
  t.equal(big.route("b".repeat(1 << 20), "m", [ep("x:1")]).totalBlocks, (1 << 20) / 64);
  t.equal(r1.matchedBlocks("0123456789abcdef", "m", "x:1"), 2, "still found after the staging buffer moved");
  t.equal(r1.route("0123456789abcdef", "m", [ep("x:1")]).matchedBlocks, 2);
});

t.test("default guard (16): decode-sized in-flight excess keeps the prefix, more voids it", async (t) => {
  // Decoding requests count as in-flight; the shipped threshold must tolerate them (see
  // docs/routing-quality.md, "Choosing the guard threshold") yet still spread a real pile-up.
  const prompt = "G".repeat(64 * 8);
  const cases: [number, string, string][] = [
    [12, "a:1", "prefix"],
    [16, "a:1", "prefix"],
    [17, "b:1|c:1", "guard"],
  ];
  for (const [inFlight, want, reason] of cases) {
    const r = createWasmPrefixRouter();
    for (const id of ["a:1", "b:1", "c:1"]) r.addEndpoint(id);
    r.route(prompt, "m", [ep("a:1")]);
    const d = r.route(prompt, "m", [ep("a:1", { inFlight }), ep("b:1"), ep("c:1")]);
    t.match(d.endpoint, new RegExp(`^(${want})$`), `in-flight excess ${inFlight}`);
    t.equal(d.reason, reason, `in-flight excess ${inFlight}: reason`);
  }
  t.equal(resolveRouterConfig().guardThreshold, 16);
});

t.test("config: strict validation names the bad key", async (t) => {
  const bad: [unknown, RegExp][] = [
    [{ blockSize: 0 }, /blockSize/],
    [{ maxBlocks: 1.5 }, /maxBlocks/],
    [{ weights: { prefix: -1 } }, /weights.prefix/],
    [{ weights: { latency: 1 } }, /weights.latency/],
    [{ guardThreshold: Number.NaN }, /guardThreshold/],
    [{ colour: "red" }, /colour/],
  ];
  for (const [input, msg] of bad) t.throws(() => resolveRouterConfig(input as never), { code: "TESSERA_CONFIG", message: msg });
  t.same(resolveRouterConfig({ weights: { kv: 0 } }).weights, { prefix: 3, queue: 2, kv: 0, inflight: 1 });
});

t.test("seed is xxHash64(model [0x00 salt]); long client-chosen model names are not retained", async (t) => {
  const r = createWasmPrefixRouter();
  const states = [ep("10.0.0.1:8000"), ep("10.0.0.2:8000")];
  const block = "b".repeat(64);
  for (const [model, salt, seedText] of [["m", undefined, "m"], ["m", "s", "m\u0000s"], ["", "", "\u0000"], ["mödel", undefined, "mödel"]] as const) {
    const want = ref.h64Raw(enc.encode(block), ref.h64Raw(enc.encode(seedText), 0n));
    t.equal(r.peek(block + "tail", model, states, salt).tieKey, want, `first block chained from seed ${JSON.stringify(seedText)}`);
  }
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const used = (): number => {
    gc();
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const before = used();
  for (let i = 0; i < 1100; i++) r.peek("p", `${i}:${"m".repeat(32 * 1024)}`, states);
  const grown = used() - before;
  t.ok(grown < 16 * 1024 * 1024, `1,100 distinct 32 KiB model names retain ${(grown / 1048576).toFixed(1)} MiB (< 16)`);
});

t.test("heap stays flat across 10,000 decisions", async (t) => {
  const r = createWasmPrefixRouter({ capacityBlocks: 512 });
  const ids = Array.from({ length: 8 }, (_, i) => `10.0.0.${i}:8000`);
  const states = ids.map((id) => ep(id));
  const prompts = Array.from({ length: 64 }, (_, i) => `system ${i % 4} `.repeat(40) + `user ${i}`.repeat(10));
  for (let i = 0; i < 2000; i++) r.route(prompts[i % 64] as string, "m", states); // warm: fill indexes to capacity
  const m0 = x.routeHeapMark();
  const m1 = x.routeHeapMark();
  const bytes0 = core.exports.memory.buffer.byteLength;
  for (let i = 0; i < 10_000; i++) r.route(prompts[i % 64] as string, "m", states);
  const m2 = x.routeHeapMark();
  t.equal(m2 - m1, m1 - m0, "nothing allocated between the marks");
  t.equal(core.exports.memory.buffer.byteLength, bytes0, "memory did not grow");
});
