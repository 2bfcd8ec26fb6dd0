// ResourceSlices: golden slices per fixture and MIG mode, validation against the Kubernetes
// resource.k8s.io/v1 schema (kubernetes-models) and the API server's limits, splitting at the
// 128 / 64 limits, pool generation rules, and the publisher against the in-process API server
// (create, update with resourceVersion, 409, 404, 500, watch deletion restored) and the store.
// Regenerate goldens explicitly: UPDATE_GOLDEN=1 npx tap dist/test/slices.test.js
import t, { type Test } from "tap";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { KubeConfig } from "@kubernetes/client-node";
import { ResourceSlice as ResourceSliceModel } from "kubernetes-models/resource.k8s.io/v1/ResourceSlice";
import { NODE_FLAGS, parseFlags, resolveNodeConfig, type NodeConfig } from "../agent/common/config.js";
import { startAgent } from "../agent/cli/agent.js";
import { createMemoryLogger } from "../agent/common/log.js";
import { createDiscovery } from "../agent/discovery/index.js";
import type { Gpu, Inventory } from "../agent/discovery/model.js";
import type { ResourceSlice } from "../agent/kube/types.js";
import { createStandaloneStore } from "../agent/kube/standalone-store.js";
import { buildResourceSlices, packDevices } from "../agent/slices/build.js";
import { checkSlice } from "../agent/slices/limits.js";
import { bytesQuantity, decimalQuantity, semver } from "../agent/slices/quantity.js";
import { planSync, startSlicePublisher, type SlicePublisher } from "../agent/slices/publisher.js";
import { clusterSliceBackend, storeSliceBackend } from "../agent/slices/backend.js";
import { startNodePublishing } from "../agent/slices/node-publishing.js";
import { openKube } from "../agent/kube/kube-source.js";
import { EventEmitter } from "node:events";
import { main } from "../agent/cli/main.js";
import { captureIO } from "../agent/cli/io.js";
import { golden } from "./support/golden.js";
import { startFakeApiServer, type FakeApiServer } from "./support/fake-apiserver.js";

const ROOT = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
const DRIVER = "gpu.tessera.dev";
const RS = ["resource.k8s.io", "resourceslices"] as const;

function config(discovery: string): NodeConfig {
  return {
    driverName: DRIVER, nodeName: "node-a", kubeletRoot: "/k", stateDir: "/k/s", cdiRoot: "/cdi", sysfsRoot: "/sys", discovery,
    kube: "auto", migMode: "static", gpuSharing: "none", nvidiaSmi: "nvidia-smi", mpsControl: "nvidia-cuda-mps-control", procRoot: "/proc", logLevel: "info", registrationSocket: "/k/r.sock", draSocket: "/k/d.sock", checkpointFile: "/k/c.json",
  };
}
const inventoryOf = (name: string): Promise<Inventory> => createDiscovery(config(`fixture:${name}`)).discover();


/** Schema (kubernetes-models) + API-server limits; returns problems, [] when valid. */
function validate(s: ResourceSlice): string[] {
  const problems = checkSlice(s);
  try {
    new ResourceSliceModel(s as never).validate();
  } catch (err) {
    problems.push(`schema: ${String(err).slice(0, 300)}`);
  }
  return problems;
}

function allDevices(slices: ResourceSlice[]): string[] {
  return slices.flatMap((s) => (s.spec.devices ?? []).map((d) => d.name));
}

