// Every device Tessera publishes can be prepared. Shared GPUs (--gpu-sharing consumable): the
// shipped shared-gpu example fits twice on one GPU and both prepare, share_id on the v1 wire.
// Dynamic MIG end to end: the simulated nvidia-smi (its formats and refusals), claims apply +
// NodePrepareResources + NodeUnprepareResources through the real executable seam
// (--nvidia-smi test/support/nvidia-smi-sim.mjs), and a SIGKILL between creating an instance and
// recording it, with the three ways a restarted agent must reconcile it.
import t from "tap";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startAgent } from "../agent/cli/agent.js";
import { main } from "../agent/cli/main.js";
import { captureIO } from "../agent/cli/io.js";
import { createMemoryLogger } from "../agent/common/log.js";
import { createSimulatedNvidiaSmi, giIdFor, type SimState } from "../agent/discovery/nvsmi-sim.js";
import { createDiscovery } from "../agent/discovery/index.js";
import { createStandaloneStore } from "../agent/kube/standalone-store.js";
import type { ResourceClaim } from "../agent/kube/types.js";
import { createDraClient } from "../agent/plugin/protos.js";
import { agentProcess as spawnAgent, type AgentChild } from "./support/agent-process.js";
import { claim, nodeConfig, ref, tempDir, uid, NODE } from "./support/kubelet-env.js";

const ROOT = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
const SIM = join(ROOT, "test", "support", "nvidia-smi-sim.mjs");
const FIXTURE = join(ROOT, "fixtures", "nodes", "h100-sxm-8x-mig");
const GPU0 = "GPU-00000000-0000-0000-0000-000000000000";

// Real processes (agents, the simulated tool) on 2 shared cores: more than the runner's per-file time.
t.setTimeout(600_000);

const readState = (file: string): SimState => JSON.parse(readFileSync(file, "utf8")) as SimState;
const instancesOf = (file: string, gpu = GPU0) => (existsSync(file) ? (readState(file).gpus[gpu]?.instances ?? []) : []);

t.test("simulated nvidia-smi: the captures' own bytes, the real formats, the real tool's refusals", async (t) => {
  const dir = tempDir("tessera-sim-");
  const mixed = join(ROOT, "fixtures", "nodes", "mixed-2numa-h100-mig");
  const state = join(dir, "state.json");
  const sim = createSimulatedNvidiaSmi({ fixtureDir: mixed, stateFile: state });
  t.equal(sim.run(["-L"]).stdout, readFileSync(join(mixed, "nvidia-smi-L.txt"), "utf8"), "-L before any change: the fixture's bytes");
  // A refused create writes the state; from then on every view is rendered from it.
  const full = sim.run(["mig", "-i", "0", "-cgi", "19:2", "-C"]);
  t.equal(full.code, 255);
  t.equal(full.stderr, "Unable to create a GPU instance on GPU  0 using profile 19: Insufficient Resources\nFailed to create GPU instances: Insufficient Resources\n", "an overlapping placement is refused as the real tool does");
  t.equal(sim.run(["mig", "-lgi"]).stdout, readFileSync(join(mixed, "nvidia-smi-mig-lgi.txt"), "utf8"), "mig -lgi rendered from state = the fixture's table");
  t.equal(sim.run(["-L"]).stdout, readFileSync(join(mixed, "nvidia-smi-L.txt"), "utf8"), "-L rendered from state = the fixture's listing");

  const h = createSimulatedNvidiaSmi({ fixtureDir: FIXTURE, stateFile: join(dir, "h.json") });
  const cases: [argv: string[], code: number, out: RegExp][] = [
    [["mig", "-i", GPU0, "-cgi", "19:7", "-C"], 2, /profile 19: Invalid Argument/], // 1-slice starts are 0..6
    [["mig", "-i", GPU0, "-cgi", "99", "-C"], 2, /profile 99: Invalid Argument/],
    [["mig", "-i", "4", "-cgi", "19:0", "-C"], 3, /MIG mode is not enabled/],
    [["mig", "-i", GPU0, "-cgi", "14:2", "-C"], 0, /created GPU instance ID {2}4 on GPU {2}0 using profile MIG 2g.20gb \(ID 14\)\nSuccessfully created compute instance ID {2}0 on GPU {2}0 GPU instance ID {2}4/],
    [["mig", "-i", GPU0, "-cgi", "19:3", "-C"], 255, /Insufficient Resources/], // inside 2:2
    [["mig", "-i", GPU0, "-cgi", "20:0", "-C"], 0, /GPU instance ID {2}7 .* \(ID 20\)/],
    [["mig", "-i", GPU0, "-cgi", "20:1", "-C"], 255, /Insufficient Resources/], // one media extension per GPU
    [["mig", "-i", GPU0, "-gi", "4", "-dgi"], 255, /In use by another client/], // its CI still exists
    [["mig", "-i", GPU0, "-gi", "4", "-ci", "0", "-dci"], 0, /destroyed compute instance ID {2}0 from GPU {2}0 GPU instance ID {2}4/],
    [["mig", "-i", GPU0, "-gi", "4", "-dgi"], 0, /Successfully destroyed GPU instance ID {2}4 from GPU {2}0/],
    [["mig", "-i", GPU0, "-gi", "4", "-dgi"], 6, /Not Found/],
    [["--bogus"], 2, /Invalid combination of input arguments/],
  ];
  for (const [argv, code, out] of cases) {
    const r = h.run(argv);
    t.equal(r.code, code, `${argv.join(" ")}: exit ${code}`);
    t.match(r.stdout + r.stderr, out, `${argv.join(" ")}: says so`);
  }
  t.same([0, 1, 2, 3, 4, 5, 6].map((s) => giIdFor(s, 1)).concat([giIdFor(0, 2), giIdFor(6, 2), giIdFor(4, 4), giIdFor(0, 8)]), [7, 8, 9, 10, 11, 12, 13, 3, 6, 2, 0], "GI ids by placement, as the driver numbers them");
  // Discovery through the same state machine sees the remaining instance with its UUID.
  const inv = await createDiscovery(nodeConfig(dir, ["--discovery", `fixture:${FIXTURE}`]), { fixtureStateFile: join(dir, "h.json") }).discover();
  const g0 = inv.gpus.find((g) => g.uuid === GPU0);
  t.same(g0?.migDevices.map((m) => [m.name, m.gpuInstanceId, /^MIG-[0-9a-f-]{36}$/.test(m.uuid ?? "")]), [["gpu-0-mig-20-0-1", 7, true]], "the created instance is discovered at its placement");
  t.ok(g0?.migDevices[0]?.capDevicePaths.length === 2, "with its GI and CI capability device nodes");
});

