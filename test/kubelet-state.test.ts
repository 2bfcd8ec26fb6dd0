// The plugin's state across failures: the pure core, the CDI spec, the checkpoint (crash between
// PrepareStarted and PrepareCompleted, truncated/corrupt/unknown-version files, reboot), and
// the Kubernetes claim source against an in-process API server (404, 500, slow).
import t from "tap";
import { existsSync, promises as fsp, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createMemoryLogger } from "../agent/common/log.js";
import { deviceFacts } from "../agent/discovery/model.js";
import { buildSpec, createToolkitScanner, minCdiVersion, renderSpec, specPath } from "../agent/plugin/cdi.js";
import { decodeCheckpoint, encodeCheckpoint, loadCheckpoint, type CheckpointData } from "../agent/plugin/checkpoint.js";
import { createKubeClaimSource } from "../agent/plugin/claim-source.js";
import { assertClaimUID, computePrepared } from "../agent/plugin/prepared.js";
import { startKubeletPlugin } from "../agent/plugin/plugin.js";
import { tempFileTarget } from "../agent/common/stale-temp.js";
import { main } from "../agent/cli/main.js";
import { runFuzz } from "./support/fuzz.js";
import { assertObjectName } from "../agent/kube/standalone-store.js";
import { STATE_SURFACES } from "./support/fuzz-state.js";
import { captureIO } from "../agent/cli/io.js";
import { kubeConfigFor, startFakeApiServer } from "./support/fake-apiserver.js";
import { claim, DRIVER, gpuUUID, inventory, nodeConfig, NODE, ref, startEnv, tempDir, uid } from "./support/kubelet-env.js";

const facts = deviceFacts(inventory(4));

t.test("computePrepared: driver filter, base request names, configs, shareID, errors", async (t) => {
  const all = { apiVersion: "gpu.tessera.dev/v1alpha1", kind: "GpuConfig", sharing: { strategy: "TimeSlicing" } };
  const base = { ...all, sharing: { strategy: "TimeSlicing", timeSlicing: { interval: "Long" } } };
  const c = claim({
    name: "core",
    uid: uid(1),
    results: [
      { request: "gpus/large", device: "gpu-2", shareID: "s-1" },
      { request: "other", driver: "other.example.com", device: "nic-0" },
      { request: "gpus/large", device: "gpu-3", adminAccess: true },
    ],
    config: [
      { parameters: all },
      { requests: ["gpus"], parameters: base },
      { requests: ["nope"], parameters: { ...all, sharing: { strategy: "MPS" } } },
      { driver: "other.example.com", parameters: { foreign: true } },
    ],
  });
  const p = computePrepared(c, facts, DRIVER);
  t.same(p.devices.map((d) => [d.requestNames, d.deviceName, d.shareID, d.adminAccess, d.configs, d.sharing]), [
    [["gpus"], "gpu-2", "s-1", undefined, [all, base], { strategy: "TimeSlicing", interval: "Long" }],
    [["gpus"], "gpu-3", undefined, true, [all, base], { strategy: "TimeSlicing", interval: "Long" }],
  ], "our configs that apply, in order; the last one decides the sharing");
  t.notOk("shareID" in (p.devices[1] ?? {}), "no shareID key without one");
  t.same(computePrepared(c, facts, DRIVER), p, "pure: same input, same output");
  t.throws(() => computePrepared(claim({ name: "x", uid: uid(2), allocated: false }), facts, DRIVER), { code: "TESSERA_CLAIM_NOT_ALLOCATED" });
  t.throws(() => computePrepared(claim({ name: "x", uid: uid(3), results: [{ device: "gpu-7" }] }), facts, DRIVER), { code: "TESSERA_DEVICE_UNKNOWN" });
  t.same(computePrepared(claim({ name: "x", uid: uid(4), results: [{ driver: "other.example.com" }] }), facts, DRIVER).devices, [], "no results of ours: nothing to prepare");
  const withToolkit = computePrepared(claim({ name: "x", uid: uid(5), results: [{ device: "gpu-0" }] }), facts, DRIVER, { toolkitUUIDs: new Set([gpuUUID(0)]) });
  t.same(withToolkit.devices[0]?.cdiDeviceIds, [`k8s.gpu.tessera.dev/claim=${uid(5)}-gpu-0`, `nvidia.com/gpu=${gpuUUID(0)}`]);
});

