// GPU sharing by opaque config (GpuConfig / MigDeviceConfig): strict decoding and precedence; a
// table of bad configs answered per claim over the real DRA socket; time-slicing and MPS through
// the real executable seams (--nvidia-smi test/support/nvidia-smi-sim.mjs, --mps-control
// test/support/nvidia-cuda-mps-control-sim.mjs): the calls the tools saw, the checkpoint, the CDI
// spec, unprepare undoing them, conflicting strategies on one GPU, a crashed daemon restarted, a
// restarted agent adopting a running daemon; the shipped examples through `diag explain`.
import t from "tap";
import type { Test } from "tap";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startAgent, type AgentHandle } from "../agent/cli/agent.js";
import { captureIO } from "../agent/cli/io.js";
import { main } from "../agent/cli/main.js";
import { TesseraError } from "../agent/common/errors.js";
import { createMemoryLogger } from "../agent/common/log.js";
import { createSimulatedNvidiaSmi, type SimState } from "../agent/discovery/nvsmi-sim.js";
import { createStandaloneStore } from "../agent/kube/standalone-store.js";
import type { DeviceAllocationConfiguration } from "../agent/kube/types.js";
import { createDraClient } from "../agent/plugin/protos.js";
import { createComputeModes } from "../agent/sharing/compute-mode.js";
import { createTimeSlicer } from "../agent/sharing/timeslice.js";
import { decodeGpuConfig, driverConfigs, sharingForDevice } from "../agent/sharing/config.js";
import { agentProcess } from "./support/agent-process.js";
import { claim, nodeConfig, ref, startEnv, tempDir, uid, DRIVER } from "./support/kubelet-env.js";

const ROOT = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
const SMI = join(ROOT, "test", "support", "nvidia-smi-sim.mjs");
const MPS = join(ROOT, "test", "support", "nvidia-cuda-mps-control-sim.mjs");
const FIXTURE = join(ROOT, "fixtures", "nodes", "h100-sxm-8x-mig");
const GPU = (n: number): string => `GPU-0000000${n}-0000-0000-0000-00000000000${n}`;
const API = "gpu.tessera.dev/v1alpha1";

// Real processes (agents, simulated tools, MPS daemons) on 2 shared cores.
t.setTimeout(600_000);

const timeSliced = (interval?: string): Record<string, unknown> => ({ apiVersion: API, kind: "GpuConfig", sharing: { strategy: "TimeSlicing", ...(interval ? { timeSlicing: { interval } } : {}) } });
const mpsConfig = (mps: Record<string, unknown> = { defaultActiveThreadPercentage: 50, defaultPinnedDeviceMemoryLimit: "10Gi" }): Record<string, unknown> => ({ apiVersion: API, kind: "GpuConfig", sharing: { strategy: "MPS", mps } });

function decodeError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof TesseraError) return `${err.code}: ${err.message}`;
    throw err;
  }
  return "no error";
}

// [what, parameters, the message says]
const BAD: [string, unknown, RegExp][] = [
  ["unknown top-level field", { ...timeSliced("Long"), shring: {} }, /opaque\.parameters\.shring is not a field of the Tessera GpuConfig; remove it \(fields here: apiVersion, kind, sharing\)/],
  ["wrong apiVersion", { ...timeSliced(), apiVersion: "gpu.tessera.dev/v1" }, /opaque\.parameters\.apiVersion is "gpu\.tessera\.dev\/v1"; use gpu\.tessera\.dev\/v1alpha1/],
  ["wrong kind", { ...timeSliced(), kind: "GPUConfig" }, /opaque\.parameters\.kind is "GPUConfig"; use GpuConfig \(whole GPUs\) or MigDeviceConfig/],
  ["parameters not an object", null, /opaque\.parameters is null, not an object/],
  ["sharing not an object", { apiVersion: API, kind: "GpuConfig", sharing: "MPS" }, /opaque\.parameters\.sharing is "MPS", not an object/],
  ["unknown strategy", { apiVersion: API, kind: "GpuConfig", sharing: { strategy: "Timeslicing" } }, /sharing\.strategy is "Timeslicing"; use TimeSlicing or MPS/],
  ["missing strategy", { apiVersion: API, kind: "GpuConfig", sharing: { timeSlicing: { interval: "Long" } } }, /sharing\.strategy is undefined; use TimeSlicing or MPS/],
  ["unknown interval", timeSliced("Longer"), /sharing\.timeSlicing\.interval is "Longer"; use one of Default, Short, Medium, Long/],
  ["interval as a number", { apiVersion: API, kind: "GpuConfig", sharing: { strategy: "TimeSlicing", timeSlicing: { interval: 3 } } }, /sharing\.timeSlicing\.interval is 3; use one of/],
  ["misspelt timeSlicing field", { apiVersion: API, kind: "GpuConfig", sharing: { strategy: "TimeSlicing", timeSlicing: { intervall: "Long" } } }, /sharing\.timeSlicing\.intervall is not a field/],
  ["mps settings with TimeSlicing", { apiVersion: API, kind: "GpuConfig", sharing: { strategy: "TimeSlicing", mps: { defaultActiveThreadPercentage: 50 } } }, /sharing\.mps is set but strategy is TimeSlicing; remove mps, or set strategy: MPS/],
  ["timeSlicing settings with MPS", { apiVersion: API, kind: "GpuConfig", sharing: { strategy: "MPS", timeSlicing: { interval: "Long" } } }, /sharing\.timeSlicing is set but strategy is MPS/],
  ["thread percentage 0", mpsConfig({ defaultActiveThreadPercentage: 0 }), /defaultActiveThreadPercentage is 0, outside 1\.\.100; set a whole number from 1 to 100/],
  ["thread percentage 101", mpsConfig({ defaultActiveThreadPercentage: 101 }), /defaultActiveThreadPercentage is 101, outside 1\.\.100/],
  ["thread percentage 50.5", mpsConfig({ defaultActiveThreadPercentage: 50.5 }), /defaultActiveThreadPercentage is 50\.5, not a whole number/],
  ["thread percentage as a string", mpsConfig({ defaultActiveThreadPercentage: "50" }), /defaultActiveThreadPercentage is "50", not a whole number/],
  ["memory limit not a quantity", mpsConfig({ defaultPinnedDeviceMemoryLimit: "lots" }), /defaultPinnedDeviceMemoryLimit is "lots", not a Kubernetes quantity/],
  ["memory limit as a number", mpsConfig({ defaultPinnedDeviceMemoryLimit: 10 }), /defaultPinnedDeviceMemoryLimit is 10, not a Kubernetes quantity/],
  ["memory limit under 1Mi", mpsConfig({ defaultPinnedDeviceMemoryLimit: "100Ki" }), /defaultPinnedDeviceMemoryLimit is "100Ki", under 1Mi/],
  ["unknown mps field", mpsConfig({ defaultActiveThreadPercent: 50 }), /sharing\.mps\.defaultActiveThreadPercent is not a field/],
];

