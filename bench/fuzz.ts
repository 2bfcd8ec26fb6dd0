// `npm run bench -- fuzz [--quick] [--surface <name>] [--cases N] [--seed N] [--case I] [--time-ms N]`:
// the long fuzzing budget of every surface in test/support/fuzz-surfaces.ts (the test suite runs a
// few seconds of each). Per surface, contract JSON lines: cases, failures, p99 time per case, max
// RSS. Defaults: 100,000 cases or 300 s per surface, whichever comes first; --quick: 20 s per
// surface. `--case I` reruns case I of --seed alone (what a failure line prints). Failing inputs go
// to a temporary directory named on stderr. No baseline: nothing else fuzzes these surfaces.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { benchLine, emitLine } from "./_report.js";
import { runFuzz, type FuzzResult } from "../test/support/fuzz.js";
import { SURFACES } from "../test/support/fuzz-surfaces.js";

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function intFlag(name: string, fallback: number | undefined): number | undefined {
  const v = flag(name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) {
    process.stderr.write(`TESSERA_USAGE: --${name}=${v}: expected a non-negative integer\n`);
    process.exit(1);
  }
  return n;
}

const quick = process.argv.includes("--quick");
const only = flag("surface");
const one = intFlag("case", undefined);
const seed = intFlag("seed", 1) as number;
const cases = one !== undefined ? 1 : intFlag("cases", 100_000);
const timeMs = one !== undefined ? undefined : intFlag("time-ms", quick ? 20_000 : 300_000);
const surfaces = SURFACES.filter((s) => only === undefined || s.name === only);
if (surfaces.length === 0) {
  process.stderr.write(`TESSERA_USAGE: --surface=${only}: expected one of ${SURFACES.map((s) => s.name).join(", ")}\n`);
  process.exit(1);
}
const outDir = mkdtempSync(join(tmpdir(), "tessera-fuzz-"));
process.stderr.write(`fuzz: seed ${seed}, ${one !== undefined ? `case ${one} only` : `up to ${cases} cases or ${(timeMs ?? 0) / 1000} s per surface`}; failing inputs go to ${outDir}\n`);
const results: FuzzResult[] = [];
for (const s of surfaces) {
  const t0 = Date.now();
  const r = await runFuzz(s, { seed, outDir, ...(cases !== undefined ? { cases } : {}), ...(timeMs !== undefined ? { timeMs } : {}), ...(one !== undefined ? { first: one } : {}) });
  results.push(r);
  const kase = `${s.name} seed=${seed}`;
  emitLine(benchLine("fuzz", kase, "cases", "count", r.cases));
  emitLine(benchLine("fuzz", kase, "failures", "count", r.failures));
  emitLine(benchLine("fuzz", kase, "p99_ms", "ms", r.p99Ms));
  emitLine(benchLine("fuzz", kase, "max_rss", "bytes", r.maxRssBytes));
  emitLine(benchLine("fuzz", kase, "wall_s", "s", Math.round((Date.now() - t0) / 100) / 10));
}
process.stderr.write("\nsurface   cases      failures  p99 ms   max RSS MiB\n");
for (const r of results) process.stderr.write(`${r.surface.padEnd(9)} ${String(r.cases).padEnd(10)} ${String(r.failures).padEnd(9)} ${String(r.p99Ms).padEnd(8)} ${Math.round(r.maxRssBytes / 2 ** 20)}\n`);
for (const r of results) if (r.firstFailure) process.stderr.write(`${r.surface}: first failure case ${r.firstFailure.index}: ${r.firstFailure.message} (${r.firstFailure.file})\n`);
process.exit(results.some((r) => r.failures > 0) ? 1 : 0);