t.test("claim UIDs are validated before they name a file", async (t) => {
  for (const good of [uid(1), "0b5c8f1e-7e7e-4a5a-9c9c-000000000001", "ABCDEF01"]) t.doesNotThrow(() => assertClaimUID(good), good);
  for (const bad of ["", "../x", "a/b", "abc\u0000", "x".repeat(10), "-abc", "abc-", "0".repeat(65), " abc"]) {
    t.throws(() => assertClaimUID(bad), { code: "TESSERA_CLAIM_INVALID_UID" }, JSON.stringify(bad));
  }
  t.throws(() => specPath("/cdi", "../../etc/passwd"), { code: "TESSERA_CLAIM_INVALID_UID" });
});

t.test("toolkit scanner: parses a spec once, follows changes, drops removed files, skips our own specs", async (t) => {
  const dir = tempDir();
  const spec = (uuids: string[]): string => `cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n${uuids.map((u) => `  - name: ${u}\n`).join("")}`;
  const file = join(dir, "nvidia.yaml");
  await fsp.writeFile(file, spec([gpuUUID(0)]));
  await fsp.writeFile(join(dir, "k8s.gpu.tessera.dev-claim_abc.json"), JSON.stringify({ kind: "nvidia.com/gpu", devices: [{ name: gpuUUID(7) }] }));
  await fsp.writeFile(join(dir, "broken.json"), "{");
  const scan = createToolkitScanner([dir, join(dir, "missing")]);
  const [a, b] = await Promise.all([scan(), scan()]);
  t.same([...(a ?? [])], [gpuUUID(0)], "our own claim specs and broken files are skipped");
  t.equal(a, b, "concurrent callers share one scan");
  await fsp.writeFile(file, spec([gpuUUID(0), gpuUUID(1)]));
  t.same([...(await scan())].sort(), [gpuUUID(0), gpuUUID(1)].sort(), "a changed file is re-read");
  await fsp.rm(file);
  t.same([...(await scan())], [], "a removed file no longer contributes");
});

