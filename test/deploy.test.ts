// deploy/: the manifests an admin applies. Rendered with real kustomize (base and each overlay),
// validated against the Kubernetes schemas (kubernetes-models), CEL evaluated (DeviceClass
// selectors, the own-node admission policy), RBAC proven least-privilege by running the agent's
// and the proxy's Kubernetes flows against a fake API server that enforces the ClusterRole, and
// the DaemonSet checked against the CLI's flags (agent/common/config.ts) and contracts.md.
import t, { type Test } from "tap";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { run, parse as celParse, type CelInput } from "@bufbuild/cel";
import * as k8s from "@kubernetes/client-node";
import { KubeConfig } from "@kubernetes/client-node";
import { Namespace, Service, ServiceAccount } from "kubernetes-models/v1";
import { DaemonSet, Deployment } from "kubernetes-models/apps/v1";
import { ClusterRole, ClusterRoleBinding, Role, RoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1";
import { ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding } from "kubernetes-models/admissionregistration.k8s.io/v1";
import { DeviceClass } from "kubernetes-models/resource.k8s.io/v1";
import { AGENT_FLAGS, DEFAULT_HTTP_LISTEN, EPP_FLAGS, NODE_FLAGS, parseFlags, resolveNodeConfig } from "../agent/common/config.js";
import { AGENT_NODE_OPTIONS, SHUTDOWN_DEADLINE_MS } from "../agent/cli/agent.js";
import { createKubeClaimSource } from "../agent/plugin/claim-source.js";
import { createDiscovery } from "../agent/discovery/index.js";
import { celDevice, compileSelector } from "../agent/allocator/cel-env.js";
import { builtinDeviceClasses } from "../agent/allocator/builtin-classes.js";
import { clusterSliceBackend } from "../agent/slices/backend.js";
import { startSlicePublisher } from "../agent/slices/publisher.js";
import { createInferencePoolSource } from "../agent/endpoints/inference-pool.js";
import { PROXY_FLAGS, proxyOptionsFromArgs } from "../agent/cli/proxy.js";
import { eppOptionsFromArgs } from "../agent/cli/epp.js";
import type { Device } from "../agent/kube/types.js";
import type { Inventory } from "../agent/discovery/model.js";
import { startFakeApiServer, type FakeApiServer, type RequestRecord } from "./support/fake-apiserver.js";
import { main } from "../agent/cli/main.js";
import { captureIO } from "../agent/cli/io.js";
import { findTool, HELM, KUSTOMIZE } from "./support/go-tools.js";

/** The repository root (this file runs from dist/test/). */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

// ---- manifests -------------------------------------------------------------------------------

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; [k: string]: unknown }; [k: string]: unknown };
type Rec = Record<string, unknown>;
type Tap = Test;

const rec = (x: unknown): Rec => (x !== null && typeof x === "object" && !Array.isArray(x) ? (x as Rec) : {});
const arr = (x: unknown): unknown[] => (Array.isArray(x) ? x : []);
const at = (o: unknown, ...keys: (string | number)[]): unknown => keys.reduce<unknown>((cur, k) => (typeof k === "number" ? arr(cur)[k] : rec(cur)[k]), o);

function parseDocs(text: string, where: string): Obj[] {
  return parseAllDocuments(text).flatMap((d) => {
    if (d.errors.length > 0) throw new Error(`${where}: ${d.errors[0]?.message}`);
    const o = d.toJS() as Obj | null;
    return o ? [o] : [];
  });
}

/** The base's resources read straight from the files (no kustomize needed). */
function readBase(): Obj[] {
  const k = rec(parseDocs(readFileSync(join(ROOT, "deploy/base/kustomization.yaml"), "utf8"), "kustomization")[0]);
  return arr(k.resources).flatMap((f) => parseDocs(readFileSync(join(ROOT, "deploy/base", String(f)), "utf8"), String(f)));
}

/** CEL over plain test data (objects become CEL maps). */
const celRun = (expr: string, vars: Rec): unknown => run(expr, vars as Record<string, CelInput>);

const model = <T>(C: new (data: T) => { validate(): void }) => (o: unknown): void => new C(o as T).validate();
const MODELS: Record<string, (o: unknown) => void> = {
  "v1/Namespace": model(Namespace),
  "v1/ServiceAccount": model(ServiceAccount),
  "v1/Service": model(Service),
  "apps/v1/DaemonSet": model(DaemonSet),
  "apps/v1/Deployment": model(Deployment),
  "rbac.authorization.k8s.io/v1/ClusterRole": model(ClusterRole),
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": model(ClusterRoleBinding),
  "rbac.authorization.k8s.io/v1/Role": model(Role),
  "rbac.authorization.k8s.io/v1/RoleBinding": model(RoleBinding),
  "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy": model(ValidatingAdmissionPolicy),
  "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding": model(ValidatingAdmissionPolicyBinding),
  "resource.k8s.io/v1/DeviceClass": model(DeviceClass),
};
/** kubernetes-models accepts unknown fields; a typo (`mountpropagation`) would pass it. The
 *  client's generated models list every field of every type: walk the object against them. */
type AttributeMap = { baseName: string; type: string }[];
const MODEL_TYPES = k8s as unknown as Record<string, { getAttributeTypeMap?: () => AttributeMap } | undefined>;
function unknownFields(value: unknown, type: string, path: string, out: string[] = []): string[] {
  if (value === null || value === undefined) return out;
  const list = /^Array<(.+)>$/.exec(type);
  if (list) arr(value).forEach((v, i) => unknownFields(v, String(list[1]), `${path}[${i}]`, out));
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) for (const [k, v] of Object.entries(rec(value))) unknownFields(v, String(map[1]), `${path}.${k}`, out);
  const attrs = MODEL_TYPES[type]?.getAttributeTypeMap?.();
  if (list || map || !attrs) return out; // scalars, IntOrString, any
  const known = new Map(attrs.map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(rec(value))) {
    const t = known.get(k);
    if (t === undefined) out.push(`${path}.${k}`);
    else unknownFields(v, t, `${path}.${k}`, out);
  }
  return out;
}

const CLUSTER_SCOPED = new Set(["Namespace", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "DeviceClass"]);
const NAMESPACE = "tessera-system";

const one = (objs: Obj[], kind: string, name?: string): Obj => {
  const o = objs.find((x) => x.kind === kind && (name === undefined || x.metadata.name === name));
  if (!o) throw new Error(`no ${kind}${name ? ` ${name}` : ""} in the manifests`);
  return o;
};
const container = (ds: Obj, name: string): Rec => rec(arr(at(ds, "spec", "template", "spec", "containers")).find((c) => rec(c).name === name));
const envOf = (c: Rec): Map<string, Rec> => new Map(arr(c.env).map((e) => [String(rec(e).name), rec(e)]));

// ---- kustomize: the pinned build (test/support/go-tools.ts), else one already installed ----------

type Renderer = { name: string; render(dir: string): string };

function findKustomize(): Renderer | string {
  const runner = (name: string, cmd: string, pre: string[]): Renderer => ({
    name,
    render(dir) {
      const r = spawnSync(cmd, [...pre, dir], { encoding: "utf8", timeout: 30_000 });
      if (r.status !== 0) throw new Error(`${name} ${dir}: ${r.stderr || r.error?.message}`);
      return r.stdout;
    },
  });
  const works = (cmd: string, args: string[]): boolean => spawnSync(cmd, args, { encoding: "utf8", timeout: 15_000 }).status === 0;
  const explicit = process.env.KUSTOMIZE;
  if (explicit) return runner(explicit, explicit, ["build"]);
  const pinned = findTool(KUSTOMIZE);
  if ("path" in pinned) return runner(`kustomize ${KUSTOMIZE.version} (${pinned.path})`, pinned.path, ["build"]);
  if (works("kustomize", ["version"])) return runner("kustomize on PATH", "kustomize", ["build"]);
  if (works("kubectl", ["kustomize", "--help"])) return runner("kubectl kustomize (embedded kustomize)", "kubectl", ["kustomize"]);
  return `no kustomize: ${pinned.missing}; nor is kustomize or kubectl on PATH`;
}

const kustomize = findKustomize();
const CHART = join(ROOT, "deploy/helm/tessera");
const FAKE_VALUES = join(CHART, "values-fake.yaml");
const RENDERED: Record<string, Obj[]> = {};
if (typeof kustomize !== "string") {
  for (const dir of ["base", "overlays/fake", "overlays/nvidia"]) RENDERED[dir] = parseDocs(kustomize.render(join(ROOT, "deploy", dir)), dir);
}
const BASE = readBase();
/** The proxy's Role lives in the namespace of the InferencePool it routes for (the base's INFERENCE_POOL). */
const POOL_NAMESPACE = String(arr(at(BASE.find((o) => o.kind === "DaemonSet" && o.metadata.name === "tessera-proxy"), "spec", "template", "spec", "containers", 0, "env")).map(rec).find((e) => e.name === "INFERENCE_POOL")?.value ?? "").split("/")[0] ?? "";
const POOL_SCOPED = new Set(["Role", "RoleBinding"]);

// ---- schemas and scopes ------------------------------------------------------------------------

/** Each object against its Kubernetes schema and field list, in its scope (`namespace` for the
 *  namespaced, `poolNamespace` for the proxy's Role and RoleBinding). */
