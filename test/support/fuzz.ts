// The fuzz harness interface (shared with the proxy/discovery surfaces). Seeded and bounded: case
// i of seed s is generated from its own stream, so one failing case replays from (seed, index).
// This is the minimal runner; the harness engineer's fuller one replaces it on merge.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRng, subSeed, type Rng } from "../../bench/sim/prng.js";

export interface FuzzTarget {
  gen(rng: Rng): Uint8Array;
  exec(input: Uint8Array): Promise<void>;
  close(): Promise<void>;
}
export interface FuzzSurface {
  name: string;
  open(): Promise<FuzzTarget>;
}
export interface FuzzResult {
  surface: string;
  cases: number;
  failures: number;
  p99Ms: number;
  maxRssBytes: number;
  firstFailure?: { seed: number; index: number; file: string; message: string };
}

export async function runFuzz(surface: FuzzSurface, opts: { seed: number; cases?: number; timeMs?: number; outDir: string }): Promise<FuzzResult> {
  const target = await surface.open();
  const maxCases = opts.cases ?? Number.POSITIVE_INFINITY;
  const deadline = opts.timeMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + opts.timeMs;
  if (!Number.isFinite(maxCases) && !Number.isFinite(deadline)) throw new Error("runFuzz needs cases or timeMs");
  const ms: number[] = [];
  let failures = 0;
  let maxRssBytes = process.memoryUsage().rss;
  let firstFailure: FuzzResult["firstFailure"];
  let i = 0;
  try {
    for (; i < maxCases && Date.now() < deadline; i++) {
      const input = target.gen(createRng(subSeed(opts.seed, `${surface.name}:${i}`)));
      const t0 = performance.now();
      try {
        await target.exec(input);
      } catch (err) {
        failures++;
        if (!firstFailure) {
          mkdirSync(opts.outDir, { recursive: true });
          const file = join(opts.outDir, `${surface.name}-${opts.seed}-${i}.bin`);
          writeFileSync(file, input);
          firstFailure = { seed: opts.seed, index: i, file, message: err instanceof Error ? err.message : String(err) };
        }
      }
      ms.push(performance.now() - t0);
      if (i % 64 === 0) maxRssBytes = Math.max(maxRssBytes, process.memoryUsage().rss);
    }
  } finally {
    await target.close();
  }
  ms.sort((a, b) => a - b);
  return { surface: surface.name, cases: i, failures, p99Ms: ms[Math.floor(ms.length * 0.99)] ?? 0, maxRssBytes, ...(firstFailure ? { firstFailure } : {}) };
}