t.test("CDI spec: minimum cdiVersion, deterministic bytes, merge-safe env", async (t) => {
  t.equal(minCdiVersion(["abc-gpu-0"]), "0.3.0");
  t.equal(minCdiVersion(["0bc-gpu-0"]), "0.5.0", "a digit-first device name needs 0.5.0");
  const p = computePrepared(claim({ name: "x", uid: uid(9), results: [{ device: "gpu-2" }, { request: "b", device: "gpu-2" }, { device: "gpu-3" }] }), facts, DRIVER);
  const s = buildSpec(p);
  t.same(s.devices.map((d) => d.name), [`${uid(9)}-gpu-2`, `${uid(9)}-gpu-3`], "one CDI device per distinct device");
  t.same(s.containerEdits.env, ["NVIDIA_VISIBLE_DEVICES=void"], "spec level: only values every claim sets alike");
  const key = uid(9).replace(/-/g, "").toUpperCase();
  t.same(s.devices.map((d) => d.containerEdits.env), [[`TESSERA_DEVICE_${key}_GPU_2=${gpuUUID(2)}`], [`TESSERA_DEVICE_${key}_GPU_3=${gpuUUID(3)}`]], "each device names its UUID in its own variable");
  // Several claims in one container: CDI keeps the last value of a repeated key, so no key may
  // differ between two claims' specs (checked against the real CDI library in conformance Tier 1).
  const other = buildSpec(computePrepared(claim({ name: "y", uid: uid(10), results: [{ device: "gpu-2" }] }), facts, DRIVER));
  const keys = (sp: typeof s): Map<string, string> => new Map([...(sp.containerEdits.env ?? []), ...sp.devices.flatMap((d) => d.containerEdits.env ?? [])].map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
  const [ka, kb] = [keys(s), keys(other)];
  t.same([...ka].filter(([k, v]) => kb.has(k) && kb.get(k) !== v), [], "no env key that two claims' specs set to different values");
  t.equal(renderSpec(p), renderSpec(structuredClone(p)), "byte-identical");
});

t.test("checkpoint codec: round trip, checksum, unknown version", async (t) => {
  const data: CheckpointData = { bootId: "b1", claims: { [uid(1)]: { state: "PrepareCompleted", namespace: "n", name: "c", devices: [] } } };
  const text = encodeCheckpoint(data);
  t.same(decodeCheckpoint(text), { ok: true, data });
  t.match(decodeCheckpoint(text.replace('"n"', '"m"')), { ok: false, reason: "checksum mismatch" });
  t.match(decodeCheckpoint(text.replace('"version": 1', '"version": 2')), { ok: false, reason: /unknown version 2/ });
  t.match(decodeCheckpoint(text.slice(0, 20)), { ok: false, reason: /not valid JSON/ });
});

/** The checkpoint `text` with one field damaged and the checksum recomputed to match. */
function badShapes(text: string): [string, string][] {
  type Obj = Record<string, unknown>;
  const o = (v: unknown): Obj => v as Obj;
  const mutate = (fn: (d: Obj) => void): string => {
    const data = o(o(JSON.parse(text)).data);
    fn(data);
    return encodeCheckpoint(data as unknown as CheckpointData);
  };
  const entry = (d: Obj): Obj => o(o(d.claims)[uid(20)]);
  const dev0 = (d: Obj): Obj => o((entry(d).devices as unknown[])[0]);
  return [
    ["entry null", mutate((d) => void (o(d.claims)[uid(20)] = null))],
    ["devices a string", mutate((d) => void (entry(d).devices = "gpu-2"))],
    ["device null", mutate((d) => void (entry(d).devices = [null]))],
    ["unknown state", mutate((d) => void (entry(d).state = "Prepared"))],
    ["key not a UID", mutate((d) => void (o(d.claims)["../../etc"] = entry(d)))],
    ["gpuMinor a string", mutate((d) => void (dev0(d).gpuMinor = "2"))],
    ["uuid missing", mutate((d) => void delete dev0(d).uuid)],
    ["requestNames of numbers", mutate((d) => void (dev0(d).requestNames = [1]))],
    ["kind unknown", mutate((d) => void (dev0(d).kind = "tpu"))],
    ["claims an array", mutate((d) => void (d.claims = []))],
    ["bootId a number", mutate((d) => void (d.bootId = 7))],
    ["rebuilt a string", mutate((d) => void (entry(d).rebuilt = "yes"))],
  ];
}

t.test("checkpoint schema: every field of every entry and device is checked; a newer agent's extra fields are tolerated", async (t) => {
  const dev = { requestNames: ["gpu"], poolName: NODE, deviceName: "gpu-2", cdiDeviceIds: ["k8s.gpu.tessera.dev/claim=x"], kind: "gpu", uuid: gpuUUID(2), gpuMinor: 2, deviceNodes: ["/dev/nvidia2"] };
  const data = { bootId: "b", claims: { [uid(20)]: { state: "PrepareCompleted", namespace: "n", name: "c", devices: [dev] } } } as unknown as CheckpointData;
  const text = encodeCheckpoint(data);
  t.same(decodeCheckpoint(text), { ok: true, data });
  const expected: Record<string, RegExp> = {
    "entry null": /data\.claims\[".*"\] is null, not an object/,
    "devices a string": /\.devices is string, not an array/,
    "gpuMinor a string": /\.devices\[0\]\.gpuMinor is string, not an integer/,
    "uuid missing": /\.devices\[0\]\.uuid is missing/,
    "key not a UID": /has key "\.\.\/\.\.\/etc", not a claim UID/,
  };
  for (const [what, bad] of badShapes(text)) {
    const r = decodeCheckpoint(bad);
    t.equal(r.ok, false, what);
    if (!r.ok && expected[what]) t.match(r.reason, expected[what], `${what}: the reason names the field`);
  }
  const extra = structuredClone(data) as unknown as { claims: Record<string, { devices: Record<string, unknown>[] }> };
  (extra.claims[uid(20)]?.devices[0] ?? {}).fromANewerAgent = { profile: "1g.10gb" };
  t.equal(decodeCheckpoint(encodeCheckpoint(extra as unknown as CheckpointData)).ok, true, "unknown fields do not make a file unusable");
});

t.test("crash between PrepareStarted and PrepareCompleted: next Prepare completes, Unprepare rolls back", async (t) => {
  const root = tempDir();
  const cfg = nodeConfig(root);
  // What a process killed after its first checkpoint write leaves: PrepareStarted entries and,
  // for one of them, a CDI spec half written by an older version (wrong bytes).
  const done = claim({ name: "finish-me", uid: uid(10), results: [{ device: "gpu-2" }] });
  const undo = claim({ name: "undo-me", uid: uid(11), results: [{ device: "gpu-3" }] });
  const { checkpoint } = await loadCheckpoint(cfg.checkpointFile, { bootId: "boot-1", log: createMemoryLogger() });
  for (const c of [done, undo]) {
    const p = computePrepared(c, facts, DRIVER);
    checkpoint.set(p.uid, { state: "PrepareStarted", namespace: p.namespace, name: p.name, devices: p.devices });
  }
  await checkpoint.save();
  await fsp.mkdir(cfg.cdiRoot, { recursive: true });
  await fsp.writeFile(specPath(cfg.cdiRoot, uid(11)), "{\"cdiVer");

  const env = await startEnv({ root });
  t.teardown(() => env.close());
  for (const c of [done, undo]) await env.store.putClaim(c);
  t.same(env.agent.plugin.state.stuck().map((k) => k.name).sort(), ["finish-me", "undo-me"], "started entries without work in flight are counted as stuck");
  const thief = claim({ name: "thief", uid: uid(12), results: [{ device: "gpu-3" }] });
  await env.store.putClaim(thief);
  t.match((await env.v1.prepare({ claims: [ref(thief)] })).claims?.[uid(12)]?.error, /TESSERA_DEVICE_CONFLICT.*undo-me/, "a started claim still holds its device");

  const res = await env.v1.prepare({ claims: [ref(done)] });
  t.notOk(res.claims?.[uid(10)]?.error);
  t.equal(readFileSync(specPath(cfg.cdiRoot, uid(10)), "utf8"), renderSpec(computePrepared(done, facts, DRIVER)));
  const un = await env.v1.unprepare({ claims: [ref(undo)] });
  t.notOk(un.claims?.[uid(11)]?.error);
  t.notOk(existsSync(specPath(cfg.cdiRoot, uid(11))), "partial spec removed");
  const cp = decodeCheckpoint(readFileSync(cfg.checkpointFile, "utf8"));
  t.same(cp.ok && Object.fromEntries(Object.entries(cp.data.claims).map(([k, v]) => [k, v.state])), { [uid(10)]: "PrepareCompleted" });
  t.notOk((await env.v1.prepare({ claims: [ref(thief)] })).claims?.[uid(12)]?.error, "device free after the rollback");
  t.same(env.agent.plugin.state.stuck(), [], "nothing stuck once the kubelet's calls came");
});

t.test("corrupt checkpoint: truncated at many offsets, garbage, unknown version -> moved aside, rebuilt from CDI specs, agent serves", async (t) => {
  // A real checkpoint with two prepared claims.
  const seedRoot = tempDir();
  const seed = await startEnv({ root: seedRoot });
  const a = claim({ name: "a", uid: uid(20), results: [{ device: "gpu-2" }] });
  const b = claim({ name: "b", uid: uid(21), results: [{ device: "gpu-1-mig-19-0-1" }] });
  for (const c of [a, b]) await seed.store.putClaim(c);
  const first = await seed.v1.prepare({ claims: [ref(a), ref(b)] });
  await seed.close();
  const good = readFileSync(seed.config.checkpointFile);
  const specs = Object.fromEntries([uid(20), uid(21)].map((u) => [u, readFileSync(specPath(seed.config.cdiRoot, u))]));

  const offsets = [0, 1, 2, 17, Math.floor(good.length / 3), Math.floor(good.length / 2), good.length - 40, good.length - 3];
  const variants: [string, Buffer][] = [
    ...offsets.map((o) => [`truncated at ${o}`, good.subarray(0, o)] as [string, Buffer]),
    ["garbage", Buffer.from("\u0000\u0001not json at all")],
    ["unknown version", Buffer.from(good.toString().replace('"version": 1', '"version": 99'))],
    ["flipped byte", Buffer.from(good.toString().replace("PrepareCompleted", "PrepareCompletee"))],
    // Valid checksum, bad shape: each of these crash-looped the agent or broke later Prepares.
    ...badShapes(good.toString()).map(([what, text]) => [`valid checksum, ${what}`, Buffer.from(text)] as [string, Buffer]),
  ];
  for (const [what, bytes] of variants) {
    const root = tempDir();
    const cfg = nodeConfig(root);
    await fsp.mkdir(cfg.stateDir, { recursive: true });
    await fsp.mkdir(cfg.cdiRoot, { recursive: true });
    await fsp.writeFile(cfg.checkpointFile, bytes);
    for (const [u, s] of Object.entries(specs)) await fsp.writeFile(specPath(cfg.cdiRoot, u), s);
    const env = await startEnv({ root });
    const info = await env.reg.getInfo({}, 1000);
    t.equal(info.type, "DRAPlugin", `${what}: boots and answers`);
    t.equal(readdirSync(cfg.stateDir).filter((f) => f.startsWith("checkpoint.json.bad-")).length, 1, `${what}: moved aside`);
    t.equal(env.log.records.filter((r) => r.level === "error").length, 1, `${what}: one error line`);
    const thief = claim({ name: "thief", uid: uid(22), results: [{ device: "gpu-2" }] });
    for (const c of [a, b, thief]) await env.store.putClaim(c);
    t.match((await env.v1.prepare({ claims: [ref(thief)] })).claims?.[uid(22)]?.error, /TESSERA_DEVICE_CONFLICT/, `${what}: rebuilt claims hold their devices`);
    t.same(await env.v1.prepare({ claims: [ref(a), ref(b)] }), first, `${what}: re-prepare gives the original answer`);
    t.same(readFileSync(specPath(cfg.cdiRoot, uid(20))), specs[uid(20)], `${what}: spec unchanged`);
    await env.close();
  }
});

t.test("reboot (boot id changes): claims kept, emptied CDI dir re-created at start", async (t) => {
  const root = tempDir();
  const first = await startEnv({ root, bootId: "boot-1" });
  const c = claim({ name: "survivor", uid: uid(30), results: [{ device: "gpu-4" }] });
  await first.store.putClaim(c);
  const before = await first.v1.prepare({ claims: [ref(c)] });
  const bytes = readFileSync(specPath(first.config.cdiRoot, uid(30)));
  await first.close();
  await fsp.rm(first.config.cdiRoot, { recursive: true }); // tmpfs /var/run/cdi after a reboot

  const second = await startEnv({ root, bootId: "boot-2" });
  t.teardown(() => second.close());
  t.ok(second.log.records.some((r) => r.msg.includes("node rebooted")), "reboot noticed");
  t.same(readFileSync(specPath(second.config.cdiRoot, uid(30))), bytes, "spec re-created before any Prepare");
  const cp = decodeCheckpoint(readFileSync(second.config.checkpointFile, "utf8"));
  t.equal(cp.ok && cp.data.bootId, "boot-2", "new boot id recorded");
  await second.store.deleteClaim("default", "survivor");
  t.same(await second.v1.prepare({ claims: [ref(c)] }), before, "kubelet's re-Prepare answered from the checkpoint");
});

t.test("Kubernetes claim source against the fake API server: ok, 404, 500, slow -> bounded timeout", async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.close());
  const kc = await kubeConfigFor(api, tempDir());
  const c = claim({ name: "from-api", namespace: "ml", uid: uid(40), results: [{ device: "gpu-5", shareID: "s-9" }] });
  api.seed("resource.k8s.io", "v1", "resourceclaims", c as unknown as Record<string, unknown>);
  const source = createKubeClaimSource(kc, { timeoutMs: 300 });

  const got = await source.get("ml", "from-api");
  t.equal(got.metadata.uid, uid(40));
  t.equal(got.status?.allocation?.devices?.results?.[0]?.shareID, "s-9");
  t.match(api.requests.at(-1), { verb: "get", group: "resource.k8s.io", version: "v1", resource: "resourceclaims", namespace: "ml", name: "from-api" });
  await t.rejects(source.get("ml", "missing"), { code: "TESSERA_NOT_FOUND", message: /ml\/missing not found in the cluster/ });
  api.fault = () => ({ status: 500, message: "etcd down" });
  await t.rejects(source.get("ml", "from-api"), { code: "TESSERA_KUBE_API", message: /HTTP 500/ });
  api.fault = () => ({ delayMs: 2000 });
  const t0 = Date.now();
  await t.rejects(source.get("ml", "from-api"), { code: "TESSERA_KUBE_TIMEOUT", message: /longer than 0.3 s/ });
  t.ok(Date.now() - t0 < 1500, "bounded by the injected timeout, not the server");
  api.fault = undefined;

  // End to end: the plugin prepares from the API and reports API failures per claim.
  const env = await startEnv({ claims: source });
  t.teardown(() => env.close());
  const res = await env.v1.prepare({ claims: [ref(c)] });
  t.same(res.claims?.[uid(40)]?.devices?.[0], { request_names: ["gpu"], pool_name: NODE, device_name: "gpu-5", cdi_device_ids: [`k8s.gpu.tessera.dev/claim=${uid(40)}-gpu-5`], share_id: "s-9" });
  api.fault = () => ({ status: 500 });
  const other = claim({ name: "other", namespace: "ml", uid: uid(41), results: [{ device: "gpu-6" }] });
  const failed = await env.v1.prepare({ claims: [ref(other)] });
  t.match(failed.claims?.[uid(41)]?.error, /^TESSERA_KUBE_API: reading ResourceClaim ml\/other: get resourceclaims.resource.k8s.io failed \(HTTP 500\); the kubelet will retry/);
  api.fault = () => ({ delayMs: 1500 });
  const slow = await env.v1.prepare({ claims: [ref(other)] });
  t.match(slow.claims?.[uid(41)]?.error, /^TESSERA_KUBE_TIMEOUT/);
  api.fault = undefined;
});