function validateObjects(t: Tap, name: string, objs: Obj[], namespace = NAMESPACE, poolNamespace = POOL_NAMESPACE): void {
  for (const o of objs) {
    const validate = MODELS[`${o.apiVersion}/${o.kind}`];
    const id = `${name}: ${o.kind} ${o.metadata.name}`;
    if (!validate) {
      t.fail(`${id}: no schema known for ${o.apiVersion}`);
      continue;
    }
    try {
      validate(o);
      t.pass(`${id} validates`);
    } catch (err) {
      t.fail(`${id}: ${(err as Error).message}`);
    }
    t.ok(MODEL_TYPES[`V1${o.kind}`]?.getAttributeTypeMap, `${id}: field list known`);
    t.same(unknownFields(o, `V1${o.kind}`, o.kind), [], `${id}: no unknown fields`);
    if (CLUSTER_SCOPED.has(o.kind)) t.equal(o.metadata.namespace, undefined, `${id} is cluster-scoped: no namespace`);
    else if (POOL_SCOPED.has(o.kind)) t.equal(o.metadata.namespace, poolNamespace, `${id} is in the InferencePool's namespace (${poolNamespace})`);
    else t.equal(o.metadata.namespace, namespace, `${id} is in ${namespace}`);
  }
}

t.test("every manifest validates against the Kubernetes schemas and sits in the right scope", async (t) => {
  const sets: [string, Obj[]][] = [["base files", BASE], ...Object.entries(RENDERED)];
  // No silent fallback: without a renderer the overlays are unchecked, so that is a failure.
  if (typeof kustomize === "string") t.fail(`kustomize is needed to render deploy/: ${kustomize}; install Go (it builds kustomize ${KUSTOMIZE.version} once) or put kustomize on PATH, or set KUSTOMIZE`);
  else t.comment(`rendered with ${kustomize.name}`);
  for (const [name, objs] of sets) {
    t.same(objs.map((o) => o.kind).sort(), ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "DaemonSet", "DeviceClass", "DeviceClass", "Namespace", "Role", "RoleBinding", "Service", "ServiceAccount", "ServiceAccount", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"], `${name}: the expected objects`);
    validateObjects(t, name, objs);
  }
  t.equal(Object.keys(RENDERED).length, 3, "base and both overlays rendered");
});

t.test("overlays: fake drops the GPU-only privileges, nvidia selects GPU nodes", async (t) => {
  if (typeof kustomize === "string") {
    t.fail(`overlays not rendered: ${kustomize}`);
    return;
  }
  const fake = one(RENDERED["overlays/fake"] ?? [], "DaemonSet", "tessera-node");
  const nvidia = one(RENDERED["overlays/nvidia"] ?? [], "DaemonSet", "tessera-node");
  const fa = container(fake, "agent"), na = container(nvidia, "agent");
  t.match(envOf(fa).get("DISCOVERY")?.value, /^fixture:/, "fake: fixture discovery");
  t.equal(envOf(na).get("DISCOVERY")?.value, "nvidia-smi", "nvidia: real discovery");
  t.equal(at(fa, "securityContext", "privileged"), false, "fake agent is not privileged");
  t.same(at(fa, "securityContext", "capabilities", "drop"), ["ALL"], "fake agent has no capabilities");
  t.equal(at(na, "securityContext", "privileged"), true, "nvidia agent is privileged (device nodes, Bidirectional)");
  const hostPaths = (ds: Obj): string[] => arr(at(ds, "spec", "template", "spec", "volumes")).map((v) => String(at(v, "hostPath", "path") ?? "")).filter(Boolean);
  t.notOk(hostPaths(fake).includes("/") || hostPaths(fake).includes("/sys"), "fake mounts neither the driver root nor /sys");
  t.ok(hostPaths(nvidia).includes("/sys"), "nvidia mounts /sys");
  const mounts = (c: Rec): string[] => arr(c.volumeMounts).map((m) => String(rec(m).mountPath));
  t.same(new Set(mounts(fa)).size, mounts(fa).length, "fake: no duplicate mounts after the patch");
  t.same(at(nvidia, "spec", "template", "spec", "nodeSelector"), { "nvidia.com/gpu.present": "true" }, "nvidia: GPU nodes only");
  t.equal(at(fake, "spec", "template", "spec", "nodeSelector"), undefined, "fake: every node");
  for (const ds of [fake, nvidia]) {
    const vols = new Set(arr(at(ds, "spec", "template", "spec", "volumes")).map((v) => rec(v).name));
    for (const m of arr(container(ds, "agent").volumeMounts)) t.ok(vols.has(rec(m).name), `agent mount ${String(rec(m).name)} has a volume`);
  }
  t.same(at(one(RENDERED["overlays/nvidia"] ?? [], "DaemonSet", "tessera-proxy"), "spec", "template", "spec", "nodeSelector"), { "nvidia.com/gpu.present": "true" }, "nvidia: the proxy runs on the GPU nodes too");
  t.equal(envOf(container(one(RENDERED["overlays/fake"] ?? [], "DaemonSet", "tessera-proxy"), "proxy")).get("INFERENCE_POOL"), undefined, "fake: the proxy uses static endpoints");
});

// ---- DeviceClasses -----------------------------------------------------------------------------

const DRIVER = "gpu.tessera.dev";
/** A ResourceSlice device (resource.k8s.io/v1 wire shape) of the given driver and `type`. */
const device = (type: string, driver = DRIVER): { driver: string; device: Rec } => ({ driver, device: { name: `${type}-0`, attributes: { type: { string: type } } } });
type Evaluate = (expression: string, d: { driver: string; device: Rec }) => unknown;

/** Selectors evaluated in the allocator's own CEL environment (agent/allocator/cel-env.ts). */
const evaluateSelector: Evaluate = (e, d) => {
  const r = compileSelector(e, "deploy/base/deviceclasses.yaml").evaluate(celDevice(d.driver, d.device as unknown as Device));
  return typeof r === "object" ? r.error : r;
};

t.test("DeviceClass selectors compile and pick exactly their type", async (t) => {
  const classes = BASE.filter((o) => o.kind === "DeviceClass");
  t.same(classes.map((c) => c.metadata.name).sort(), ["gpu.tessera.dev", "mig.tessera.dev"], "the two classes of contracts.md");
  const cases: [string, { driver: string; device: Rec }, boolean][] = [
    ["gpu.tessera.dev", device("gpu"), true],
    ["gpu.tessera.dev", device("mig"), false],
    ["mig.tessera.dev", device("mig"), true],
    ["mig.tessera.dev", device("gpu"), false],
    ["gpu.tessera.dev", device("gpu", "other.example.com"), false],
  ];
  for (const [cls, dev, want] of cases) {
    const exprs = arr(at(one(classes, "DeviceClass", cls), "spec", "selectors")).map((s) => String(at(s, "cel", "expression")));
    t.equal(exprs.length, 1, `${cls}: one selector`);
    for (const e of exprs) {
      t.doesNotThrow(() => celParse(e), `${cls}: parses`);
      t.equal(evaluateSelector(e, dev), want, `${cls} on a ${dev.driver} ${String(at(dev.device, "attributes", "type", "string"))}: ${want}`);
    }
  }
  // extendedResourceName is for the scheduler's pod extended-resource requests, which a standalone
  // store never sees: the selectors are what must agree.
  const strip = (c: unknown): Rec => ({ name: at(c, "metadata", "name"), selectors: at(c, "spec", "selectors") });
  t.same(arr(builtinDeviceClasses()).map(strip).sort(byName), classes.map(strip).sort(byName), "deploy/ DeviceClass selectors equal the allocator's built-in classes");
});

const byName = (a: Rec, b: Rec): number => String(a.name).localeCompare(String(b.name));


// ---- the own-node admission policy, evaluated ----------------------------------------------------

interface AdmissionRequest {
  operation: "CREATE" | "UPDATE" | "DELETE";
  username: string;
  node?: string; // the node name the token carries
  object?: Rec;
  oldObject?: Rec;
}

/** Evaluates a ValidatingAdmissionPolicy as the API server does: match conditions, variables in
 *  order, then every validation; returns the messages of failed validations ([] = admitted). */
function admit(policy: Obj, req: AdmissionRequest): { matched: boolean; denied: string[] } {
  const spec = rec(policy.spec);
  const extra = new Map<string, string[]>(req.node === undefined ? [] : [["authentication.kubernetes.io/node-name", [req.node]]]);
  const activation: Rec = {
    request: { operation: req.operation, userInfo: { username: req.username, groups: ["system:serviceaccounts"], extra } },
    object: req.object ?? null,
    oldObject: req.oldObject ?? null,
  };
  for (const c of arr(spec.matchConditions)) if (celRun(String(rec(c).expression), activation) !== true) return { matched: false, denied: [] };
  const variables: Rec = {};
  for (const v of arr(spec.variables)) variables[String(rec(v).name)] = celRun(String(rec(v).expression), { ...activation, variables });
  const denied: string[] = [];
  for (const v of arr(spec.validations)) {
    const ctx = { ...activation, variables };
    if (celRun(String(rec(v).expression), ctx) === true) continue;
    const me = rec(v).messageExpression;
    denied.push(me ? String(celRun(String(me), ctx)) : String(rec(v).message));
  }
  return { matched: true, denied };
}

t.test("admission policy: the agent writes only ResourceSlices of the node its token names", async (t) => {
  const policy = one(BASE, "ValidatingAdmissionPolicy");
  const sa = one(BASE, "ServiceAccount", "tessera");
  const binding = one(BASE, "ValidatingAdmissionPolicyBinding");
  t.equal(at(binding, "spec", "policyName"), policy.metadata.name, "the binding names the policy");
  t.same(at(binding, "spec", "validationActions"), ["Deny"], "violations are denied, not just audited");
  t.equal(at(policy, "spec", "failurePolicy"), "Fail", "a broken policy fails closed");
  const me = `system:serviceaccount:${sa.metadata.namespace}:${sa.metadata.name}`;
  const slice = (node?: string): Rec => ({ spec: node === undefined ? { driver: DRIVER, allNodes: true } : { driver: DRIVER, nodeName: node } });
  const cases: [string, AdmissionRequest, boolean][] = [
    ["create own", { operation: "CREATE", username: me, node: "a", object: slice("a") }, true],
    ["create other", { operation: "CREATE", username: me, node: "a", object: slice("b") }, false],
    ["create cluster-wide", { operation: "CREATE", username: me, node: "a", object: slice() }, false],
    ["create without node in token", { operation: "CREATE", username: me, object: slice("a") }, false],
    ["update own", { operation: "UPDATE", username: me, node: "a", object: slice("a"), oldObject: slice("a") }, true],
    ["update: take over another node's slice", { operation: "UPDATE", username: me, node: "a", object: slice("a"), oldObject: slice("b") }, false],
    ["update: hand own slice to another node", { operation: "UPDATE", username: me, node: "a", object: slice("b"), oldObject: slice("a") }, false],
    ["delete own", { operation: "DELETE", username: me, node: "a", oldObject: slice("a") }, true],
    ["delete other", { operation: "DELETE", username: me, node: "a", oldObject: slice("b") }, false],
    ["delete cluster-wide", { operation: "DELETE", username: me, node: "a", oldObject: slice() }, false],
  ];
  for (const [name, req, allowed] of cases) {
    const r = admit(policy, req);
    t.ok(r.matched, `${name}: the policy applies to our ServiceAccount`);
    t.equal(r.denied.length === 0, allowed, `${name}: ${allowed ? "admitted" : `denied (${r.denied.join("; ")})`}`);
  }
  const other = admit(policy, { operation: "DELETE", username: "system:serviceaccount:kube-system:resourceclaim-controller", oldObject: slice("b") });
  t.same(other, { matched: false, denied: [] }, "other users (the scheduler, controllers, admins) are not restricted by this policy");
  t.equal(at(policy, "spec", "matchConstraints", "resourceRules", 0, "resources", 0), "resourceslices");
  t.same([...(arr(at(policy, "spec", "matchConstraints", "resourceRules", 0, "operations")) as string[])].sort(), ["CREATE", "DELETE", "UPDATE"]);
});

// ---- least privilege ----------------------------------------------------------------------------

interface Rule { apiGroups: string[]; resources: string[]; verbs: string[] }
const ruleKey = (group: string, resource: string, verb: string): string => `${verb} ${group === "" ? "core" : group}/${resource}`;

function roleTriples(role: Obj): Set<string> {
  const out = new Set<string>();
  for (const r of arr(role.rules) as Rule[]) for (const g of r.apiGroups) for (const res of r.resources) for (const v of r.verbs) out.add(ruleKey(g, res, v));
  return out;
}
const requestKey = (r: RequestRecord): string => ruleKey(r.group, r.subresource ? `${r.resource}/${r.subresource}` : r.resource, r.verb);

/** What the agent calls, and nothing more (every rule is exercised by a flow below). */
const ISSUE_ROLE = [
  "get resource.k8s.io/resourceclaims", "list resource.k8s.io/resourceclaims",
  ...["list", "watch", "create", "update", "delete"].map((v) => `${v} resource.k8s.io/resourceslices`),
  "list resource.k8s.io/deviceclasses",
  "get core/nodes",
  "create core/events", "patch core/events",
];
/** The proxy's own Role (issue 13, 10d): reads only, in the pool's namespace. */
const PROXY_ROLE = [
  "list inference.networking.k8s.io/inferencepools", "watch inference.networking.k8s.io/inferencepools",
  "list core/pods", "watch core/pods",
];

/** A code path of the agent or proxy that talks to the API server. The least-privilege check is
 *  driven by them: every granted rule must be requested by some flow (or be in UNUSED_GRANTS with
 *  its reason), and no flow may request anything outside the ClusterRole. A new rule needs a flow. */
interface Flow {
  name: string;
  /** Whose ServiceAccount the flow runs as: the agent's (ClusterRole) or the proxy's (Role in the pool's namespace). */
  identity: "agent" | "proxy";
  run(api: FakeApiServer, kc: KubeConfig, dir: string): Promise<void | undefined>;
}

const CLAIM = { apiVersion: "resource.k8s.io/v1", kind: "ResourceClaim", metadata: { name: "claim-1", namespace: "team-a", uid: "0b7d1f3e-1111-4222-8333-944455556666" }, spec: { devices: { requests: [] } } };

const NODE = "node-a";

/** Resolves when `cond` holds (checked on every tick of `ms`), rejects after `timeoutMs`. */
async function until(cond: () => boolean, what: string, timeoutMs = 10_000, ms = 20): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, ms));
  }
}

