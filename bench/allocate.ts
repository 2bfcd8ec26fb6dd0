// `npm run bench -- allocate [--quick]`: latency (p50/p99) and claims/s of allocateClaim for the
// deploy/examples claims on h100-sxm-8x (8 devices) and on the same node with MIG mode on every GPU
// in dynamic-MIG mode (200 partitionable devices with counters), first-fit and best-fit, split into
// preparation (validation, CEL, flattening) and WASM search. Three input regimes: warm (the same
// objects every call), fresh (a deep clone of every input per call, cloned outside the timed part,
// compiled CEL warm: what `claims apply` / `diag explain` and the Go side of allocate-vs-go see)
// and cold (fresh, and the compiled-CEL cache and selector memo emptied). Baselines in the same
// run: warm and fresh against cold; best-fit against first-fit of the same case.
// JSON lines on stdout (contracts.md), a table on stderr.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";
import { allocateClaim, type AllocateInput } from "../agent/allocator/index.js";
import { clearCelCache } from "../agent/allocator/cel-env.js";
import { clearSelectorMemo } from "../agent/allocator/flatten.js";
import { fixtureSlices } from "../agent/allocator/node-slices.js";
import { NODE_FLAGS, parseFlags, resolveNodeConfig } from "../agent/common/config.js";
import { createDiscovery } from "../agent/discovery/index.js";
import type { ResourceSlice } from "../agent/kube/types.js";
import { buildResourceSlices } from "../agent/slices/build.js";
import type { ResourceClaim } from "../agent/kube/types.js";
import { benchLine, emitLine, quantile, type BenchLine } from "./_report.js";

const quick = process.argv.includes("--quick");
const ITER = quick ? 150 : 1500;
const root = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
const examplesDir = join(root, "deploy", "examples");

const lines: BenchLine[] = [];
const emit = (c: string, metric: string, unit: string, value: number, baseline: string | null = null, baselineValue: number | null = null): void => {
  const v = Math.round(value * 100) / 100;
  const b = baselineValue === null ? null : Math.round(baselineValue * 100) / 100;
  const line = benchLine("allocate", c, metric, unit, v, baseline, b);
  lines.push(line);
  emitLine(line);
};

function pct(xs: number[], p: number): number {
  return quantile([...xs].sort((a, b) => a - b), p / 100) || 0;
}

interface Stats { p50: number; p99: number; perSec: number; prep50: number; search50: number; ok: boolean }
type Regime = "warm" | "fresh" | "cold";
function measure(input: AllocateInput, regime: Regime): Stats {
  const total: number[] = [], prep: number[] = [], search: number[] = [];
  let ok = false;
  for (let i = 0; i < 20; i++) allocateClaim(input); // warm-up (JIT, WASM tier-up)
  const t0 = performance.now();
  for (let i = 0; i < ITER; i++) {
    const run = regime === "warm" ? input : structuredClone(input);
    if (regime === "cold") {
      clearCelCache();
      clearSelectorMemo();
    }
    const s = performance.now();
    const out = allocateClaim(run);
    total.push((performance.now() - s) * 1000);
    prep.push(out.timing.prepareMs * 1000);
    search.push(out.timing.searchMs * 1000);
    ok = out.ok;
  }
  const elapsed = (performance.now() - t0) / 1000;
  return { p50: pct(total, 50), p99: pct(total, 99), perSec: ITER / elapsed, prep50: pct(prep, 50), search50: pct(search, 50), ok };
}

const examples = readdirSync(examplesDir).filter((f) => f.endsWith(".yaml")).sort().map((f) => [f.slice(0, -5), parse(readFileSync(join(examplesDir, f), "utf8")) as ResourceClaim] as const);
/** h100-sxm-8x with MIG mode on every GPU (no instances yet), published in dynamic-MIG mode: 200
 *  placements consuming counters. The capture has MIG off, so the mode is switched in the inventory. */
async function allMigDynamic(fixture: string): Promise<ResourceSlice[]> {
  const config = resolveNodeConfig(parseFlags(["--discovery", `fixture:${fixture}`, "--node-name", fixture, "--mig-mode", "dynamic"], NODE_FLAGS, {}));
  const inv = await createDiscovery(config).discover();
  const migOn = { ...inv, gpus: inv.gpus.map((g) => ({ ...g, migMode: "enabled" as const, migDevices: [] })) };
  return buildResourceSlices(migOn, { driverName: config.driverName, nodeName: fixture, migMode: "dynamic", gpuSharing: "none", taints: new Map() });
}