t.test("golden slices per fixture and MIG mode; every object is valid resource.k8s.io/v1", async (t) => {
  const cases: [string, "static" | "dynamic"][] = [
    ["h100-sxm-8x", "static"], ["a100-80gb-mig", "static"], ["l40s-1x", "static"], ["workstation-2numa-4gpu", "static"], ["mixed-2numa-h100-mig", "static"],
    ["a100-80gb-mig", "dynamic"], ["mixed-2numa-h100-mig", "dynamic"],
  ];
  for (const [name, migMode] of cases) {
    const slices = buildResourceSlices(await inventoryOf(name), { driverName: DRIVER, nodeName: "node-a", migMode });
    golden(t, `slices-${name}-${migMode}.json`, slices);
    for (const s of slices) t.same(validate(s), [], `${name}/${migMode}: ${s.metadata.name} valid`);
    const names = allDevices(slices);
    t.equal(new Set(names).size, names.length, `${name}/${migMode}: device names unique in the pool`);
  }
  t.ok(validate({ apiVersion: "resource.k8s.io/v1", kind: "ResourceSlice", metadata: { name: "x" }, spec: { driver: 5, pool: {} } } as never).length > 0, "the validator does reject bad objects");
});

t.test("h100-sxm-8x: 8 whole GPUs with every attribute; MIG devices carry profile and parent", async (t) => {
  const [slice, ...rest] = buildResourceSlices(await inventoryOf("h100-sxm-8x"), { driverName: DRIVER, nodeName: "node-a", migMode: "static" });
  t.equal(rest.length, 0);
  t.equal(slice?.spec.devices?.length, 8);
  t.same(slice?.spec.pool, { name: "node-a", generation: 1, resourceSliceCount: 1 });
  const d = slice?.spec.devices?.[5];
  t.same(Object.keys(d?.attributes ?? {}), ["type", "uuid", "productName", "brand", "architecture", "cudaComputeCapability", "driverVersion", "cudaDriverVersion", "numaNode", "resource.kubernetes.io/pciBusID", "resource.kubernetes.io/pcieRoot"]);
  t.same(d?.attributes?.cudaComputeCapability, { version: "9.0.0" });
  t.same(d?.attributes?.driverVersion, { version: "580.105.8" }, "580.105.08 as semver (no leading zero)");
  t.same(d?.attributes?.numaNode, { int: 1 });
  t.same(d?.attributes?.["resource.kubernetes.io/pciBusID"], { string: "0000:a8:00.0" });
  t.same(d?.capacity, { memory: { value: "81559Mi" } });
  const mixed = buildResourceSlices(await inventoryOf("mixed-2numa-h100-mig"), { driverName: DRIVER, nodeName: "node-a", migMode: "static" });
  t.same(allDevices(mixed), ["gpu-0-mig-14-0-2", "gpu-0-mig-19-2-1", "gpu-0-mig-19-3-1", "gpu-0-mig-9-4-4", "gpu-1", "gpu-4-mig-5-0-4", "gpu-4-mig-15-4-2", "gpu-4-mig-20-6-1", "gpu-5"], "static: MIG GPUs as their MIG devices, others whole");
  const mig = mixed[0]?.spec.devices?.[3];
  t.same(mig?.attributes?.profile, { string: "3g.40gb" });
  t.same(mig?.attributes?.parentUUID, { string: "GPU-00000000-0000-0000-0000-000000000000" });
  t.same(Object.keys(mig?.capacity ?? {}), ["memory", "multiprocessors", "copyEngines", "decoders", "encoders", "jpegEngines", "ofaEngines"]);
  t.equal(mig?.attributes?.["resource.kubernetes.io/pciBusID"], undefined, "a MIG device is not a PCI function");
});

