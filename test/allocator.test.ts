// The claim allocator: the deploy/examples claims on every fixture node (golden outcomes), the
// scheduler semantics on hand-built slices, and the `claims apply` / `diag explain` CLI contract.
import t from "tap";
import { mkdtempSync, readFileSync, readdirSync, writeFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { allocateClaim, type AllocateInput, type AllocateOutput } from "../agent/allocator/index.js";
import { fixtureSlices } from "../agent/allocator/node-slices.js";
import { main } from "../agent/cli/main.js";
import { captureIO } from "../agent/cli/io.js";
import type { Device, DeviceClass, ResourceClaim, ResourceSlice } from "../agent/kube/types.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const EXAMPLES = join(ROOT, "deploy", "examples");
const example = (name: string): ResourceClaim => parseYaml(readFileSync(join(EXAMPLES, `${name}.yaml`), "utf8")) as ResourceClaim;
const DRIVER = "gpu.tessera.dev";

// ---- golden: every example on every fixture ------------------------------------------------
// expected: devices chosen by first-fit, or the stage (or reason) that stops it. a100-80gb-mig has
// MIG on with every memory slice used: dynamic mode publishes no whole GPU there (it could not be
// prepared as one), so whole-GPU claims stop at the class.
type Golden = string[] | { stage: string } | { reason: string };
const GOLDEN: Record<string, Record<string, Golden>> = {
  "one-gpu": { "h100-sxm-8x": ["gpu-0"], "a100-80gb-mig": { stage: "classSelectors" }, "l40s-1x": ["gpu-0"], "workstation-2numa-4gpu": ["gpu-0"], "a100-80gb-mig@dynamic": { stage: "classSelectors" } },
  "two-gpus-same-pcie-root": { "h100-sxm-8x": { stage: "constraints" }, "a100-80gb-mig": { stage: "classSelectors" }, "l40s-1x": { stage: "classSelectors" }, "workstation-2numa-4gpu": { stage: "constraints" }, "a100-80gb-mig@dynamic": { stage: "classSelectors" } },
  "gpu-80g-memory": { "h100-sxm-8x": ["gpu-0"], "a100-80gb-mig": { stage: "classSelectors" }, "l40s-1x": { stage: "requestSelectors" }, "workstation-2numa-4gpu": { stage: "requestSelectors" }, "a100-80gb-mig@dynamic": { stage: "classSelectors" } },
  "mig-1g": { "h100-sxm-8x": { stage: "classSelectors" }, "a100-80gb-mig": ["gpu-1-mig-15-0-2"], "l40s-1x": { stage: "classSelectors" }, "workstation-2numa-4gpu": { stage: "classSelectors" } },
  "prefer-h100-else-a100": { "h100-sxm-8x": ["gpu/h100=gpu-0"], "a100-80gb-mig": { stage: "classSelectors" }, "l40s-1x": { stage: "requestSelectors" }, "workstation-2numa-4gpu": { stage: "requestSelectors" }, "a100-80gb-mig@dynamic": { stage: "classSelectors" } },
  "all-gpus": { "h100-sxm-8x": ["gpu-0", "gpu-1", "gpu-2", "gpu-3", "gpu-4", "gpu-5", "gpu-6", "gpu-7"], "a100-80gb-mig": { stage: "classSelectors" }, "l40s-1x": ["gpu-0"], "workstation-2numa-4gpu": ["gpu-0", "gpu-1", "gpu-2", "gpu-3"] },
  "time-sliced-gpu": { "h100-sxm-8x": ["gpu-0"], "a100-80gb-mig": { stage: "classSelectors" }, "l40s-1x": ["gpu-0"], "workstation-2numa-4gpu": ["gpu-0"] },
  "mps-gpu": { "h100-sxm-8x": ["gpu-0"], "a100-80gb-mig": { stage: "classSelectors" }, "l40s-1x": ["gpu-0"], "workstation-2numa-4gpu": ["gpu-0"] },
  "shared-gpu": { "h100-sxm-8x": { stage: "requestSelectors" }, "a100-80gb-mig": { stage: "classSelectors" }, "l40s-1x": { stage: "requestSelectors" }, "workstation-2numa-4gpu": { stage: "requestSelectors" } },
};

const sliceCache = new Map<string, ResourceSlice[]>();
async function nodeSlices(key: string): Promise<{ slices: ResourceSlice[]; node: string }> {
  const [node = "", mode] = key.split("@");
  let s = sliceCache.get(key);
  if (!s) sliceCache.set(key, (s = await fixtureSlices(node, mode === "dynamic" ? "dynamic" : "static")));
  return { slices: s, node };
}

function names(out: AllocateOutput): string[] {
  if (!out.ok) return [];
  return out.devices.map((d) => (d.request.includes("/") ? `${d.request}=${d.device}` : d.device));
}

t.test("examples: golden outcomes on the fixture nodes, both strategies", async (t) => {
  t.same(readdirSync(EXAMPLES).filter((f) => f.endsWith(".yaml")).map((f) => f.slice(0, -5)).sort(), Object.keys(GOLDEN).sort(), "every example has goldens");
  for (const [ex, perNode] of Object.entries(GOLDEN)) {
    for (const [key, want] of Object.entries(perNode)) {
      const { slices, node } = await nodeSlices(key);
      const input: AllocateInput = { slices, deviceClasses: [], allocatedClaims: [], claim: example(ex), nodeName: node };
      const ff = allocateClaim({ ...input, strategy: "first-fit" });
      const bf = allocateClaim({ ...input, strategy: "best-fit" });
      t.equal(bf.ok, ff.ok, `${ex} on ${key}: best-fit fits iff first-fit fits`);
      if (Array.isArray(want)) {
        t.same(names(ff), want, `${ex} on ${key}: first-fit picks ${want.join(",")}`);
        if (ff.ok) t.same(ff.allocation.nodeSelector, { nodeSelectorTerms: [{ matchFields: [{ key: "metadata.name", operator: "In", values: [node] }] }] });
      } else if (!ff.ok) {
        if ("stage" in want) t.equal(ff.explanation.stage, want.stage, `${ex} on ${key}: stopped at ${want.stage} — ${ff.explanation.message}`);
        else t.equal(ff.explanation.reason, want.reason);
        t.ok(ff.explanation.message.length > 20, "a sentence, not a code");
      } else t.fail(`${ex} on ${key} should not fit, got ${names(ff).join(",")}`);
    }
  }
});

// ---- semantics on hand-built slices --------------------------------------------------------
function dev(name: string, attrs: Record<string, string | number | boolean>, extra: Partial<Device> = {}): Device {
  const attributes: Device["attributes"] = {};
  for (const [k, v] of Object.entries(attrs)) attributes[k] = typeof v === "string" ? { string: v } : typeof v === "number" ? { int: v } : { bool: v };
  return { name, attributes, ...extra };
}
function slice(devices: Device[], extra: Partial<ResourceSlice["spec"]> = {}, name = "n1-slice"): ResourceSlice {
  return { apiVersion: "resource.k8s.io/v1", kind: "ResourceSlice", metadata: { name }, spec: { driver: DRIVER, nodeName: "n1", pool: { name: "n1", generation: 1, resourceSliceCount: 1 }, devices, ...extra } };
}
function claim(name: string, devices: NonNullable<ResourceClaim["spec"]["devices"]>, status?: ResourceClaim["status"]): ResourceClaim {
  return { apiVersion: "resource.k8s.io/v1", kind: "ResourceClaim", metadata: { name, namespace: "default", uid: `uid-${name}` }, spec: { devices }, ...(status ? { status } : {}) };
}
const gpu = (n: number, numa: number, root: string, extra: Partial<Device> = {}): Device =>
  dev(`gpu-${n}`, { type: "gpu", numaNode: numa, "resource.kubernetes.io/pcieRoot": root, productName: n % 2 ? "A100" : "H100" }, { capacity: { memory: { value: "80Gi" } }, ...extra });
const req = (name: string, x: Record<string, unknown> = {}) => ({ name, exactly: { deviceClassName: "gpu.tessera.dev", ...x } });
const run = (slices: ResourceSlice[], c: ResourceClaim, allocated: ResourceClaim[] = [], strategy: "first-fit" | "best-fit" = "first-fit", classes: DeviceClass[] = []) =>
  allocateClaim({ slices, deviceClasses: classes, allocatedClaims: allocated, claim: c, nodeName: "n1", strategy });
const held = (name: string, devices: string[], extra: Record<string, unknown> = {}): ResourceClaim =>
  claim(name, {}, { allocation: { devices: { results: devices.map((d) => ({ request: "r", driver: DRIVER, pool: "n1", device: d, ...extra })) } } });

t.test("semantics: in use, constraints, All, firstAvailable, taints, admin access, config", async (t) => {
  const four = [slice([gpu(0, 0, "r0"), gpu(1, 0, "r1"), gpu(2, 1, "r1"), gpu(3, 1, "r2")])];
  const pick = (o: AllocateOutput) => (o.ok ? o.devices.map((d) => `${d.request}:${d.device}`) : o.explanation.stage ?? o.explanation.reason);
  t.same(pick(run(four, claim("a", { requests: [req("g", { count: 2 })] }), [held("x", ["gpu-0"])])), ["g:gpu-1", "g:gpu-2"], "devices of other claims are skipped");
  t.same(pick(run(four, claim("a", { requests: [req("g", { count: 2 })], constraints: [{ matchAttribute: "resource.kubernetes.io/pcieRoot" }] }))), ["g:gpu-1", "g:gpu-2"], "matchAttribute backtracks to the shared root");
  t.same(pick(run(four, claim("a", { requests: [req("g", { count: 2 })], constraints: [{ matchAttribute: "gpu.tessera.dev/numaNode" }] }))), ["g:gpu-0", "g:gpu-1"], "short attribute names resolve in the driver's domain");
  t.same(pick(run(four, claim("a", { requests: [req("a"), req("b")], constraints: [{ requests: ["a", "b"], distinctAttribute: "gpu.tessera.dev/numaNode" }] }))), ["a:gpu-0", "b:gpu-2"], "distinctAttribute across requests");
  t.same(pick(run(four, claim("a", { requests: [req("g", { allocationMode: "All" })] }), [held("x", ["gpu-3"])])), "available", "All fails when one matching device is taken");
  t.same(
    pick(run(four, claim("a", { requests: [{ name: "g", firstAvailable: [{ name: "big", deviceClassName: "gpu.tessera.dev", count: 5 }, { name: "two", deviceClassName: "gpu.tessera.dev", count: 2 }] }] }))),
    ["g/two:gpu-0", "g/two:gpu-1"],
    "firstAvailable falls through and names <request>/<subrequest>",
  );
  const tainted = [slice([gpu(0, 0, "r0", { taints: [{ key: "bad", value: "ecc", effect: "NoSchedule" }] }), gpu(1, 0, "r0", { taints: [{ key: "info", effect: "None" }] })])];
  t.same(pick(run(tainted, claim("a", { requests: [req("g", { count: 2 })] }))), "taints", "NoSchedule taints exclude");
  t.same(pick(run(tainted, claim("a", { requests: [req("g", { count: 2, tolerations: [{ key: "bad", operator: "Equal", value: "ecc", effect: "NoSchedule" }] })] }))), ["g:gpu-0", "g:gpu-1"], "tolerated taints do not");
  const admin = run(four, claim("a", { requests: [req("g", { adminAccess: true, allocationMode: "All" })] }), [held("x", ["gpu-0", "gpu-1"])]);
  t.ok(admin.ok && admin.allocation.devices?.results?.every((r) => r.adminAccess === true && r.request === "g"), "admin access ignores other claims and is marked");
  const cls: DeviceClass = { apiVersion: "resource.k8s.io/v1", kind: "DeviceClass", metadata: { name: "fast" }, spec: { selectors: [{ cel: { expression: `device.attributes["gpu.tessera.dev"].productName == "H100"` } }], config: [{ opaque: { driver: DRIVER, parameters: { mode: "fast" } } }] } };
  const withCfg = run(four, claim("a", { requests: [{ name: "g", exactly: { deviceClassName: "fast" } }], config: [{ requests: ["g"], opaque: { driver: DRIVER, parameters: { x: 1 } } }] }), [], "first-fit", [cls]);
  t.same(withCfg.ok && withCfg.allocation.devices?.config?.map((c) => c.source), ["FromClass", "FromClaim"], "class config then claim config");
  t.same(withCfg.ok && withCfg.devices.map((d) => d.device), ["gpu-0"]);
});

t.test("best-fit: keeps a claim's devices on one PCIe root / NUMA node where first-fit spreads them", async (t) => {
  const spread = [slice([gpu(0, 0, "r0"), gpu(1, 1, "r1"), gpu(2, 0, "r0")])];
  const two = claim("a", { requests: [req("a"), req("b")] });
  const devs = (o: AllocateOutput) => (o.ok ? o.devices.map((d) => d.device) : []);
  t.same(devs(run(spread, two, [], "first-fit")), ["gpu-0", "gpu-1"], "first-fit: scheduler order");
  t.same(devs(run(spread, two, [], "best-fit")), ["gpu-0", "gpu-2"], "best-fit: the second request joins the first one's root");
  const pair = [slice([gpu(0, 0, "r0"), gpu(1, 1, "r1"), gpu(2, 1, "r1"), gpu(3, 0, "r2")])];
  const count2 = claim("b", { requests: [req("g", { count: 2 })] });
  t.same(devs(run(pair, count2, [], "first-fit")), ["gpu-0", "gpu-1"]);
  t.same(devs(run(pair, count2, [], "best-fit")), ["gpu-1", "gpu-2"], "best-fit: a root that holds the whole request");
});

t.test("semantics: counters of partitionable devices and consumable capacity", async (t) => {
  const counters = { sharedCounters: [{ name: "gpu-0-counters", counters: { memory: { value: "8" } } }] };
  const consume = (n: string) => ({ counterSet: "gpu-0-counters", counters: { memory: { value: n } } });
  const part = [slice([dev("gpu-0", { type: "gpu" }, { consumesCounters: [consume("8")] }), dev("mig-a", { type: "mig" }, { consumesCounters: [consume("4")] }), dev("mig-b", { type: "mig" }, { consumesCounters: [consume("4")] }), dev("mig-c", { type: "mig" }, { consumesCounters: [consume("2")] })], counters)];
  const mig = (name: string, count = 1) => claim(name, { requests: [{ name: "m", exactly: { deviceClassName: "mig.tessera.dev", count } }] });
  const one = run(part, mig("a", 2));
  t.same(one.ok && one.devices.map((d) => d.device), ["mig-a", "mig-b"], "two 4/8 partitions fit the counter set");
  const after = run(part, claim("b", { requests: [req("g")] }), [held("x", ["mig-a"])]);
  t.equal(after.ok, false, "a whole GPU no longer fits once a partition is taken");
  t.equal(!after.ok && after.explanation.stage, "available");
  // best-fit packs partitions onto the counter set already in use
  const twoSets = [slice([dev("a-big", { type: "mig" }, { consumesCounters: [consume("4")] }), dev("b-small", { type: "mig" }, { consumesCounters: [{ counterSet: "s2", counters: { memory: { value: "2" } } }] }), dev("a-small", { type: "mig" }, { consumesCounters: [consume("2")] })], { sharedCounters: [...counters.sharedCounters, { name: "s2", counters: { memory: { value: "8" } } }] })];
  const packed = run(twoSets, claim("c", { requests: [{ name: "m", exactly: { deviceClassName: "mig.tessera.dev", selectors: [{ cel: { expression: `device.name != "a-big"` } }] } }] }), [held("x", ["a-big"])], "best-fit");
  t.equal(packed.ok, false, "device.name is not part of the DRA CEL environment: runtime error");
  const packed2 = run(twoSets, claim("c", { requests: [{ name: "m", exactly: { deviceClassName: "mig.tessera.dev" } }] }), [held("x", ["a-big"])], "best-fit");
  t.same(packed2.ok && packed2.devices.map((d) => d.device), ["a-small"], "best-fit packs onto the busy counter set");
  const ff = run(twoSets, claim("c", { requests: [{ name: "m", exactly: { deviceClassName: "mig.tessera.dev" } }] }), [held("x", ["a-big"])], "first-fit");
  t.same(ff.ok && ff.devices.map((d) => d.device), ["b-small"], "first-fit keeps scheduler order");

  const shared = [slice([dev("gpu-0", { type: "gpu" }, { allowMultipleAllocations: true, capacity: { memory: { value: "80Gi", requestPolicy: { default: "10Gi", validRange: { min: "10Gi", step: "10Gi" } } } } })])];
  const share = (name: string, q?: string) => claim(name, { requests: [req("g", { selectors: [{ cel: { expression: "device.allowMultipleAllocations" } }], ...(q ? { capacity: { requests: { memory: q } } } : {}) })] });
  const ex = run(shared, example("shared-gpu"));
  t.same(ex.ok && ex.allocation.devices?.results?.[0]?.consumedCapacity, { memory: "20Gi" }, "deploy/examples/shared-gpu.yaml gets a 20Gi share");
  const s1 = run(shared, share("s1", "25Gi"));
  const r1 = s1.ok ? s1.allocation.devices?.results?.[0] : undefined;
  t.same(r1?.consumedCapacity, { memory: "30Gi" }, "requests round up to the policy's step");
  t.match(r1?.shareID, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-a[0-9a-f]{3}-[0-9a-f]{12}$/, "shareID is UUID-shaped");
  t.equal(run(shared, share("s1", "25Gi")).ok && r1?.shareID, (run(shared, share("s1", "25Gi")) as { allocation: { devices: { results: { shareID: string }[] } } }).allocation.devices.results[0]?.shareID, "deterministic");
  const holding = claim("s1", {}, { allocation: { devices: { results: [{ request: "g", driver: DRIVER, pool: "n1", device: "gpu-0", shareID: "x", consumedCapacity: { memory: "30Gi" } }] } } });
  const s2 = run(shared, share("s2", "50Gi"), [holding]);
  t.same(s2.ok && s2.allocation.devices?.results?.[0]?.consumedCapacity, { memory: "50Gi" }, "a second share fits the rest");
  const s3 = run(shared, share("s3", "60Gi"), [holding]);
  t.equal(!s3.ok && s3.explanation.stage, "available", "a share over the remaining capacity does not fit");
  t.same(run(shared, share("s4")).ok && (run(shared, share("s4")) as { allocation: { devices: { results: { consumedCapacity: unknown }[] } } }).allocation.devices.results[0]?.consumedCapacity, { memory: "10Gi" }, "no request consumes the policy default");
});

t.test("semantics: CEL environment (quantity, semver, domains) and errors", async (t) => {
  const d = dev("gpu-0", { type: "gpu" }, { attributes: { type: { string: "gpu" }, driverVersion: { version: "550.54.15" }, "example.com/rack": { string: "r7" } }, capacity: { memory: { value: "81559Mi" } } });
  const sl = [slice([d])];
  const sel = (expression: string) => run(sl, claim("c", { requests: [req("g", { selectors: [{ cel: { expression } }] })] }));
  const cases: [string, boolean | string][] = [
    [`device.capacity["gpu.tessera.dev"].memory.compareTo(quantity("80Gi")) < 0`, true],
    [`device.capacity["gpu.tessera.dev"].memory.isGreaterThan(quantity("80G"))`, true],
    [`device.attributes["gpu.tessera.dev"].driverVersion.isGreaterThan(semver("535.0.0"))`, true],
    [`device.attributes["gpu.tessera.dev"].driverVersion.major() == 550`, true],
    [`device.attributes["example.com"].rack == "r7"`, true],
    [`device.driver == "gpu.tessera.dev" && !device.allowMultipleAllocations`, true],
    [`"rack" in device.attributes["other.io"]`, false],
    [`device.attributes["other.io"].rack == "r7"`, "cel-error"],
  ];
  for (const [expr, want] of cases) {
    const o = sel(expr);
    if (typeof want === "boolean") t.equal(o.ok, want, expr);
    else t.equal(!o.ok && o.explanation.reason, want, `${expr}: ${!o.ok ? o.explanation.message : ""}`);
  }
  t.throws(() => sel(`device.driver ==`), { code: "TESSERA_CEL", message: /CEL syntax error at line 1, column \d+ of `device.driver ==`/ }, "syntax error with position");
  const multi = sel(`device.driver == "gpu.tessera.dev" &&\n  device.attributes["example.com"].nosuch == 1`);
  t.match(!multi.ok && multi.explanation.message, /field not found: nosuch at line 2, column 35\b/, "runtime error position: line and column within a multi-line selector");
  t.throws(() => sel(`device.driver`), { code: "TESSERA_CEL", message: /bool/ }, "non-bool result");
  t.throws(() => sel(`1 + "a" == 2`), { code: "TESSERA_CEL", message: /type error/ }, "type error");
  t.throws(() => run(sl, claim("c", { requests: [{ name: "g", exactly: { deviceClassName: "nope.example.com" } }] })), { code: "TESSERA_DEVICE_CLASS_NOT_FOUND" });
  t.throws(() => run(sl, claim("c", { requests: Array.from({ length: 33 }, (_, i) => req(`r${i}`)) })), { code: "TESSERA_VALIDATION", message: /at most 32/ });
  t.throws(() => run(sl, claim("c", { requests: [req("g", { count: 33 })] })), { code: "TESSERA_VALIDATION", message: /count/ });
  t.throws(() => run(sl, claim("c", { requests: [req("g")], constraints: [{ matchAttribute: "pcieRoot" }] })), { code: "TESSERA_VALIDATION", message: /constraints\[0\]\.matchAttribute/ });
});

t.test("selector memo by device content: fresh copies hit, changed content is evaluated again", async (t) => {
  const mk = (profile: string, rack: string): Device[] => [0, 1, 2].map((i) => dev(`gpu-${i}`, { type: "gpu", profile: i === 1 ? profile : "7g", "example.com/rack": rack }));
  const c = claim("memo", { requests: [req("g", { selectors: [{ cel: { expression: `device.attributes["gpu.tessera.dev"].profile == "1g" && device.attributes["example.com"].rack == "r1"` } }] })] });
  const names = (o: AllocateOutput): string[] => (o.ok ? o.devices.map((d) => d.device) : []);
  t.same(names(run([slice(mk("1g", "r1"))], c)), ["gpu-1"], "first input");
  t.same(names(run(structuredClone([slice(mk("1g", "r1"))]), c)), ["gpu-1"], "a fresh copy answers alike");
  t.notOk(run([slice(mk("1g", "r2"))], c).ok, "another rack (a second read path) is a new key, evaluated again");
  const moved = [slice(mk("7g", "r1"))];
  (moved[0]?.spec.devices?.[2]?.attributes as Record<string, { string: string }>).profile = { string: "1g" };
  t.same(names(run(moved, c)), ["gpu-2"], "the profile moved to another device: follows the content, not the name or position");
  const short = [slice([dev("gpu-0", { type: "gpu", profile: "7g", "gpu.tessera.dev/profile": "1g", "example.com/rack": "r1" })])];
  const qualifiedWins = run(short, c).ok;
  const swapped = [slice([dev("gpu-0", { type: "gpu", profile: "1g", "gpu.tessera.dev/profile": "7g", "example.com/rack": "r1" })])];
  t.not(run(swapped, c).ok, qualifiedWins, "short and qualified names of the driver's domain are both in the key");
  const { selectorDeps } = await import("../agent/allocator/cel-deps.js");
  const table: [string, string[] | undefined][] = [
    [`device.attributes["d.io"].x == "device.attributes"`, ["attributes d.io x"]],
    [`device.capacity['d.io']["m.n"].compareTo(quantity("1")) > 0 && device.driver == "d.io"`, ["capacity d.io m.n"]],
    [`has(device.attributes["d.io"].x)`, ["attributes d.io x"]],
    [`"x" in device.attributes["d.io"]`, undefined],
    [`device.attributes["d.io"].exists(k, k == "x")`, undefined],
    [`device.attributes["d.io"].size() > 0`, undefined],
    [`[1].all(device, device > 0)`, undefined],
    [`device.attributes["d.io"].x == "a\\"b"`, undefined],
    [`device.attributes["d.io"].x == 1 // device.attributes`, undefined],
  ];
  for (const [e, want] of table) t.same(selectorDeps(e)?.paths.map((p) => `${p.kind} ${p.domain} ${p.name}`), want, e);
});

// ---- CLI -----------------------------------------------------------------------------------
function snapshot(dir: string): string {
  const walk = (d: string): string[] => readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : [`${join(d, e.name)}:${statSync(join(d, e.name)).mtimeMs}:${readFileSync(join(d, e.name), "utf8").length}`]));
  return walk(dir).sort().join("\n");
}

