// Device health: the kubelet's DRAResourceHealth stream (v1 and v1alpha1) over the real DRA
// socket with real gRPC clients, XID replay from kmsg, nvidia-smi health queries, taints on the
// published slices with their hold-down, persistence across restarts, and `diag health`.
import t, { type Test } from "tap";
import { once } from "node:events";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { existsSync, promises as fsp, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ResourceSlice as ResourceSliceModel } from "kubernetes-models/resource.k8s.io/v1/ResourceSlice";
import type { DeviceTaint, ResourceClaim } from "../agent/kube/types.js";
import { checkSlice } from "../agent/slices/limits.js";
import { createDraClient, loadKubeletPackages, watchHealth, type HealthApiVersion, type HealthMessage, type HealthWatch } from "../agent/plugin/protos.js";
import { clampMessage } from "../agent/plugin/health-service.js";
import { claim, nodeConfig, ref, startEnv, tempDir, uid, NODE, type Env } from "./support/kubelet-env.js";
import { EventEmitter } from "node:events";
import { startAgent } from "../agent/cli/agent.js";
import { main } from "../agent/cli/main.js";
import { captureIO } from "../agent/cli/io.js";
import { createMemoryLogger } from "../agent/common/log.js";
import { HEALTH_FLAGS, parseFlags, resolveHealthConfig } from "../agent/common/config.js";
import { classifyXid, xidClass, XID_TABLE, BUCKET_CLASS } from "../agent/health/xid.js";
import { parseXid, startKmsgReader } from "../agent/health/kmsg.js";
import { parseHealthQuery } from "../agent/health/query.js";
import { defaultFixturesDir, fixtureFaultsFile, resolveFixture } from "../agent/discovery/index.js";
import { createStandaloneStore } from "../agent/kube/standalone-store.js";

type Msg = HealthMessage;

const followed = new WeakMap<HealthWatch, { seen: Msg[]; wake: Set<() => void>; ended: boolean }>();

/** The next stream message that satisfies `pred` (the stream sends one at once, then on changes);
 *  messages before it are consumed, later ones stay for the next call. */
async function nextMatching(w: HealthWatch, pred: (m: Msg) => boolean): Promise<Msg> {
  let f = followed.get(w);
  if (!f) {
    const state = { seen: [] as Msg[], wake: new Set<() => void>(), ended: false };
    const s = w.messages as unknown as NodeJS.EventEmitter;
    const wakeAll = (): void => {
      for (const fn of state.wake) fn();
      state.wake.clear();
    };
    s.on("data", (m: Msg) => {
      state.seen.push(m);
      wakeAll();
    });
    s.on("end", () => {
      state.ended = true;
      wakeAll();
    });
    s.on("error", () => {
      state.ended = true;
      wakeAll();
    });
    followed.set(w, (f = state));
  }
  for (;;) {
    const i = f.seen.findIndex(pred);
    if (i >= 0) return f.seen.splice(0, i + 1)[i] as Msg;
    f.seen.length = 0;
    if (f.ended) throw new Error("health stream ended");
    await new Promise<void>((r) => f.wake.add(r));
  }
}

t.test("protos: DRAResourceHealth v1 and v1alpha1 field numbers and names are upstream's", async (t) => {
  const p = await loadKubeletPackages();
  for (const [v, pkg] of [["v1", p.healthV1], ["v1alpha1", p.healthV1alpha1]] as const) {
    const fields = (msg: string): string[] => {
      const def = pkg[`${v}.${msg}`] as { type: { field: { name: string; number: number; label: string }[] } };
      return def.type.field.map((f) => `${f.name}=${f.number}${f.label === "LABEL_REPEATED" ? " repeated" : ""}`);
    };
    t.same(
      Object.fromEntries(["NodeWatchResourcesRequest", "DeviceIdentifier", "DeviceHealth", "NodeWatchResourcesResponse"].map((m) => [m, fields(m)])),
      {
        NodeWatchResourcesRequest: [],
        DeviceIdentifier: ["pool_name=1", "device_name=2"],
        DeviceHealth: ["device=1", "health=2", "last_updated_time=3", "health_check_timeout_seconds=4", "message=5"],
        NodeWatchResourcesResponse: ["devices=1 repeated"],
      },
      `${v} field table`,
    );
    const e = pkg[`${v}.HealthStatus`] as { type: { value: { name: string; number: number }[] } };
    t.same(e.type.value.map((x) => `${x.name}=${x.number}`), ["UNKNOWN=0", "HEALTHY=1", "UNHEALTHY=2"]);
    const svc = pkg[`${v}.DRAResourceHealth`] as Record<string, { path: string; responseStream: boolean }>;
    t.same(Object.values(svc).map((m) => [m.path, m.responseStream]), [[`/${v}.DRAResourceHealth/NodeWatchResources`, true]]);
  }
  t.equal(clampMessage("x".repeat(2000)).length, 1024, "a long message is cut to 1,024 bytes");
  t.ok(clampMessage("x".repeat(2000)).endsWith("..."));
  t.ok(Buffer.byteLength(clampMessage("é".repeat(700))) <= 1024, "cut by bytes, not characters");
  t.equal(clampMessage("short"), "short");
});