const fromClaim = (parameters: unknown, requests?: string[]): DeviceAllocationConfiguration => ({ source: "FromClaim", ...(requests ? { requests } : {}), opaque: { driver: DRIVER, parameters } });
const fromClass = (parameters: unknown, requests: string[]): DeviceAllocationConfiguration => ({ source: "FromClass", requests, opaque: { driver: DRIVER, parameters } });
const resolve = (configs: DeviceAllocationConfiguration[], device: { request?: string; deviceName?: string; kind?: "gpu" | "mig" } = {}) =>
  sharingForDevice(driverConfigs(configs, DRIVER), { request: "gpu", deviceName: "gpu-0", kind: "gpu", ...device }, "default/c (uid u)");

t.test("opaque GpuConfig: strict decoding, per-claim messages naming the field; MIG rules; precedence", async (t) => {
  for (const [what, parameters, says] of BAD) {
    const msg = decodeError(() => resolve([fromClaim(parameters)]));
    t.match(msg, /^TESSERA_DEVICE_CONFIG: ResourceClaim default\/c \(uid u\), status\.allocation\.devices\.config\[0\] \(from the claim, every request\): /, `${what}: a TESSERA_DEVICE_CONFIG naming the claim and the entry`);
    t.match(msg, says, `${what}: says what and how to fix`);
  }
  t.match(decodeError(() => resolve([fromClaim(timeSliced("Long"))], { deviceName: "gpu-1-mig-19-0-1", kind: "mig" })), /kind is GpuConfig but request gpu got MIG device gpu-1-mig-19-0-1; use kind: MigDeviceConfig/, "GpuConfig on a MIG device");
  t.match(decodeError(() => resolve([fromClaim({ ...timeSliced(), kind: "MigDeviceConfig" })], { kind: "mig" })), /sharing\.strategy is TimeSlicing, which MIG devices do not support/, "time-slicing refused on MIG devices");
  t.match(decodeError(() => resolve([fromClaim({ ...mpsConfig(), kind: "MigDeviceConfig" })])), /kind is MigDeviceConfig but request gpu got whole GPU gpu-0/, "MigDeviceConfig on a whole GPU");
  t.same(resolve([fromClaim({ ...mpsConfig({ defaultActiveThreadPercentage: 25 }), kind: "MigDeviceConfig" })], { kind: "mig" }), { strategy: "MPS", activeThreadPercentage: 25 }, "MPS on a MIG device");
  t.same(resolve([fromClaim(timeSliced())]), { strategy: "TimeSlicing", interval: "Default" }, "interval defaults to Default");
  t.same(resolve([fromClaim(mpsConfig({ defaultPinnedDeviceMemoryLimit: "10Gi" }))]), { strategy: "MPS", pinnedMemoryLimitMiB: 10240 }, "10Gi = 10240 MiB");
  t.same(resolve([fromClaim({ apiVersion: API, kind: "GpuConfig" })]), undefined, "a GpuConfig without sharing shares nothing");
  // Precedence: the class's config first, then the claim's in order; the last one that applies wins.
  t.same(resolve([fromClaim(mpsConfig()), fromClass(timeSliced("Short"), ["gpu"])]), { strategy: "MPS", activeThreadPercentage: 50, pinnedMemoryLimitMiB: 10240 }, "the claim's config overrides the class's, wherever it sits in the list");
  t.same(resolve([fromClaim(timeSliced("Short")), fromClaim(timeSliced("Long"))]), { strategy: "TimeSlicing", interval: "Long" }, "later claim entries override earlier ones");
  t.same(resolve([fromClaim(timeSliced("Short")), fromClaim(timeSliced("Long"), ["other"])]), { strategy: "TimeSlicing", interval: "Short" }, "an entry for another request does not apply");
  t.same(resolve([fromClaim(timeSliced("Medium"), ["gpu"])], { request: "gpu/h100" }), { strategy: "TimeSlicing", interval: "Medium" }, "an entry naming the request applies to its subrequests");
  t.match(decodeError(() => resolve([fromClaim(timeSliced("Bogus")), fromClaim(timeSliced("Long"))])), /config\[0\].*interval is "Bogus"/, "an overridden entry is still decoded: a bad one is never ignored");
  t.same(resolve([{ source: "FromClaim", opaque: { driver: "other.example.com", parameters: { anything: 1 } } }]), undefined, "another driver's config is not ours to judge");
  t.match(decodeError(() => decodeGpuConfig({ ...timeSliced(), x: 1 }, "ResourceClaim default/f", "spec.devices.config[2].opaque.parameters")), /^TESSERA_DEVICE_CONFIG: ResourceClaim default\/f: spec\.devices\.config\[2\]\.opaque\.parameters\.x is not a field/, "claim files: the spec path");
});