const nodes: [string, string, "static" | "dynamic"][] = [["h100-sxm-8x", "h100-sxm-8x", "static"], ["h100-sxm-8x-all-mig-dynamic", "h100-sxm-8x", "dynamic"]];
const table: string[] = [];
for (const [label0, fixture, mode] of nodes) {
  const slices = mode === "dynamic" ? await allMigDynamic(fixture) : await fixtureSlices(fixture, mode, fixture);
  const count = slices.reduce((s, x) => s + (x.spec.devices?.length ?? 0), 0);
  const label = `${label0} (${count} devices)`;
  // a busy node: on the MIG node, the first 24 1g devices (by scheduler order) are held by other claims
  const busy: ResourceClaim[] = [];
  if (mode === "dynamic") {
    const held = slices.flatMap((s) => (s.spec.devices ?? []).filter((d) => d.attributes?.profile?.string === "1g.10gb").map((d) => ({ request: "r", driver: s.spec.driver, pool: s.spec.pool.name, device: d.name }))).slice(0, 24);
    busy.push({ apiVersion: "resource.k8s.io/v1", kind: "ResourceClaim", metadata: { name: "busy", namespace: "default" }, spec: {}, status: { allocation: { devices: { results: held } } } });
  }
  for (const [name, claim] of examples) {
    for (const allocated of mode === "dynamic" && name === "mig-1g" ? [[], busy] : [[]]) {
      const c = `${label}/${name}${allocated.length ? "+busy" : ""}`;
      const base: AllocateInput = { slices, deviceClasses: [], allocatedClaims: allocated, claim, nodeName: fixture };
      const cold = measure({ ...base, strategy: "first-fit" }, "cold");
      const fresh = measure({ ...base, strategy: "first-fit" }, "fresh");
      const ff = measure({ ...base, strategy: "first-fit" }, "warm");
      const bf = measure({ ...base, strategy: "best-fit" }, "warm");
      emit(`${c}/first-fit, fresh inputs`, "p50_us", "us", fresh.p50, "cold CEL cache and selector memo", cold.p50);
      emit(`${c}/first-fit, fresh inputs`, "p99_us", "us", fresh.p99, "cold CEL cache and selector memo", cold.p99);
      emit(`${c}/first-fit, fresh inputs`, "prepare_p50_us", "us", fresh.prep50, "cold CEL cache and selector memo", cold.prep50);
      emit(`${c}/first-fit`, "p50_us", "us", ff.p50, "cold CEL cache and selector memo", cold.p50);
      emit(`${c}/first-fit`, "p99_us", "us", ff.p99, "cold CEL cache and selector memo", cold.p99);
      emit(`${c}/first-fit`, "claims_per_s", "claims/s", ff.perSec, "cold CEL cache and selector memo", cold.perSec);
      emit(`${c}/first-fit`, "prepare_p50_us", "us", ff.prep50, "cold CEL cache and selector memo", cold.prep50);
      emit(`${c}/first-fit`, "search_p50_us", "us", ff.search50, "cold CEL cache and selector memo", cold.search50);
      emit(`${c}/best-fit`, "p50_us", "us", bf.p50, "first-fit", ff.p50);
      emit(`${c}/best-fit`, "p99_us", "us", bf.p99, "first-fit", ff.p99);
      emit(`${c}/best-fit`, "search_p50_us", "us", bf.search50, "first-fit", ff.search50);
      table.push(`${c.padEnd(48)} ${ff.ok ? "fits " : "no   "} ff p50 ${ff.p50.toFixed(0).padStart(6)} p99 ${ff.p99.toFixed(0).padStart(6)} (prep ${ff.prep50.toFixed(0).padStart(5)} search ${ff.search50.toFixed(0).padStart(5)}) | bf p50 ${bf.p50.toFixed(0).padStart(6)} search ${bf.search50.toFixed(0).padStart(5)} | fresh p50 ${fresh.p50.toFixed(0).padStart(6)} | cold p50 ${cold.p50.toFixed(0).padStart(6)} us`);
    }
  }
}
process.stderr.write(`allocate: ${ITER} allocations per figure${quick ? " (--quick)" : ""}\n${table.join("\n")}\n`);