t.test("failed prepare whose CDI root is a file: the entry is rolled back, Unprepare drops entries, nothing stays stuck", async (t) => {
  const env = await startEnv();
  t.teardown(() => env.close());
  const kept = claim({ name: "kept", uid: uid(50), results: [{ device: "gpu-2" }] });
  const doomed = claim({ name: "doomed", uid: uid(51), results: [{ device: "gpu-3" }] });
  for (const c of [kept, doomed]) await env.store.putClaim(c);
  t.notOk((await env.v1.prepare({ claims: [ref(kept)] })).claims?.[uid(50)]?.error);
  // The CDI root replaced by a regular file.
  await fsp.rm(env.config.cdiRoot, { recursive: true });
  await fsp.writeFile(env.config.cdiRoot, "");
  t.match((await env.v1.prepare({ claims: [ref(doomed)] })).claims?.[uid(51)]?.error, /^TESSERA_CDI: cannot write CDI spec/);
  const onDisk = decodeCheckpoint(readFileSync(env.config.checkpointFile, "utf8"));
  t.same(onDisk.ok && Object.keys(onDisk.data.claims), [uid(50)], "the failed claim's entry is gone from the checkpoint");
  t.same(env.agent.plugin.state.stuck(), [], "no entry left PrepareStarted");
  const un = await env.v1.unprepare({ claims: [ref(kept), ref(doomed)] });
  t.same(un.claims, { [uid(50)]: { error: "" }, [uid(51)]: { error: "" } }, "Unprepare succeeds: a CDI root that is not a directory holds no spec");
  const after = decodeCheckpoint(readFileSync(env.config.checkpointFile, "utf8"));
  t.same(after.ok && after.data.claims, {}, "entry dropped");
  t.ok(env.log.records.some((r) => r.level === "warn" && r.msg.includes("--cdi-root is not a directory")), "reported in the log");
  // Devices free again once the root is a directory.
  await fsp.rm(env.config.cdiRoot);
  const thief = claim({ name: "thief", uid: uid(52), results: [{ device: "gpu-3" }] });
  await env.store.putClaim(thief);
  t.notOk((await env.v1.prepare({ claims: [ref(thief)] })).claims?.[uid(52)]?.error, "gpu-3 was not left reserved");
});