function simEnv(dir: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  // NODE_OPTIONS cleared: the simulated tool and agent children need none of tap's instrumentation.
  return { ...process.env, NODE_OPTIONS: "", TESSERA_SIM_FIXTURE: FIXTURE, TESSERA_SIM_STATE: join(dir, "sim-state.json"), TESSERA_SIM_LOG: join(dir, "sim-calls.jsonl"), ...extra };
}

const seamFlags = ["--discovery", "nvidia-smi", "--nvidia-smi", SIM, "--sysfs-root", join(FIXTURE, "sys"), "--proc-root", join(FIXTURE, "proc"), "--mig-mode", "dynamic"];

async function applyClaim(dir: string, name: string, body: string): Promise<ResourceClaim> {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, body);
  const io = captureIO(simEnv(dir));
  // The CLI's nvidia-smi child inherits this process's environment.
  const saved = { ...process.env };
  Object.assign(process.env, simEnv(dir));
  const code = await main(["claims", "apply", "-f", file, "--kubelet-root", join(dir, "k"), "--node-name", NODE, "--kube", `standalone:${join(dir, "store")}`, ...seamFlags], io);
  for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
  Object.assign(process.env, saved);
  if (code !== 0) throw new Error(`claims apply ${name}: ${io.err.join("")}`);
  const c = await createStandaloneStore(join(dir, "store")).getClaim("default", name);
  if (!c) throw new Error(`claim ${name} not stored`);
  return c;
}

const migClaim = (name: string, profile: string): string =>
  `apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {name: ${name}, namespace: default}\nspec:\n  devices:\n    requests:\n    - name: mig\n      exactly:\n        deviceClassName: mig.tessera.dev\n        selectors:\n        - cel: {expression: 'device.attributes["gpu.tessera.dev"].profile == "${profile}"'}\n`;

