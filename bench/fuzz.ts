// `npm run bench -- fuzz [--quick] [--surface <name>] [--cases N] [--seed N] [--case I] [--time-ms N] [--jobs N]`:
// the long fuzzing budget of every surface in test/support/fuzz-surfaces.ts (the test suite runs a
// few seconds of each). Per surface, contract JSON lines: cases, failures, p99 time per case, max
// RSS. Defaults: 100,000 cases or 300 s per surface, whichever comes first; --quick: 20 s per
// surface. `--case I` reruns case I of --seed alone (what a failure line prints). Failing inputs go
// to a temporary directory named on stderr. No baseline: nothing else fuzzes these surfaces.
// `--jobs N` splits each surface's cases into N contiguous ranges run by N child processes (case i
// is the same input whichever process runs it); p99 is then the highest of the workers' p99s and
// max RSS the highest worker's.
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { benchLine, emitLine } from "./_report.js";
import { fileURLToPath } from "node:url";
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
const jobs = Math.max(1, intFlag("jobs", 1) as number);
const firstCase = one ?? intFlag("first", 0) as number;
const child = process.argv.includes("--child"); // one worker of --jobs: prints its FuzzResult as JSON
const surfaces = SURFACES.filter((s) => only === undefined || s.name === only);
if (surfaces.length === 0) {
  process.stderr.write(`TESSERA_USAGE: --surface=${only}: expected one of ${SURFACES.map((s) => s.name).join(", ")}\n`);
  process.exit(1);
}
const outDir = flag("out-dir") ?? mkdtempSync(join(tmpdir(), "tessera-fuzz-"));
const run = (name: string, first: number, n: number | undefined): Promise<FuzzResult> => {
  const s = surfaces.find((x) => x.name === name) as (typeof surfaces)[number];
  return runFuzz(s, { seed, outDir, first, ...(n !== undefined ? { cases: n } : {}), ...(timeMs !== undefined ? { timeMs } : {}) });
};
if (child) {
  const [s] = surfaces;
  process.stdout.write(JSON.stringify(await run((s as (typeof surfaces)[number]).name, firstCase, cases)) + "\n");
  process.exit(0);
}

/** One worker process per range of cases; their results merged (sums, and the highest p99 and RSS). */
async function runJobs(name: string): Promise<FuzzResult> {
  const total = cases as number;
  const per = Math.ceil(total / jobs);
  const self = fileURLToPath(import.meta.url);
  const parts = await Promise.all(Array.from({ length: jobs }, (_, j) => new Promise<FuzzResult>((resolve, reject) => {
    const argv = [self, "--child", "--surface", name, "--seed", String(seed), "--first", String(firstCase + j * per), "--cases", String(Math.max(0, Math.min(per, total - j * per))), "--out-dir", outDir, ...(timeMs !== undefined ? ["--time-ms", String(timeMs)] : [])];
    const c = spawn(process.execPath, argv, { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    c.stdout.on("data", (d: Buffer) => (out += d.toString()));
    c.on("close", (code) => {
      try {
        resolve(JSON.parse(out.trim().split("\n").pop() ?? "") as FuzzResult);
      } catch {
        reject(new Error(`fuzz worker ${j} of ${name} exited ${code} without a result`));
      }
    });
  })));
  const merged: FuzzResult = { surface: name, cases: 0, failures: 0, p99Ms: 0, maxRssBytes: 0 };
  for (const p of parts) {
    merged.cases += p.cases;
    merged.failures += p.failures;
    merged.p99Ms = Math.max(merged.p99Ms, p.p99Ms);
    merged.maxRssBytes = Math.max(merged.maxRssBytes, p.maxRssBytes);
    if (p.firstFailure && (!merged.firstFailure || p.firstFailure.index < merged.firstFailure.index)) merged.firstFailure = p.firstFailure;
  }
  return merged;
}

process.stderr.write(`fuzz: seed ${seed}, ${one !== undefined ? `case ${one} only` : `up to ${cases} cases or ${(timeMs ?? 0) / 1000} s per surface${jobs > 1 ? ` in ${jobs} worker processes` : ""}`}; failing inputs go to ${outDir}\n`);
const results: FuzzResult[] = [];
for (const s of surfaces) {
  const t0 = Date.now();
  const r = jobs > 1 && one === undefined ? await runJobs(s.name) : await run(s.name, firstCase, cases);
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
