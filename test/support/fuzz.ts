// Seeded, bounded fuzzing of the hostile surfaces (HTTP into the proxy, nvidia-smi output into
// discovery, and whatever plugs into fuzz-surfaces.ts). Case i of seed s always gets the same
// input: its generator is seeded by subSeed(s, "<surface>:<i>"), so one case reruns alone
// (`npm run bench -- fuzz --surface <name> --seed <s> --case <i>`). A failing case's input is
// written to a file whose path is printed with the seed and index. Used by test/fuzz.test.ts (small
// budget) and bench/fuzz.ts (long budget).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { Rng } from "../../bench/sim/prng.js";
import { createRng, subSeed } from "../../bench/sim/prng.js";

export interface FuzzTarget {
  /** One fresh input derived only from rng (deterministic per seed). */
  gen(rng: Rng): Uint8Array;
  /** Feed it; resolve when the target answered; throw (Error with a clear message) if an invariant broke
   *  (process crashed, wrong status class, hang past a per-case deadline, memory bound exceeded...). */
  exec(input: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

export interface FuzzSurface {
  name: string;
  open(): Promise<FuzzTarget>;
  /** Cases in flight at once (default 1); only for targets whose cases are independent. */
  concurrency?: number;
}

export interface FuzzResult {
  surface: string;
  cases: number;
  failures: number;
  p99Ms: number;
  maxRssBytes: number;
  firstFailure?: { seed: number; index: number; file: string; message: string };
}

export interface FuzzOptions {
  seed: number;
  cases?: number; // stop after this many (default: unbounded, then timeMs must be set)
  timeMs?: number; // stop starting cases after this long
  outDir: string; // where failing inputs are written
  first?: number; // index of the first case (default 0): `first: i, cases: 1` reruns case i
  /** Called once per failure (default: one line on stderr). */
  report?: (line: string) => void;
}

/** The rng of case `index` of `seed` on `surface`. */
export function caseRng(surface: string, seed: number, index: number): Rng {
  return createRng(subSeed(seed, `${surface}:${index}`));
}

/** A hang inside exec past this is a failure too, even if the target set no deadline of its own. */
const OUTER_DEADLINE_MS = 30_000;

function withDeadline(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

export async function runFuzz(surface: FuzzSurface, opts: FuzzOptions): Promise<FuzzResult> {
  if (opts.cases === undefined && opts.timeMs === undefined) throw new Error("runFuzz: give cases or timeMs (fuzzing is bounded)");
  const report = opts.report ?? ((line: string) => void process.stderr.write(line + "\n"));
  const first = opts.first ?? 0;
  const end = opts.cases === undefined ? Infinity : first + opts.cases;
  const stopAt = opts.timeMs === undefined ? Infinity : performance.now() + opts.timeMs;
  const times: number[] = [];
  let failures = 0;
  let maxRss = process.memoryUsage.rss();
  let firstFailure: FuzzResult["firstFailure"];
  const target = await surface.open(); // one target serves every case
  let next = first;

  const fail = (index: number, input: Uint8Array, err: unknown): void => {
    failures++;
    const message = err instanceof Error ? err.message : String(err);
    mkdirSync(opts.outDir, { recursive: true });
    const file = join(opts.outDir, `${surface.name}-seed${opts.seed}-case${index}.bin`);
    writeFileSync(file, input);
    firstFailure ??= { seed: opts.seed, index, file, message };
    report(`fuzz ${surface.name}: seed ${opts.seed} case ${index} failed: ${message}; input in ${file}; rerun: npm run bench -- fuzz --surface ${surface.name} --seed ${opts.seed} --case ${index}`);
  };

  const worker = async (): Promise<void> => {
    while (next < end && performance.now() < stopAt) {
      const index = next++;
      const input = target.gen(caseRng(surface.name, opts.seed, index));
      const t0 = performance.now();
      try {
        await withDeadline(target.exec(input), OUTER_DEADLINE_MS);
      } catch (err) {
        fail(index, input, err);
      }
      times.push(performance.now() - t0);
      if ((index & 63) === 0) maxRss = Math.max(maxRss, process.memoryUsage.rss());
    }
  };

  try {
    await Promise.all(Array.from({ length: Math.max(1, surface.concurrency ?? 1) }, worker));
  } finally {
    maxRss = Math.max(maxRss, process.memoryUsage.rss());
    await target.close();
  }
  times.sort((a, b) => a - b);
  const p99 = times.length === 0 ? 0 : (times[Math.min(times.length - 1, Math.floor(0.99 * times.length))] as number);
  const result: FuzzResult = { surface: surface.name, cases: times.length, failures, p99Ms: Math.round(p99 * 1000) / 1000, maxRssBytes: maxRss };
  if (firstFailure) result.firstFailure = firstFailure;
  return result;
}

// ---- helpers for generators ------------------------------------------------------------------

export const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.int(xs.length)] as T;
export const chance = (rng: Rng, p: number): boolean => rng.next() < p;

/** 1..n random byte flips, insertions or deletions. */
export function mutateBytes(rng: Rng, b: Uint8Array, n: number): Uint8Array {
  let out = Buffer.from(b);
  for (let k = 1 + rng.int(n); k > 0 && out.length > 0; k--) {
    const at = rng.int(out.length);
    const op = rng.int(3);
    if (op === 0) out[at] = rng.int(256);
    else if (op === 1) out = Buffer.concat([out.subarray(0, at), Buffer.from([rng.int(256)]), out.subarray(at)]);
    else out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1)]);
  }
  return out;
}