t.test("dynamic MIG: counters in their own slices, placements only where MIG is on, placements conflict", async (t) => {
  const slices = buildResourceSlices(await inventoryOf("mixed-2numa-h100-mig"), { driverName: DRIVER, nodeName: "node-a", migMode: "dynamic" });
  const counterSlices = slices.filter((s) => s.spec.sharedCounters);
  t.equal(counterSlices.length, 1);
  t.ok(counterSlices.every((s) => s.spec.devices === undefined), "sharedCounters and devices never share a slice");
  const devs = slices.flatMap((s) => s.spec.devices ?? []);
  t.equal(devs.length, 2 * 25 + 2, "25 profile placements per MIG-enabled H100, GPUs with MIG off whole");
  t.equal(devs.find((d) => d.name === "gpu-4"), undefined, "a MIG-enabled GPU is not published whole (it cannot be prepared as one)");
  const off = devs.find((d) => d.name === "gpu-5");
  t.ok(off && off.consumesCounters === undefined, "a GPU with MIG off is published whole, consuming no counters");
  t.notOk(devs.some((d) => d.name.startsWith("gpu-5-mig-") || d.name.startsWith("gpu-1-mig-")), "no placements on a GPU with MIG off (Tessera never changes MIG mode)");
  const full = devs.find((d) => d.name === "gpu-4-mig-0-0-8");
  t.equal(Object.keys(full?.consumesCounters?.[0]?.counters ?? {}).length, 11, "the 7g placement consumes every counter");
  const existing = devs.find((d) => d.name === "gpu-4-mig-20-6-1");
  t.same(existing?.attributes?.uuid, { string: "MIG-e1002d02-0000-5000-8000-000000000022" }, "a placement that exists keeps its UUID");
  t.same(Object.keys(existing?.consumesCounters?.[0]?.counters ?? {}), ["memory-slice-6", "compute-slices", "memory", "media-extensions"]);
  t.equal(devs.find((d) => d.name === "gpu-4-mig-19-0-1")?.attributes?.uuid, undefined, "a placement not created yet has no UUID");
  const sets = counterSlices[0]?.spec.sharedCounters ?? [];
  t.same(sets.map((c) => c.name), ["gpu-0-counters", "gpu-4-counters"]);
  for (const s of slices) t.ok((s.spec.devices?.length ?? 0) <= 64, `${s.metadata.name}: <= 64 devices with counters`);
  t.ok(slices.every((s) => s.spec.pool.resourceSliceCount === slices.length));
});

function fakeGpu(minor: number): Gpu {
  return {
    name: `gpu-${minor}`, minor, index: minor, uuid: `GPU-${String(minor).padStart(8, "0")}-0000-0000-0000-000000000000`, productName: "NVIDIA H100 80GB HBM3", brand: "NVIDIA",
    architecture: "Hopper", cudaComputeCapability: "9.0", pciBusId: `0000:${(minor % 256).toString(16).padStart(2, "0")}:00.0`, memoryBytes: 81559 * 2 ** 20,
    migMode: "disabled", migDevices: [], pciDeviceId: "0x233010DE",
  };
}
const fakeInventory = (n: number): Inventory => ({ nodeName: "big", driverVersion: "580.105.08", cudaDriverVersion: "13.0", numaNodes: [], pcieRoots: [], gpus: Array.from({ length: n }, (_, i) => fakeGpu(i)), host: {} });

t.test("slice splitting at the limits is deterministic", async (t) => {
  const cases: [n: number, mode: "static" | "dynamic", deviceSlices: number[], counterSlices: number][] = [
    [128, "static", [128], 0],
    [129, "static", [128, 1], 0],
    [300, "static", [128, 128, 44], 0],
    [2, "dynamic", [50], 1],
    [3, "dynamic", [50, 25], 1],
    [9, "dynamic", [50, 50, 50, 50, 25], 2],
  ];
  for (const [n, migMode, sizes, counterSlices] of cases) {
    const opts = { driverName: DRIVER, nodeName: "big", migMode };
    // Dynamic placements exist only on GPUs whose MIG mode is on.
    const fresh = (): Inventory => {
      const inv = fakeInventory(n);
      if (migMode === "dynamic") for (const g of inv.gpus) g.migMode = "enabled";
      return inv;
    };
    const slices = buildResourceSlices(fresh(), opts);
    t.same(slices.filter((s) => s.spec.devices).map((s) => s.spec.devices?.length), sizes, `${n} GPUs ${migMode}: device slices`);
    t.equal(slices.filter((s) => s.spec.sharedCounters).length, counterSlices, `${n} GPUs ${migMode}: counter slices (8 sets each)`);
    t.same(buildResourceSlices(fresh(), opts), slices, "same input, same slices");
    for (const s of slices) t.same(validate(s), [], `${s.metadata.name} within limits`);
  }
  const oneBig = packDevices([Array.from({ length: 26 }, (_, i) => ({ name: `d${i}`, consumesCounters: [{ counterSet: "c", counters: {} }] }))], 128, 10);
  t.same(oneBig.map((s) => s.length), [10, 10, 6], "a GPU larger than the limit is split in order");
  t.same(packDevices([[{ name: "a" }], [{ name: "b", consumesCounters: [{ counterSet: "c", counters: {} }] }]], 1, 1).map((s) => s.map((d) => d.name)), [["a"], ["b"]]);
});

