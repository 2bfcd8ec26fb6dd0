// Shared by every bench: the contract's JSON line (shared/contracts.md) and percentiles.
// Lines go to stdout, one per figure; human tables go to stderr.

export interface BenchLine {
  bench: string;
  case: string;
  metric: string;
  unit: string;
  value: number;
  baseline: string | null;
  baselineValue: number | null;
  ratio: number | null;
}

/** One figure; the ratio is value / baselineValue when a baseline was measured in the same run. */
export function benchLine(bench: string, kase: string, metric: string, unit: string, value: number, baseline: string | null = null, baselineValue: number | null = null): BenchLine {
  const ratio = baseline !== null && baselineValue !== null && Number.isFinite(baselineValue) && baselineValue !== 0 ? value / baselineValue : null;
  return { bench, case: kase, metric, unit, value, baseline, baselineValue, ratio: ratio === null ? null : Math.round(ratio * 1000) / 1000 };
}

export function emitLine(line: BenchLine): void {
  process.stdout.write(JSON.stringify(line) + "\n");
}

/** Percentile of an ascending array (q in 0..1): the element at floor(q·n); NaN when empty. */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}