t.test("cli: claims apply stores allocations; explain reports; bad input leaves the store untouched", async (t) => {
  const store = mkdtempSync(join(tmpdir(), "tessera-alloc-"));
  const node = ["--discovery", "fixture:h100-sxm-8x", "--node-name", "h100-sxm-8x", "--kube", `standalone:${store}`];
  const cli = async (...argv: string[]) => {
    const io = captureIO({});
    const code = await main(argv, io);
    return { code, out: io.out.join(""), err: io.err.join("") };
  };
  const a = await cli("claims", "apply", "-f", join(EXAMPLES, "one-gpu.yaml"), ...node, "-o", "json");
  t.equal(a.code, 0, a.err);
  const stored = JSON.parse(readFileSync(join(store, "resourceclaims", "default", "one-gpu.json"), "utf8")) as ResourceClaim;
  t.match(stored.metadata.uid, /^[0-9a-f-]{36}$/, "uid generated");
  t.same(stored.status?.allocation?.devices?.results?.map((r) => r.device), ["gpu-0"]);
  const b = await cli("claims", "apply", "-f", join(EXAMPLES, "prefer-h100-else-a100.yaml"), ...node);
  t.match(b.out, /gpu\/h100\s+gpu-1/, "the next claim gets the next free GPU");
  const all = await cli("diag", "explain", "-f", join(EXAMPLES, "all-gpus.yaml"), ...node);
  t.equal(all.code, 0);
  t.match(all.out, /does not fit.*only 6 are free/, "explain: two GPUs are taken");
  t.match(all.out, /REQUEST\s+CLASS\s+NEED\s+CLASS-SEL/);
  const j = JSON.parse((await cli("diag", "explain", "-f", join(EXAMPLES, "all-gpus.yaml"), ...node, "-o", "json")).out) as { fits: boolean; explanation: { stage: string; requests: { alternatives: { stages: Record<string, number> }[] }[] } };
  t.equal(j.fits, false);
  t.equal(j.explanation.stage, "available");
  t.same(j.explanation.requests[0]?.alternatives[0]?.stages, { classSelectors: 8, requestSelectors: 8, available: 6, taints: 6, constraints: 0 });
  const full = await cli("claims", "apply", "-f", join(EXAMPLES, "all-gpus.yaml"), ...node);
  t.equal(full.code, 1, "apply exits 1 when it does not fit");
  t.match(full.err, /^TESSERA_UNSATISFIABLE: request gpus needs all matching devices/);

  const before = snapshot(store);
  const bad = (name: string, text: string): string => {
    const f = join(store, "..", `${name}-${process.pid}.yaml`);
    writeFileSync(f, text);
    return f;
  };
  const c = (body: string) => `apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata:\n  name: bad\nspec:\n  devices:\n${body}`;
  const errors: [string, string, RegExp][] = [
    ["yaml", "apiVersion: [unclosed\n", /^TESSERA_INPUT: .*:\d+:\d+: not valid YAML/],
    ["class", c("    requests:\n      - name: g\n        exactly:\n          deviceClassName: nope.example.com\n"), /^TESSERA_DEVICE_CLASS_NOT_FOUND: spec\.devices\.requests\[0\]\.exactly\.deviceClassName/],
    ["syntax", c("    requests:\n      - name: g\n        exactly:\n          deviceClassName: gpu.tessera.dev\n          selectors:\n            - cel:\n                expression: 'device.driver == '\n"), /^TESSERA_CEL: spec\.devices\.requests\[0\]\.exactly\.selectors\[0\]\.cel\.expression: CEL syntax error at line 1, column \d+/],
    ["type", c("    requests:\n      - name: g\n        exactly:\n          deviceClassName: gpu.tessera.dev\n          selectors:\n            - cel:\n                expression: 'device.attributes[\"gpu.tessera.dev\"].type + 1 == 2'\n"), /^TESSERA_CEL: .*no matching overload/],
    ["domain", c("    requests:\n      - name: g\n        exactly:\n          deviceClassName: gpu.tessera.dev\n          selectors:\n            - cel:\n                expression: 'device.attributes[\"nvidia.com\"].model == \"x\"'\n"), /^TESSERA_CEL: CEL runtime error: unknown attribute domain "nvidia\.com"/],
    ["no-metadata", "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nspec: {}\n", /^TESSERA_VALIDATION: metadata\.name: is required/],
    ["limits", c("    requests:\n" + Array.from({ length: 33 }, (_, i) => `      - name: r${i}\n        exactly:\n          deviceClassName: gpu.tessera.dev\n`).join("")), /^TESSERA_VALIDATION: spec\.devices\.requests: has 33 requests, the API allows at most 32/],
  ];
  for (const [name, text, want] of errors) {
    for (const verb of [["claims", "apply"], ["diag", "explain"]] as const) {
      const r = await cli(...verb, "-f", bad(name, text), ...node);
      t.equal(r.code, 1, `${verb.join(" ")} ${name}: exit 1`);
      t.match(r.err, want, `${verb.join(" ")} ${name}: ${r.err.trim()}`);
      t.equal(r.err.trim().split("\n").length, 1, "one line, no stack");
    }
  }
  t.equal(snapshot(store), before, "store untouched by every failed command");
});