t.test("read-only or immutable state dir: start fails with TESSERA_CHECKPOINT naming the path and the fix", async (t) => {
  for (const code of ["EPERM", "EACCES", "EROFS"]) {
    const root = tempDir();
    const cfg = nodeConfig(root);
    const write = async (): Promise<void> => {
      throw Object.assign(new Error(`${code}: operation not permitted, open '${cfg.checkpointFile}.tmp'`), { code });
    };
    const started = startKubeletPlugin(cfg, { log: createMemoryLogger(), devices: () => facts, claims: { get: async () => claim({ name: "x", uid: uid(1) }) }, bootId: async () => "b", checkpointWrite: write });
    started.then((p) => p.stop(0), () => undefined); // never left serving if the assertion below fails
    await t.rejects(started, { code: "TESSERA_CHECKPOINT", message: new RegExp(`cannot write the checkpoint ${cfg.checkpointFile.replace(/[.]/g, "\\.")} \\(${code}\\); the state dir is read-only or immutable: .*chattr -i`) }, code);
    t.notOk(existsSync(cfg.draSocket), `${code}: no socket left serving`);
  }
  // A real one: the state dir's parent is a regular file, as the agent process reports it.
  const root = tempDir();
  await fsp.writeFile(join(root, "blocker"), "");
  const io = captureIO();
  const argv = ["agent", "--discovery", "fixture:l40s-1x", "--kubelet-root", join(root, "k"), "--cdi-root", join(root, "cdi"), "--kube", `standalone:${join(root, "store")}`, "--node-name", NODE, "--state-dir", join(root, "blocker", "state")];
  t.equal(await main(argv, io), 1, io.err.join(""));
  const lines = io.err.join("").trimEnd().split("\n").filter((l) => !l.startsWith("{")); // log records are JSON lines
  t.equal(lines.length, 1, "one error line");
  // The agent's start-up check of every directory (before anything is published) names it first.
  t.match(lines[0], /^TESSERA_PATH: --state-dir .*blocker\/state: .*\((ENOTDIR|EEXIST)\)/);
});