t.test("quantities are canonical and versions are semver", async (t) => {
  t.same([81559 * 2 ** 20, 80 * 2 ** 30, 0, 1000, 1536, 3072].map(bytesQuantity), ["81559Mi", "80Gi", "0", "1k", "1536", "3Ki"]);
  t.same([132, 1000, 7].map(decimalQuantity), ["132", "1k", "7"]);
  t.same(["9.0", "580.105.08", "13.0", "535.54.03", "x", undefined].map(semver), ["9.0.0", "580.105.8", "13.0.0", "535.54.3", undefined, undefined]);
});

t.test("pool generation: kept for one changed slice, +1 and all rewritten otherwise", async (t) => {
  const base = fakeInventory(300);
  const build = (inv: Inventory) => (g: number) => buildResourceSlices(inv, { driverName: DRIVER, nodeName: "big", migMode: "static", generation: g });
  const at = (gen: number, inv = base): ResourceSlice[] => build(inv)(gen).map((s, i) => ({ ...s, metadata: { ...s.metadata, resourceVersion: String(100 + i) } }));
  const same = planSync(at(3), build(base), 0);
  t.same([same.generation, same.create.length, same.update.length, same.delete.length], [3, 0, 0, 0], "identical: nothing to write");
  const oneChanged = { ...base, gpus: base.gpus.map((g) => (g.minor === 5 ? { ...g, numaNode: 1 } : g)) };
  const p1 = planSync(at(3), build(oneChanged), 0);
  t.same([p1.generation, p1.update.map((s) => s.metadata.name), p1.update[0]?.metadata.resourceVersion], [3, ["big-gpu.tessera.dev-0"], "100"], "one slice changed: update it, same generation, with resourceVersion");
  const twoChanged = { ...base, gpus: base.gpus.map((g) => (g.minor === 5 || g.minor === 200 ? { ...g, numaNode: 1 } : g)) };
  const p2 = planSync(at(3), build(twoChanged), 0);
  t.same([p2.generation, p2.update.length, p2.create.length], [4, 3, 0], "two changed: +1, every slice rewritten");
  t.ok(p2.update.every((s) => s.spec.pool.generation === 4));
  const shrunk = planSync(at(3), build(fakeInventory(100)), 0);
  t.same([shrunk.generation, shrunk.delete, shrunk.update.map((s) => s.spec.pool.resourceSliceCount)], [4, ["big-gpu.tessera.dev-1", "big-gpu.tessera.dev-2"], [1]], "removed slices: +1, count rewritten, extra deleted");
  const fresh = planSync([], build(base), 7);
  t.same([fresh.generation, fresh.create.length], [8, 3], "after the kubelet wiped the pool: recreate with a higher generation");
});

