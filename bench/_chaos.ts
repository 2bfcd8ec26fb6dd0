// The kill -9 campaign, shared by `npm run bench -- chaos` and test/chaos.test.ts: a real
// `tessera agent` child process (fixture discovery, standalone store, temp kubelet root) driven by
// a kubelet-like gRPC client over the real sockets, SIGKILLed at a random point 0-20 ms into a
// Prepare or Unprepare batch, or (three trials in ten) 0-20 ms after its answer (some trials also
// trigger a rediscovery with SIGHUP first), restarted,
// and checked after every restart:
//   - every claim answered as prepared is in the checkpoint, PrepareCompleted, with the same
//     devices, and its CDI spec exists; every claim answered as unprepared is in neither;
//   - no device is in two claims of the checkpoint;
//   - the agent answers GetInfo and an empty NodePrepareResources;
//   - Prepare of an answered claim gives the same devices.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createStandaloneStore } from "../agent/kube/standalone-store.js";
import type { ResourceClaim } from "../agent/kube/types.js";
import { specPath } from "../agent/plugin/cdi.js";
import { decodeCheckpoint, type ClaimEntry } from "../agent/plugin/checkpoint.js";
import { exclusive, overlaps } from "../agent/plugin/prepared.js";
import { createDraClient, createRegistrationClient, type DraClient, type RegistrationClient, type WireClaim, type WireDevice } from "../agent/plugin/protos.js";
import { createRng, type Rng } from "./sim/prng.js";

export const FIXTURE = "h100-sxm-8x";
const NODE = "chaos-node";
const DRIVER = "gpu.tessera.dev";
/** Claims compete for these GPUs: claim i wants gpu-(i mod GPUS), so pairs collide. */
const GPUS = 8;
const CLAIMS = 12;

export interface CampaignOptions {
  trials: number;
  seed: number;
  /** Kill delay is uniform in [0, maxKillDelayMs] after the batch is sent. */
  maxKillDelayMs?: number;
  /** Progress, one line per `every` trials (stderr in the bench). */
  progress?: (line: string) => void;
}

export interface CampaignResult {
  trials: number;
  violations: string[];
  /** Spawn -> registration GetInfo and an empty DRA Prepare both answered, ms, ascending. */
  restartMs: number[];
  /** Batches cut by the kill (no answer received) / answered before it. */
  cut: number;
  answered: number;
}

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

function claimObj(i: number): ResourceClaim {
  const gpus = i % 5 === 4 ? [`gpu-${i % GPUS}`, `gpu-${(i + 3) % GPUS}`] : [`gpu-${i % GPUS}`];
  return {
    apiVersion: "resource.k8s.io/v1",
    kind: "ResourceClaim",
    metadata: { name: `chaos-${i}`, namespace: "chaos", uid: `${(i + 1).toString(16).padStart(8, "0")}-0000-4000-8000-00000000c4a0`, resourceVersion: "1" },
    spec: { devices: { requests: [{ name: "gpu", exactly: { deviceClassName: DRIVER } }] } },
    status: { allocation: { devices: { results: gpus.map((device) => ({ request: "gpu", driver: DRIVER, pool: NODE, device })) } } },
  };
}

const wire = (c: ResourceClaim): WireClaim => ({ namespace: c.metadata.namespace ?? "", name: c.metadata.name ?? "", uid: c.metadata.uid ?? "" });
const devicesKey = (ds: readonly WireDevice[]): string => JSON.stringify(ds.map((d) => [d.pool_name, d.device_name, d.cdi_device_ids]));

interface Running {
  child: ChildProcess;
  dra: DraClient;
  reg: RegistrationClient;
  exited: Promise<void>;
}

/** The agent's environment: no cluster, and none of a test runner's per-process instrumentation
 *  (tap's NODE_OPTIONS imports and V8 coverage would be paid on every one of the restarts). */
const agentEnv: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== "NODE_OPTIONS" && k !== "NODE_V8_COVERAGE" && !k.startsWith("TAP")));