async function streamCase(t: Test, env: Env, version: HealthApiVersion): Promise<void> {
  const w = watchHealth(env.agent.draSocket, version);
  const first = await nextMatching(w, () => true);
  const names = first.devices.map((d) => d.device.device_name).sort();
  t.ok(names.includes("gpu-0") && names.includes("gpu-1-mig-19-0-1"), `${version}: the full device list, MIG devices included`);
  t.ok(first.devices.every((d) => d.device.pool_name === "node-a" && ["HEALTHY", "UNHEALTHY", "UNKNOWN"].includes(d.health)), `${version}: pool and a health state on every device`);
  t.ok(first.devices.every((d) => Number(d.health_check_timeout_seconds) > 0 && Math.abs(Number(d.last_updated_time) - Date.now() / 1000) < 60), `${version}: timeout and a current timestamp`);
  const health = env.agent.plugin.health;
  if (!health) throw new Error("health service not served");
  t.equal(health.streams(), 1, `${version}: one stream open`);
  w.cancel();
  const gone = Date.now();
  while (health.streams() > 0 && Date.now() - gone < 5000) await new Promise((r) => setImmediate(r));
  t.equal(health.streams(), 0, `${version}: a stream the kubelet cancels is cleaned up`);
  w.close();
}

t.test("health stream: v1 and v1alpha1 over the real DRA socket; advertised in supported_versions; cancelled streams cleaned up", async (t) => {
  const env = await startEnv();
  t.teardown(() => env.close());
  const info = await env.reg.getInfo({}, 1000);
  t.same(info.supported_versions, ["v1.DRAPlugin", "v1beta1.DRAPlugin", "v1.DRAResourceHealth", "v1alpha1.DRAResourceHealth"]);
  await streamCase(t, env, "v1");
  await streamCase(t, env, "v1alpha1");
});

t.test("health stream: --health-api off serves and advertises neither; v1alpha1 alone advertises only it", async (t) => {
  const off = await startEnv({ deps: { health: { intervalS: 10, holdDownS: 300, apiVersions: [] } } });
  t.teardown(() => off.close());
  t.same((await off.reg.getInfo({}, 1000)).supported_versions, ["v1.DRAPlugin", "v1beta1.DRAPlugin"]);
  const w = watchHealth(off.agent.draSocket, "v1");
  const err = await once(w.messages as unknown as NodeJS.EventEmitter, "error").then(([e]) => e as { code: number });
  t.equal(err.code, 12, "UNIMPLEMENTED when not served");
  w.close();
  const alpha = await startEnv({ deps: { health: { intervalS: 10, holdDownS: 300, apiVersions: ["v1alpha1"] } } });
  t.teardown(() => alpha.close());
  t.same((await alpha.reg.getInfo({}, 1000)).supported_versions, ["v1.DRAPlugin", "v1beta1.DRAPlugin", "v1alpha1.DRAResourceHealth"]);
  await streamCase(t, alpha, "v1alpha1");
});

// ---- replay, taints, hold-down, persistence, diag ----------------------------------------------

const HOLD_S = 60;

interface HealthEnv extends Env {
  kmsg: string;
  clock: { ms: number };
  append(lines: string[]): Promise<void>;
  /** Taints of each published device (standalone store), after the next sync. */
  published(): Promise<Record<string, DeviceTaint[]>>;
}