t.test("bad configs over the real DRA socket: each claim of one batch gets its own error; the good one prepares", async (t) => {
  const env = await startEnv({ root: tempDir("tsh-") });
  t.teardown(() => env.close());
  const claims = BAD.map(([, parameters], i) => claim({ name: `bad-${i}`, uid: uid(100 + i), results: [{ device: "gpu-0", shareID: uid(900 + i) }], config: [{ parameters }] }));
  claims.push(claim({ name: "mig-gpuconfig", uid: uid(200), results: [{ device: "gpu-1-mig-19-0-1" }], config: [{ parameters: timeSliced("Long") }] }));
  claims.push(
    claim({ name: "mixed-mps", uid: uid(201), results: [{ device: "gpu-2" }, { device: "gpu-3", request: "other" }], config: [{ requests: ["gpu"], parameters: mpsConfig() }] }),
  );
  const good = claim({ name: "good", uid: uid(202), results: [{ device: "gpu-4" }], config: [{ parameters: { apiVersion: API, kind: "GpuConfig" } }] });
  claims.push(good);
  for (const c of claims) await env.store.putClaim(c);
  const res = await env.v1.prepare({ claims: claims.map(ref) });
  BAD.forEach(([what, , says], i) => {
    const err = res.claims?.[uid(100 + i)]?.error ?? "";
    t.match(err, /^TESSERA_DEVICE_CONFIG: ResourceClaim default\/bad-\d+ \(uid [0-9a-f-]+\), status\.allocation\.devices\.config\[0\]/, `${what}: its own per-claim error`);
    t.match(err, says, `${what}: the message over the wire`);
  });
  t.match(res.claims?.[uid(200)]?.error, /TESSERA_DEVICE_CONFIG: .*kind is GpuConfig but request gpu got MIG device gpu-1-mig-19-0-1/, "GpuConfig time-slicing on a MIG device: refused");
  t.match(res.claims?.[uid(201)]?.error, /TESSERA_DEVICE_CONFIG: ResourceClaim default\/mixed-mps .*MPS applies to gpu-2 but not to gpu-3/, "an MPS claim whose other device is not MPS: refused");
  t.notOk(res.claims?.[uid(202)]?.error, "the good claim in the same batch is prepared");
  const ck = JSON.parse(readFileSync(env.config.checkpointFile, "utf8")) as { data: { claims: Record<string, unknown> } };
  t.same(Object.keys(ck.data.claims), [uid(202)], "no refused claim holds anything");
  const again = await env.v1.prepare({ claims: [ref(good)] });
  t.notOk(again.claims?.[uid(202)]?.error, "the agent still answers");
});

// ---- the real executable seams ----------------------------------------------------------------

interface Seam {
  dir: string;
  agent: AgentHandle;
  v1: ReturnType<typeof createDraClient>;
  close(): Promise<void>;
}

const seamFlags = (dir: string): string[] => ["--discovery", "nvidia-smi", "--nvidia-smi", SMI, "--mps-control", MPS, "--sysfs-root", join(FIXTURE, "sys"), "--proc-root", join(FIXTURE, "proc"), "--state-dir", join(dir, "s")];

function simEnv(dir: string): Record<string, string> {
  // NODE_OPTIONS cleared: the simulated tools (and the daemons they start) need none of tap's instrumentation.
  return { NODE_OPTIONS: "", TESSERA_SIM_FIXTURE: FIXTURE, TESSERA_SIM_STATE: join(dir, "sim-state.json"), TESSERA_SIM_LOG: join(dir, "smi-calls.jsonl"), TESSERA_MPS_SIM_LOG: join(dir, "mps-calls.jsonl") };
}

/** An in-process agent on the seams; its children (nvidia-smi, mps-control) inherit the sim env. */
async function seamAgent(t: Test, dir: string, bootId = "boot-1"): Promise<Seam> {
  const saved = { ...process.env };
  Object.assign(process.env, simEnv(dir));
  const config = nodeConfig(dir, seamFlags(dir));
  const agent = await startAgent(config, { log: createMemoryLogger(), bootId: async () => bootId, toolkitDirs: [config.cdiRoot], rediscoverIntervalS: 0 });
  const v1 = createDraClient(agent.draSocket, "v1", { deadlineMs: 90_000 });
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closed ??= (async () => {
      v1.close();
      await agent.stop(2000);
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    })());
  t.teardown(close);
  return { dir, agent, v1, close };
}

const lines = (file: string): Record<string, unknown>[] => (existsSync(file) ? readFileSync(file, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) : []);
const smiCalls = (dir: string): string[] => lines(join(dir, "smi-calls.jsonl")).map((l) => (l as unknown as string[]).join(" ")).filter((c) => c.startsWith("compute-policy"));
/** The compute-mode calls (sets and reads) the simulated nvidia-smi saw. */
const modeCalls = (dir: string): string[] => lines(join(dir, "smi-calls.jsonl")).map((l) => (l as unknown as string[]).join(" ")).filter((c) => / -c |compute_mode/.test(c));
const computeMode = (dir: string, gpu: string): string | undefined => (existsSync(join(dir, "sim-state.json")) ? (JSON.parse(readFileSync(join(dir, "sim-state.json"), "utf8")) as SimState).computeMode?.[gpu] : undefined);
const timeslice = (dir: string, gpu: string): number | undefined => (existsSync(join(dir, "sim-state.json")) ? (JSON.parse(readFileSync(join(dir, "sim-state.json"), "utf8")) as SimState).timeslice?.[gpu] : undefined);

