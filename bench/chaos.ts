// `npm run bench -- chaos [--quick] [--trials N] [--seed N]`: the kill -9 campaign of
// bench/_chaos.ts (real agent child process, SIGKILL 0-20 ms into Prepare/Unprepare batches and
// rediscoveries, invariants checked after every restart). Full run: 1,000 trials; --quick: 40.
// Prints trials, violations (must be 0) and restart time (spawn -> both sockets answer) p50/p99.
import { benchLine, emitLine, quantile } from "./_report.js";
import { runCampaign } from "./_chaos.js";

function intFlag(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v < 1) {
    process.stderr.write(`TESSERA_USAGE: ${name} takes a positive integer, got "${process.argv[i + 1] ?? ""}"; e.g. ${name} 100\n`);
    process.exit(1);
  }
  return v;
}

const quick = process.argv.includes("--quick");
const trials = intFlag("--trials", quick ? 40 : 1000);
const seed = intFlag("--seed", 1);
const t0 = performance.now();
const r = await runCampaign({ trials, seed, progress: (l) => process.stderr.write(l + "\n") });
const wallS = (performance.now() - t0) / 1000;
const kase = `${trials} trials, seed ${seed}, SIGKILL 0-20 ms into a batch`;
const lines = [
  benchLine("chaos", kase, "trials", "count", r.trials),
  benchLine("chaos", kase, "violations", "count", r.violations.length),
  benchLine("chaos", kase, "batches_cut_by_kill", "count", r.cut),
  benchLine("chaos", kase, "batches_answered_before_kill", "count", r.answered),
  benchLine("chaos", kase, "restart_p50_ms", "ms", Math.round(quantile(r.restartMs, 0.5) * 10) / 10),
  benchLine("chaos", kase, "restart_p99_ms", "ms", Math.round(quantile(r.restartMs, 0.99) * 10) / 10),
];
process.stderr.write(`chaos bench${quick ? " (--quick)" : ""}: ${r.trials} trials in ${wallS.toFixed(1)} s, ${r.cut} batches cut by the kill, ${r.answered} answered first\n`);
process.stderr.write(`violations: ${r.violations.length}\n`);
for (const v of r.violations.slice(0, 20)) process.stderr.write(`  ${v}\n`);
process.stderr.write(`restart (spawn -> GetInfo and empty Prepare answered): p50 ${quantile(r.restartMs, 0.5).toFixed(0)} ms, p99 ${quantile(r.restartMs, 0.99).toFixed(0)} ms\n`);
for (const l of lines) emitLine(l);
process.exitCode = r.violations.length === 0 ? 0 : 1;