let seq = 5000;
const xidLine = (pci: string, code: number, rest = "pid=1234, name=python, test event"): string => `3,${seq++},${seq * 1000},-;NVRM: Xid (PCI:${pci}): ${code}, ${rest}`;

async function startHealthEnv(opts: { root?: string; kmsg?: string; clock?: { ms: number }; bootId?: string } = {}): Promise<HealthEnv> {
  const root = opts.root ?? tempDir("tessera-health-");
  const kmsg = opts.kmsg ?? join(root, "kmsg.txt");
  if (!existsSync(kmsg)) writeFileSync(kmsg, "6,1,100,-;Linux version 6.8.0 (test)\n");
  const clock = opts.clock ?? { ms: Date.parse("2026-12-01T10:00:00Z") };
  const env = await startEnv({
    root,
    ...(opts.bootId ? { bootId: opts.bootId } : {}),
    deps: { health: { kmsg, intervalS: 3600, holdDownS: HOLD_S, apiVersions: ["v1", "v1alpha1"] }, healthDeps: { now: () => new Date(clock.ms), kmsgPollMs: 20, sweepMs: 3_600_000 } },
  });
  await env.agent.slicesSynced();
  return {
    ...env,
    kmsg,
    clock,
    async append(lines) {
      await fsp.appendFile(kmsg, lines.map((l) => l + "\n").join(""));
      await env.agent.health.kmsgDrained();
    },
    async published() {
      await env.agent.health.flushed();
      await env.agent.slicesSynced();
      const out: Record<string, DeviceTaint[]> = {};
      for (const s of await env.store.listSlices()) {
        t.same(checkSlice(s), [], `${s.metadata.name} within the API limits`);
        t.doesNotThrow(() => new ResourceSliceModel(s as never).validate(), `${s.metadata.name}: valid resource.k8s.io/v1`);
        for (const d of s.spec.devices ?? []) if (d.taints) out[d.name] = d.taints;
      }
      return out;
    },
  };
}

t.test("replay: a fatal XID taints the GPU NoExecute (its MIG devices too) and is republished within 2 s; the stream says UNHEALTHY (v1, v1alpha1)", async (t) => {
  const env = await startHealthEnv();
  t.teardown(() => env.close());
  t.same(await env.published(), {}, "nothing tainted at start");
  const streams = (["v1", "v1alpha1"] as const).map((v) => ({ v, w: watchHealth(env.agent.draSocket, v) }));
  for (const { w } of streams) await nextMatching(w, () => true);
  const t0 = performance.now();
  await env.append([xidLine("0000:10:00", 79, "pid=0, name=swapper/0, GPU has fallen off the bus."), xidLine("0000:11:00", 79)]);
  const taints = await env.published();
  const ms = performance.now() - t0;
  t.ok(ms < 2000, `slices republished with the taint in ${ms.toFixed(0)} ms (< 2 s)`);
  t.match(taints["gpu-0"], [{ key: "gpu.tessera.dev/xid", value: "79", effect: "NoExecute", timeAdded: new Date(env.clock.ms).toISOString() }]);
  t.match(taints["gpu-1-mig-19-0-1"], [{ key: "gpu.tessera.dev/xid", effect: "NoExecute" }], "a GPU's taint covers its MIG devices");
  t.notOk(taints["gpu-2"], "other GPUs untouched");
  for (const { v, w } of streams) {
    const m = await nextMatching(w, (x) => x.devices.some((d) => d.device.device_name === "gpu-0" && d.health === "UNHEALTHY"));
    const d0 = m.devices.find((d) => d.device.device_name === "gpu-0");
    t.match(d0?.message, /XID 79 GPU has fallen off the bus/, `${v}: the message says why`);
    t.equal(m.devices.find((d) => d.device.device_name === "gpu-1-mig-19-0-1")?.health, "UNHEALTHY", `${v}: the MIG device too`);
    w.cancel();
    w.close();
  }
  t.match(env.agent.metrics.text(), /tessera_device_health\{device="gpu-0"\} 0/, "metrics: gpu-0 unhealthy");
  t.ok(env.log.records.some((r) => r.msg === "event" && r.reason === "DeviceTainted" && String(r.message).includes("gpu-0")), "a DeviceTainted Event (logged in standalone mode)");
});