t.test("time-slicing through the real seam: set on prepare, kept while a claim holds it, Default after the last; conflicts refused", async (t) => {
  const dir = tempDir("tsh-");
  reapDaemons(t, dir); // only if the conflict check failed and the MPS claim started one
  let s = await seamAgent(t, dir);
  const st = createStandaloneStore(join(dir, "store"));
  const a = claim({ name: "ts-a", uid: uid(1), results: [{ device: "gpu-4", shareID: uid(901) }], config: [{ parameters: timeSliced("Long") }] });
  const b = claim({ name: "ts-b", uid: uid(2), results: [{ device: "gpu-4", shareID: uid(902) }], config: [{ parameters: timeSliced("Long") }] });
  const shortOne = claim({ name: "ts-short", uid: uid(3), results: [{ device: "gpu-4", shareID: uid(903) }], config: [{ parameters: timeSliced("Short") }] });
  const mpsOne = claim({ name: "mps-on-ts", uid: uid(4), results: [{ device: "gpu-4", shareID: uid(904) }], config: [{ parameters: mpsConfig() }] });
  const plain = claim({ name: "plain", uid: uid(5), results: [{ device: "gpu-4", shareID: uid(905) }] });
  for (const c of [a, b, shortOne, mpsOne, plain]) await st.putClaim(c);

  const r1 = await s.v1.prepare({ claims: [ref(a)] });
  t.notOk(r1.claims?.[uid(1)]?.error, "time-sliced claim prepared");
  t.same(smiCalls(dir), [`compute-policy -i ${GPU(4)} --set-timeslice 3`], "nvidia-smi compute-policy -i <gpu uuid> --set-timeslice 3 (Long)");
  t.equal(timeslice(dir, GPU(4)), 3, "the simulated GPU runs the Long policy");
  const ck = JSON.parse(readFileSync(join(dir, "s", "checkpoint.json"), "utf8")) as { data: { claims: Record<string, { devices: { sharing?: unknown }[] }> } };
  t.same(ck.data.claims[uid(1)]?.devices[0]?.sharing, { strategy: "TimeSlicing", interval: "Long" }, "the checkpoint records the device's sharing");

  const r2 = await s.v1.prepare({ claims: [ref(b), ref(shortOne), ref(mpsOne), ref(plain)] });
  t.notOk(r2.claims?.[uid(2)]?.error, "a second claim on the GPU with the same setting shares it");
  t.match(r2.claims?.[uid(3)]?.error, /^TESSERA_DEVICE_CONFLICT: device node-a\/gpu-4 \(GPU-00000004-0000-0000-0000-000000000004\) is prepared for ResourceClaim default\/ts-(a|b) .* with TimeSlicing \(interval Long\); ResourceClaim default\/ts-short .* asks for TimeSlicing \(interval Short\)/, "another interval on the same GPU: the later claim gets a clear error");
  t.match(r2.claims?.[uid(4)]?.error, /^TESSERA_DEVICE_CONFLICT: device node-a\/gpu-4 .* is prepared for ResourceClaim default\/ts-(a|b) .*; ResourceClaim default\/mps-on-ts .* asks for MPS on it: a GPU under MPS runs in compute mode EXCLUSIVE_PROCESS/, "MPS on a time-sliced GPU: the later claim gets a clear error");
  t.notOk(r2.claims?.[uid(5)]?.error, "a claim without sharing config shares the GPU as before");
  t.same(lines(join(dir, "mps-calls.jsonl")), [], "the refused MPS claim started no daemon");

  // A reboot (the driver forgets the policy): the restarted agent sets it again for the prepared claims.
  await s.close();
  const sim = JSON.parse(readFileSync(join(dir, "sim-state.json"), "utf8")) as SimState;
  writeFileSync(join(dir, "sim-state.json"), JSON.stringify({ ...sim, timeslice: {} }));
  s = await seamAgent(t, dir, "boot-2");
  t.equal(timeslice(dir, GPU(4)), 3, "after a reboot the prepared claims' policy is set again");
  t.equal(smiCalls(dir).length, 4, "once per prepared claim (a, b)");

  t.notOk((await s.v1.unprepare({ claims: [ref(a)] })).claims?.[uid(1)]?.error);
  t.equal(timeslice(dir, GPU(4)), 3, "unprepare of one of two time-sliced claims keeps the policy");
  t.notOk((await s.v1.unprepare({ claims: [ref(b)] })).claims?.[uid(2)]?.error);
  t.equal(timeslice(dir, GPU(4)), 0, "the last one sets DEFAULT again");
  t.equal(smiCalls(dir).at(-1), `compute-policy -i ${GPU(4)} --set-timeslice 0`, "with --set-timeslice 0");
  t.equal(smiCalls(dir).length, 5, "set (a), set (b), set again after the reboot (a, b), reset: nothing for the refused or plain claims");
});

t.test("SIGKILL between setting a time-slice policy and recording the claim done: the restarted agent sets Default once the claim is gone", async (t) => {
  const dir = tempDir("tsh-");
  const st = createStandaloneStore(join(dir, "store"));
  const c = claim({ name: "ts-kill", uid: uid(21), results: [{ device: "gpu-6" }], config: [{ parameters: timeSliced("Medium") }] });
  await st.putClaim(c);
  const flags = ["--kubelet-root", join(dir, "k"), "--cdi-root", join(dir, "cdi"), "--node-name", "node-a", "--kube", `standalone:${join(dir, "store")}`, "--rediscover-interval", "0", "--http-listen", "127.0.0.1:0", ...seamFlags(dir)];
  const env = { ...process.env, ...simEnv(dir) };
  const first = await agentProcess(flags, { ...env, TESSERA_SIM_KILL_PARENT_AFTER_TIMESLICE: "1" });
  const v1 = createDraClient(join(dir, "k", "plugins", "gpu.tessera.dev", "dra.sock"), "v1", { deadlineMs: 90_000 });
  await v1.prepare({ claims: [ref(c)] }).then(
    () => t.fail("the agent answered although it was killed"),
    () => undefined,
  );
  v1.close();
  await first.exited;
  t.equal(first.proc.signalCode, "SIGKILL", "the agent died right after setting the policy");
  t.equal(timeslice(dir, GPU(6)), 2, "the GPU runs the Medium policy of a claim not recorded done");
  await st.deleteClaim("default", "ts-kill");
  const second = await agentProcess(flags, env);
  t.teardown(async () => {
    second.proc.kill("SIGTERM");
    await second.exited;
  });
  t.equal(timeslice(dir, GPU(6)), 0, "restart: the policy of a claim that no longer exists is set back to Default");
  const ck = JSON.parse(readFileSync(join(dir, "s", "checkpoint.json"), "utf8")) as { data: { claims: Record<string, unknown> } };
  t.notOk(uid(21) in ck.data.claims, "and its entry is dropped");
});