t.test("dynamic MIG through the real seam: apply, prepare creates at the allocated placement, unprepare destroys", async (t) => {
  const dir = tempDir("tessera-mig-");
  const saved = { ...process.env };
  Object.assign(process.env, simEnv(dir)); // the agent's nvidia-smi child inherits them
  t.teardown(() => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
  });
  const config = nodeConfig(dir, seamFlags);
  const agent = await startAgent(config, { log: createMemoryLogger(), bootId: async () => "boot-1", toolkitDirs: [config.cdiRoot], rediscoverIntervalS: 0 });
  // claims apply reads the pool the agent publishes: wait for its first sync (else "pool node-a is incomplete").
  await agent.slicesSynced();
  const v1 = createDraClient(agent.draSocket, "v1", { deadlineMs: 90_000 });
  t.teardown(async () => {
    v1.close();
    await agent.stop(2000);
  });
  const state = join(dir, "sim-state.json");
  const a = await applyClaim(dir, "mig-a", migClaim("mig-a", "3g.40gb"));
  const b = await applyClaim(dir, "mig-b", migClaim("mig-b", "1g.10gb"));
  const devA = a.status?.allocation?.devices?.results?.[0]?.device;
  const devB = b.status?.allocation?.devices?.results?.[0]?.device;
  t.equal(devA, "gpu-0-mig-9-0-4", "3g.40gb allocated at placement 0:4 of GPU 0");
  t.equal(devB, "gpu-0-mig-19-4-1", "1g.10gb allocated past it (the counters of the first claim are taken)");
  t.same(instancesOf(state), [], "allocation creates nothing");
  // Both in one batch, plus a claim allocated on GPU 4 (MIG off): its own error, the others go on.
  const off = claim({ name: "off", uid: uid(77), results: [{ device: "gpu-4-mig-19-0-1" }] });
  await createStandaloneStore(join(dir, "store")).putClaim(off);
  const res = await v1.prepare({ claims: [ref(a), ref(b), ref(off)] });
  t.notOk(res.claims?.[ref(a).uid]?.error, "claim a prepared");
  t.notOk(res.claims?.[ref(b).uid]?.error, "claim b prepared");
  t.match(res.claims?.[uid(77)]?.error, /TESSERA_MIG_DISABLED: .*gpu-4-mig-19-0-1 is on GPU gpu-4 \(GPU-00000004-0000-0000-0000-000000000004\), whose MIG mode is off/, "a placement on a GPU with MIG off: a per-claim error naming the GPU");
  const inst = instancesOf(state);
  t.same(inst.map((m) => [m.profileId, m.start, m.size, m.gi]).sort(), [[19, 4, 1, 11], [9, 0, 4, 1]].sort(), "the simulated GPU holds an instance at exactly each allocated placement");
  const spec = JSON.parse(readFileSync(join(config.cdiRoot, `k8s.gpu.tessera.dev-claim_${ref(a).uid}.json`), "utf8")) as { devices: { containerEdits: { env: string[]; deviceNodes: { path: string }[] } }[] };
  const giA = inst.find((m) => m.profileId === 9);
  t.match(spec.devices[0]?.containerEdits.env[0], new RegExp(`=${giA?.uuid}$`), "the CDI spec names the new instance's UUID");
  t.same(spec.devices[0]?.containerEdits.deviceNodes.map((n) => n.path), ["/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap12", "/dev/nvidia-caps/nvidia-cap13"], "and its GI/CI capability nodes from mig-minors");
  const ck = JSON.parse(readFileSync(config.checkpointFile, "utf8")) as { data: { claims: Record<string, { devices: { mig?: { gi?: number; owned?: boolean } }[] }> } };
  t.same(ck.data.claims[ref(a).uid]?.devices[0]?.mig, { gpuUUID: GPU0, profileId: 9, profileName: "3g.40gb", start: 0, size: 4, gi: 1, ci: 0, owned: true }, "the checkpoint records the instance as the claim's own");
  const again = await v1.prepare({ claims: [ref(a)] });
  t.same(again.claims?.[ref(a).uid]?.devices, res.claims?.[ref(a).uid]?.devices, "re-prepare: same answer");
  t.equal(instancesOf(state).length, 2, "re-prepare creates nothing");
  const calls = readFileSync(join(dir, "sim-calls.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as string[]);
  t.ok(calls.some((c) => c.join(" ") === `mig -i ${GPU0} -cgi 9:0 -C`), "created with nvidia-smi mig -i <gpu uuid> -cgi <profile>:<start> -C");
  t.notOk(calls.some((c) => c.includes("-mig")), "MIG mode is never changed");
  const un = await v1.unprepare({ claims: [ref(a), ref(b)] });
  t.notOk(un.claims?.[ref(a).uid]?.error || un.claims?.[ref(b).uid]?.error, "unprepare answers");
  t.same(instancesOf(state), [], "unprepare destroyed both instances (CI, then GI)");
  const order = calls.length;
  const after = readFileSync(join(dir, "sim-calls.jsonl"), "utf8").trim().split("\n").slice(order).map((l) => JSON.parse(l) as string[]).filter((c) => c.includes("-dci") || c.includes("-dgi"));
  t.same(after.slice(0, 2).map((c) => c.at(-1)), ["-dci", "-dgi"], "compute instance first, then its GPU instance");
});

/** A real `tessera agent` child on this file's seam, resolved once its sockets serve. */
function agentProcess(dir: string, env: NodeJS.ProcessEnv): Promise<AgentChild> {
  return spawnAgent(["--kubelet-root", join(dir, "k"), "--cdi-root", join(dir, "cdi"), "--node-name", NODE, "--kube", `standalone:${join(dir, "store")}`, "--rediscover-interval", "0", "--http-listen", "127.0.0.1:0", ...seamFlags], env);
}

t.test("SIGKILL between creating an instance and recording it: no orphan, never created twice", async (t) => {
  for (const ending of ["prepare again", "unprepare", "claim deleted"] as const) {
    const dir = tempDir("tessera-mig-kill-");
    const state = join(dir, "sim-state.json");
    const c = await applyClaim(dir, "victim", migClaim("victim", "2g.20gb"));
    const sock = join(dir, "k", "plugins", "gpu.tessera.dev", "dra.sock");
    const first = await agentProcess(dir, simEnv(dir, { TESSERA_SIM_KILL_PARENT_AFTER_CREATE: "1" }));
    const v1 = createDraClient(sock, "v1", { deadlineMs: 90_000 });
    await v1.prepare({ claims: [ref(c)] }).then(
      () => t.fail("the agent answered although it was killed"),
      () => undefined,
    );
    v1.close();
    await first.exited;
    t.equal(first.proc.signalCode, "SIGKILL", `${ending}: the agent died right after creating`);
    const created = instancesOf(state);
    t.equal(created.length, 1, `${ending}: the instance exists, unrecorded`);
    if (ending === "claim deleted") await createStandaloneStore(join(dir, "store")).deleteClaim("default", "victim");
    const second = await agentProcess(dir, simEnv(dir));
    const v1b = createDraClient(sock, "v1", { deadlineMs: 90_000 });
    if (ending === "prepare again") {
      const r = await v1b.prepare({ claims: [ref(c)] });
      t.notOk(r.claims?.[ref(c).uid]?.error, "the kubelet's retry completes the claim");
      t.same(instancesOf(state).map((m) => m.uuid), created.map((m) => m.uuid), "with the instance the dead agent created: not created twice");
      const u = await v1b.unprepare({ claims: [ref(c)] });
      t.notOk(u.claims?.[ref(c).uid]?.error);
      t.same(instancesOf(state), [], "and unprepare destroys it");
    } else if (ending === "unprepare") {
      const u = await v1b.unprepare({ claims: [ref(c)] });
      t.notOk(u.claims?.[ref(c).uid]?.error, "unprepare of the half-prepared claim answers");
      t.same(instancesOf(state), [], "and destroys the instance the dead agent created");
    } else {
      t.same(instancesOf(state), [], "restart: the instance of a claim that no longer exists is destroyed");
      const ck = JSON.parse(readFileSync(join(dir, "k", "plugins", "gpu.tessera.dev", "checkpoint.json"), "utf8")) as { data: { claims: Record<string, unknown> } };
      t.notOk(ref(c).uid in ck.data.claims, "and its entry dropped");
    }
    v1b.close();
    second.proc.kill("SIGTERM");
    await second.exited;
  }
});

t.test("an instance Tessera did not create is never destroyed", async (t) => {
  const dir = tempDir("tessera-mig-foreign-");
  const state = join(dir, "sim-state.json");
  // An operator made a 1g.10gb at 5 by hand; a claim is allocated exactly that (live) device.
  const sim = createSimulatedNvidiaSmi({ fixtureDir: FIXTURE, stateFile: state });
  t.equal(sim.run(["mig", "-i", GPU0, "-cgi", "19:5", "-C"]).code, 0);
  const c = await applyClaim(dir, "foreign", migClaim("foreign", "1g.10gb").replace('== "1g.10gb"', '== "1g.10gb" && "uuid" in device.attributes["gpu.tessera.dev"]'));
  t.equal(c.status?.allocation?.devices?.results?.[0]?.device, "gpu-0-mig-19-5-1", "the live instance is what was allocated");
  const agent = await agentProcess(dir, simEnv(dir));
  const v1 = createDraClient(join(dir, "k", "plugins", "gpu.tessera.dev", "dra.sock"), "v1", { deadlineMs: 90_000 });
  t.notOk((await v1.prepare({ claims: [ref(c)] })).claims?.[ref(c).uid]?.error);
  t.notOk((await v1.unprepare({ claims: [ref(c)] })).claims?.[ref(c).uid]?.error);
  t.equal(instancesOf(state).length, 1, "unprepare left the operator's instance alone");
  v1.close();
  agent.proc.kill("SIGTERM");
  await agent.exited;
});

t.test("shared GPUs: deploy/examples/shared-gpu.yaml fits twice on one GPU; both prepared, share_id on v1 only", async (t) => {
  const dir = tempDir("tessera-shared-");
  const flags = ["--discovery", "fixture:h100-sxm-8x", "--gpu-sharing", "consumable"];
  const config = nodeConfig(dir, flags);
  const agent = await startAgent(config, { log: createMemoryLogger(), bootId: async () => "boot-1", toolkitDirs: [config.cdiRoot], rediscoverIntervalS: 0 });
  await agent.slicesSynced(); // claims apply below reads the pool the agent publishes
  const v1 = createDraClient(agent.draSocket, "v1", { defaults: false });
  const v1beta1 = createDraClient(agent.draSocket, "v1beta1", { defaults: false });
  t.teardown(async () => {
    v1.close();
    v1beta1.close();
    await agent.stop(2000);
  });
  const example = readFileSync(join(ROOT, "deploy", "examples", "shared-gpu.yaml"), "utf8");
  const claims: ResourceClaim[] = [];
  for (const name of ["shared-a", "shared-b"]) {
    const file = join(dir, `${name}.yaml`);
    writeFileSync(file, example.replace("name: shared-gpu", `name: ${name}`));
    const io = captureIO({});
    const code = await main(["claims", "apply", "-f", file, "--kubelet-root", join(dir, "k"), "--node-name", NODE, "--kube", `standalone:${join(dir, "store")}`, ...flags], io);
    t.equal(code, 0, `${name}: claims apply fits (${io.err.join("").trim()})`);
    const c = await createStandaloneStore(join(dir, "store")).getClaim("default", name);
    if (c) claims.push(c);
  }
  const results = claims.map((c) => c.status?.allocation?.devices?.results?.[0]);
  t.equal(results[0]?.device, "gpu-0");
  t.equal(results[1]?.device, "gpu-0", "the second share lands on the same GPU");
  t.ok(results[0]?.shareID && results[1]?.shareID && results[0].shareID !== results[1].shareID, "each allocation has its own shareID");
  t.same(results.map((r) => r?.consumedCapacity), [{ memory: "20Gi", shares: "1" }, { memory: "20Gi", shares: "1" }], "20Gi of memory and one share each");
  const [a, b] = claims as [ResourceClaim, ResourceClaim];
  const res = await v1.prepare({ claims: [ref(a), ref(b)] });
  for (const [c, r] of [[a, results[0]], [b, results[1]]] as const) {
    t.notOk(res.claims?.[ref(c).uid]?.error, `${c.metadata.name}: prepared alongside the other`);
    t.equal(res.claims?.[ref(c).uid]?.devices?.[0]?.share_id, r?.shareID, `${c.metadata.name}: share_id on the v1 wire`);
  }
  const beta = await v1beta1.prepare({ claims: [ref(a)] });
  t.notOk(beta.claims?.[ref(a).uid]?.error);
  t.notOk(beta.claims?.[ref(a).uid]?.devices?.[0] && "share_id" in (beta.claims?.[ref(a).uid]?.devices?.[0] ?? {}), "v1beta1 has no share_id");
  const un = await v1.unprepare({ claims: [ref(a), ref(b)] });
  t.notOk(un.claims?.[ref(a).uid]?.error || un.claims?.[ref(b).uid]?.error);
});