t.test("replay: an XID naming a MIG GPU instance taints only that instance; an unknown XID is effect None with its code; lower severity does not replace a worse one", async (t) => {
  const env = await startHealthEnv();
  t.teardown(() => env.close());
  await env.append([xidLine("0000:11:00 GPU-I:07 GPU-CI:00", 94, "pid=7194, Contained: CE User Channel (0x9). RST: No, D-RST: No"), xidLine("0000:12:00", 999, "pid=1, something new")]);
  let taints = await env.published();
  t.match(taints["gpu-1-mig-19-0-1"], [{ key: "gpu.tessera.dev/xid", value: "94", effect: "NoSchedule" }], "XID 94 with GPU-I:07 -> that MIG device, attention");
  t.notOk(taints["gpu-1"], "not the whole GPU");
  t.match(taints["gpu-2"], [{ key: "gpu.tessera.dev/xid", value: "999", effect: "None" }], "unknown XID -> effect None");
  const entry = env.agent.health.feed.list().find((e) => e.device === "gpu-2");
  t.match(entry, { health: "HEALTHY", message: /XID 999 \(not in Tessera's XID table; effect None\)/ }, "informational: healthy, with the code in the message");
  await env.append([xidLine("0000:12:00", 48, "pid=1, DBE"), xidLine("0000:12:00", 13, "pid=1, Graphics Exception")]);
  taints = await env.published();
  t.match(taints["gpu-2"], [{ key: "gpu.tessera.dev/xid", value: "48", effect: "NoExecute" }], "XID 48 replaces the None; the later XID 13 does not replace the NoExecute");
  t.equal(env.agent.health.keeper.evidence("gpu-2").lastXid?.code, 13, "evidence still shows the latest XID");
});

t.test("recovery: a taint clears only after the hold-down, never before, and a flap restarts it; it survives an agent restart", async (t) => {
  const root = tempDir("tessera-health-");
  const clock = { ms: Date.parse("2026-12-01T10:00:00Z") };
  let env = await startHealthEnv({ root, clock });
  await env.append([xidLine("0000:10:00", 79)]);
  t.ok((await env.published())["gpu-0"], "tainted");
  clock.ms += (HOLD_S - 1) * 1000;
  env.agent.health.sweep();
  t.ok((await env.published())["gpu-0"], "still tainted 1 s before the hold-down ends");
  await env.append([xidLine("0000:10:00", 79)]);
  clock.ms += 2000; // past the first event's hold-down, not the second's
  env.agent.health.sweep();
  t.ok((await env.published())["gpu-0"], "a second XID restarts the hold-down: no clearing 1 s after the first one's would end");
  await env.agent.health.flushed();
  await env.close();

  // A fresh kernel log (one record, seq 1): whatever the restarted agent knows of the XID comes from the state dir.
  const fresh = join(root, "kmsg-after-restart.txt");
  writeFileSync(fresh, "6,1,100,-;Linux version 6.8.0 (test)\n");
  env = await startHealthEnv({ root, clock, kmsg: fresh });
  t.teardown(() => env.close());
  t.match((await env.published())["gpu-0"], [{ key: "gpu.tessera.dev/xid", value: "79", effect: "NoExecute" }], "restart: the taint is published again from the state dir");
  t.equal(env.agent.health.feed.list().find((e) => e.device === "gpu-0")?.health, "UNHEALTHY", "restart: the stream still says UNHEALTHY");
  t.equal(env.agent.health.keeper.file().kmsgSeq, seq - 1, "restart: the last handled kernel log sequence is kept (same boot): older records are not handled again");
  clock.ms += (HOLD_S - 3) * 1000; // 59 s after the last XID
  env.agent.health.sweep();
  t.ok((await env.published())["gpu-0"], "not yet");
  clock.ms += 1000;
  env.agent.health.sweep();
  const t0 = performance.now();
  t.notOk((await env.published())["gpu-0"], "gone once the device has been healthy for the hold-down");
  t.ok(performance.now() - t0 < 2000, "cleared taint republished within 2 s");
  t.equal(env.agent.health.feed.list().find((e) => e.device === "gpu-0")?.health, "UNKNOWN", "no taint, and no query has answered (injected inventory): UNKNOWN");
  t.ok(env.log.records.some((r) => r.msg === "event" && r.reason === "DeviceTaintCleared" && r.level === "info"), "a DeviceTaintCleared Event (Normal: logged at info in standalone mode)");
});

t.test("burst: the kernel log reader gives the event loop a turn between batches, not only between reads", async (t) => {
  const dir = tempDir("tessera-kmsg-");
  t.teardown(() => fsp.rm(dir, { recursive: true, force: true }));
  const path = join(dir, "kmsg.txt");
  // 10,000 records of ~70 bytes: a 64 KiB read holds ~900 of them, i.e. two batches of 500 per read.
  writeFileSync(path, Array.from({ length: 10_000 }, (_, i) => `6,${i + 1},${i * 1000},-;usb 1-1: device descriptor read/64, error -${i % 100}`).join("\n") + "\n");
  let turns = 0;
  let ticking = true;
  const tick = (): void => {
    turns++;
    if (ticking) setImmediate(tick);
  };
  setImmediate(tick);
  const seen: { turn: number; n: number }[] = [];
  const reader = startKmsgReader({ path, log: createMemoryLogger(), pollMs: 10, batch: 500, onRecords: (rs) => void seen.push({ turn: turns, n: rs.length }) });
  await reader.drained();
  reader.stop();
  ticking = false;
  t.equal(seen.reduce((a, b) => a + b.n, 0), 10_000, "every record handed on");
  t.ok(seen.length >= 20 && seen.every((b) => b.n <= 500), `${seen.length} batches of at most 500`);
  const stalled = seen.slice(1).filter((b, i) => b.turn === (seen[i] as { turn: number }).turn).length;
  t.equal(stalled, 0, `the event loop turned between every two batches (${stalled} of ${seen.length - 1} pairs ran back to back)`);
});

t.test("burst: 10,000 kernel log lines do not stall prepare", async (t) => {
  const env = await startHealthEnv();
  t.teardown(() => env.close());
  const claims = [0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((g, i) => claim({ name: `burst-${i}`, uid: uid(900 + i), results: [{ device: `gpu-${g}` }] }));
  for (const c of claims) await env.store.putClaim(c);
  const noise = (i: number): string => (i % 10 === 0 ? xidLine(`0000:${(0x10 + (i % 30)).toString(16)}:00`, [13, 31, 43, 999][i % 4] as number) : `6,${seq++},${seq * 1000},-;usb 1-1: device descriptor read/64, error -${i % 100}`);
  const burst = Array.from({ length: 10_000 }, (_, i) => noise(i)).join("\n") + "\n";
  const before = performance.now();
  await env.v1.prepare({ claims: [ref(claims[0] as ResourceClaim)] });
  const idleMs = performance.now() - before;
  const lag = monitorEventLoopDelay({ resolution: 5 });
  lag.enable();
  const t0 = performance.now();
  await fsp.appendFile(env.kmsg, burst);
  let done = false;
  const drained = env.agent.health.kmsgDrained().then(() => {
    done = true;
    return performance.now() - t0;
  });
  // Prepares one after another for as long as the burst is being read (and at least three).
  const latencies: number[] = [];
  let during = 0;
  for (const c of claims.slice(1)) {
    if (done && latencies.length >= 3) break;
    const s = performance.now();
    if (!done) during++;
    const r = await env.v1.prepare({ claims: [ref(c)] });
    latencies.push(performance.now() - s);
    t.equal(r.claims[c.metadata.uid as string]?.error, "", "prepared");
  }
  const burstMs = await drained;
  lag.disable();
  const lagMs = lag.max / 1e6;
  const max = Math.max(...latencies);
  t.ok(lagMs < 250, `the event loop was never held longer than ${lagMs.toFixed(0)} ms while the burst was read (bound 250 ms)`);
  t.ok(during >= 1, `${during} prepares started while the burst was being read (${burstMs.toFixed(0)} ms)`);
  t.ok(max < 1500, `prepare during the burst: max ${max.toFixed(0)} ms (idle ${idleMs.toFixed(0)} ms), bound 1500 ms`);
  t.equal(env.agent.health.keeper.file().kmsgSeq, seq - 1, "every record of the burst was handled");
  t.comment(`burst of 10,000 lines read in ${burstMs.toFixed(0)} ms; prepare latencies ms: ${latencies.map((x) => x.toFixed(1)).join(", ")}; idle ${idleMs.toFixed(1)}`);
});

t.test("fixture h100-sxm-8x-faulty: XID 79 on gpu-0 and ECC on gpu-1; a lost GPU; a GPU gone from discovery stays published, tainted; diag health and diag explain say so", async (t) => {
  const root = tempDir("tessera-health-fx-");
  const config = nodeConfig(root, ["--discovery", "fixture:h100-sxm-8x-faulty"]);
  const signals = new EventEmitter();
  const agent = await startAgent(config, { log: createMemoryLogger(), bootId: async () => "boot-fx", toolkitDirs: [config.cdiRoot], signals, rediscoverIntervalS: 0, health: { intervalS: 3600, holdDownS: 300, apiVersions: ["v1"] } });
  t.teardown(() => agent.stop(2000));
  const store = createStandaloneStore(join(root, "store"));
  const published = async (): Promise<Record<string, DeviceTaint[]>> => {
    await agent.health.flushed();
    await agent.slicesSynced();
    const out: Record<string, DeviceTaint[]> = {};
    for (const s of await store.listSlices()) {
      t.same(checkSlice(s), [], `${s.metadata.name} within the API limits`);
      t.doesNotThrow(() => new ResourceSliceModel(s as never).validate(), `${s.metadata.name}: valid resource.k8s.io/v1`);
      for (const d of s.spec.devices ?? []) out[d.name] = d.taints ?? [];
    }
    return out;
  };
  await agent.health.kmsgDrained();
  await agent.health.check();
  let taints = await published();
  t.match(taints["gpu-0"], [{ key: "gpu.tessera.dev/xid", value: "79", effect: "NoExecute" }], "the fixture's kmsg.txt: XID 79 on gpu-0");
  t.match(taints["gpu-1"], [{ key: "gpu.tessera.dev/ecc-uncorrectable", value: "2", effect: "NoExecute" }], "the fixture's XML: 2 uncorrectable ECC errors on gpu-1");
  t.same(taints["gpu-2"], [], "gpu-2 healthy");
  const flags = ["--discovery", "fixture:h100-sxm-8x-faulty", "--kubelet-root", join(root, "k"), "--cdi-root", join(root, "cdi"), "--node-name", NODE, "--kube", `standalone:${join(root, "store")}`];
  const slicesJson = captureIO();
  t.equal(await main(["diag", "slices", ...flags, "-o", "json"], slicesJson), 0);
  const sd = JSON.parse(slicesJson.out.join("")) as { items: { spec: { devices?: { name: string; taints?: DeviceTaint[] }[] } }[]; diff: { inSync: boolean; devices: { changed: string[] } } };
  t.same(sd.diff.devices.changed, [], "diag slices --kube: no device differs from what is published");
  t.equal(sd.diff.inSync, true, "diag slices --kube: in sync — the taints the agent keeps in the state dir are part of what this node would publish");
  t.match(sd.items.flatMap((x) => x.spec.devices ?? []).find((d) => d.name === "gpu-0")?.taints, [{ key: "gpu.tessera.dev/xid", value: "79" }], "diag slices shows gpu-0's taint");

  const faults = fixtureFaultsFile(config.stateDir, resolveFixture(config.discovery, defaultFixturesDir()));
  writeFileSync(faults, JSON.stringify({ lost: ["0000:75:00.0"] }));
  await agent.health.check();
  taints = await published();
  t.match(taints["gpu-2"], [{ key: "gpu.tessera.dev/gpu-lost", value: "lost", effect: "NoExecute" }], "nvidia-smi: GPU is lost -> NoExecute");
  t.match(agent.health.keeper.evidence("gpu-2").query, { status: "lost", detail: /GPU is lost/ });

  writeFileSync(faults, JSON.stringify({ removed: ["0000:86:00.0"] }));
  signals.emit("SIGHUP");
  const deadline = Date.now() + 10_000;
  while (!agent.health.ghosts().some((g) => g.name === "gpu-3") && Date.now() < deadline) await new Promise((r) => setImmediate(r));
  taints = await published();
  t.match(taints["gpu-3"], [{ key: "gpu.tessera.dev/gone", effect: "NoExecute" }], "a GPU discovery no longer finds stays published with a NoExecute taint");
  t.equal(agent.health.feed.list().find((e) => e.device === "gpu-3")?.health, "UNHEALTHY");

  const c = claim({ name: "on-gpu-4", uid: uid(4242), results: [{ device: "gpu-4" }] });
  c.spec.devices = { requests: [{ name: "gpu", exactly: { deviceClassName: "gpu.tessera.dev" } }] };
  await store.putClaim({ ...c, status: { allocation: { devices: { results: [{ request: "gpu", driver: "gpu.tessera.dev", pool: NODE, device: "gpu-4" }], config: [] } } } });
  const dra = createDraClient(agent.draSocket, "v1");
  t.teardown(() => dra.close());
  t.equal((await dra.prepare({ claims: [ref(c)] })).claims[uid(4242)]?.error, "", "a claim on gpu-4 prepared");

  const json = captureIO();
  t.equal(await main(["diag", "health", ...flags, "-o", "json"], json), 0);
  const report = JSON.parse(json.out.join("")) as { devices: { device: string; health: string; taints: DeviceTaint[]; evidence: { lastXid?: { code: number; at: string } }; claims: string[] }[] };
  const row = (d: string) => report.devices.find((x) => x.device === d);
  t.match(row("gpu-0"), { health: "UNHEALTHY", taints: [{ key: "gpu.tessera.dev/xid", value: "79" }], evidence: { lastXid: { code: 79 } } }, "diag health: gpu-0, its XID with time");
  t.match(row("gpu-1"), { health: "UNHEALTHY", taints: [{ key: "gpu.tessera.dev/ecc-uncorrectable" }] });
  t.match(row("gpu-3"), { health: "UNHEALTHY", taints: [{ key: "gpu.tessera.dev/gone" }] }, "diag health: the GPU gone from discovery is listed");
  t.match(row("gpu-4"), { health: "HEALTHY", taints: [], claims: [/^default\/on-gpu-4/] }, "diag health: the prepared claim using gpu-4");
  t.equal(report.devices.length, 8, "every device");
  const table = captureIO();
  t.equal(await main(["diag", "health", ...flags], table), 0);
  const text = table.out.join("");
  t.match(text, /gpu-0\s+UNHEALTHY\s+xid=79:NoExecute\s+XID 79 at /, "table: device, health, taint, evidence");
  t.match(text, /gpu-1\s+UNHEALTHY\s+ecc-uncorrectable=2:NoExecute\s+nvidia-smi ok at .*ECC uncorrected 2/);
  t.match(text, /gpu-4\s+HEALTHY\s+-\s+.*default\/on-gpu-4/);

  const yaml = "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: eight, namespace: default}\nspec:\n  devices:\n    requests:\n    - name: gpus\n      exactly: {deviceClassName: gpu.tessera.dev, count: 5}\n";
  const explain = captureIO({}, yaml);
  t.equal(await main(["diag", "explain", "-f", "-", ...flags], explain), 0);
  const out = explain.out.join("");
  t.match(out, /does not fit/);
  t.match(out, /the device is tainted: gpu-0 \(gpu\.tessera\.dev\/xid=79:NoExecute\)/, "diag explain names the taint");
  const tolerated = captureIO({}, yaml.replace("count: 5}", "count: 5, tolerations: [{operator: Exists}]}"));
  await main(["diag", "explain", "-f", "-", ...flags], tolerated);
  t.notMatch(tolerated.out.join(""), /tainted/, "a claim tolerating every taint is not stopped by them");
});

t.test("the XID table: docs/health.md shows exactly agent/health/xid.ts, each row's effect follows its NVIDIA bucket unless it says why not", async (t) => {
  const doc = readFileSync(new URL("../../docs/health.md", import.meta.url), "utf8");
  const effect = { fatal: "NoExecute", attention: "NoSchedule", informational: "None" } as const;
  const rows = [...doc.matchAll(/^\| (\d+) \| `([A-Z0-9_]+)` \| ([^|]+) \| ([A-Z0-9_]+) \| ([^|]+) \| ([^|]+) \|$/gm)].map((m) => ({
    code: Number(m[1]), mnemonic: m[2], name: (m[3] ?? "").trim(), bucket: m[4], effect: (m[6] ?? "").trim(),
  }));
  const code = XID_TABLE.map((x) => ({ code: x.code, mnemonic: x.mnemonic, name: x.name, bucket: x.bucket, effect: x.code === 154 ? "NoExecute / NoSchedule / None" : effect[xidClass(x)] }));
  t.same(rows, code, "docs/health.md's XID rows = XID_TABLE (code, mnemonic, description, bucket, effect)");
  const buckets = [...doc.matchAll(/^\| ([A-Z0-9_]+) \| (fatal|attention|informational) \| /gm)].map((m) => [m[1], m[2]]);
  t.same(buckets, Object.entries(BUCKET_CLASS).map(([b, v]) => [b, v.class]), "the bucket rule in the docs = BUCKET_CLASS");
  for (const x of XID_TABLE) {
    if (x.code === 154) continue;
    t.equal(classifyXid(x.code).effect, effect[x.override?.class ?? BUCKET_CLASS[x.bucket].class], `XID ${x.code}: effect from ${x.override ? "its override" : x.bucket}`);
  }
  t.same(XID_TABLE.filter((x) => x.override).map((x) => x.code), [94], "one override, and it is documented");
  t.ok(doc.includes("Override: **XID 94**"), "the override's reason is in the docs");
});

t.test("config: health flags with their env mirrors; bad values are one-line TESSERA_CONFIG errors", async (t) => {
  const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => resolveHealthConfig(parseFlags(argv, HEALTH_FLAGS, env));
  t.same(parse([]), { intervalS: 10, holdDownS: 300, apiVersions: ["v1", "v1alpha1"] }, "defaults; no --kmsg: the discovery backend's default");
  t.same(parse([], { KMSG_PATH: "/var/log/k.txt", HEALTH_INTERVAL: "5", HEALTH_HOLD_DOWN: "0", HEALTH_API: "v1alpha1" }), { kmsg: "/var/log/k.txt", intervalS: 5, holdDownS: 0, apiVersions: ["v1alpha1"] }, "env mirrors");
  t.same(parse(["--health-api", "off", "--kmsg", "off"]), { kmsg: "off", intervalS: 10, holdDownS: 300, apiVersions: [] });
  for (const [argv, re] of [[["--health-api", "v2"], /^--health-api=v2: expected/], [["--health-interval", "0"], /--health-interval=0/], [["--health-hold-down", "-1"], /--health-hold-down=-1/]] as const) {
    t.throws(() => parse([...argv]), { code: "TESSERA_CONFIG", message: re });
  }
  t.same(classifyXid(79), { effect: "NoExecute", known: true, message: "XID 79 GPU has fallen off the bus (fatal; NVIDIA: RESTART_BM)" });
  t.equal(classifyXid(154, "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)").effect, "NoExecute", "XID 154 follows the driver's action");
  t.equal(classifyXid(154, "GPU recovery action changed from 0x2 (Node Reboot Required) to 0x0 (None)").effect, "None", "XID 154: the new action counts, not the old one");
  t.equal(classifyXid(154, "to 0x4 (Drain P2P)").effect, "NoSchedule");
  t.equal(classifyXid(109).effect, "NoExecute", "XID 109: the catalogue's immediate action is RESET_GPU");
  t.equal(classifyXid(94).effect, "NoSchedule", "XID 94: RESTART_APP, but the catalogue asks for a reset when convenient");
  t.same(parseXid("NVRM: Xid (PCI:0000:3B:00.0 GPU-I:05): 94, pid=7194, Contained: CE"), { pci: "0000:3b:00", gi: 5, code: 94, detail: "pid=7194, Contained: CE" });
  t.equal(parseXid("NVRM: GPU at PCI:0000:53:00: GPU-0000"), undefined);
  t.same(parseHealthQuery("00000000:53:00.0, 0, [N/A], No, No, Not Active, Active, Not Active\n", "Unable to determine the device handle for GPU 0000:64:00.0: GPU is lost.  Reboot the system to recover this GPU\n", ["0000:53:00.0", "0000:64:00.0", "0000:75:00.0"]).map((r) => [r.pciBusId, r.status]), [["0000:53:00.0", "ok"], ["0000:64:00.0", "lost"], ["0000:75:00.0", "no-answer"]]);
});