interface Publisher { update(inv: unknown): void; synced(): Promise<void>; stop(): Promise<void> }
interface PoolSource { start(cb: (urls: string[]) => void): Promise<void>; stop(): Promise<void> }

const FLOWS: Flow[] = [
  {
    name: "agent: Events on a claim and the node, created then patched after the rate limit",
    identity: "agent",
    async run(api, kc) {
      const { clusterEventSink, createEventRecorder } = await import("../agent/kube/events.js");
      const { createMemoryLogger } = await import("../agent/common/log.js");
      let now = 0;
      const log = createMemoryLogger();
      const rec = createEventRecorder({ sink: clusterEventSink(kc), nodeName: NODE, log, now: () => now });
      const claimRef = { apiVersion: "resource.k8s.io/v1", kind: "ResourceClaim", name: "claim-1", namespace: "team-a" };
      rec.warn(claimRef, "PrepareFailed", "TESSERA_DEVICE_UNKNOWN: x");
      rec.warn({ apiVersion: "v1", kind: "Node", name: NODE }, "CheckpointMovedAside", "moved");
      await rec.idle();
      now += 120_000;
      rec.warn(claimRef, "PrepareFailed", "TESSERA_DEVICE_UNKNOWN: y");
      await rec.idle();
      const failed = log.records.filter((r) => r.level === "warn");
      if (failed.length > 0) throw new Error(`event writes failed: ${JSON.stringify(failed)}`);
      return undefined;
    },
  },
  {
    name: "kubelet plugin: claim source reads the claim of NodePrepareResources",
    identity: "agent",
    async run(api, kc) {
      api.seed("resource.k8s.io", "v1", "resourceclaims", CLAIM);
      const claim = await createKubeClaimSource(kc).get("team-a", "claim-1");
      if (claim.metadata.uid !== CLAIM.metadata.uid) throw new Error("claim source returned another claim");
    },
  },
  {
    name: "ResourceSlice publisher: publish, restore a slice deleted behind its back, shrink, empty",
    identity: "agent",
    async run(api, kc) {
      api.seed("", "v1", "nodes", { apiVersion: "v1", kind: "Node", metadata: { name: NODE } });
      const cfg = resolveNodeConfig(parseFlags(["--discovery", "fixture:h100-sxm-8x", "--node-name", NODE], NODE_FLAGS, {}));
      const inv = (await createDiscovery(cfg).discover()) as Inventory;
      const backend = clusterSliceBackend(kc, NODE, DRIVER);
      const pub: Publisher = startSlicePublisher({ backend, inventory: inv, driverName: DRIVER, nodeName: NODE, migMode: "static", debounceMs: 10, backoffInitialMs: 10 });
      const slices = (): Rec[] => api.objects("resource.k8s.io", "resourceslices");
      try {
        await pub.synced();
        await until(() => slices().length > 0, "the first slices");
        // The kubelet deletes a node's slices when it restarts; the publisher's watch restores them.
        const count = slices().length;
        const mark = api.requests.length;
        api.remove("resource.k8s.io", "resourceslices", String(at(slices()[0], "metadata", "name")));
        await until(() => slices().length === count && api.requests.slice(mark).some((r) => r.verb === "create"), "the deleted slice to be restored");
        pub.update({ ...inv, gpus: inv.gpus.slice(0, 2) });
        await pub.synced();
        pub.update({ ...inv, gpus: [] });
        await pub.synced();
      } finally {
        await pub.stop();
      }
      const policy = one(BASE, "ValidatingAdmissionPolicy");
      const sa = one(BASE, "ServiceAccount", "tessera");
      for (const s of slices()) {
        const verdict = admit(policy, { operation: "CREATE", username: `system:serviceaccount:${sa.metadata.namespace}:${sa.metadata.name}`, node: NODE, object: s });
        if (verdict.denied.length > 0) throw new Error(`the publisher wrote a slice the own-node policy denies: ${verdict.denied.join("; ")}`);
      }
    },
  },
  {
    name: "proxy: InferencePool and its Pods on this node, watched",
    identity: "proxy",
    async run(api, kc) {
      api.seed("inference.networking.k8s.io", "v1", "inferencepools", {
        apiVersion: "inference.networking.k8s.io/v1", kind: "InferencePool", metadata: { name: "pool", namespace: POOL_NAMESPACE },
        spec: { selector: { matchLabels: { app: "vllm" } }, targetPorts: [{ number: 8000 }] },
      });
      const pod = (name: string, ip: string): Rec => ({
        apiVersion: "v1", kind: "Pod", metadata: { name, namespace: POOL_NAMESPACE, labels: { app: "vllm" } },
        spec: { nodeName: NODE }, status: { podIP: ip, conditions: [{ type: "Ready", status: "True" }] },
      });
      api.seed("", "v1", "pods", pod("vllm-0", "10.0.0.7"));
      const src: PoolSource = createInferencePoolSource({ kube: kc, pool: `${POOL_NAMESPACE}/pool`, nodeName: NODE, restartDelayMs: 50 });
      let urls: string[] = [];
      try {
        await src.start((u) => (urls = u));
        await until(() => urls.length === 1, "the first endpoint");
        api.seed("", "v1", "pods", pod("vllm-1", "10.0.0.8"));
        await until(() => urls.length === 2, "the second endpoint through the pod watch");
      } finally {
        await src.stop();
      }
    },
  },
  {
    name: "diag explain: slices, claims and DeviceClasses of the cluster, with the shipped role",
    identity: "agent",
    async run(api, _kc, dir) {
      const io = captureIO({});
      const code = await main(["diag", "explain", "-f", join(ROOT, "deploy", "examples", "one-gpu.yaml"), "--kube", `kubeconfig:${join(dir, "kubeconfig")}`, "--node-name", NODE], io);
      if (code !== 0) throw new Error(`diag explain exited ${code}: ${io.err.join("")}`);
      void api;
      return undefined;
    },
  },
];

