// `npm run bench -- footprint [--quick]`: what the agent costs a node. `tessera agent` on the
// fixture h100-sxm-8x with a standalone store (the HTTP endpoint on, at an ephemeral port) is
// started as a separate process, as the DaemonSet runs it, and measured from spawn() to both of
// its sockets answering (GetInfo on the registration socket, an empty NodePrepareResources on the
// DRA socket: what `diag ping` and the kubelet do), its RSS once idle after start, and its RSS
// after 1,000 NodePrepareResources (prepare + unprepare of 1-GPU claims in turn). Baseline in the
// same run: a bare Node process that loads only @grpc/grpc-js and answers one unary method on a unix
// socket (bench/_bare-grpc.ts), measured the same way (start to answering, idle RSS, RSS after
// 1,000 calls; measured in the first runs only). Medians over several starts. JSON lines on stdout, a table on stderr.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { AGENT_NODE_OPTIONS } from "../agent/cli/agent.js";
import { gpuDeviceName } from "../agent/discovery/model.js";
import { createStandaloneStore } from "../agent/kube/standalone-store.js";
import type { ResourceClaim } from "../agent/kube/types.js";
import { createDraClient, createRegistrationClient } from "../agent/plugin/protos.js";
import { benchLine, emitLine, quantile, type BenchLine } from "./_report.js";
import { stopChild } from "./_child.js";

const quick = process.argv.includes("--quick");
const STARTS = quick ? 3 : 7;
const PREPARE_RUNS = quick ? 1 : 3; // the first runs also do the 1,000 prepares (the slow part)
const PREPARES = 1000;
const IDLE_MS = quick ? 500 : 1000; // after answering: timers started, start-up garbage collectable
const NODE = "footprint-node";
const FIXTURE = "h100-sxm-8x";
const CLAIMS = 8;
const here = fileURLToPath(new URL(".", import.meta.url));
const root = join(here, "..", "..");

/** Both processes run with the Node options the DaemonSet gives the agent (same flags on both sides). */
const NODE_ENV = { ...process.env, NODE_OPTIONS: AGENT_NODE_OPTIONS };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => quantile([...xs].sort((a, b) => a - b), 0.5);
const after = (runs: Run[]): number[] => runs.flatMap((r) => (r.afterMiB === undefined ? [] : [r.afterMiB]));

/** Resident set of a process in MiB (Linux /proc; the bench runs where the agent runs). */
function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

/** Polls `probe` (fresh connection each time) until it succeeds; ms since `t0`. */
async function answeredAt(t0: number, probe: () => Promise<void>, child: ChildProcess, limitMs = 30_000): Promise<number> {
  for (;;) {
    if (child.exitCode !== null) throw new Error(`process exited ${child.exitCode} before answering`);
    try {
      await probe();
      return performance.now() - t0;
    } catch {
      if (performance.now() - t0 > limitMs) throw new Error(`no answer within ${limitMs} ms`);
      await sleep(2);
    }
  }
}


interface Run { startMs: number; idleMiB: number; afterMiB: number | undefined }

function claimFor(i: number): ResourceClaim {
  return {
    apiVersion: "resource.k8s.io/v1", kind: "ResourceClaim",
    metadata: { name: `fp-${i}`, namespace: "bench", uid: `${i.toString(16).padStart(8, "0")}-0000-4000-8000-00000000f00d` },
    spec: { devices: { requests: [{ name: "gpu", exactly: { deviceClassName: "gpu.tessera.dev" } }] } },
    status: { allocation: { devices: { results: [{ request: "gpu", driver: "gpu.tessera.dev", pool: NODE, device: gpuDeviceName(i) }] } } },
  };
}

async function agentRun(dir: string, load: boolean): Promise<Run> {
  const store = createStandaloneStore(join(dir, "store"));
  const claims = Array.from({ length: CLAIMS }, (_, i) => claimFor(i));
  for (const c of claims) await store.putClaim(c);
  const k = join(dir, "k");
  const reg = join(k, "plugins_registry", "gpu.tessera.dev-reg.sock");
  const dra = join(k, "plugins", "gpu.tessera.dev", "dra.sock");
  const args = [join(root, "bin", "tessera.js"), "agent", "--discovery", `fixture:${FIXTURE}`, "--node-name", NODE, "--kube", `standalone:${join(dir, "store")}`,
    "--kubelet-root", k, "--cdi-root", join(dir, "cdi"), "--http-listen", "127.0.0.1:0", "--log-level", "warn", "--rediscover-interval", "0"];
  const t0 = performance.now();
  const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "inherit"], env: NODE_ENV });
  try {
    const regAt = answeredAt(t0, async () => {
      if (!existsSync(reg)) throw new Error("no socket yet");
      const c = createRegistrationClient(reg, { deadlineMs: 500 });
      try { await c.getInfo({}); } finally { c.close(); }
    }, child);
    const draAt = answeredAt(t0, async () => {
      if (!existsSync(dra)) throw new Error("no socket yet");
      const c = createDraClient(dra, "v1", { deadlineMs: 500 });
      try { await c.prepare({ claims: [] }); } finally { c.close(); }
    }, child);
    const startMs = Math.max(await regAt, await draAt);
    await sleep(IDLE_MS);
    const idleMiB = rssMiB(child.pid as number);
    if (!load) return { startMs, idleMiB, afterMiB: undefined };
    const client = createDraClient(dra, "v1");
    try {
      for (let i = 0; i < PREPARES; i++) {
        const c = claims[i % CLAIMS] as ResourceClaim;
        const ref = { namespace: "bench", name: c.metadata.name as string, uid: c.metadata.uid as string };
        const res = await client.prepare({ claims: [ref] });
        const err = Object.values(res.claims)[0]?.error;
        if (err) throw new Error(`prepare ${ref.name}: ${err}`);
        await client.unprepare({ claims: [ref] });
      }
    } finally {
      client.close();
    }
    await sleep(IDLE_MS);
    return { startMs, idleMiB, afterMiB: rssMiB(child.pid as number) };
  } finally {
    await stopChild(child);
  }
}