async function clusterPublisher(t: Test, api: FakeApiServer, inv: Inventory, extra: Partial<Parameters<typeof startSlicePublisher>[0]> = {}): Promise<SlicePublisher> {
  const dir = mkdtempSync(join(tmpdir(), "tessera-pub-"));
  await api.writeKubeconfig(join(dir, "kubeconfig"));
  const kc = new KubeConfig();
  kc.loadFromFile(join(dir, "kubeconfig"));
  const pub = startSlicePublisher({
    backend: clusterSliceBackend(kc, "node-a", DRIVER), inventory: inv, driverName: DRIVER, nodeName: "node-a", migMode: "static",
    backoffInitialMs: 20, backoffMaxMs: 200, debounceMs: 20, logger: createMemoryLogger(), ...extra,
  });
  t.teardown(() => pub.stop());
  return pub;
}

const ours = (api: FakeApiServer): ResourceSlice[] => (api.objects(...RS) as unknown as ResourceSlice[]).filter((s) => s.spec.nodeName === "node-a").sort((a, b) => String(a.metadata.name).localeCompare(String(b.metadata.name)));

async function eventually(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test("publisher against the API server: create with owner, update with resourceVersion, 409, 404, 500", async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.close());
  const node = api.seed("", "v1", "nodes", { apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
  api.seed("resource.k8s.io", "v1", "resourceslices", { apiVersion: "resource.k8s.io/v1", kind: "ResourceSlice", metadata: { name: "other-node-slice" }, spec: { driver: DRIVER, nodeName: "node-b", pool: { name: "node-b", generation: 1, resourceSliceCount: 1 } } });
  api.seed("resource.k8s.io", "v1", "resourceslices", { apiVersion: "resource.k8s.io/v1", kind: "ResourceSlice", metadata: { name: "node-a-stale" }, spec: { driver: DRIVER, nodeName: "node-a", pool: { name: "node-a", generation: 2, resourceSliceCount: 1 }, devices: [] } });
  const inv = await inventoryOf("h100-sxm-8x");
  const pub = await clusterPublisher(t, api, inv);
  await pub.synced();
  const [s] = ours(api);
  t.equal(ours(api).length, 1, "stale slice of this node deleted");
  t.ok(api.get(...RS, "other-node-slice"), "another node's slice untouched");
  t.equal(s?.spec.devices?.length, 8);
  t.equal(s?.spec.pool.generation, 3, "generation continues above what was there");
  t.same(s?.metadata.ownerReferences, [{ apiVersion: "v1", kind: "Node", name: "node-a", uid: node.metadata?.uid, controller: true }]);
  t.ok(api.requests.some((r) => r.verb === "list" && r.resource === "resourceslices"));
  const owner = { apiVersion: "v1", kind: "Node", name: "node-a", uid: String(node.metadata?.uid), controller: true };
  t.same(s?.spec, buildResourceSlices(inv, { driverName: DRIVER, nodeName: "node-a", migMode: "static", generation: 3, ownerReference: owner })[0]?.spec, "the server holds exactly the built slice (int attributes survive the client)");
  const writes = (): number => api.requests.filter((r) => ["create", "update", "delete"].includes(r.verb)).length;
  const before = writes();
  pub.resync();
  await pub.synced();
  t.equal(writes(), before, "steady state: a resync writes nothing");

  // One GPU's NUMA node changes: one slice changes, updated in place with its resourceVersion.
  let conflicts = 1;
  api.fault = (r) => (r.verb === "update" && conflicts-- > 0 ? { status: 409 } : undefined);
  const changed = { ...inv, gpus: inv.gpus.map((g) => (g.minor === 0 ? { ...g, numaNode: 1 } : g)) };
  const updatesBefore = api.requests.filter((r) => r.verb === "update").length;
  pub.update(changed);
  await pub.synced();
  t.equal(ours(api)[0]?.spec.devices?.[0]?.attributes?.numaNode?.int, 1, "update landed after a 409");
  t.equal(ours(api)[0]?.spec.pool.generation, 3, "one slice changed: generation kept");
  t.ok(api.requests.filter((r) => r.verb === "update").length - updatesBefore >= 2, "409 then a re-read and a successful retry");

  // 404 on update (deleted between list and update): re-list and create.
  let notFound = 1;
  api.fault = (r) => (r.verb === "update" && notFound-- > 0 ? { status: 404 } : undefined);
  pub.update(inv);
  await pub.synced();
  t.equal(ours(api)[0]?.spec.devices?.[0]?.attributes?.numaNode?.int, 0);

  // API outage: 500s back off and recover, the publisher never throws.
  let outage = 4;
  api.fault = (r) => (r.verb === "list" && outage-- > 0 ? { status: 500 } : undefined);
  pub.update(changed);
  await eventually("an error is reported while the API is down", () => pub.status().lastError !== undefined);
  await pub.synced();
  t.equal(pub.status().lastError, undefined, "recovered");
  t.equal(ours(api)[0]?.spec.devices?.[0]?.attributes?.numaNode?.int, 1);
  api.fault = undefined;
});

t.test("publisher: a hung API call times the sync out and is retried; stop() does not wait on it", async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.close());
  let hang = true;
  api.fault = (r) => (hang && r.verb === "list" && r.resource === "resourceslices" ? { delayMs: 3000 } : undefined); // 10x the sync timeout; short so the fake server's timer ends
  const pub = await clusterPublisher(t, api, await inventoryOf("l40s-1x"), { syncTimeoutMs: 300, ownerReference: false });
  await eventually("the stuck sync is reported as failed", () => /did not finish within 0.3 s/.test(pub.status().lastError ?? ""));
  hang = false;
  await pub.synced();
  t.equal(ours(api).length, 1, "published once the API answers again");
  hang = true;
  const lists = api.requests.filter((r) => r.verb === "list").length;
  pub.resync();
  await eventually("a sync is stuck again", () => api.requests.filter((r) => r.verb === "list").length > lists);
  const t0 = Date.now();
  await pub.stop(200);
  t.ok(Date.now() - t0 < 2000, "stop returns while a sync hangs");
});