t.test("RBAC: a 403 names the verb, the resource and the missing permission", async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.close());
  api.authorize = (r) => requestKey(r) !== "list resource.k8s.io/deviceclasses";
  const dir = mkdtempSync(join(tmpdir(), "tessera-forbidden-"));
  await api.writeKubeconfig(join(dir, "kubeconfig"));
  const io = captureIO({});
  const code = await main(["diag", "explain", "-f", join(ROOT, "deploy", "examples", "one-gpu.yaml"), "--kube", `kubeconfig:${join(dir, "kubeconfig")}`, "--node-name", NODE], io);
  t.equal(code, 1, "exit 1");
  t.equal(io.err.join("").trim(), 'TESSERA_KUBE_FORBIDDEN: list deviceclasses: the service account lacks "list" on resource.k8s.io/deviceclasses; see docs/install.md', "one line a script can match");
});

t.test("RBAC: the agent's ClusterRole and the proxy's Role are exactly the issue's lists and every flow stays inside its own", async (t) => {
  const role = one(BASE, "ClusterRole");
  const granted = roleTriples(role);
  t.same([...granted].sort(), [...ISSUE_ROLE].sort(), "ClusterRole rules = what the agent calls, per the issue");
  const proxyRole = one(BASE, "Role", "tessera-proxy");
  const proxyGranted = roleTriples(proxyRole);
  t.same([...proxyGranted].sort(), [...PROXY_ROLE].sort(), "the proxy's Role = what the proxy calls: reads only");
  const proxySa = one(BASE, "ServiceAccount", "tessera-proxy");
  const proxyDs = one(BASE, "DaemonSet", "tessera-proxy");
  t.equal(at(proxyDs, "spec", "template", "spec", "serviceAccountName"), proxySa.metadata.name, "the proxy pod runs as its own ServiceAccount");
  t.same(at(one(BASE, "RoleBinding", "tessera-proxy"), "subjects"), [{ kind: "ServiceAccount", name: proxySa.metadata.name, namespace: proxySa.metadata.namespace }], "the RoleBinding names only the proxy's ServiceAccount");
  t.same(at(one(BASE, "RoleBinding", "tessera-proxy"), "roleRef"), { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: proxyRole.metadata.name });
  t.equal(proxyRole.metadata.namespace, POOL_NAMESPACE, `the Role sits in the pool's namespace (${POOL_NAMESPACE}), so the proxy lists Pods there only`);
  for (const r of [...arr(role.rules), ...arr(proxyRole.rules)]) {
    t.notOk(arr(rec(r).verbs).includes("*") || arr(rec(r).resources).includes("*") || arr(rec(r).apiGroups).includes("*"), "no wildcards");
    t.equal(rec(r).resourceNames, undefined, "no resourceNames (they cannot express 'this node')");
  }
  const crb = one(BASE, "ClusterRoleBinding");
  const sa = one(BASE, "ServiceAccount", "tessera");
  t.same(at(crb, "roleRef"), { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: role.metadata.name });
  t.same(at(crb, "subjects"), [{ kind: "ServiceAccount", name: sa.metadata.name, namespace: sa.metadata.namespace }]);
  t.equal(at(one(BASE, "DaemonSet", "tessera-node"), "spec", "template", "spec", "serviceAccountName"), sa.metadata.name);
  t.notOk(arr(at(crb, "subjects")).some((x) => rec(x).name === proxySa.metadata.name), "the proxy's ServiceAccount is not bound to the agent's ClusterRole (cannot write ResourceSlices)");
  t.match(String(at(one(BASE, "ValidatingAdmissionPolicy"), "spec", "matchConditions", 0, "expression")), `"system:serviceaccount:${sa.metadata.namespace}:${sa.metadata.name}"`, "the admission policy names the same identity");

  const api = await startFakeApiServer();
  t.teardown(() => api.close());
  const outside: string[] = [];
  let identity: Flow["identity"] = "agent";
  api.authorize = (r) => {
    // a Role grants only inside its namespace; the ClusterRole grants everywhere
    const ok = identity === "agent" ? granted.has(requestKey(r)) : proxyGranted.has(requestKey(r)) && r.namespace === proxyRole.metadata.namespace;
    if (!ok) outside.push(`${identity}: ${requestKey(r)}${r.namespace ? ` in ${r.namespace}` : " (cluster-wide)"}`);
    return ok;
  };
  // The authorizer really enforces: a call outside the role is refused.
  const probe = await fetch(`${api.url}/api/v1/namespaces/kube-system/secrets`);
  t.equal(probe.status, 403, "list secrets is refused by the enforcing API server");
  outside.length = 0;
  api.requests.length = 0;

  const dir = mkdtempSync(join(tmpdir(), "tessera-deploy-"));
  const kubeconfig = join(dir, "kubeconfig");
  await api.writeKubeconfig(kubeconfig);
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  for (const flow of FLOWS) {
    identity = flow.identity;
    const before = api.requests.length;
    await flow.run(api, kc, dir);
    t.ok(api.requests.length > before, `${flow.name}: ran against the API server`);
  }
  t.same(outside, [], "no call outside the caller's own role (and the proxy's only in the pool's namespace)");
  const used = new Set(api.requests.map(requestKey));
  const unused = [...granted, ...proxyGranted].filter((k) => !used.has(k)).sort();
  t.same(unused, [], "every granted rule is requested by a flow (least privilege: remove the rule, or add the flow that needs it)");
});

// ---- the DaemonSet against the CLI (NODE_FLAGS) and contracts.md --------------------------------

function readContracts(): string {
  // The repository's own copy of the contracts (docs/contracts.md): a user's clone has nothing beside it.
  return readFileSync(join(ROOT, "docs", "contracts.md"), "utf8");
}