t.test("simulated nvidia-smi compute-policy: the real syntax and numbering, refusals on MIG", async (t) => {
  const sim = createSimulatedNvidiaSmi({ fixtureDir: FIXTURE, stateFile: join(tempDir("tsh-"), "st.json") });
  const cases: [string[], number, RegExp][] = [
    [["compute-policy", "-i", GPU(4), "--set-timeslice", "2"], 0, /Set timeslice to MEDIUM for GPU/],
    [["compute-policy", "-i", GPU(4), "-l"], 0, /Timeslice: MEDIUM/],
    [["compute-policy", "-i", GPU(4), "--set-timeslice=1"], 0, /SHORT/],
    [["compute-policy", "-i", GPU(4), "--set-timeslice", "4"], 2, /Invalid Argument/],
    [["compute-policy", "-i", GPU(0), "--set-timeslice", "1"], 3, /Not Supported/], // GPU 0 is in MIG mode
    [["compute-policy", "-i", "MIG-00000000-0000-0000-0000-000000000000", "--set-timeslice", "1"], 3, /Not Supported/],
    [["compute-policy", "-i", "GPU-ffffffff-0000-0000-0000-000000000000", "--set-timeslice", "1"], 6, /No devices were found/],
  ];
  for (const [argv, code, out] of cases) {
    const r = sim.run(argv);
    t.equal(r.code, code, `${argv.join(" ")}: exit ${code}`);
    t.match(r.stdout + r.stderr, out);
  }
});

t.test("simulated nvidia-smi compute mode: -i <id> -c <mode> and --query-gpu=compute_mode with the real texts; a GPU in MIG mode refuses as a warning, and the read-back catches it", async (t) => {
  const sim = createSimulatedNvidiaSmi({ fixtureDir: FIXTURE, stateFile: join(tempDir("tsh-"), "st.json") });
  const q = (gpu: string): string[] => ["-i", gpu, "--query-gpu=compute_mode", "--format=csv,noheader,nounits"];
  const cases: [string[], number, string][] = [
    [q(GPU(4)), 0, "Default\n"],
    [["-i", GPU(4), "-c", "EXCLUSIVE_PROCESS"], 0, "Set compute mode to EXCLUSIVE_PROCESS for GPU 00000000:CC:00.0.\nAll done.\n"],
    [q(GPU(4)), 0, "Exclusive_Process\n"],
    [["-i", GPU(4), "-c", "0"], 0, "Set compute mode to DEFAULT for GPU 00000000:CC:00.0.\nAll done.\n"],
    [["-i", GPU(4), "--compute-mode=3"], 0, "Set compute mode to EXCLUSIVE_PROCESS for GPU 00000000:CC:00.0.\nAll done.\n"],
    [["-i", GPU(0), "-c", "EXCLUSIVE_PROCESS"], 0, "Setting compute mode to EXCLUSIVE_PROCESS is not supported on a MIG-enabled device.\nUnable to set the compute mode for GPU 00000000:BB:00.0: Not Supported\nTreating as warning and moving on.\nAll done.\n"],
    [q(GPU(0)), 0, "Default\n"],
    [["-i", GPU(4), "-c", "EXCLUSIVE"], 2, ""],
    [["-i", "GPU-ffffffff-0000-0000-0000-000000000000", "-c", "DEFAULT"], 6, ""],
  ];
  const bus = (gpu: string): string => sim.run(["-i", gpu, "--query-gpu=pci.bus_id", "--format=csv,noheader,nounits"]).stdout.trim();
  for (const [argv, code, out] of cases) {
    const r = sim.run(argv);
    t.equal(r.code, code, `${argv.join(" ")}: exit ${code}`);
    if (out) t.equal(r.stdout, out.replace("00000000:CC:00.0", bus(GPU(4))).replace("00000000:BB:00.0", bus(GPU(0))), `${argv.join(" ")}: the real tool's text`);
  }
  // The agent's side: a refusal that exits 0 is still an error, because every set is read back.
  const modes = createComputeModes({ exec: async (_bin, args) => sim.run(args), bin: "nvidia-smi", execOptions: { timeoutMs: 1000, maxBytes: 1 << 20 }, log: createMemoryLogger() });
  t.equal(await modes.ensure(GPU(4), "EXCLUSIVE_PROCESS"), "unchanged", "already EXCLUSIVE_PROCESS: not set again");
  t.equal(await modes.ensure(GPU(4), "DEFAULT"), "set", "DEFAULT set");
  const refused = await modes.ensure(GPU(0), "EXCLUSIVE_PROCESS").then(() => "no error", (err: unknown) => (err instanceof TesseraError ? `${err.code}: ${err.message}` : String(err)));
  t.match(refused, /^TESSERA_SHARING: GPU GPU-00000000-0000-0000-0000-000000000000: compute mode is still Default after `nvidia-smi -i GPU-00000000-0000-0000-0000-000000000000 -c EXCLUSIVE_PROCESS` \(it said: Setting compute mode to EXCLUSIVE_PROCESS is not supported on a MIG-enabled device\. Unable to set the compute mode for GPU [0-9A-F:.]+: Not Supported Treating as warning and moving on\.\); MPS needs a whole GPU/, "the MIG-mode refusal (exit 0) is an error naming the GPU, the command and what it said");
  // A non-zero exit (and a tool that cannot run) is a per-claim error for both settings that go through nvidia-smi.
  const failing = { exec: async () => ({ code: 3, stdout: "", stderr: "Insufficient Permissions\n" }), bin: "nvidia-smi", execOptions: { timeoutMs: 1000, maxBytes: 1 << 20 }, log: createMemoryLogger() };
  const why = (p: Promise<unknown>): Promise<string> => p.then(() => "no error", (err: unknown) => (err instanceof TesseraError ? `${err.code}: ${err.message}` : String(err)));
  t.match(await why(createTimeSlicer(failing).set(GPU(1), "Long")), /^TESSERA_SHARING: GPU GPU-0+1-.*: cannot set time-slice interval Long \(`nvidia-smi compute-policy -i GPU-\S+ --set-timeslice 3` exited 3: Insufficient Permissions\); check `nvidia-smi compute-policy -l`/, "time-slice: a non-zero exit is an error naming the GPU, the command and what it said");
  t.match(await why(createComputeModes(failing).ensure(GPU(1), "EXCLUSIVE_PROCESS")), /^TESSERA_SHARING: GPU GPU-0+1-.*: cannot read the compute mode \(`nvidia-smi -i GPU-\S+ --query-gpu=compute_mode --format=csv,noheader,nounits` exited 3: Insufficient Permissions\)/, "compute mode: a non-zero exit is an error");
  const missing = { ...failing, exec: async () => { throw new Error("spawn nvidia-smi ENOENT"); } };
  t.match(await why(createTimeSlicer(missing).set(GPU(1), "Short")), /cannot set time-slice interval Short: `nvidia-smi compute-policy .*` could not run; check --nvidia-smi/, "a tool that cannot run: check --nvidia-smi");
});

