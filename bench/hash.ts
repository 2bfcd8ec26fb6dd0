// `npm run bench -- hash [--quick]`: MiB/s of chained block hashing (64-byte blocks, each
// block's xxHash64 seeded with the previous block's hash) of 4 KiB, 32 KiB and 400 KiB prompts,
// every block hashed (no 256-block cap). Tessera: the WASM core, prompt copied into WASM memory
// once, one call. Baseline in the same run: the faster of @node-rs/xxhash (native) and
// xxhash-wasm doing the same per-block chain from JS. Beside it, the ceiling: the same npm
// libraries hashing the whole prompt in ONE call (one xxHash64 of all bytes, not a chain, so not
// the routing answer): what a single native/WASM call costs with no per-block crossing. Median of
// rounds. JSON lines on stdout, a table on stderr.
import { xxh64 as nodeRsXxh64 } from "@node-rs/xxhash";
import xxhash from "xxhash-wasm";
import { loadWasmCore } from "../agent/wasm/core.js";
import { routingExports } from "../agent/routing/index.js";

const quick = process.argv.includes("--quick");
const BLOCK = 64;
const SIZES: [string, number][] = [["4KiB", 4096], ["32KiB", 32 * 1024], ["400KiB", 400 * 1024]];
const ROUNDS = quick ? 7 : 21;
const BYTES_PER_ROUND = quick ? 8 << 20 : 32 << 20;

const core = loadWasmCore();
const x = routingExports(core);
const ref = await xxhash();

function prompt(n: number): Uint8Array {
  const b = new Uint8Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) b[i] = 32 + ((s = (s * 1103515245 + 12345) >>> 0) % 95);
  return b;
}

type Hasher = (p: Uint8Array) => bigint;

function tessera(): Hasher {
  return (p) => {
    const blocks = Math.floor(p.length / BLOCK);
    const base = x.routeStage(p.length + blocks * 8 + 8);
    const out = (base + p.length + 7) & ~7;
    core.u8().set(p, base);
    const n = x.hashChain(base, p.length, 0n, BLOCK, 65_536, out);
    return core.u64()[(out >>> 3) + n - 1] as bigint;
  };
}

function chainJs(h: (b: Uint8Array, seed: bigint) => bigint): Hasher {
  return (p) => {
    let prev = 0n;
    const blocks = Math.floor(p.length / BLOCK);
    for (let i = 0; i < blocks; i++) prev = h(p.subarray(i * BLOCK, i * BLOCK + BLOCK), prev);
    return prev;
  };
}

function mibPerSec(h: Hasher, p: Uint8Array): number {
  const reps = Math.max(1, Math.floor(BYTES_PER_ROUND / p.length));
  for (let i = 0; i < Math.min(reps, 50); i++) h(p); // warm up
  const rates: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < reps; i++) h(p);
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    rates.push((reps * p.length) / (1 << 20) / s);
  }
  rates.sort((a, b) => a - b);
  return rates[Math.floor(rates.length / 2)] as number;
}

const impls: [string, Hasher][] = [
  ["tessera-wasm", tessera()],
  ["@node-rs/xxhash", chainJs((b, s) => nodeRsXxh64(b, s))],
  ["xxhash-wasm", chainJs((b, s) => ref.h64Raw(b, s))],
];

// the three must agree before any figure counts
for (const [, n] of SIZES) {
  const p = prompt(n);
  const want = BigInt.asUintN(64, (impls[1] as [string, Hasher])[1](p));
  for (const [name, h] of impls) if (BigInt.asUintN(64, h(p)) !== want) throw new Error(`${name} disagrees on ${n} bytes`);
}

/** One call over the whole prompt: the ceiling of each library (a different hash than the chain). */
const singleCall: [string, Hasher][] = [
  ["@node-rs/xxhash", (p) => nodeRsXxh64(p, 0n)],
  ["xxhash-wasm", (p) => ref.h64Raw(p, 0n)],
];

const rows: string[] = [];
for (const [label, n] of SIZES) {
  const p = prompt(n);
  const r = impls.map(([name, h]) => [name, mibPerSec(h, p)] as const);
  const single = singleCall.map(([name, h]) => [name, mibPerSec(h, p)] as const);
  const ours = (r[0] as readonly [string, number])[1];
  const [bName, bVal] = r.slice(1).reduce((a, b) => (b[1] > a[1] ? b : a));
  process.stdout.write(JSON.stringify({ bench: "hash", case: `${label} prompt, 64 B blocks`, metric: "throughput", unit: "MiB/s", value: +ours.toFixed(1), baseline: `${bName} chained per block (fastest npm xxHash64)`, baselineValue: +bVal.toFixed(1), ratio: +(ours / bVal).toFixed(2) }) + "\n");
  const [sName, sVal] = single.reduce((a, b) => (b[1] > a[1] ? b : a));
  process.stdout.write(JSON.stringify({ bench: "hash", case: `${label} prompt, 64 B blocks`, metric: "throughput_vs_single_call_ceiling", unit: "MiB/s", value: +ours.toFixed(1), baseline: `${sName} one call on the whole prompt (ceiling, not chained)`, baselineValue: +sVal.toFixed(1), ratio: +(ours / sVal).toFixed(2) }) + "\n");
  rows.push(`${label.padEnd(8)} ${r.map(([name, v]) => `${name} ${v.toFixed(0).padStart(6)} MiB/s`).join("   ")}   | one call: ${single.map(([name, v]) => `${name} ${v.toFixed(0).padStart(6)}`).join("   ")} MiB/s`);
}
process.stderr.write(`chained xxHash64, 64-byte blocks, median of ${ROUNDS} rounds (node ${process.version})\n${rows.join("\n")}\n`);