t.test("temp files left by killed writers are removed at start; other files are not", async (t) => {
  t.equal(tempFileTarget(".checkpoint.json.tmp-4242-0a1b2c3d"), "checkpoint.json");
  for (const other of ["checkpoint.json", ".checkpoint.json.tmp-x-0a1b2c3d", ".checkpoint.json.tmp-1-0a1b2c3", "checkpoint.json.tmp-1-0a1b2c3d"]) t.equal(tempFileTarget(other), undefined, other);
  const root = tempDir();
  const cfg = nodeConfig(root);
  await fsp.mkdir(cfg.stateDir, { recursive: true });
  await fsp.mkdir(cfg.cdiRoot, { recursive: true });
  const ours = [
    join(cfg.stateDir, ".checkpoint.json.tmp-1-0a1b2c3d"),
    join(cfg.stateDir, `.checkpoint.json.tmp-${process.pid}-ffffffff`),
    join(cfg.stateDir, ".registration-status.json.tmp-77-12345678"),
    join(cfg.cdiRoot, `.k8s.gpu.tessera.dev-claim_${uid(60)}.json.tmp-9-abcdef01`),
  ];
  const theirs = [
    join(cfg.stateDir, ".other.json.tmp-1-0a1b2c3d"),
    join(cfg.stateDir, "notes.txt"),
    join(cfg.cdiRoot, ".nvidia.yaml.tmp-1-0a1b2c3d"),
    join(cfg.cdiRoot, ".k8s.gpu.tessera.dev-claim_../x.json.tmp-1-0a1b2c3d".replace("/", "_")),
    join(cfg.cdiRoot, "nvidia.yaml"),
  ];
  for (const f of [...ours, ...theirs]) await fsp.writeFile(f, "x");
  await fsp.mkdir(join(cfg.stateDir, ".checkpoint.json.tmp-2-0a1b2c3d")); // not a regular file: left alone
  const env = await startEnv({ root });
  t.teardown(() => env.close());
  t.same(ours.filter((f) => existsSync(f)), [], "every temp file of ours is gone");
  t.same(theirs.filter((f) => !existsSync(f)), [], "no one else's file is touched");
  t.ok(existsSync(join(cfg.stateDir, ".checkpoint.json.tmp-2-0a1b2c3d")));
  t.ok(env.log.records.some((r) => r.msg.includes("removed temp files left by an earlier run")));
});

t.test("fuzz (small budget): grpc, grpc-raw, checkpoint and store surfaces never crash the agent or answer TESSERA_INTERNAL", async (t) => {
  const out = tempDir("tessera-fuzz-out-");
  // What the store surface found (seed 13, case 50): a claim whose metadata.name is not a string.
  t.throws(() => assertObjectName(7, "ResourceClaim name"), { code: "TESSERA_INPUT", message: /ResourceClaim name is number, not a string/ });
  for (const surface of STATE_SURFACES) {
    const r = await runFuzz(surface, { seed: 13, cases: surface.name === "store" ? 40 : 150, timeMs: 8000, outDir: out });
    t.comment(JSON.stringify(r));
    t.ok(r.cases >= 20, `${surface.name}: ran ${r.cases} cases`);
    t.equal(r.failures, 0, `${surface.name}: no failures${r.firstFailure ? ` (first: case ${r.firstFailure.index}, ${r.firstFailure.message})` : ""}`);
  }
});