const specOf = (dir: string, u: string): { cdiVersion: string; containerEdits: { env: string[]; mounts?: { hostPath: string; containerPath: string; options: string[] }[] } } =>
  JSON.parse(readFileSync(join(dir, "cdi", `k8s.gpu.tessera.dev-claim_${u}.json`), "utf8")) as ReturnType<typeof specOf>;

function daemonPid(dir: string, u: string): number | undefined {
  const f = join(dir, "s", "mps", u, "pipe", "nvidia-cuda-mps-control.pid");
  return existsSync(f) ? Number(readFileSync(f, "utf8").trim()) : undefined;
}

function isAlive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The daemons a test started (through the agent) do not outlive it. */
function reapDaemons(t: Test, dir: string): void {
  t.teardown(() => {
    const root = join(dir, "s", "mps");
    for (const u of existsSync(root) ? readdirSync(root) : []) {
      const pid = daemonPid(dir, u);
      if (isAlive(pid)) process.kill(pid as number, "SIGKILL");
    }
  });
}

t.test("MPS through the real seam: a daemon per claim with its limits, CDI mounts and env, crash restarted, adopted after an agent restart, stopped on unprepare", async (t) => {
  const dir = tempDir("tsh-");
  reapDaemons(t, dir);
  let s = await seamAgent(t, dir);
  const st = createStandaloneStore(join(dir, "store"));
  // Allocated as shares of gpu-5 (consumable capacity), so only the MPS rule can refuse the others.
  const c = claim({ name: "mps-a", uid: uid(11), results: [{ device: "gpu-5", shareID: uid(911) }], config: [{ parameters: mpsConfig() }] });
  const second = claim({ name: "mps-b", uid: uid(12), results: [{ device: "gpu-5", shareID: uid(912) }], config: [{ parameters: mpsConfig({ defaultActiveThreadPercentage: 50, defaultPinnedDeviceMemoryLimit: "10Gi" }) }] });
  const plainOne = claim({ name: "plain-on-mps", uid: uid(13), results: [{ device: "gpu-5", shareID: uid(913) }] });
  for (const x of [c, second, plainOne]) await st.putClaim(x);
  const r = await s.v1.prepare({ claims: [ref(c)] });
  t.notOk(r.claims?.[uid(11)]?.error, "MPS claim prepared");
  const pipe = join(dir, "s", "mps", uid(11), "pipe");
  const log = join(dir, "s", "mps", uid(11), "log");
  const calls = lines(join(dir, "mps-calls.jsonl"));
  t.same(calls[0], { argv: ["-d"], pipe, log, visible: GPU(5) }, "nvidia-cuda-mps-control -d with the claim's GPU, its own pipe and log directories under the state dir");
  t.same(calls.filter((x) => "command" in x).map((x) => x.command), ["set_default_active_thread_percentage 50", "set_default_device_pinned_mem_limit 0 10240M"], "the daemon was given the claim's limits");
  const pid = daemonPid(dir, uid(11));
  t.ok(isAlive(pid), "the daemon runs");
  const query = `-i ${GPU(5)} --query-gpu=compute_mode --format=csv,noheader,nounits`;
  t.same(modeCalls(dir), [query, `-i ${GPU(5)} -c EXCLUSIVE_PROCESS`, query], "compute mode: read, nvidia-smi -i <gpu uuid> -c EXCLUSIVE_PROCESS, read back");
  t.equal(computeMode(dir, GPU(5)), "EXCLUSIVE_PROCESS", "the simulated GPU is in EXCLUSIVE_PROCESS");
  const shm = join(dir, "s", "mps", uid(11), "shm");
  t.equal(statSync(shm).mode & 0o7777, 0o1777, "the claim's shm directory exists, world-writable and sticky like /dev/shm");
  const spec = specOf(dir, uid(11));
  t.same(spec.containerEdits.mounts, [
    { hostPath: pipe, containerPath: "/tmp/nvidia-mps", options: ["rw", "nosuid", "nodev", "bind"] },
    { hostPath: log, containerPath: "/tmp/nvidia-mps-log", options: ["ro", "nosuid", "nodev", "bind"] },
    { hostPath: shm, containerPath: "/dev/shm", options: ["rw", "nosuid", "nodev", "bind"] },
  ], "the CDI spec mounts the pipe and log directories, and the claim's shm directory as /dev/shm");
  const others = await s.v1.prepare({ claims: [ref(second), ref(plainOne)] });
  t.match(others.claims?.[uid(12)]?.error, /^TESSERA_DEVICE_CONFLICT: device node-a\/gpu-5 \(GPU-00000005-0000-0000-0000-000000000005\) is prepared for ResourceClaim default\/mps-a .* with MPS; ResourceClaim default\/mps-b .* cannot use it too: a GPU under MPS runs in compute mode EXCLUSIVE_PROCESS/, "a second MPS claim (its own daemon) on the GPU: refused, naming the holder");
  t.match(others.claims?.[uid(13)]?.error, /^TESSERA_DEVICE_CONFLICT: .*default\/mps-a .* with MPS; ResourceClaim default\/plain-on-mps .* cannot use it too/, "a claim without MPS on the MPS GPU: refused");
  t.equal(lines(join(dir, "mps-calls.jsonl")).filter((x) => Array.isArray(x.argv) && (x.argv as string[])[0] === "-d").length, 1, "the refused claims started no daemon");
  t.same(spec.containerEdits.env, ["NVIDIA_VISIBLE_DEVICES=void", "CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps", "CUDA_MPS_LOG_DIRECTORY=/tmp/nvidia-mps-log", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=10240M"], "and sets the MPS env and limits");
  const again = await s.v1.prepare({ claims: [ref(c)] });
  t.same(again.claims?.[uid(11)]?.devices, r.claims?.[uid(11)]?.devices, "re-prepare: same answer");
  t.equal(lines(join(dir, "mps-calls.jsonl")).filter((x) => Array.isArray(x.argv) && (x.argv as string[])[0] === "-d").length, 1, "re-prepare starts no second daemon");

  // A crash: the supervisor's next round restarts it, visible in metrics and the status.
  process.kill(pid as number, "SIGKILL");
  while (isAlive(pid)) await new Promise((res) => setImmediate(res));
  await s.agent.mps.check();
  const pid2 = daemonPid(dir, uid(11));
  t.ok(pid2 !== pid && isAlive(pid2), "a dead daemon is restarted");
  t.same(s.agent.mps.status().map((x) => [x.uid, x.state, x.restarts, x.pid]), [[uid(11), "running", 1, pid2]], "status: running, one restart");
  t.match(s.agent.metrics.text(), /tessera_mps_daemon_restarts_total 1\n/, "metrics count the restart");
  t.match(s.agent.metrics.text(), /tessera_mps_daemons\{state="running"\} 1\n/, "and the running daemon");
  const io = captureIO({});
  const diagCode = await main(["diag", "prepare", "default/mps-a", "--kubelet-root", join(dir, "k"), "--state-dir", join(dir, "s"), "--node-name", "node-a", "--kube", `standalone:${join(dir, "store")}`, "-o", "json"], io);
  t.equal(diagCode, 0, io.err.join(""));
  t.same((JSON.parse(io.out.join("")) as { mps?: unknown }).mps, { uid: uid(11), pipeDir: pipe, state: "running", restarts: 1, pid: pid2 }, "diag prepare shows the claim's daemon: running, one restart, its pid");
  t.same(lines(join(dir, "mps-calls.jsonl")).filter((x) => "command" in x).slice(-2).map((x) => x.command), ["set_default_active_thread_percentage 50", "set_default_device_pinned_mem_limit 0 10240M"], "the restarted daemon gets the limits again");

  // Agent restart: the running daemon of the prepared claim is adopted, not started twice.
  await s.close();
  const starts = lines(join(dir, "mps-calls.jsonl")).filter((x) => Array.isArray(x.argv) && (x.argv as string[])[0] === "-d").length;
  s = await seamAgent(t, dir);
  t.equal(lines(join(dir, "mps-calls.jsonl")).filter((x) => Array.isArray(x.argv) && (x.argv as string[])[0] === "-d").length, starts, "restart: no new daemon");
  t.same(s.agent.mps.status().map((x) => [x.state, x.pid]), [["running", pid2]], "restart: the running daemon is supervised again");
  t.same(modeCalls(dir).slice(3), [query], "restart: the compute mode is read, and left as it is (still EXCLUSIVE_PROCESS)");

  const u = await s.v1.unprepare({ claims: [ref(c)] });
  t.notOk(u.claims?.[uid(11)]?.error, "unprepare answers");
  const after = lines(join(dir, "mps-calls.jsonl"));
  t.equal(after.at(-1)?.command, "quit", "the daemon was told to quit");
  t.notOk(isAlive(pid2), "and is gone");
  t.notOk(existsSync(join(dir, "s", "mps", uid(11))), "its directories are removed");
  t.notOk(existsSync(join(dir, "cdi", `k8s.gpu.tessera.dev-claim_${uid(11)}.json`)), "and the CDI spec");
  t.same(s.agent.mps.status(), [], "nothing supervised");
  t.equal(computeMode(dir, GPU(5)), "DEFAULT", "the GPU is back in compute mode DEFAULT");
  t.same(modeCalls(dir).slice(4), [query, `-i ${GPU(5)} -c DEFAULT`, query], "with nvidia-smi -i <gpu uuid> -c DEFAULT, read back");
});

t.test("deploy/examples: the time-sliced and the MPS claim through diag explain; a bad config file is refused with its path", async (t) => {
  const dir = tempDir("tsh-");
  const run = async (file: string): Promise<{ code: number; out: string; err: string }> => {
    const io = captureIO({});
    const code = await main(["diag", "explain", "-f", file, "--discovery", "fixture:h100-sxm-8x", "--node-name", "node-a", "--kube", `standalone:${join(dir, "store")}`, "--state-dir", join(dir, "s"), "-o", "json"], io);
    return { code, out: io.out.join(""), err: io.err.join("") };
  };
  const ts = await run(join(ROOT, "deploy", "examples", "time-sliced-gpu.yaml"));
  t.equal(ts.code, 0, ts.err);
  t.same((JSON.parse(ts.out) as { sharing: unknown }).sharing, [{ request: "gpu", device: "gpu-0", sharing: { strategy: "TimeSlicing", interval: "Long" } }], "time-sliced-gpu: fits, and the device gets TimeSlicing Long");
  const mps = await run(join(ROOT, "deploy", "examples", "mps-gpu.yaml"));
  t.equal(mps.code, 0, mps.err);
  t.same((JSON.parse(mps.out) as { sharing: unknown }).sharing, [{ request: "gpu", device: "gpu-0", sharing: { strategy: "MPS", activeThreadPercentage: 50, pinnedMemoryLimitMiB: 10240 } }], "mps-gpu: fits, and the device gets MPS with its limits");
  const bad = join(dir, "bad.yaml");
  writeFileSync(bad, readFileSync(join(ROOT, "deploy", "examples", "time-sliced-gpu.yaml"), "utf8").replace("interval: Long", "intervall: Long"));
  const b = await run(bad);
  t.equal(b.code, 1, "a bad config: exit 1");
  t.equal(b.err.trim().split("\n").length, 1, "one line");
  t.match(b.err, /^TESSERA_DEVICE_CONFIG: ResourceClaim default\/time-sliced-gpu: spec\.devices\.config\[0\]\.opaque\.parameters\.sharing\.timeSlicing\.intervall is not a field of the Tessera GpuConfig; remove it/, "naming the claim and the field path");
});

// Root and unshare (mounts in a private mount namespace), as the privileged agent has them.
const canMount = process.getuid?.() === 0 && spawnSync("unshare", ["--mount", "--propagation", "private", "true"]).status === 0;
t.test("the image's nvidia-cuda-mps-control wrapper (Dockerfile): the daemon runs in its own mount namespace with the claim's pipe, log and shm directories where MPS looks", { skip: canMount ? false : "needs root and unshare (mounts in a private mount namespace)" }, async (t) => {
  const wrapperText = /<<"SH" \/usr\/local\/bin\/nvidia-cuda-mps-control\n([\s\S]*?)\nSH\n/.exec(readFileSync(join(ROOT, "Dockerfile"), "utf8"))?.[1];
  t.ok(wrapperText, "the wrapper is in the Dockerfile");
  const dir = tempDir("tsh-");
  const wrapper = join(dir, "wrapper.sh");
  writeFileSync(wrapper, `${wrapperText ?? ""}\n`, { mode: 0o755 });
  // The driver root is this machine's own "/" (as with driverRoot: / on a node); the "host's"
  // nvidia-cuda-mps-control on its PATH is the simulated one.
  const bin = join(dir, "bin");
  mkdirSync(bin);
  symlinkSync(MPS, join(bin, "nvidia-cuda-mps-control"));
  const base = join(dir, "s", "mps", uid(31));
  const [pipe, log, shm] = ["pipe", "log", "shm"].map((x) => join(base, x)) as [string, string, string];
  for (const d of [pipe, log, shm]) mkdirSync(d, { recursive: true });
  const env = { ...process.env, NODE_OPTIONS: "", PATH: `${bin}:${process.env.PATH ?? ""}`, NVIDIA_DRIVER_ROOT: "/", CUDA_MPS_PIPE_DIRECTORY: pipe, CUDA_MPS_LOG_DIRECTORY: log, TESSERA_MPS_SHM_DIRECTORY: shm, TESSERA_MPS_SIM_LOG: join(dir, "mps-calls.jsonl") };
  const run = (args: string[], input?: string) => spawnSync(wrapper, args, { env, encoding: "utf8", timeout: 30_000, ...(input !== undefined ? { input } : {}) });
  const start = run(["-d"]);
  t.equal(start.status, 0, `-d exits 0 once the daemon is up (${start.stderr.trim()})`);
  const pid = daemonPid(dir, uid(31));
  t.teardown(() => {
    if (isAlive(pid)) process.kill(pid as number, "SIGKILL");
  });
  t.ok(isAlive(pid), "the daemon's pid file (in the claim's pipe directory) names a live process of this PID namespace");
  t.same(lines(join(dir, "mps-calls.jsonl"))[0], { argv: ["-d"], pipe: "/run/tessera-mps/pipe", log: "/run/tessera-mps/log", visible: null }, "inside, MPS is given the bind-mounted pipe and log directories");
  writeFileSync(join(shm, "marker"), "x");
  t.ok(existsSync(`/proc/${pid}/root/dev/shm/marker`), "the daemon's /dev/shm is the claim's shm directory (what the CDI spec mounts as the clients' /dev/shm)");
  t.notOk(existsSync("/dev/shm/marker"), "and nothing of it leaks into the agent's own mount namespace");
  t.ok(existsSync(join(log, "control.log")), "the daemon logs into the claim's log directory");
  t.equal(run([], "set_default_active_thread_percentage 30\n").status, 0, "a client call (commands on stdin) reaches the daemon through its own namespace");
  const got = run([], "get_default_active_thread_percentage\n");
  t.equal(got.stdout, "30.0\n", "and reads the setting back");
  t.equal(run([], "quit\n").status, 0, "quit");
  while (isAlive(pid)) await new Promise((res) => setTimeout(res, 10));
  t.notOk(isAlive(pid), "the daemon is gone");
  const noRoot = spawnSync(wrapper, ["-d"], { env: { ...env, NVIDIA_DRIVER_ROOT: join(dir, "nothing") }, encoding: "utf8" });
  t.equal(noRoot.status, 127, "no driver root: exit 127");
  t.match(noRoot.stderr, /^nvidia-cuda-mps-control: no driver root at .*nothing; mount the host's NVIDIA driver root there/, "saying what to mount");
});