t.test("publisher restores slices deleted by someone else within 5 s (watch)", async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.close());
  const pub = await clusterPublisher(t, api, await inventoryOf("mixed-2numa-h100-mig"), { migMode: "dynamic" });
  await pub.synced();
  const names = ours(api).map((s) => s.metadata.name);
  t.equal(names.length, 2);
  await eventually("watch established", () => api.requests.some((r) => r.verb === "watch"));
  const gen = ours(api)[0]?.spec.pool.generation ?? 0;
  for (const n of names) api.remove(...RS, String(n)); // as the kubelet does on restart
  const seen = Date.now();
  await eventually("all slices restored", () => ours(api).length === 2, 5000);
  t.ok(Date.now() - seen < 5000, "restored within 5 s");
  t.ok((ours(api)[0]?.spec.pool.generation ?? 0) > gen, "recreated pool has a higher generation");
});

t.test("standalone store: the same objects, with uid and resourceVersion; diag slices -o json", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tessera-store-"));
  const store = createStandaloneStore(dir);
  const inv = await inventoryOf("a100-80gb-mig");
  const pub = startSlicePublisher({ backend: storeSliceBackend(store, "node-a", DRIVER), inventory: inv, driverName: DRIVER, nodeName: "node-a", migMode: "static" });
  t.teardown(() => pub.stop());
  await pub.synced();
  const stored = await store.listSlices();
  t.equal(stored.length, 1);
  t.ok(stored[0]?.metadata.uid && stored[0]?.metadata.resourceVersion, "uid and resourceVersion as the API server would set");
  t.same(stored[0]?.spec, buildResourceSlices(inv, { driverName: DRIVER, nodeName: "node-a", migMode: "static" })[0]?.spec);
  t.same(validate(stored[0] as ResourceSlice), []);
  pub.update({ ...inv, gpus: [] });
  await pub.synced();
  t.same(await store.listSlices(), [], "no GPUs: the node's slices are removed");

  const io = captureIO();
  t.equal(await main(["diag", "slices", "--discovery", "fixture:h100-sxm-8x", "--node-name", "node-a", "-o", "json"], io), 0);
  const list = JSON.parse(io.out.join("")) as { kind: string; items: ResourceSlice[] };
  t.equal(list.kind, "List");
  t.equal(list.items[0]?.spec.devices?.length, 8);
  for (const s of list.items) t.same(validate(s), []);
  const table = captureIO();
  t.equal(await main(["diag", "slices", "--discovery", "fixture:mixed-2numa-h100-mig", "--mig-mode", "dynamic"], table), 0);
  t.match(table.out.join(""), /slice .*-counters-0 {2}generation 1 {2}2 counter sets/);
});

