// `npm run bench -- routing [--quick]`: routing quality in a deterministic discrete-event
// simulation of vLLM-like replicas (bench/sim/). Every router runs the same seeded workloads over
// a rate ladder; Tessera is the real WASM routing core (createWasmPrefixRouter), one instance per
// proxy replica. Stdout: contract JSON lines (baselines: round-robin and the oracle, same run).
// Stderr: tables and the validation gate. Full runs of the shipped profile also write
// docs/routing-ttft.svg. --guard-threshold and --router-config override the Tessera routers' profile (sweeps).
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseFlags, type FlagSpec } from "../agent/common/config.js";
import { TesseraError, formatError } from "../agent/common/errors.js";
import { knee, simulate, type RunFigures } from "./sim/engine.js";
import { DEFAULT_ROUTER_NAMES, QUICK_ROUTER_NAMES, ROUTER_NAMES, type RouterName } from "./sim/routers.js";
import { DEFAULT_ENGINE, ISSUE_ENGINE } from "./sim/server.js";
import { DEFAULT_ROUTER_CONFIG, PICKER_COLD_SLACK, resolveRouterConfig, type RouterConfigInput } from "../agent/routing/index.js";
import { createRouterPool } from "./sim/router-pool.js";
import { renderChart, type Panel } from "./sim/svg.js";
import { ALL_WORKLOAD_NAMES, WORKLOAD_NAMES, buildWorkload, type Workload, type WorkloadName } from "./sim/workloads.js";
import { benchLine, emitLine, type BenchLine } from "./_report.js";

const FLAGS: FlagSpec[] = [
  { name: "quick", type: "bool", default: false, help: "W1 only, no chart (< 60 s)" },
  { name: "seed", type: "int", default: 42, help: "first seed (workload, arrivals, tie-breaks)" },
  { name: "seeds", type: "int", help: "seeds per point, figures are medians (default 3, --quick 1)" },
  { name: "workloads", type: "list", help: "subset of W1,W2,W3,W4 (default), or W5 (hot prefix, only when named)" },
  { name: "routers", type: "list", help: `subset of ${ROUTER_NAMES.join(",")} (default: all but epp-x4; --quick: also without aibrix-prefix)` },
  { name: "scrape-ms", type: "int", default: 50, help: "metric snapshot period" },
  { name: "staleness-ms", type: "int", default: 0, help: "extra delay before a snapshot reaches the routers" },
  { name: "guard-threshold", type: "int", default: DEFAULT_ROUTER_CONFIG.guardThreshold, help: "Tessera's saturation guard, in requests (default: the router's)" },
  { name: "router-config", type: "string", help: "JSON profile overrides for the Tessera routers, e.g. '{\"weights\":{\"inflight\":0}}' (keys of agent/routing/config.ts)" },
  { name: "calibration", type: "string", default: "gate", help: "gate (published) | issue (the issue's literal t0=15 ms, a_d=0.3 ms)" },
  { name: "chart", type: "string", help: "SVG output path (default docs/routing-ttft.svg on full runs with the default guard)" },
];

type Line = BenchLine;

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const GATE = { lo: 18, hi: 22, nominal: (8 * 20_480) / 7_200 };

const line = (c: string, metric: string, unit: string, value: number, baseline: string | null, baselineValue: number | null): Line => benchLine("routing", c, metric, unit, value, baseline, baselineValue);

const round = (x: number, d = 4): number => Math.round(x * 10 ** d) / 10 ** d;

/** Figures reported per router at a workload's reference rate. */
const AT_RATE: [keyof RunFigures, string, string, number][] = [
  ["hitRate", "hit_rate", "fraction", 1],
  ["ttftP50", "ttft_p50_s", "s", 1],
  ["ttftP90", "ttft_p90_s", "s", 1],
  ["ttftP99", "ttft_p99_s", "s", 1],
  ["itl", "itl_ms", "ms", 1000],
  ["throughput", "throughput_tok_s", "tokens/s", 1],
  ["imbalance", "imbalance", "max/mean prefill", 1],
];