export async function runCampaign(opts: CampaignOptions): Promise<CampaignResult> {
  const rng: Rng = createRng(opts.seed);
  const maxDelay = opts.maxKillDelayMs ?? 20;
  const root = mkdtempSync(join(tmpdir(), "tessera-chaos-"));
  const dirs = { kubelet: join(root, "k"), cdi: join(root, "cdi"), store: join(root, "store") };
  const stateDir = join(dirs.kubelet, "plugins", DRIVER);
  const checkpointFile = join(stateDir, "checkpoint.json");
  const claims = Array.from({ length: CLAIMS }, (_, i) => claimObj(i));
  const store = createStandaloneStore(dirs.store);
  for (const c of claims) await store.putClaim(c);

  /** What the kubelet was told: uid -> devices key, or "unprepared"; absent = unknown (cut). */
  const told = new Map<string, string>();
  const violations: string[] = [];
  const restartMs: number[] = [];
  let cut = 0;
  let answered = 0;

  async function start(): Promise<Running> {
    const t0 = performance.now();
    const child = spawn(
      process.execPath,
      [join(repoRoot, "bin", "tessera.js"), "agent", "--discovery", `fixture:${FIXTURE}`, "--node-name", NODE, "--kubelet-root", dirs.kubelet, "--cdi-root", dirs.cdi, "--kube", `standalone:${dirs.store}`, "--rediscover-interval", "0", "--http-listen", "127.0.0.1:0"],
      { cwd: repoRoot, stdio: ["ignore", "ignore", "pipe"], env: agentEnv },
    );
    let how = "";
    // "close": the process exited and its stderr is drained, so a failure message is complete.
    const exited = new Promise<void>((resolve) => child.once("close", (code, signal) => ((how = `exit ${code ?? signal}`), resolve())));
    let stderr = "";
    // The agent logs this line once both sockets listen: an event to await, not a poll.
    await new Promise<void>((resolve, reject) => {
      child.stderr?.on("data", (b: Buffer) => {
        stderr += b.toString();
        if (stderr.includes("kubelet plugin serving")) resolve();
      });
      void exited.then(() => reject(new Error(`agent exited during start (${how}): ${stderr.trim().split("\n").slice(-3).join(" | ")}`)));
    });
    const reg = createRegistrationClient(join(dirs.kubelet, "plugins_registry", `${DRIVER}-reg.sock`), { deadlineMs: 5000 });
    const dra = createDraClient(join(stateDir, "dra.sock"), "v1", { deadlineMs: 5000 });
    const info = await reg.getInfo({});
    if (info.type !== "DRAPlugin") violations.push(`GetInfo answered type ${info.type}`);
    const empty = await dra.prepare({ claims: [] });
    if (Object.keys(empty.claims ?? {}).length !== 0) violations.push("empty Prepare answered claims");
    restartMs.push(performance.now() - t0);
    return { child, dra, reg, exited };
  }

  async function kill(r: Running): Promise<void> {
    r.child.kill("SIGKILL");
    await r.exited;
    r.dra.close();
    r.reg.close();
  }

  async function check(trial: number, r: Running): Promise<void> {
    const at = `trial ${trial}`;
    const decoded = existsSync(checkpointFile) ? decodeCheckpoint(readFileSync(checkpointFile, "utf8")) : undefined;
    if (decoded && !decoded.ok) violations.push(`${at}: checkpoint unreadable after restart (${decoded.reason})`);
    const entries: Record<string, ClaimEntry> = decoded?.ok ? decoded.data.claims : {};
    for (const [uid, want] of told) {
      const e = entries[uid];
      if (want === "unprepared") {
        if (e || existsSync(specPath(dirs.cdi, uid))) violations.push(`${at}: ${uid} answered unprepared but ${e ? "in the checkpoint" : "its CDI spec exists"}`);
        continue;
      }
      const got = e ? devicesKey(e.devices.map((d) => ({ request_names: [], pool_name: d.poolName, device_name: d.deviceName, cdi_device_ids: d.cdiDeviceIds }))) : undefined;
      if (e?.state !== "PrepareCompleted" || got !== want) violations.push(`${at}: ${uid} answered prepared, checkpoint has ${e ? `${e.state} ${got}` : "nothing"}`);
      if (!existsSync(specPath(dirs.cdi, uid))) violations.push(`${at}: ${uid} answered prepared, no CDI spec`);
    }
    const list = Object.entries(entries);
    for (const [i, [ua, a]] of list.entries()) {
      for (const [ub, b] of list.slice(i + 1)) {
        if (a.devices.some((d) => exclusive(d) && b.devices.some((o) => exclusive(o) && overlaps(d, o)))) violations.push(`${at}: ${ua} and ${ub} hold the same device`);
      }
    }
    const again = [...told].filter(([, v]) => v !== "unprepared").map(([uid]) => claims.find((c) => c.metadata.uid === uid) as ResourceClaim);
    if (again.length > 0) {
      const res = await r.dra.prepare({ claims: again.map(wire) });
      for (const c of again) {
        const a = res.claims?.[wire(c).uid];
        if (a?.error || devicesKey(a?.devices ?? []) !== told.get(wire(c).uid)) violations.push(`${at}: re-Prepare of ${wire(c).uid} gave ${a?.error || devicesKey(a?.devices ?? [])}`);
      }
    }
  }

  let agent = await start();
  try {
    for (let trial = 1; trial <= opts.trials; trial++) {
      if (rng.next() < 0.2) agent.child.kill("SIGHUP"); // rediscovery (fixture re-read, slices republished) in flight
      const batch = Array.from({ length: 1 + rng.int(3) }, () => claims[rng.int(CLAIMS)] as ResourceClaim);
      const uniq = [...new Map(batch.map((c) => [wire(c).uid, c])).values()];
      const unprepare = rng.next() < 0.4;
      const delay = rng.next() * maxDelay;
      const afterAnswer = rng.next() < 0.3;
      const call = unprepare ? agent.dra.unprepare({ claims: uniq.map(wire) }) : agent.dra.prepare({ claims: uniq.map(wire) });
      const outcome = call.then(
        (res) => ({ ok: true as const, res }),
        () => ({ ok: false as const }),
      );
      // Most kills land 0-20 ms into the batch; some 0-20 ms after its answer (into the work that
      // follows it), so answered claims build up whatever the machine's speed.
      if (afterAnswer) await outcome;
      await new Promise<void>((resolve) => setTimeout(resolve, delay));
      const killed = kill(agent);
      const o = await outcome;
      await killed;
      if (o.ok) {
        answered++;
        for (const c of uniq) {
          const uid = wire(c).uid;
          const a = (o.res.claims as Record<string, { error?: string; devices?: WireDevice[] }>)[uid];
          if (!a || a.error) continue; // an error answer changes nothing the kubelet relies on
          told.set(uid, unprepare ? "unprepared" : devicesKey(a.devices ?? []));
        }
      } else {
        cut++;
        for (const c of uniq) told.delete(wire(c).uid);
      }
      agent = await start();
      await check(trial, agent);
      if (opts.progress && trial % 100 === 0) opts.progress(`chaos: ${trial}/${opts.trials} trials, ${violations.length} violations`);
    }
  } finally {
    await kill(agent).catch(() => undefined);
    rmSync(root, { recursive: true, force: true });
  }
  restartMs.sort((a, b) => a - b);
  return { trials: opts.trials, violations, restartMs, cut, answered };
}