t.test("cli: claims apply, then diag prepare prepares the claim on a running agent", async (t) => {
  const { startEnv, NODE } = await import("./support/kubelet-env.js");
  const env = await startEnv();
  t.teardown(() => env.close());
  const flags = ["--kubelet-root", join(env.root, "k"), "--cdi-root", join(env.root, "cdi"), "--node-name", NODE, "--kube", `standalone:${join(env.root, "store")}`, "--discovery", "fixture:h100-sxm-8x"];
  const io = captureIO({});
  t.equal(await main(["claims", "apply", "-f", join(EXAMPLES, "one-gpu.yaml"), ...flags], io), 0, io.err.join(""));
  const prep = captureIO({});
  t.equal(await main(["diag", "prepare", "default/one-gpu", ...flags, "-o", "json"], prep), 0, prep.err.join(""));
  const out = JSON.parse(prep.out.join("")) as { devices: { device_name: string; cdi_device_ids: string[] }[] };
  t.equal(out.devices[0]?.device_name, "gpu-0");
  t.match(out.devices[0]?.cdi_device_ids[0], /^k8s\.gpu\.tessera\.dev\/claim=/, "CDI device of the claim");
});

t.test("cli: diag explain in a cluster reads this node's slices and the allocated claims", async (t) => {
  const { startFakeApiServer } = await import("./support/fake-apiserver.js");
  const api = await startFakeApiServer();
  t.teardown(() => api.close());
  const dir = mkdtempSync(join(tmpdir(), "tessera-alloc-kc-"));
  await api.writeKubeconfig(join(dir, "kubeconfig"));
  const slices = await fixtureSlices("workstation-2numa-4gpu", "static", "ws");
  for (const s of slices) api.seed("resource.k8s.io", "v1", "resourceslices", s as never);
  api.seed("resource.k8s.io", "v1", "resourceslices", slice([gpu(9, 0, "r9")], { nodeName: "other-node", pool: { name: "other-node", generation: 1, resourceSliceCount: 1 } }, "other") as never);
  const taken = held("taken", ["gpu-0", "gpu-1"]);
  api.seed("resource.k8s.io", "v1", "resourceclaims", { ...taken, status: { allocation: { devices: { results: (taken.status?.allocation?.devices?.results ?? []).map((r) => ({ ...r, pool: "ws" })) } } } } as never);
  const io = captureIO({});
  const code = await main(["diag", "explain", "-f", join(EXAMPLES, "one-gpu.yaml"), "--kube", `kubeconfig:${join(dir, "kubeconfig")}`, "--node-name", "ws", "--strategy", "best-fit", "-o", "json"], io);
  t.equal(code, 0, io.err.join(""));
  const out = JSON.parse(io.out.join("")) as { fits: boolean; devices: { device: string; pool: string }[]; slices: string };
  t.same(out.devices, [{ request: "gpu", driver: DRIVER, pool: "ws", device: "gpu-2" }], "skips the devices the cluster already allocated");
  t.equal(out.slices, "cluster");
  t.ok(api.requests.some((r) => r.verb === "list" && r.resource === "resourceslices"), "lists the slices through the API");
});