async function bareRun(dir: string, load: boolean): Promise<Run> {
  const sock = join(dir, "bare.sock");
  const t0 = performance.now();
  const child = spawn(process.execPath, [join(here, "_bare-grpc.js"), sock], { stdio: ["ignore", "ignore", "inherit"], env: NODE_ENV });
  const Ctor = grpc.makeGenericClientConstructor({ Echo: { path: "/bare.Bare/Echo", requestStream: false, responseStream: false, requestSerialize: (b: Buffer) => b, requestDeserialize: (b: Buffer) => b, responseSerialize: (b: Buffer) => b, responseDeserialize: (b: Buffer) => b } }, "Bare");
  const call = (c: grpc.Client): Promise<void> =>
    new Promise((resolve, reject) => (c as unknown as { Echo(req: Buffer, opts: grpc.CallOptions, cb: (e: Error | null) => void): void }).Echo(Buffer.alloc(0), { deadline: Date.now() + 500 }, (e) => (e ? reject(e) : resolve())));
  try {
    const startMs = await answeredAt(t0, async () => {
      if (!existsSync(sock)) throw new Error("no socket yet");
      const c = new Ctor(`unix:${sock}`, grpc.credentials.createInsecure());
      try { await call(c); } finally { c.close(); }
    }, child);
    await sleep(IDLE_MS);
    const idleMiB = rssMiB(child.pid as number);
    if (!load) return { startMs, idleMiB, afterMiB: undefined };
    const c = new Ctor(`unix:${sock}`, grpc.credentials.createInsecure());
    try {
      for (let i = 0; i < PREPARES * 2; i++) await call(c); // prepare + unprepare: two calls each
    } finally {
      c.close();
    }
    await sleep(IDLE_MS);
    return { startMs, idleMiB, afterMiB: rssMiB(child.pid as number) };
  } finally {
    await stopChild(child);
  }
}

async function main(): Promise<void> {
  const agent: Run[] = [];
  const bare: Run[] = [];
  for (let i = 0; i < STARTS; i++) {
    // alternate, so drift in the machine's load hits both sides alike
    for (const [runs, fn] of [[bare, bareRun], [agent, agentRun]] as const) {
      const dir = mkdtempSync(join(tmpdir(), "tessera-fp-"));
      try {
        runs.push(await fn(dir, i < PREPARE_RUNS));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  const BASE = "bare Node + @grpc/grpc-js answering one unary call on a unix socket";
  const kase = `tessera agent, fixture ${FIXTURE}, standalone store, NODE_OPTIONS=${AGENT_NODE_OPTIONS} as deployed (both sides), median of ${STARTS} starts`;
  const r2 = (x: number): number => Math.round(x * 100) / 100;
  const lines: BenchLine[] = [
    benchLine("footprint", kase, "start_to_sockets_ms", "ms", r2(median(agent.map((r) => r.startMs))), BASE, r2(median(bare.map((r) => r.startMs)))),
    benchLine("footprint", kase, "idle_rss_mib", "MiB", r2(median(agent.map((r) => r.idleMiB))), BASE, r2(median(bare.map((r) => r.idleMiB)))),
    benchLine("footprint", kase.replace(/median of \d+ starts/, `median of ${PREPARE_RUNS} runs`), `rss_after_${PREPARES}_prepares_mib`, "MiB", r2(median(after(agent))), `${BASE}, after ${PREPARES * 2} calls`, r2(median(after(bare)))),
  ];
  for (const l of lines) emitLine(l);
  process.stderr.write(`footprint${quick ? " (--quick)" : ""}: ${STARTS} starts each, alternating; ${PREPARES} prepare+unprepare pairs\n`);
  process.stderr.write("               start→answering ms   idle RSS MiB   RSS after MiB\n");
  for (const [name, runs] of [["tessera agent", agent], ["bare grpc-js", bare]] as const) {
    process.stderr.write(`${name.padEnd(15)} ${runs.map((r) => r.startMs.toFixed(0)).join("/").padStart(20)}   ${median(runs.map((r) => r.idleMiB)).toFixed(1).padStart(12)}   ${median(after(runs)).toFixed(1).padStart(13)}\n`);
  }
}

await main();