function main(argv: string[]): number {
  const args = parseFlags(argv, FLAGS, {});
  const quick = args.values.quick === true;
  const seed = args.values.seed as number;
  const seeds = (args.values.seeds as number | undefined) ?? (quick ? 1 : 3);
  if (seeds < 1 || seeds > 15) throw new TesseraError("TESSERA_USAGE", `--seeds ${seeds}: expected 1..15`);
  const calibration = args.values.calibration as string;
  if (calibration !== "gate" && calibration !== "issue") throw new TesseraError("TESSERA_USAGE", `--calibration ${calibration}: expected gate or issue`);
  const pick = <T extends string>(v: unknown, all: readonly T[], what: string, byDefault: readonly T[] = all): T[] => {
    if (v === undefined) return [...byDefault];
    for (const x of v as string[]) if (!all.includes(x as T)) throw new TesseraError("TESSERA_USAGE", `--${what} ${x}: expected one of ${all.join(", ")}`);
    return v as T[];
  };
  const workloads = args.values.workloads === undefined && quick ? (["W1"] as WorkloadName[]) : pick(args.values.workloads, ALL_WORKLOAD_NAMES, "workloads", WORKLOAD_NAMES);
  const routers = pick(args.values.routers, ROUTER_NAMES, "routers", quick ? QUICK_ROUTER_NAMES : DEFAULT_ROUTER_NAMES);
  for (const must of ["round-robin", "oracle"] as const) if (!routers.includes(must)) routers.push(must); // the baselines
  const engine = calibration === "gate" ? DEFAULT_ENGINE : ISSUE_ENGINE;
  const guardThreshold = args.values["guard-threshold"] as number;
  if (guardThreshold < 0) throw new TesseraError("TESSERA_USAGE", `--guard-threshold ${guardThreshold}: expected a whole number >= 0`);
  const overrides = parseRouterConfig(args.values["router-config"] as string | undefined);
  const profile = resolveRouterConfig({ ...overrides, guardThreshold: overrides.guardThreshold ?? guardThreshold });
  const pool = createRouterPool({ ...overrides, guardThreshold: profile.guardThreshold });
  const opts = {
    engine,
    scrapeInterval: (args.values["scrape-ms"] as number) / 1000,
    staleness: (args.values["staleness-ms"] as number) / 1000,
    makePrefixRouter: pool.make,
  };
  const started = Date.now();
  process.stderr.write(`routing: seed ${seed}, calibration ${calibration} (t0 ${engine.t0 * 1000} ms, a_p ${engine.aPrefill * 1e6} us/token, a_d ${engine.aDecode * 1e6} us), scrape ${opts.scrapeInterval * 1000} ms + ${opts.staleness * 1000} ms staleness, ${seeds} seed(s)\n`);
  const rc = DEFAULT_ROUTER_CONFIG;
  if (args.values["router-config"] !== undefined) process.stderr.write(`tessera profile overrides: ${JSON.stringify(overrides)}\n`);
  process.stderr.write(`tessera = WASM core (createWasmPrefixRouter), profile: weights ${JSON.stringify(profile.weights)}, guard ${profile.guardThreshold}${profile.guardThreshold === rc.guardThreshold ? "" : ` (default ${rc.guardThreshold})`}, ${profile.blockSize}-byte blocks, ${profile.maxBlocks} blocks/prompt max, coldSlack ${profile.coldSlack} (epp: ${PICKER_COLD_SLACK} unless set)\n`);

  const lines: Line[] = [];
  const panels: Panel[] = [];
  let gatePass = true;
  for (const name of workloads) {
    const runs = new Map<RouterName, RunFigures[][]>(routers.map((r) => [r, []]));
    let w = buildWorkload(name, seed);
    for (let k = 0; k < seeds; k++) {
      if (k > 0) w = buildWorkload(name, seed + k);
      for (const r of routers) {
        const perRate = w.rates.map((rate) => {
          pool.reset();
          return simulate(w, r, rate, { ...opts, seed: seed + k });
        });
        (runs.get(r) as RunFigures[][]).push(perRate);
      }
    }
    const results = new Map(routers.map((r) => [r, medianRuns(runs.get(r) as RunFigures[][])]));
    const knees = new Map(routers.map((r) => [r, knee(results.get(r) as RunFigures[])]));
    const spread = new Map(routers.map((r) => [r, (runs.get(r) as RunFigures[][]).map((x) => knee(x))]));
    const at = (r: RouterName, rate: number): RunFigures => (results.get(r) as RunFigures[]).find((f) => f.rate === rate) as RunFigures;
    report(w, routers, results, knees, spread);
    const top = w.rates[w.rates.length - 1] as number;
    const kneeValue = (r: RouterName): number => Math.min(knees.get(r) as number, top);
    const kneeUnit = (r: RouterName): string => (Number.isFinite(knees.get(r) as number) ? w.rateUnit : `${w.rateUnit}, lower bound (not reached)`);
    for (const r of routers) {
      const c = `${name}/${r}`;
      lines.push(line(c, "knee_rps", kneeUnit(r), round(kneeValue(r), 2), `${name}/round-robin`, round(kneeValue("round-robin"), 2)));
      if (r !== "oracle") lines.push(line(c, "knee_rps", kneeUnit(r), round(kneeValue(r), 2), `${name}/oracle`, round(kneeValue("oracle"), 2)));
      const ref = at(r, w.referenceRate);
      for (const [key, metric, unit, scale] of AT_RATE) {
        const v = round((ref[key] as number) * scale);
        lines.push(line(`${c}@${w.referenceRate}`, metric, unit, v, `${name}/round-robin@${w.referenceRate}`, round((at("round-robin", w.referenceRate)[key] as number) * scale)));
        if (r.startsWith("tessera")) lines.push(line(`${c}@${w.referenceRate}`, metric, unit, v, `${name}/oracle@${w.referenceRate}`, round((at("oracle", w.referenceRate)[key] as number) * scale)));
      }
      for (const f of results.get(r) as RunFigures[]) {
        if (f.rate === w.referenceRate) continue;
        lines.push(line(`${c}@${f.rate}`, "ttft_p90_s", "s", round(f.ttftP90), `${name}/round-robin@${f.rate}`, round(at("round-robin", f.rate).ttftP90)));
      }
    }
    if (name === "W1") {
      const rr = knees.get("round-robin") as number;
      gatePass = rr >= GATE.lo && rr <= GATE.hi;
      lines.push(line("W1/gate/round-robin", "knee_rps", "req/s", round(Math.min(rr, top), 2), "prefill bound 8x20480/7200", round(GATE.nominal, 2)));
      lines.push(line("W1/gate", "pass", "bool", gatePass ? 1 : 0, null, null));
      process.stderr.write(`validation gate: round-robin knees at ${rr.toFixed(1)} req/s on W1 (must be ${GATE.lo}-${GATE.hi}; prefill bound ${GATE.nominal.toFixed(1)}): ${gatePass ? "PASS" : "FAIL - do not publish these figures"}\n`);
    }
    panels.push({
      title: `${name}: ${w.title}`,
      xLabel: `offered rate (${w.rateUnit})`,
      series: routers.map((r) => ({ name: r, points: (results.get(r) as RunFigures[]).map((f) => ({ x: f.rate, y: f.ttftP90 })) })),
    });
  }
  for (const l of lines) emitLine(l);
  // The published chart is rewritten only by a full run of the shipped profile on the published
  // workloads (a W5 run must not replace the four panels).
  const published = !quick && guardThreshold === rc.guardThreshold && args.values["router-config"] === undefined && workloads.every((n) => WORKLOAD_NAMES.includes(n));
  const chart = (args.values.chart as string | undefined) ?? (published ? join(root, "docs", "routing-ttft.svg") : undefined);
  if (chart) {
    mkdirSync(dirname(chart), { recursive: true });
    writeFileSync(chart, renderChart(`TTFT p90 vs offered rate, 8 simulated vLLM replicas (seed ${seed}, calibration ${calibration})`, panels));
    process.stderr.write(`chart: ${chart}\n`);
  }
  process.stderr.write(`routing: ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  return 0;
}

/** --router-config: a JSON object; main() resolves it (unknown keys and bad values are TESSERA_CONFIG). */
function parseRouterConfig(text: string | undefined): RouterConfigInput {
  if (text === undefined) return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new TesseraError("TESSERA_USAGE", `--router-config ${text}: not JSON; expected an object such as '{"guardThreshold":32}'`);
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new TesseraError("TESSERA_USAGE", `--router-config ${text}: expected a JSON object`);
  return v as RouterConfigInput; // checked key by key where the profile is resolved, before any run
}

/** Per rate, the median of every figure across seeds (each figure separately). */
function medianRuns(perSeed: RunFigures[][]): RunFigures[] {
  const first = perSeed[0] as RunFigures[];
  return first.map((f, i) => {
    const at = perSeed.map((runs) => runs[i] as RunFigures);
    const med = (key: keyof RunFigures): number => {
      const xs = at.map((x) => x[key] as number).sort((a, b) => a - b);
      return xs.length % 2 === 1 ? (xs[(xs.length - 1) / 2] as number) : ((xs[xs.length / 2 - 1] as number) + (xs[xs.length / 2] as number)) / 2;
    };
    const out = { ...f };
    for (const key of Object.keys(f) as (keyof RunFigures)[]) if (typeof f[key] === "number" && key !== "rate") (out as Record<string, unknown>)[key] = med(key);
    return out;
  });
}

function report(w: Workload, routers: RouterName[], results: Map<RouterName, RunFigures[]>, knees: Map<RouterName, number>, spread: Map<RouterName, number[]>): void {
  const pad = (s: string, n: number): string => s.padStart(n);
  const top = w.rates[w.rates.length - 1] as number;
  const kn = (k: number): string => (Number.isFinite(k) ? k.toFixed(1) : `>${top}`);
  const seeds = (spread.get("round-robin") ?? []).length;
  const out: string[] = [`\n${w.name} ${w.title}: ${w.requests.length} requests, ${w.servers} servers x ${w.kvTokensPerServer} KV tokens; medians of ${seeds} seed(s) at ${w.referenceRate} ${w.rateUnit}`];
  out.push(`${"router".padEnd(14)}${pad("knee", 8)}${pad("per seed", 18)}${pad("hit", 7)}${pad("p50 s", 8)}${pad("p90 s", 8)}${pad("p99 s", 8)}${pad("ITL ms", 8)}${pad("tok/s", 8)}${pad("imbal", 7)}${pad("preempt", 8)}`);
  for (const r of routers) {
    const f = (results.get(r) as RunFigures[]).find((x) => x.rate === w.referenceRate) as RunFigures;
    const k = knees.get(r) as number;
    out.push(
      `${r.padEnd(14)}${pad(kn(k), 8)}${pad((spread.get(r) ?? []).map(kn).join("/"), 18)}${pad(f.hitRate.toFixed(3), 7)}${pad(f.ttftP50.toFixed(2), 8)}${pad(f.ttftP90.toFixed(2), 8)}${pad(f.ttftP99.toFixed(2), 8)}${pad((f.itl * 1000).toFixed(1), 8)}${pad(f.throughput.toFixed(0), 8)}${pad(f.imbalance.toFixed(2), 7)}${pad(String(f.preemptions), 8)}`,
    );
  }
  out.push(`TTFT p90 (s) by rate: ${"".padEnd(0)}${w.rates.map((x) => pad(String(x), 6)).join("")}`);
  for (const r of routers) out.push(`  ${r.padEnd(19)}${(results.get(r) as RunFigures[]).map((f) => pad(f.ttftP90 < 100 ? f.ttftP90.toFixed(2) : f.ttftP90.toFixed(0), 6)).join("")}`);
  process.stderr.write(out.join("\n") + "\n");
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(formatError(err) + "\n");
  process.exitCode = 1;
}
