// `npm run bench -- prepare [--quick]`: NodePrepareResources latency for a 1-GPU claim through
// the real stack (unix socket gRPC, standalone store read, checkpoint written with fsync twice,
// CDI spec written atomically) at concurrency 1 and 16, and prepares/s. Baseline, same run, same
// sockets: the bare gRPC round trip of an empty NodePrepareResources (the kubelet's liveness
// call), so the ratio is the cost of preparing over the cost of asking.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NODE_FLAGS, parseFlags, resolveNodeConfig } from "../agent/common/config.js";
import { silentLogger } from "../agent/common/log.js";
import { startAgent } from "../agent/cli/agent.js";
import { gpuDeviceName, type Inventory } from "../agent/discovery/model.js";
import { createStandaloneStore } from "../agent/kube/standalone-store.js";
import type { ResourceClaim } from "../agent/kube/types.js";
import { createDraClient, type DraClient } from "../agent/plugin/protos.js";
import { emitLine, quantile, type BenchLine } from "./_report.js";

const quick = process.argv.includes("--quick");
const BENCH = "prepare";
const CONCURRENCY = [1, 16] as const;
const ROUNDS = { 1: quick ? 300 : 2000, 16: quick ? 40 : 250 } as const;
const WARMUP_ROUNDS = 10;

type Line = BenchLine;

const round2 = (x: number): number => Math.round(x * 100) / 100;

function inventory(n: number): Inventory {
  return {
    nodeName: "bench-node",
    numaNodes: [],
    pcieRoots: [],
    host: {},
    gpus: Array.from({ length: n }, (_, minor) => ({
      name: gpuDeviceName(minor), minor, index: minor, uuid: `GPU-${String(minor).padStart(8, "0")}-0000-0000-0000-000000000000`,
      productName: "NVIDIA H100", brand: "NVIDIA", architecture: "Hopper", pciBusId: `0000:${(16 + minor).toString(16)}:00.0`,
      memoryBytes: 80 * 2 ** 30, migMode: "disabled" as const, migDevices: [],
    })),
  };
}

function claimFor(worker: number): ResourceClaim {
  return {
    apiVersion: "resource.k8s.io/v1", kind: "ResourceClaim",
    metadata: { name: `bench-${worker}`, namespace: "bench", uid: `${worker.toString(16).padStart(8, "0")}-0000-4000-8000-000000000000` },
    spec: { devices: { requests: [{ name: "gpu", exactly: { deviceClassName: "gpu.tessera.dev" } }] } },
    status: { allocation: { devices: { results: [{ request: "gpu", driver: "gpu.tessera.dev", pool: "bench-node", device: gpuDeviceName(worker) }] } } },
  };
}

type Ref = { namespace: string; name: string; uid: string };
const refOf = (c: ResourceClaim): Ref => ({ namespace: "bench", name: c.metadata.name as string, uid: c.metadata.uid as string });

async function timedCall(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1000;
}

/** Rounds of `c` concurrent calls; returns per-call latencies (us) and calls/s over the timed part. */
async function measure(c: number, rounds: number, call: (w: number) => Promise<unknown>, between?: () => Promise<unknown>): Promise<{ lat: number[]; perSec: number }> {
  const lat: number[] = [];
  let busyUs = 0;
  for (let r = 0; r < rounds + WARMUP_ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    const ls = await Promise.all(Array.from({ length: c }, (_, w) => timedCall(() => call(w))));
    const wall = Number(process.hrtime.bigint() - t0) / 1000;
    if (r >= WARMUP_ROUNDS) {
      lat.push(...ls);
      busyUs += wall;
    }
    if (between) await between();
  }
  lat.sort((a, b) => a - b);
  return { lat, perSec: (lat.length / busyUs) * 1e6 };
}

async function main(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), "tessera-bench-"));
  const config = resolveNodeConfig(parseFlags(["--kubelet-root", join(root, "k"), "--cdi-root", join(root, "cdi"), "--node-name", "bench-node", "--kube", `standalone:${join(root, "store")}`], NODE_FLAGS, {}));
  const store = createStandaloneStore(join(root, "store"));
  const claims = Array.from({ length: 16 }, (_, w) => claimFor(w));
  for (const c of claims) await store.putClaim(c);
  const agent = await startAgent(config, { log: silentLogger, inventory: inventory(16), bootId: async () => "bench", toolkitDirs: [config.cdiRoot] });
  const client: DraClient = createDraClient(agent.draSocket, "v1");
  const lines: Line[] = [];
  const rows: string[] = [];
  try {
    for (const c of CONCURRENCY) {
      const base = await measure(c, ROUNDS[c], () => client.prepare({ claims: [] }));
      const prep = await measure(
        c,
        ROUNDS[c],
        async (w) => {
          const res = await client.prepare({ claims: [refOf(claims[w] as ResourceClaim)] });
          const e = Object.values(res.claims)[0]?.error;
          if (e) throw new Error(e);
        },
        () => client.unprepare({ claims: claims.slice(0, c).map(refOf) }),
      );
      const baseName = `empty NodePrepareResources round trip, concurrency=${c}`;
      for (const [metric, q] of [["p50_us", 0.5], ["p99_us", 0.99]] as const) {
        const v = quantile(prep.lat, q);
        const b = quantile(base.lat, q);
        lines.push({ bench: BENCH, case: `1-GPU claim, concurrency=${c}`, metric, unit: "us", value: round2(v), baseline: baseName, baselineValue: round2(b), ratio: round2(v / b) });
      }
      lines.push({ bench: BENCH, case: `1-GPU claim, concurrency=${c}`, metric: "prepares_per_s", unit: "1/s", value: round2(prep.perSec), baseline: baseName.replace("round trip", "calls/s"), baselineValue: round2(base.perSec), ratio: round2(prep.perSec / base.perSec) });
      rows.push(`${String(c).padStart(11)}  ${quantile(prep.lat, 0.5).toFixed(0).padStart(8)}  ${quantile(prep.lat, 0.99).toFixed(0).padStart(8)}  ${prep.perSec.toFixed(0).padStart(10)}  ${quantile(base.lat, 0.5).toFixed(0).padStart(9)}  ${quantile(base.lat, 0.99).toFixed(0).padStart(9)}  ${prep.lat.length}`);
    }
  } finally {
    client.close();
    await agent.stop(2000);
    rmSync(root, { recursive: true, force: true });
  }
  process.stderr.write(`prepare bench${quick ? " (--quick)" : ""}: NodePrepareResources, 1-GPU claim, standalone store, fsync'd checkpoint + CDI spec\n`);
  process.stderr.write("concurrency  p50 (us)  p99 (us)  prepares/s  empty p50  empty p99  samples\n");
  for (const r of rows) process.stderr.write(r + "\n");
  for (const l of lines) emitLine(l);
}

await main();