/** contracts.md "Files and sockets" rows: what -> default (with <kubelet-root> placeholders). */
function contractPaths(md: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of md.matchAll(/^\| ([a-zA-Z ()]+?) \| `([^`]+)` \|/gm)) out.set(String(m[1]), String(m[2]));
  return out;
}

/** The image's nvidia-cuda-mps-control wrapper (Dockerfile), which MPS_CONTROL names. */
const MPS_WRAPPER = "/usr/local/bin/nvidia-cuda-mps-control";
/** The body of one of the Dockerfile's inline wrapper scripts (COPY <<"SH" <path>). */
function imageWrapper(dockerfile: string, tool: string): string | undefined {
  return new RegExp(`<<"SH" ${tool.replace(/\//g, "\\/")}\n([\\s\\S]*?)\nSH\n`).exec(dockerfile)?.[1];
}

/** Env the agent container sets that are not flag mirrors, each with the reason it exists. */
const EXTRA_ENV: Record<string, string> = {
  NVIDIA_DRIVER_ROOT: "read by the image's nvidia-smi and nvidia-cuda-mps-control wrappers (Dockerfile), not by tessera",
  NODE_OPTIONS: "read by Node.js itself (AGENT_NODE_OPTIONS)",
};

t.test("DaemonSet: env names, paths and probes match the CLI's flags and contracts.md", async (t) => {
  const md = readContracts();
  const paths = contractPaths(md);
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { bin: Record<string, string> };
  const bin = Object.keys(pkg.bin)[0];
  const flagByEnv = new Map([...NODE_FLAGS, ...AGENT_FLAGS].filter((f) => f.env).map((f) => [String(f.env), f]));
  const sets: [string, Obj[]][] = [["base files", BASE], ...Object.entries(RENDERED)];
  for (const [name, objs] of sets) {
    const ds = one(objs, "DaemonSet", "tessera-node");
    const pod = rec(at(ds, "spec", "template", "spec"));
    const agent = container(ds, "agent");
    const env = envOf(agent);
    const fake = String(env.get("DISCOVERY")?.value ?? "").startsWith("fixture:");
    t.same([...(agent.command as string[]), ...(agent.args as string[])], [bin, "agent"], `${name}: runs \`tessera agent\``);
    t.match(md, /`tessera agent \[flags\]`/, "contracts.md names the agent verb");
    for (const [envName, e] of env) {
      const flag = flagByEnv.get(envName);
      t.ok(flag || EXTRA_ENV[envName], `${name}: env ${envName} is ${flag ? `the mirror of --${flag.name}` : EXTRA_ENV[envName] ?? "UNKNOWN to the CLI"}`);
    }
    t.equal(at(env.get("NODE_NAME"), "valueFrom", "fieldRef", "fieldPath"), "spec.nodeName", `${name}: NODE_NAME from the downward API`);
    t.equal(env.get("NODE_OPTIONS")?.value, AGENT_NODE_OPTIONS, `${name}: the agent runs with the Node options the footprint bench measures (${AGENT_NODE_OPTIONS})`);
    t.equal(at(env.get("POD_UID"), "valueFrom", "fieldRef", "fieldPath"), "metadata.uid", `${name}: POD_UID from the downward API`);
    // Surge: the new pod comes up beside the old one (per-pod sockets from POD_UID) before the
    // old one goes, so the kubelet always has a plugin on the node.
    t.same(at(ds, "spec", "updateStrategy"), { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } }, `${name}: surge updates, never a node without an agent`);
    t.match(md, new RegExp(`DRA driver name \\| \`${String(env.get("DRIVER_NAME")?.value).replace(/\./g, "\\.")}\``), `${name}: DRIVER_NAME is contracts.md's driver name`);
    // The CLI's own resolution of this env, compared with contracts.md's defaults.
    const literal: NodeJS.ProcessEnv = { NODE_NAME: "node-a" };
    for (const [k, e] of env) if (typeof e.value === "string") literal[k] = e.value;
    const cfg = resolveNodeConfig(parseFlags([], NODE_FLAGS, literal));
    const sub = (p: string): string => p.replace("<kubelet-root>", cfg.kubeletRoot);
    t.equal(cfg.kubeletRoot, paths.get("kubelet root"), `${name}: kubelet root`);
    t.equal(cfg.registrationSocket, sub(String(paths.get("registration socket"))), `${name}: registration socket`);
    t.equal(cfg.draSocket, sub(String(paths.get("DRA socket"))), `${name}: DRA socket`);
    t.equal(cfg.stateDir, sub(String(paths.get("state (checkpoint) dir"))), `${name}: state dir`);
    t.equal(cfg.cdiRoot, paths.get("CDI spec dir"), `${name}: CDI root`);
    t.equal(cfg.sysfsRoot, paths.get("sysfs root"), `${name}: sysfs root`);
    // Every path the agent writes is a host directory mounted at the same path, writable.
    const vols = new Map(arr(pod.volumes).map((v) => [String(rec(v).name), rec(v)]));
    const mountFor = (p: string): Rec | undefined =>
      arr(agent.volumeMounts).map(rec).filter((m) => p === m.mountPath || p.startsWith(`${String(m.mountPath)}/`)).sort((a, b) => String(b.mountPath).length - String(a.mountPath).length)[0];
    // The MPS directories of a claim: CDI specs name them by host path (pipe, log, shm as /dev/shm).
    const mpsDir = `${cfg.stateDir}/mps/0b9c6b1e-4d1e-4f57-9d0f-1e2a3b4c5d6e/shm`;
    for (const [what, p] of [["registration socket", cfg.registrationSocket], ["DRA socket", cfg.draSocket], ["checkpoint", cfg.checkpointFile], ["CDI specs", `${cfg.cdiRoot}/x.json`], ["MPS pipe, log and shm directories", mpsDir]] as const) {
      const m = mountFor(p);
      t.ok(m && !m.readOnly, `${name}: ${what} (${p}) lies on a writable mount`);
      t.equal(at(vols.get(String(m?.name)), "hostPath", "path"), m?.mountPath, `${name}: ${what}: host path = container path`);
    }
    const plugins = mountFor(cfg.draSocket);
    t.equal(plugins?.mountPropagation, fake ? "HostToContainer" : "Bidirectional", `${name}: plugins dir propagation`);
    if (fake) {
      const fixture = String(env.get("DISCOVERY")?.value).slice("fixture:".length);
      t.match(md, `\`${fixture}\``, `${name}: fixture ${fixture} is one contracts.md requires`);
    } else {
      const sys = mountFor(cfg.sysfsRoot);
      t.ok(sys?.readOnly && at(vols.get(String(sys.name)), "hostPath", "path") === "/sys", `${name}: /sys mounted read-only`);
      const driver = arr(agent.volumeMounts).map(rec).find((m) => m.mountPath === env.get("NVIDIA_DRIVER_ROOT")?.value);
      t.ok(driver?.readOnly, `${name}: the driver root is mounted read-only where the nvidia-smi wrapper looks`);
      t.equal(cfg.mpsControl, MPS_WRAPPER, `${name}: MPS_CONTROL is the image's nvidia-cuda-mps-control wrapper (it runs the driver root's own)`);
    }
    // Probes: httpGet to the agent's HTTP endpoint (contracts.md), at the port --http-listen binds.
    const httpPort = rec(arr(agent.ports).find((p) => rec(p).name === "agent-http"));
    const agentListen = String(env.get("HTTP_LISTEN")?.value ?? DEFAULT_HTTP_LISTEN);
    t.equal(httpPort.containerPort, Number(agentListen.split(":").pop()), `${name}: agent-http containerPort = --http-listen port`);
    t.notOk(agentListen.startsWith("127.") || agentListen.startsWith("localhost"), `${name}: HTTP bound beyond loopback (the kubelet dials the pod IP)`);
    for (const [probe, p] of [["startupProbe", "/healthz"], ["livenessProbe", "/healthz"], ["readinessProbe", "/readyz"]] as const) {
      t.same(at(agent, probe, "httpGet"), { path: p, port: "agent-http" }, `${name}: ${probe} is httpGet ${p}`);
      t.equal(at(agent, probe, "exec"), undefined, `${name}: ${probe} spawns nothing`);
    }
    t.match(md, /agent HTTP \(`\/healthz`, `\/readyz`, `\/metrics`\)/, "contracts.md: the agent HTTP endpoint");
    t.same(at(ds, "spec", "updateStrategy", "rollingUpdate"), { maxSurge: 1, maxUnavailable: 0 }, `${name}: surge upgrades`);
    t.equal(flagByEnv.get("POD_UID")?.name, "rolling-update-uid", `${name}: POD_UID is --rolling-update-uid`);
    t.match(md, /`tessera diag ping`/, "contracts.md: diag ping exists");
    const usage = String((await import("../agent/cli/main.js")).USAGE);
    t.match(usage, /tessera diag ping/, "the CLI dispatches diag ping");
    t.ok(Number(pod.terminationGracePeriodSeconds) >= SHUTDOWN_DEADLINE_MS / 1000 + 10, `${name}: grace period covers the agent's ${SHUTDOWN_DEADLINE_MS} ms shutdown deadline + slice cleanup`);
    // Proxy: its env is the mirror of `tessera proxy` flags, and the CLI accepts the result.
    const proxyDs = one(objs, "DaemonSet", "tessera-proxy");
    t.same(arr(at(ds, "spec", "template", "spec", "containers")).map((c) => rec(c).name), ["agent"], `${name}: the agent pod runs the agent only`);
    const proxy = container(proxyDs, "proxy");
    t.same([...(proxy.command as string[]), ...(proxy.args as string[])], [bin, "proxy"], `${name}: runs \`tessera proxy\``);
    t.match(md, /`tessera proxy --listen <host:port>/, "contracts.md names the proxy's --listen");
    const penv = envOf(proxy);
    t.equal(at(penv.get("NODE_NAME"), "valueFrom", "fieldRef", "fieldPath"), "spec.nodeName", `${name}: proxy NODE_NAME from the downward API`);
    const listenFlag = PROXY_FLAGS.find((f) => f.name === "listen")?.env ?? "";
    t.ok(listenFlag, "`tessera proxy --listen` has an env mirror");
    const mirrors = new Set(PROXY_FLAGS.map((f) => f.env));
    for (const envName of penv.keys()) t.ok(mirrors.has(envName), `${name}: proxy env ${envName} mirrors a \`tessera proxy\` flag`);
    const literalP: NodeJS.ProcessEnv = {};
    for (const [k, e] of penv) if (typeof e.value === "string") literalP[k] = e.value;
    t.doesNotThrow(() => proxyOptionsFromArgs(parseFlags([], PROXY_FLAGS, literalP)), `${name}: \`tessera proxy\` accepts this env (one endpoint source)`);
    const listen = String(penv.get(listenFlag)?.value ?? "");
    const port = rec(arr(proxy.ports)[0]);
    t.equal(Number(listen.split(":").pop()), port.containerPort, `${name}: ${listenFlag} port = containerPort`);
    const svc = one(objs, "Service");
    t.equal(at(svc, "spec", "internalTrafficPolicy"), "Local", `${name}: Service keeps traffic on the node`);
    t.equal(at(svc, "spec", "ports", 0, "targetPort"), port.name, `${name}: Service targets the proxy port`);
    const labels = rec(at(proxyDs, "spec", "template", "metadata", "labels"));
    for (const [k, v] of Object.entries(rec(at(svc, "spec", "selector")))) t.equal(labels[k], v, `${name}: Service selects the pods (${k})`);
    const agentLabels = rec(at(ds, "spec", "template", "metadata", "labels"));
    t.notOk(Object.entries(rec(at(svc, "spec", "selector"))).every(([k, v]) => agentLabels[k] === v), `${name}: the Service does not select the agent pods`);
    t.equal(at(proxy, "securityContext", "runAsNonRoot"), true, `${name}: proxy runs as non-root`);
    t.same(at(proxy, "securityContext", "capabilities", "drop"), ["ALL"], `${name}: proxy has no capabilities`);
    t.equal(arr(proxy.volumeMounts).length, 0, `${name}: proxy mounts nothing from the host`);
    for (const c of [agent, proxy]) {
      t.ok(at(c, "resources", "requests", "memory") && at(c, "resources", "limits", "memory"), `${name}: ${String(c.name)} has memory request and limit`);
      t.equal(at(c, "securityContext", "readOnlyRootFilesystem"), true, `${name}: ${String(c.name)} root filesystem is read-only`);
    }
  }
});

