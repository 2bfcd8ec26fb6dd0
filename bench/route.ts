// `npm run bench -- route [--quick]`: one routing decision (prompt copied into WASM memory,
// chained hashing, prefix match on every endpoint, scoring) and, timed apart, its index update
// (router.flush(): insert with LRU eviction, which the proxy and epp run after answering) for
// 1K/8K/32K/100K-token prompts (4 bytes per token) x 8/32/100 endpoints whose indexes are full
// (31,250 blocks each; --quick: 4,096). Every decision gets a fresh prompt, as the proxy does:
// one of 16 system prefixes the index holds, then a numbered tag, then text, so every block after
// the prefix is new and its insert evicts an old one (cycling a few prompts would only refresh
// blocks already indexed). p50/p99 over many decisions (decision, update, and the two together); memory per index entry from the router's own
// accounting. No baseline: there is no other in-process prefix router to compare with.
import { createWasmPrefixRouter, type EndpointState } from "../agent/routing/index.js";
import { quantile } from "./_report.js";

const quick = process.argv.includes("--quick");
const CAPACITY = quick ? 4096 : 31_250;
const only = (name: string): number[] | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? [Number(process.argv[i + 1])] : undefined;
};
// --tokens N / --endpoints N run one case (for profiling: node --cpu-prof dist/bench/route.js ...)
const TOKENS = only("tokens") ?? [1000, 8000, 32_000, 100_000];
const ENDPOINTS = only("endpoints") ?? [8, 32, 100];
const DECISIONS = quick ? 400 : 3000;

let seed = 99;
const rand = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
const words = Array.from({ length: 512 }, (_, i) => `w${i.toString(36)}${"xyz".slice(i % 3)}`);
const text = (chars: number): string => {
  let s = "";
  while (s.length < chars) s += (words[Math.floor(rand() * words.length)] as string) + " ";
  return s.slice(0, chars);
};
const systems = Array.from({ length: 16 }, () => text(4096));

const pct = (sorted: number[], p: number): number => quantile(sorted, p / 100);

const rows: string[] = [];
for (const eps of ENDPOINTS) {
  const router = createWasmPrefixRouter({ capacityBlocks: CAPACITY, maxEndpoints: Math.max(128, eps) });
  const states: EndpointState[] = Array.from({ length: eps }, (_, i) => ({ id: `10.0.${i >> 8}.${i & 255}:8000`, ready: true, waitingRequests: 0, runningRequests: 0, kvCacheUsage: 0, inFlight: 0 }));
  // fill every index to capacity: 256-block prompts pinned to one endpoint at a time
  const filler = text(64 * 256 + 64);
  for (const s of states) {
    for (let k = 0; router.indexedBlocks(s.id) < CAPACITY; k++) router.route(`${s.id}#${k}#` + filler, "m", [s]);
  }
  for (let i = 0; i < 16; i++) router.route((systems[i] as string) + text(64), "m", states);
  const entries = states.reduce((n, s) => n + router.indexedBlocks(s.id), 0);
  const perEntry = router.indexBytes() / entries;
  process.stdout.write(JSON.stringify({ bench: "route", case: `${eps} endpoints, full index (${CAPACITY} blocks each)`, metric: "index_bytes_per_entry", unit: "B", value: +perEntry.toFixed(1), baseline: null, baselineValue: null, ratio: null }) + "\n");
  for (const tokens of TOKENS) {
    // 32 tails; each decision's prompt is built (and flattened by join) outside the timed region
    const tails = Array.from({ length: 32 }, () => text(tokens * 4 - 4096 - 16));
    const times: number[] = [];
    const updates: number[] = [];
    const totals: number[] = [];
    for (let i = 0; i < DECISIONS + 50; i++) {
      for (const s of states) {
        s.waitingRequests = Math.floor(rand() * 4);
        s.kvCacheUsage = rand();
        s.inFlight = Math.floor(rand() * 3);
      }
      const prompt = [systems[i % 16] as string, `#${tokens}:${i}#`.padEnd(16, "."), tails[i % 32] as string].join("");
      const t0 = process.hrtime.bigint();
      router.route(prompt, "m", states);
      const t1 = process.hrtime.bigint();
      router.flush();
      const t2 = process.hrtime.bigint();
      if (i >= 50) {
        times.push(Number(t1 - t0) / 1000);
        updates.push(Number(t2 - t1) / 1000);
        totals.push(Number(t2 - t0) / 1000);
      }
    }
    for (const a of [times, updates, totals]) a.sort((x, y) => x - y);
    const c = `${tokens / 1000}K-token prompt x ${eps} endpoints`;
    const metrics: [string, number][] = [
      ["p50_us", pct(times, 50)], ["p99_us", pct(times, 99)],
      ["update_p50_us", pct(updates, 50)], ["update_p99_us", pct(updates, 99)],
      ["decision_plus_update_p50_us", pct(totals, 50)], ["decision_plus_update_p99_us", pct(totals, 99)],
    ];
    for (const [metric, v] of metrics) {
      process.stdout.write(JSON.stringify({ bench: "route", case: c, metric, unit: "us", value: +v.toFixed(1), baseline: null, baselineValue: null, ratio: null }) + "\n");
    }
    const cell = (a: number[]): string => `${pct(a, 50).toFixed(1).padStart(7)} / ${pct(a, 99).toFixed(1).padStart(7)}`;
    rows.push(`${c.padEnd(34)} decision ${cell(times)}   update ${cell(updates)}   both ${cell(totals)} us (p50 / p99)`);
  }
  rows.push(`${eps} endpoints: ${entries} index entries, ${(router.indexBytes() / 2 ** 20).toFixed(1)} MiB, ${perEntry.toFixed(1)} B/entry`);
}
process.stderr.write(`route decision = encode + hash + match all endpoints + score; update = index insert + LRU eviction (router.flush) (${DECISIONS} decisions per case, node ${process.version})\n${rows.join("\n")}\n`);