t.test("startNodePublishing (what `tessera agent` calls): fixture node -> standalone store, SIGHUP rediscovers", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tessera-agent-"));
  const signals = new EventEmitter();
  const seen: Inventory[] = [];
  const np = await startNodePublishing({
    config: { ...config("fixture:workstation-2numa-4gpu"), kube: `standalone:${dir}` }, target: await openKube({ mode: "standalone", dir }),
    logger: createMemoryLogger(), rediscoverIntervalS: 0, signals, onInventory: (inv) => seen.push(inv),
  });
  t.teardown(() => np.stop());
  await np.publisher.synced();
  const stored = await createStandaloneStore(dir).listSlices();
  t.same(stored.map((s) => s.spec.devices?.length), [4]);
  t.equal(seen.length, 1, "the plugin side is told about the inventory");
  t.equal(signals.listenerCount("SIGHUP"), 1);
  signals.emit("SIGHUP");
  t.equal((await np.watcher.rediscover())?.gpus.length, 4);
});

t.test("Kubernetes version truth: a taint with effect None is left out of the slices below 1.35 (1.34 rejects it), kept from 1.35", async (t) => {
  for (const [minor, want] of [["34", ["gpu.tessera.dev/xid=79:NoExecute"]], ["35", ["gpu.tessera.dev/xid=79:NoExecute", "gpu.tessera.dev/xid=999:None"]]] as const) {
    const api = await startFakeApiServer();
    const dir = mkdtempSync(join(tmpdir(), "tessera-taint-version-"));
    const kubeconfig = join(dir, "kubeconfig");
    await api.writeKubeconfig(kubeconfig);
    const kmsg = join(dir, "kmsg.txt");
    // gpu-0 (PCI 53) falls off the bus; gpu-1 (PCI 64) reports an XID no table knows: effect None.
    writeFileSync(kmsg, "3,1,1000,-;NVRM: Xid (PCI:0000:53:00): 79, pid=0, name=x, GPU has fallen off the bus.\n3,2,2000,-;NVRM: Xid (PCI:0000:64:00): 999, pid=0, name=x, test\n");
    api.serverVersion = { major: "1", minor, gitVersion: `v1.${minor}.4` };
    api.seed("", "v1", "nodes", { apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
    const cfg = resolveNodeConfig(parseFlags(["--kubelet-root", join(dir, "k"), "--cdi-root", join(dir, "cdi"), "--node-name", "node-a", "--kube", `kubeconfig:${kubeconfig}`, "--discovery", "fixture:h100-sxm-8x"], NODE_FLAGS, {}));
    const agent = await startAgent(cfg, { log: createMemoryLogger(), bootId: async () => "b", rediscoverIntervalS: 0, health: { kmsg, intervalS: 3600, holdDownS: 300, apiVersions: ["v1"] } });
    await agent.health.kmsgDrained();
    const taints = (): string[] => (api.objects("resource.k8s.io", "resourceslices") as unknown as ResourceSlice[]).flatMap((sl) => sl.spec.devices ?? []).flatMap((d) => (d.taints ?? []).map((x) => `${x.key}=${x.value}:${x.effect}`)).sort();
    let seen = taints();
    for (let i = 0; i < 100 && seen.length < want.length; i++) {
      await new Promise((r) => setTimeout(r, 50));
      seen = taints();
    }
    t.same(seen, want, `1.${minor}: published taints`);
    t.ok(agent.health.keeper.evidence("gpu-1").lastXid?.code === 999, `1.${minor}: the unknown XID is still the device's evidence (diag health)`);
    await agent.stop(2000);
    await api.close();
  }
});

t.test("Kubernetes version truth: dynamic MIG refused below 1.36 before anything is published; shared GPUs validate", async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.close());
  const dir = mkdtempSync(join(tmpdir(), "tessera-version-"));
  const kubeconfig = join(dir, "kubeconfig");
  await api.writeKubeconfig(kubeconfig);
  const flags = (mode: string): NodeConfig => resolveNodeConfig(parseFlags(["--kubelet-root", join(dir, "k"), "--cdi-root", join(dir, "cdi"), "--node-name", "node-a", "--kube", `kubeconfig:${kubeconfig}`, "--mig-mode", mode, "--discovery", "fixture:h100-sxm-8x-mig"], NODE_FLAGS, {}));
  api.serverVersion = { major: "1", minor: "34", gitVersion: "v1.34.4" };
  await t.rejects(startAgent(flags("dynamic"), { log: createMemoryLogger(), bootId: async () => "b" }), { code: "TESSERA_CONFIG", message: /--mig-mode=dynamic: the API server is v1\.34\.4.*use --mig-mode static/ });
  t.same(api.objects("resource.k8s.io", "resourceslices"), [], "nothing was published");
  api.serverVersion = { major: "1", minor: "33+", gitVersion: "v1.33.9-gke.1" };
  await t.rejects(startAgent(flags("static"), { log: createMemoryLogger(), bootId: async () => "b" }), { code: "TESSERA_CONFIG", message: /needs Kubernetes 1\.34 or later/ });
  // 1.35 keeps counter sets only with DRAPartitionableDevices switched on, which the version does not tell.
  api.serverVersion = { major: "1", minor: "35", gitVersion: "v1.35.4" };
  await t.rejects(startAgent(flags("dynamic"), { log: createMemoryLogger(), bootId: async () => "b" }), { code: "TESSERA_CONFIG", message: /v1\.35\.4/ });
  api.serverVersion = { major: "1", minor: "36", gitVersion: "v1.36.3" };
  api.seed("", "v1", "nodes", { apiVersion: "v1", kind: "Node", metadata: { name: "node-a" } });
  const agent = await startAgent(flags("dynamic"), { log: createMemoryLogger(), bootId: async () => "b", rediscoverIntervalS: 0 });
  t.teardown(() => agent.stop(2000));
  t.ok(api.objects("resource.k8s.io", "resourceslices").length > 0, "1.36: dynamic MIG published");
  // --gpu-sharing consumable: shareable whole GPUs, valid objects with their request policies.
  const shared = buildResourceSlices(await inventoryOf("h100-sxm-8x"), { driverName: DRIVER, nodeName: "node-a", migMode: "static", gpuSharing: "consumable" });
  const gpu = shared[0]?.spec.devices?.[0];
  t.equal(gpu?.allowMultipleAllocations, true);
  t.same(gpu?.capacity, {
    memory: { value: "81559Mi", requestPolicy: { default: "4Gi", validRange: { min: "1Gi", step: "1Gi" } } },
    shares: { value: "16", requestPolicy: { default: "1", validRange: { min: "1", max: "16", step: "1" } } },
  }, "memory consumed per claim in whole GiB; at most 16 claims per GPU");
  for (const s of shared) {
    t.same(checkSlice(s), [], `${s.metadata.name}: within the API limits`);
    t.doesNotThrow(() => new ResourceSliceModel(s as never).validate(), `${s.metadata.name}: valid resource.k8s.io/v1`);
  }
});