// ---- the image ---------------------------------------------------------------------------------

t.test("Dockerfile: multi-stage, Node LTS slim runtime, production deps only, no secrets", async (t) => {
  const text = readFileSync(join(ROOT, "Dockerfile"), "utf8");
  const args = new Map([...text.matchAll(/^ARG (\w+)=(\S+)/gm)].map((m) => [String(m[1]), String(m[2])]));
  const stages = text.split(/^(?=FROM )/m).filter((s) => s.startsWith("FROM "));
  t.ok(stages.length >= 2, "multi-stage");
  const image = (s: string): string => (/^FROM (\S+)/.exec(s)?.[1] ?? "").replace(/\$\{(\w+)\}/g, (_, n: string) => args.get(n) ?? "");
  const runtime = stages[stages.length - 1] ?? "";
  t.match(image(runtime), /^node:(22|24)(\.\d+)*-(bookworm-|trixie-)?slim$/, `runtime is a maintained Node.js LTS slim image (${image(runtime)})`);
  const build = stages.find((s) => /npm run build/.test(s)) ?? "";
  t.match(build, /npm ci/, "the build stage installs with npm ci");
  t.match(build, /COPY wasm-core/, "the build stage builds the .wasm");
  const depsStage = stages.find((s) => /npm ci[^\n]*--omit=dev/.test(s)) ?? "";
  const depsName = /^FROM \S+ AS (\w+)/.exec(depsStage)?.[1];
  t.ok(depsName && new RegExp(`COPY --from=${depsName} \\S*node_modules`).test(runtime), "runtime node_modules come from an --omit=dev install");
  for (const p of ["dist/agent", "dist/wasm/tessera.wasm", "protos", "fixtures", "bin"]) t.match(runtime, new RegExp(`COPY (--from=\\w+ )?\\S*${p.replace(/\./g, "\\.")}`), `runtime has ${p}`);
  t.notMatch(runtime, /^COPY (--from=\w+ )?\. /m, "runtime does not copy the whole context");
  t.notMatch(runtime, /assemblyscript|typescript|\basc\b/i, "no build tools in the runtime stage");
  t.notMatch(text, /^(ARG|ENV) \w*(SECRET|TOKEN|PASSWORD|CREDENTIAL|API_KEY)/im, "no secrets passed as ARG/ENV");
  t.notMatch([...runtime.matchAll(/^USER (\S+)/gm)].pop()?.[1] ?? "root", /^(root|0)$/, "the image's default user is not root");
  for (const tool of ["/usr/local/bin/nvidia-smi", MPS_WRAPPER]) {
    const wrapper = imageWrapper(text, tool);
    t.ok(wrapper, `the ${tool} wrapper is in the image`);
    t.equal(spawnSync("sh", ["-n"], { input: wrapper ?? "", encoding: "utf8" }).status, 0, `the ${tool} wrapper is valid sh`);
    t.match(wrapper ?? "", /NVIDIA_DRIVER_ROOT:-\/driver-root/, `${tool}: runs in the driver root the DaemonSet mounts`);
  }
  const ignore = readFileSync(join(ROOT, ".dockerignore"), "utf8").split("\n").map((l) => l.trim());
  for (const p of [".git", "node_modules", "dist", ".env"]) t.ok(ignore.includes(p), `.dockerignore keeps ${p} out of the build context`);
});

t.test("docs/install.md: the paths and diag verbs it names exist", async (t) => {
  const doc = readFileSync(join(ROOT, "docs/install.md"), "utf8");
  const md = readContracts();
  const paths = [...new Set([...doc.matchAll(/\bdeploy\/[\w/.-]+/g)].map((m) => m[0].replace(/[/.]+$/, "")))];
  t.ok(paths.includes("deploy/overlays/nvidia") && paths.includes("deploy/overlays/fake"), "both overlays are documented");
  for (const p of paths) t.ok(existsSync(join(ROOT, p)), `${p} exists`);
  const verbs = [...new Set([...doc.matchAll(/tessera diag (\w+)/g)].map((m) => String(m[1])))];
  t.ok(verbs.length >= 4, "troubleshooting uses tessera diag");
  for (const v of verbs) t.match(md, new RegExp(`\`tessera diag ${v}\\b`), `tessera diag ${v} is a contracts.md verb`);
  // The Helm commands: the chart they name, and every value they set, exist.
  const values = rec(parseDocs(readFileSync(join(CHART, "values.yaml"), "utf8"), "values.yaml")[0]);
  const installs = [...doc.matchAll(/helm (?:install|upgrade) tessera (\S+)/g)].map((m) => String(m[1]));
  t.ok(installs.length >= 3, "helm install is documented (full, DRA-only, fake)");
  for (const c of installs) t.equal(c, "deploy/helm/tessera", `helm install names the chart (${c})`);
  t.match(doc, /--set proxy\.enabled=false/, "the DRA-only install is documented");
  const setKeys = [...new Set([...doc.matchAll(/--set ([\w.]+)=/g)].map((m) => String(m[1])))];
  const hasPath = (path: string): boolean => {
    let o: unknown = values;
    return path.split(".").every((part) => part in rec(o) && ((o = rec(o)[part]), true));
  };
  for (const k of setKeys) t.ok(hasPath(k), `--set ${k}: a value of the chart`);
  for (const k of Object.keys(values)) t.match(doc, new RegExp(`\`${k}[.\`]`), `values.yaml's ${k} is documented`);
  for (const topic of ["## Prerequisites", "## Install with Helm", "## Install on a GPU cluster", "## Install on kind", "## Verify", "## Upgrade", "## Uninstall", "## Troubleshooting"]) t.ok(doc.includes(topic), `section ${topic}`);
});

// ---- the Helm chart (deploy/helm/tessera), rendered and linted by the pinned helm ----------------

const helm = findTool(HELM);
/** .Capabilities.KubeVersion for template and lint: a `go install`ed helm has no version ldflags
 *  and would claim Kubernetes v1.20, which the chart's kubeVersion (>= 1.34) refuses. */
const KUBE_VERSION = "1.37.2";
/** What Helm's bookkeeping adds to every object's labels; nothing else may differ from kustomize. */
const HELM_LABELS = ["app.kubernetes.io/managed-by", "helm.sh/chart"];

function helmRun(args: string[]): { status: number | null; stdout: string; stderr: string } {
  if ("missing" in helm) throw new Error(helm.missing);
  const r = spawnSync(helm.path, args, { encoding: "utf8", timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr || (r.error?.message ?? "") };
}

/** `helm template` of the chart with these flags; throws with helm's message when it refuses. */
function helmTemplate(flags: string[], namespace = NAMESPACE): Obj[] {
  const r = helmRun(["template", "tessera", CHART, "--namespace", namespace, "--kube-version", KUBE_VERSION, ...flags]);
  if (r.status !== 0) throw new Error(`helm template ${flags.join(" ")}: ${r.stderr.trim()}`);
  return parseDocs(r.stdout, `helm template ${flags.join(" ")}`);
}

/** Order of entries in lists keyed by `name` (env, mounts, volumes, containers) means nothing to the API server. */
function normalize(x: unknown): unknown {
  if (Array.isArray(x)) {
    const items = x.map(normalize);
    const named = items.length > 0 && items.every((i) => typeof rec(i).name === "string");
    return named ? [...items].sort((a, b) => String(rec(a).name).localeCompare(String(rec(b).name))) : items;
  }
  if (x !== null && typeof x === "object") return Object.fromEntries(Object.entries(x as Rec).map(([k, v]) => [k, normalize(v)]));
  return x;
}

const objKey = (o: Obj): string => `${o.kind}/${o.metadata.name}`;

/** The chart's render without Helm's two bookkeeping labels, after checking they are there. */
function withoutHelmLabels(t: Tap, objs: Obj[]): Obj[] {
  const chart = rec(parseDocs(readFileSync(join(CHART, "Chart.yaml"), "utf8"), "Chart.yaml")[0]);
  return objs.map((o) => {
    const labels = { ...rec(o.metadata.labels) };
    t.equal(labels["app.kubernetes.io/managed-by"], "Helm", `${objKey(o)}: managed-by Helm (what \`helm install --take-ownership\` and adoption check)`);
    t.equal(labels["helm.sh/chart"], `tessera-${String(chart.version)}`, `${objKey(o)}: helm.sh/chart`);
    for (const l of HELM_LABELS) delete labels[l];
    return { ...o, metadata: { ...o.metadata, labels } };
  });
}

function sameObjects(t: Tap, what: string, got: Obj[], want: Obj[]): void {
  t.same(got.map(objKey).sort(), want.map(objKey).sort(), `${what}: the same objects`);
  for (const w of want) {
    const g = got.find((o) => objKey(o) === objKey(w));
    if (g) t.same(normalize(g), normalize(w), `${what}: ${objKey(w)} equal`);
  }
}

t.test("helm lint passes on the chart, with its defaults and with values-fake.yaml", async (t) => {
  if ("missing" in helm) return t.fail(helm.missing);
  for (const extra of [[], ["-f", FAKE_VALUES]]) {
    const r = helmRun(["lint", CHART, "--strict", "--kube-version", KUBE_VERSION, ...extra]);
    t.equal(r.status, 0, `helm lint --strict ${extra.join(" ")}: ${r.stdout.trim().split("\n").pop() ?? ""} ${r.stderr.trim()}`);
    t.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  }
});

t.test("helm template: the defaults render overlays/nvidia and values-fake.yaml renders overlays/fake, object for object", async (t) => {
  if ("missing" in helm) return t.fail(helm.missing);
  if (typeof kustomize === "string") return t.fail(kustomize);
  t.comment(`helm ${HELM.version} (${helm.path}) against ${kustomize.name}`);
  sameObjects(t, "chart defaults vs overlays/nvidia", withoutHelmLabels(t, helmTemplate([])), RENDERED["overlays/nvidia"] ?? []);
  sameObjects(t, "values-fake.yaml vs overlays/fake", withoutHelmLabels(t, helmTemplate(["-f", FAKE_VALUES])), RENDERED["overlays/fake"] ?? []);
});

t.test("helm template: proxy.enabled=false is a DRA-driver-only install", async (t) => {
  if ("missing" in helm) return t.fail(helm.missing);
  const full = helmTemplate([]);
  const dra = helmTemplate(["--set", "proxy.enabled=false"]);
  validateObjects(t, "DRA-only", dra);
  const proxyObjects = ["DaemonSet/tessera-proxy", "ServiceAccount/tessera-proxy", "Role/tessera-proxy", "RoleBinding/tessera-proxy", "Service/tessera-proxy"];
  for (const k of proxyObjects) t.ok(full.some((o) => objKey(o) === k), `the full install has ${k}`);
  t.same(dra.filter((o) => proxyObjects.includes(objKey(o)) || o.metadata.name === "tessera-proxy" || ["Role", "RoleBinding", "Service"].includes(o.kind)).map(objKey), [], "no proxy DaemonSet, ServiceAccount, Role, RoleBinding or Service");
  t.same(dra.map(objKey).sort(), full.map(objKey).filter((k) => !proxyObjects.includes(k)).sort(), "everything else is installed");
  const ds = one(dra, "DaemonSet", "tessera-node");
  t.same(arr(at(ds, "spec", "template", "spec", "containers")).map((c) => rec(c).name), ["agent"], "only the agent container");
  t.same(container(ds, "agent"), container(one(full, "DaemonSet", "tessera-node"), "agent"), "the agent is the same as in the full install");
  t.same([...roleTriples(one(dra, "ClusterRole"))].sort(), [...roleTriples(one(full, "ClusterRole"))].sort(), "the agent's ClusterRole is the same: the proxy never had a rule there");
});

t.test("helm template: the ServiceMonitor is off by default and, when on, scrapes every node pod's agent", async (t) => {
  if ("missing" in helm) return t.fail(helm.missing);
  const plain = helmTemplate([]);
  t.notOk(plain.some((o) => o.kind === "ServiceMonitor" || o.metadata.name === "tessera-metrics"), "default: no ServiceMonitor, no metrics Service");
  t.notOk(envOf(container(one(plain, "DaemonSet", "tessera-node"), "agent")).has("HTTP_LISTEN"), "default: the agent's own --http-listen default");
  const variants: [string[], number][] = [
    [["--set", "serviceMonitor.enabled=true"], 9477],
    [["--set", "serviceMonitor.enabled=true", "--set", "metrics.port=9500", "--set", "serviceMonitor.labels.release=prom"], 9500],
  ];
  for (const [flags, port] of variants) {
    const objs = helmTemplate(flags);
    const what = flags.filter((f) => f !== "--set").join(",");
    validateObjects(t, what, objs.filter((o) => o.kind !== "ServiceMonitor")); // no schema for monitoring.coreos.com here: checked below
    const ds = one(objs, "DaemonSet", "tessera-node");
    const agent = container(ds, "agent");
    const listen = envOf(agent).get("HTTP_LISTEN")?.value;
    t.equal(listen, port === 9477 ? undefined : `0.0.0.0:${port}`, `${what}: HTTP_LISTEN`);
    t.equal(rec(arr(agent.ports).find((p) => rec(p).name === "agent-http")).containerPort, port, `${what}: the probes' agent-http port is the port the agent listens on`);
    const svc = one(objs, "Service", "tessera-metrics");
    t.equal(at(svc, "spec", "clusterIP"), "None", `${what}: headless, one target per pod`);
    t.same(at(svc, "spec", "ports"), [{ name: "metrics", port, targetPort: port, protocol: "TCP" }], `${what}: the agent's metrics port`);
    const podLabels = rec(at(ds, "spec", "template", "metadata", "labels"));
    for (const [k, v] of Object.entries(rec(at(svc, "spec", "selector")))) t.equal(podLabels[k], v, `${what}: metrics Service selects the node pods (${k})`);
    const sm = one(objs, "ServiceMonitor");
    t.equal(sm.apiVersion, "monitoring.coreos.com/v1");
    t.equal(sm.metadata.namespace, NAMESPACE);
    const selects = (o: Obj): boolean => Object.entries(rec(at(sm, "spec", "selector", "matchLabels"))).every(([k, v]) => rec(o.metadata.labels)[k] === v);
    t.same(objs.filter((o) => o.kind === "Service" && selects(o)).map((o) => o.metadata.name), ["tessera-metrics"], `${what}: the ServiceMonitor selects the metrics Service only`);
    t.same(at(sm, "spec", "namespaceSelector", "matchNames"), [NAMESPACE]);
    t.same(arr(at(sm, "spec", "endpoints")).map((e) => [rec(e).port, rec(e).path]), [["metrics", "/metrics"]], `${what}: scrapes /metrics on the named Service port`);
    if (flags.includes("serviceMonitor.labels.release=prom")) t.equal(rec(sm.metadata.labels).release, "prom", `${what}: extra labels for the Prometheus selector`);
  }
});

t.test("helm template: values reach the agent as the CLI reads them, in the release namespace", async (t) => {
  if ("missing" in helm) return t.fail(helm.missing);
  const ns = "gpu-system";
  const values = {
    kubeletRoot: "/var/lib/k0s/kubelet", cdiRoot: "/run/cdi", driverRoot: "/run/nvidia/driver", migMode: "dynamic", gpuSharing: "consumable",
    logLevel: "debug", "image.repository": "registry.example/team/tessera", "image.tag": "1.2.3", "image.pullPolicy": "Always",
    "proxy.inferencePool": "models/llama",
  };
  const objs = helmTemplate(Object.entries(values).flatMap(([k, v]) => ["--set", `${k}=${v}`]), ns);
  validateObjects(t, "custom values", objs, ns, "models");
  t.equal(one(objs, "Namespace").metadata.name, ns, "the Namespace is the release namespace");
  const ds = one(objs, "DaemonSet", "tessera-node");
  const proxyDs = one(objs, "DaemonSet", "tessera-proxy");
  const agent = container(ds, "agent");
  const env = envOf(agent);
  const literal: NodeJS.ProcessEnv = { NODE_NAME: "node-a" };
  for (const [k, e] of env) if (typeof e.value === "string") literal[k] = e.value;
  const cfg = resolveNodeConfig(parseFlags([], NODE_FLAGS, literal));
  t.equal(cfg.kubeletRoot, values.kubeletRoot, "kubelet root");
  t.equal(cfg.cdiRoot, values.cdiRoot, "CDI root");
  t.equal(cfg.migMode, "dynamic", "MIG mode");
  t.equal(cfg.logLevel, "debug", "log level");
  t.equal(cfg.gpuSharing, "consumable", "GPU sharing (--gpu-sharing)");
  const flagEnvs = new Set(NODE_FLAGS.map((f) => f.env));
  for (const k of env.keys()) t.ok(flagEnvs.has(k) || EXTRA_ENV[k], `env ${k} is a flag mirror (or a known extra)`);
  t.notOk(envOf(container(one(helmTemplate([]), "DaemonSet", "tessera-node"), "agent")).has("GPU_SHARING"), "gpuSharing none: the agent's default, no env");
  const vols = new Map(arr(at(ds, "spec", "template", "spec", "volumes")).map((v) => [String(rec(v).name), rec(v)]));
  for (const [what, p] of [["registration socket", cfg.registrationSocket], ["DRA socket", cfg.draSocket], ["checkpoint", cfg.checkpointFile], ["CDI specs", `${cfg.cdiRoot}/x.json`]] as const) {
    const m = arr(agent.volumeMounts).map(rec).find((v) => p.startsWith(`${String(v.mountPath)}/`));
    t.ok(m && !m.readOnly, `${what} (${p}) lies on a writable mount`);
    t.equal(at(vols.get(String(m?.name)), "hostPath", "path"), m?.mountPath, `${what}: host path = container path`);
  }
  t.equal(at(vols.get("driver-root"), "hostPath", "path"), values.driverRoot, "the driver root volume");
  for (const [c, pod] of [["agent", ds], ["proxy", proxyDs]] as const) {
    t.equal(container(pod, c).image, "registry.example/team/tessera:1.2.3", `${c} image`);
    t.equal(container(pod, c).imagePullPolicy, "Always", `${c} pull policy`);
  }
  // The proxy's Role follows the pool: it must sit in the namespace the proxy lists the pool in.
  t.equal(envOf(container(proxyDs, "proxy")).get("INFERENCE_POOL")?.value, "models/llama", "the proxy routes for the pool");
  const proxySa = one(objs, "ServiceAccount", "tessera-proxy");
  t.equal(proxySa.metadata.namespace, ns, "the proxy's ServiceAccount is in the release namespace");
  t.equal(at(proxyDs, "spec", "template", "spec", "serviceAccountName"), proxySa.metadata.name, "the proxy runs as its own ServiceAccount");
  t.equal(one(objs, "Role", "tessera-proxy").metadata.namespace, "models", "the proxy's Role is in the pool's namespace");
  const proxyBinding = one(objs, "RoleBinding", "tessera-proxy");
  t.equal(proxyBinding.metadata.namespace, "models", "and so is its RoleBinding");
  t.same(at(proxyBinding, "subjects"), [{ kind: "ServiceAccount", name: proxySa.metadata.name, namespace: ns }], "the RoleBinding names the release's proxy ServiceAccount");
  const sa = one(objs, "ServiceAccount", "tessera");
  t.same(at(one(objs, "ClusterRoleBinding"), "subjects"), [{ kind: "ServiceAccount", name: sa.metadata.name, namespace: ns }], "the binding names the release's ServiceAccount");
  const policy = one(objs, "ValidatingAdmissionPolicy");
  const me = `system:serviceaccount:${ns}:${sa.metadata.name}`;
  const own = admit(policy, { operation: "CREATE", username: me, node: "a", object: { spec: { driver: DRIVER, nodeName: "a" } } });
  const other = admit(policy, { operation: "CREATE", username: me, node: "a", object: { spec: { driver: DRIVER, nodeName: "b" } } });
  t.same(own, { matched: true, denied: [] }, "the own-node policy applies to this namespace's ServiceAccount and admits its own node");
  t.ok(other.matched && other.denied.length === 1, "and denies another node's slice");
  t.same(admit(policy, { operation: "CREATE", username: `system:serviceaccount:${NAMESPACE}:tessera`, node: "a", object: { spec: { driver: DRIVER, nodeName: "b" } } }).matched, false, "not keyed to tessera-system");
});

t.test("DeviceClasses carry extendedResourceName (pods ask resources.limits) and it can be turned off", async (t) => {
  if ("missing" in helm) return t.fail(helm.missing);
  // k8s.io/kubernetes pkg/apis/core/v1/helper IsExtendedResourceName: has a "/", outside
  // kubernetes.io, and "requests.<name>" is a qualified name (DNS-subdomain prefix / 63-char name).
  const qualifiedName = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
  const names = BASE.filter((o) => o.kind === "DeviceClass").map((c) => String(at(c, "spec", "extendedResourceName")));
  t.same(names.sort(), ["gpu.tessera.dev/gpu", "gpu.tessera.dev/mig"], "deploy/base: one extended resource per class");
  for (const n of names) t.ok(qualifiedName.test(`requests.${n}`) && !n.includes("kubernetes.io/"), `${n} is an extended resource name the API server accepts`);
  const off = helmTemplate(["--set", "deviceClasses.gpu.extendedResourceName=", "--set", "deviceClasses.mig.extendedResourceName=gpu.tessera.dev/mig-any"]);
  t.equal(at(one(off, "DeviceClass", "gpu.tessera.dev"), "spec", "extendedResourceName"), undefined, '"" leaves the field out');
  t.equal(at(one(off, "DeviceClass", "mig.tessera.dev"), "spec", "extendedResourceName"), "gpu.tessera.dev/mig-any", "a name of one's own");
});

t.test("the chart refuses bad values before rendering, naming the value", async (t) => {
  if ("missing" in helm) return t.fail(helm.missing);
  const cases: [string[], RegExp][] = [
    [["migMode=bogus"], /migMode.*static.*dynamic/],
    [["gpuSharing=shared"], /gpuSharing/],
    [["logLevel=verbose"], /logLevel/],
    [["migmode=static"], /additional properties 'migmode'/],
    [["kubeletRoot=var/lib/kubelet"], /kubeletRoot/],
    [["kubeletRoot=/var/lib/../../etc"], /kubeletRoot/],
    [["cdiRoot=/var/run/cdi x"], /cdiRoot/],
    [["driverRoot=/run/nvidia/driver/"], /driverRoot/],
    [["discovery=fixture:../../etc"], /discovery/],
    [["discovery=nvidia-smi --help"], /discovery/],
    [["image.tag=1.0 ; rm"], /image\/tag/],
    [["proxy.inferencePool=no-slash"], /inferencePool/],
    [["proxy.inferencePool=", "proxy.endpoints=ftp://x"], /endpoints/],
    [["proxy.endpoints=http://127.0.0.1:8000"], /exactly one of proxy.inferencePool .* and proxy.endpoints/],
    [["proxy.inferencePool="], /exactly one of proxy.inferencePool .* and proxy.endpoints/],
    [["proxy.port=70000"], /proxy\/port/],
    [["metrics.port=0"], /metrics\/port/],
    [["serviceMonitor.interval=often"], /interval/],
    [["deviceClasses.gpu.extendedResourceName=kubernetes.io/gpu"], /extendedResourceName/],
    [["deviceClasses.gpu.extendedResourceName=gpu"], /extendedResourceName/],
  ];
  for (const [sets, want] of cases) {
    // Ports as numbers (--set), everything else as the strings a user's values file would hold.
    const flags = sets.flatMap((s) => [/^[\w.]+\.port=/.test(s) ? "--set" : "--set-string", s]);
    const r = helmRun(["template", "tessera", CHART, "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, ...flags]);
    t.not(r.status, 0, `${sets.join(" ")}: refused`);
    t.match(r.stderr, want, `${sets.join(" ")}: ${r.stderr.trim().split("\n").slice(-1)[0] ?? ""}`);
    t.notMatch(r.stderr, /goroutine|panic/, `${sets.join(" ")}: a message, not a crash`);
  }
});

t.test("epp: deploy/epp (kustomize) and the chart's epp.enabled=true render the same picker, pool and RBAC", async (t) => {
  if ("missing" in helm) return t.fail(helm.missing);
  if (typeof kustomize === "string") return t.fail(kustomize);
  const kust = parseDocs(kustomize.render(join(ROOT, "deploy", "epp")), "deploy/epp");
  const chart = withoutHelmLabels(t, helmTemplate(["--set", "epp.enabled=true"]));
  const eppKeys = new Set(kust.map(objKey));
  sameObjects(t, "epp: chart vs deploy/epp", chart.filter((o) => eppKeys.has(objKey(o)) || o.metadata.name === "tessera-epp" || o.kind === "InferencePool"), kust);
  t.notOk(helmTemplate([]).some((o) => o.metadata.name === "tessera-epp" || o.kind === "InferencePool"), "off by default: the default chart still renders overlays/nvidia");
  const pool = one(kust, "InferencePool");
  const dep = one(kust, "Deployment", "tessera-epp");
  const svc = one(kust, "Service", "tessera-epp");
  const ns = pool.metadata.namespace as string;
  validateObjects(t, "deploy/epp", kust.filter((o) => o.kind !== "InferencePool"), ns, ns); // no schema for inference.networking.k8s.io here: checked below
  t.equal(pool.apiVersion, "inference.networking.k8s.io/v1");
  t.same(at(pool, "spec", "endpointPickerRef"), { name: svc.metadata.name, port: { number: rec(arr(at(svc, "spec", "ports"))[0]).port } }, "the pool's endpointPickerRef names the picker's Service and port (a local reference: same namespace)");
  const epp = container(dep, "epp");
  const env = Object.fromEntries([...envOf(epp)].map(([k, v]) => [k, String(v.value)]));
  t.equal(env.INFERENCE_POOL, `${ns}/${pool.metadata.name}`, "the picker serves that pool");
  t.same(epp.args, ["epp"]);
  const opts = eppOptionsFromArgs(parseFlags([], EPP_FLAGS, env));
  t.equal(opts.listen, `0.0.0.0:${rec(arr(epp.ports).find((p) => rec(p).name === "grpc")).containerPort}`, "`tessera epp` accepts this env and listens on the grpc port");
  t.same([rec(at(epp, "readinessProbe", "grpc")).service, rec(at(epp, "livenessProbe", "grpc")).service], ["readiness", "liveness"], "gRPC probes ask the picker's health services");
  const podLabels = rec(at(dep, "spec", "template", "metadata", "labels"));
  for (const [k, v] of Object.entries(rec(at(svc, "spec", "selector")))) t.equal(podLabels[k], v, `the Service selects the picker pods (${k})`);
  t.ok(Number(at(dep, "spec", "replicas")) >= 2, "two replicas: active-active");
  t.same([...roleTriples(one(kust, "Role", "tessera-epp"))].sort(), ["list core/pods", "list inference.networking.k8s.io/inferencepools", "watch core/pods", "watch inference.networking.k8s.io/inferencepools"], "the Role: list/watch of pools and pods, nothing else");
  t.equal(at(dep, "spec", "template", "spec", "serviceAccountName"), rec(arr(at(one(kust, "RoleBinding", "tessera-epp"), "subjects"))[0]).name, "the Role is bound to the picker's ServiceAccount");
});
