// The `tessera` command line as an operator meets it: help and version, quiet pipes, the
// `--kube auto` hint, strict claim input (schema, stdin, documents, size and alias limits), the
// standalone store verbs (idempotent apply, get/list/delete) and `diag slices --kube`.
import t from "tap";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { VERB_FLAGS, type FlagSpec } from "../agent/common/config.js";
import { main, USAGE } from "../agent/cli/main.js";
import { captureIO } from "../agent/cli/io.js";
import { VERBS } from "../agent/cli/verbs.js";
import { MAX_INPUT_BYTES } from "../agent/cli/claim-input.js";
import { schemaErrors } from "../agent/kube/claim-schema.js";
import { createStandaloneStore } from "../agent/kube/standalone-store.js";
import { fixtureSlices } from "../agent/allocator/node-slices.js";
import { SUPPORTED_VERSIONS } from "../agent/plugin/registration.js";
import { CORE_ABI_VERSION } from "../agent/wasm/core.js";
import type { ResourceClaim } from "../agent/kube/types.js";
import { startFakeApiServer } from "./support/fake-apiserver.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const BIN = join(ROOT, "bin", "tessera.js");
const EXAMPLES = join(ROOT, "deploy", "examples");
const ONE_GPU = readFileSync(join(EXAMPLES, "one-gpu.yaml"), "utf8");

async function cli(argv: string[], env: NodeJS.ProcessEnv = {}, stdin?: string): Promise<{ code: number; out: string; err: string }> {
  const io = captureIO(env, stdin);
  const code = await main(argv, io);
  return { code, out: io.out.join(""), err: io.err.join("") };
}

function storeNode(): { dir: string; node: string[] } {
  const dir = mkdtempSync(join(tmpdir(), "tessera-cli-"));
  return { dir, node: ["--discovery", "fixture:h100-sxm-8x", "--node-name", "h100-sxm-8x", "--kube", `standalone:${dir}`] };
}

const claimYaml = (name: string, exactly: string): string =>
  `apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata:\n  name: ${name}\nspec:\n  devices:\n    requests:\n      - name: gpu\n        exactly:\n          deviceClassName: gpu.tessera.dev\n${exactly}`;

// ---- help and version ------------------------------------------------------------------------

const valueFor = (f: FlagSpec): string => (f.type === "int" ? "1" : f.type === "bool" ? "true" : "x");
const flagsIn = (text: string): Set<string> => new Set([...text.matchAll(/--([a-z][a-z-]*)/g)].map((m) => m[1] as string));

t.test("help: every verb's --help lists every flag it parses (env, default), help and usage agree", async (t) => {
  const bare = await cli([]);
  t.equal(bare.code, 0, "`tessera` alone exits 0");
  t.equal(bare.out, USAGE, "and prints the usage");
  for (const [name, spec] of Object.entries(VERB_FLAGS)) t.ok(VERBS.some((v) => v.name === name), `verb table has ${name}`);
  const universe = new Map<string, FlagSpec>();
  for (const specs of Object.values(VERB_FLAGS)) for (const f of specs) universe.set(f.name, f);
  for (const v of VERBS) {
    const words = v.name.split(" ");
    const help = await cli([...words, "--help"]);
    t.equal(help.code, 0, `${v.name} --help exits 0`);
    t.equal(help.err, "", `${v.name} --help: nothing on stderr`);
    t.same((await cli([...words, "-h"])).out, help.out, `${v.name} -h is --help`);
    t.same((await cli(["help", ...words])).out, help.out, `tessera help ${v.name} is the same text`);
    for (const f of VERB_FLAGS[v.name]) {
      const line = help.out.split("\n").find((l) => new RegExp(`^\\s+(-\\w, )?--${f.name}( |$)`).test(l)) ?? "";
      t.ok(line, `${v.name} --help lists --${f.name}`);
      if (f.env) t.match(line, `[$${f.env}]`, `${v.name} --${f.name}: env mirror ${f.env}`);
      if (f.default !== undefined && f.default !== "") t.match(line, `(default ${String(f.default)})`, `${v.name} --${f.name}: default`);
      if (f.short) t.match(line, `-${f.short}, --${f.name}`, `${v.name} --${f.name}: short -${f.short}`);
    }
    const examples = help.out.split("Examples:\n")[1]?.trim().split("\n") ?? [];
    t.equal(examples.length, 2, `${v.name}: two examples`);
    for (const e of examples) t.match(e, new RegExp(`tessera ${v.name}( |$)`), `${v.name} example runs the verb`);
    // What the verb really parses: each known flag, given with --help, is accepted exactly when help lists it.
    const listed = flagsIn(help.out);
    for (const f of universe.values()) {
      const r = await cli([...words, `--${f.name}=${valueFor(f)}`, "--help"]);
      if (listed.has(f.name)) t.equal(r.code, 0, `${v.name} parses --${f.name}, which its help lists`);
      else t.match(r, { code: 1, err: new RegExp(`^TESSERA_USAGE: unknown flag --${f.name}=`) }, `${v.name} rejects --${f.name}, which its help does not list`);
    }
    for (const f of listed) t.ok(USAGE.includes(`--${f}`), `the global usage names --${f} (of ${v.name})`);
    t.ok(USAGE.includes(`tessera ${v.name}`), `the global usage lists ${v.name}`);
  }
  for (const f of ["mig-mode", "log-level", "rediscover-interval", "strategy", "uid", "listen", "endpoints", "inference-pool", "weight-prefix"]) t.ok(USAGE.includes(`--${f} `), `usage names --${f}`);
  const group = await cli(["diag"]);
  t.equal(group.code, 0, "`tessera diag` prints the diag verbs");
  t.match(group.out, /tessera diag explain/);
  t.notMatch(group.out, /tessera proxy/);
  t.match(await cli(["help", "frobnicate"]), { code: 1, err: /^TESSERA_USAGE: unknown command "frobnicate"/ });
});

t.test("version: tessera, Node, WASM core ABI and digest, kubelet APIs; -o json, -ojson, -o=json", async (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
  for (const o of [["-o", "json"], ["-ojson"], ["-o=json"], ["--output", "json"]]) {
    const r = await cli(["version", ...o]);
    t.equal(r.code, 0, `version ${o.join(" ")}`);
    const v = JSON.parse(r.out) as { tessera: string; node: string; wasmCore: { abi: number; sha256: string }; kubeletApis: string[]; resourceApi: string };
    t.equal(v.tessera, pkg.version);
    t.equal(v.node, process.versions.node);
    t.equal(v.wasmCore.abi, CORE_ABI_VERSION);
    t.match(v.wasmCore.sha256, /^[0-9a-f]{64}$/);
    t.same(v.kubeletApis, [...SUPPORTED_VERSIONS]);
    t.equal(v.resourceApi, "resource.k8s.io/v1");
  }
  const table = await cli(["version", "-otable"]);
  t.match(table.out, new RegExp(`^tessera\\s+${pkg.version.replace(/\./g, "\\.")}\\n`));
  t.match(await cli(["version", "-oyaml"]), { code: 1, err: /^TESSERA_USAGE: -o yaml: expected table or json/ });
});

// ---- the process: pipes that close early ---------------------------------------------------------

t.test("tessera demo: the README's first command runs end to end and exits 0", async (t) => {
  // As a user runs it: the real executable, the default temporary directory (a long path: a claim
  // without MPS must never trip over the MPS socket-path bound, as it did once in diag prepare).
  const child = spawn(process.execPath, [BIN, "demo"], { stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "", TMPDIR: tmpdir() } });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
  t.equal(code, 0, `exit 0 (${(err + out).split("\n").filter((l) => l.includes("TESSERA_")).slice(0, 2).join(" | ")})`);
  t.match(out, /\$ tessera diag prepare demo\/train\n/, "the kubelet-style prepare step ran");
  t.match(out, /Demo complete: discovery, ResourceSlices, kubelet plugin, allocator, CDI and routing all ran\./);
  t.notMatch(out + err, /TESSERA_INTERNAL/, "no internal error on the way");
});

t.test("EPIPE: a reader that goes away before the output ends the command quietly", async (t) => {
  const { node } = storeNode();
  for (const verb of [["diag", "explain"], ["claims", "apply"]]) {
    const child = spawn(process.execPath, [BIN, ...verb, "-f", "-", ...node], { stdio: ["pipe", "pipe", "pipe"], env: { PATH: process.env.PATH ?? "" } });
    // The reader closes first; the verb writes only after it has read all of stdin, so its
    // first write meets a closed pipe.
    child.stdout.destroy();
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const closed = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
    child.stdin.end(ONE_GPU);
    t.equal(await closed, 0, `${verb.join(" ")} | (closed): the verb's own exit code`);
    t.equal(err, "", `${verb.join(" ")}: no stack trace, nothing on stderr`);
  }
});

// ---- --kube auto without a cluster ---------------------------------------------------------------

t.test("--kube auto with no in-cluster env and no kubeconfig: one TESSERA_CONFIG line naming what was looked for", async (t) => {
  const home = mkdtempSync(join(tmpdir(), "tessera-home-"));
  const claim = join(EXAMPLES, "one-gpu.yaml");
  const none = await cli(["diag", "explain", "-f", claim, "--node-name", "n1"], { HOME: home });
  t.equal(none.code, 1);
  t.match(none.err, /^TESSERA_CONFIG: --kube auto found no cluster: .*KUBERNETES_SERVICE_HOST.*\$KUBECONFIG \(unset\) and ~\/\.kube\/config \(.*\/\.kube\/config\); pass --kube kubeconfig:<path> .* --kube standalone:<dir>/);
  t.equal(none.err.trim().split("\n").length, 1, "one line");
  const missing = await cli(["diag", "explain", "-f", claim, "--node-name", "n1"], { HOME: home, KUBECONFIG: join(home, "nope.yaml") });
  t.match(missing.err, new RegExp(`^TESSERA_CONFIG: .*\\$KUBECONFIG \\(${join(home, "nope.yaml")}\\)`), "names the $KUBECONFIG it read");
  // With ~/.kube/config present, auto uses it (here: the fake API server).
  const api = await startFakeApiServer();
  t.teardown(() => api.close());
  mkdirSync(join(home, ".kube"));
  await api.writeKubeconfig(join(home, ".kube", "config"));
  for (const s of await fixtureSlices("l40s-1x", "static", "n1")) api.seed("resource.k8s.io", "v1", "resourceslices", s as never);
  const found = await cli(["diag", "explain", "-f", claim, "--node-name", "n1", "-o", "json"], { HOME: home });
  t.equal(found.code, 0, found.err);
  t.match(JSON.parse(found.out), { fits: true, slices: "cluster" }, "~/.kube/config found and used");
});

// ---- claim input ---------------------------------------------------------------------------------

t.test("claim input: strict fields and types with their paths, as kubectl --validate=strict", async (t) => {
  const { dir, node } = storeNode();
  const file = (name: string, text: string): string => {
    const f = join(dir, "..", `${name}-${process.pid}.yaml`);
    writeFileSync(f, text);
    return f;
  };
  const cases: [string, string, RegExp][] = [
    ["typo", claimYaml("c", "          cuont: 2\n"), /unknown field "spec\.devices\.requests\[0\]\.exactly\.cuont"/],
    ["count-type", claimYaml("c", '          count: "2"\n'), /spec\.devices\.requests\[0\]\.exactly\.count: expected an integer, got string "2"/],
    ["selectors-type", claimYaml("c", "          selectors: {}\n"), /spec\.devices\.requests\[0\]\.exactly\.selectors: expected a list, got an object/],
    ["cel-typo", claimYaml("c", "          selectors:\n            - cel: { expresion: 'true' }\n"), /unknown field "spec\.devices\.requests\[0\]\.exactly\.selectors\[0\]\.cel\.expresion"/],
    ["meta", claimYaml("c", "").replace("  name: c\n", "  name: c\n  labelz: {}\n"), /unknown field "metadata\.labelz"/],
    ["label-type", claimYaml("c", "").replace("  name: c\n", "  name: c\n  labels: { a: 1 }\n"), /metadata\.labels\.a: expected a string, got number 1/],
    ["top", claimYaml("c", "") + "stauts: {}\n", /unknown field "stauts"/],
    ["sub", "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: { name: c }\nspec:\n  devices:\n    requests:\n      - name: g\n        firstAvailable:\n          - { name: a, deviceClassName: gpu.tessera.dev, adminAccess: true }\n", /unknown field "spec\.devices\.requests\[0\]\.firstAvailable\[0\]\.adminAccess"/],
    ["constraint", claimYaml("c", "") + "    constraints:\n      - matchAtribute: resource.kubernetes.io/pcieRoot\n", /unknown field "spec\.devices\.constraints\[0\]\.matchAtribute"/],
    ["template", "apiVersion: resource.k8s.io/v1\nkind: ResourceClaimTemplate\nmetadata: { name: t }\nspec:\n  spec:\n    devices:\n      requests:\n        - { name: g, exactly: { deviceClassName: gpu.tessera.dev, cuont: 1 } }\n", /unknown field "spec\.spec\.devices\.requests\[0\]\.exactly\.cuont"/],
    ["dup-key", claimYaml("c", "          count: 1\n          count: 2\n"), /not valid YAML\/JSON: Map keys must be unique/],
  ];
  for (const [name, text, want] of cases) {
    for (const verb of [["claims", "apply"], ["diag", "explain"]]) {
      const r = await cli([...verb, "-f", file(name, text), ...node]);
      t.equal(r.code, 1, `${verb.join(" ")} ${name}: exit 1`);
      t.match(r.err, /^TESSERA_INPUT: /, `${verb.join(" ")} ${name}: TESSERA_INPUT`);
      t.match(r.err, want, `${verb.join(" ")} ${name}: ${r.err.trim()}`);
      t.equal(r.err.trim().split("\n").length, 1, "one line, no stack");
    }
  }
  t.same(readdirSync(dir), [], "nothing stored by any rejected claim");
  // Free-form where the API is free-form: opaque parameters, a full object as `kubectl get -o yaml` prints it.
  const opaque = claimYaml("opaque", "") + "    config:\n      - opaque:\n          driver: gpu.tessera.dev\n          parameters: { apiVersion: gpu.tessera.dev/v1alpha1, kind: GpuConfig, anything: { goes: [1, 2] } }\n";
  t.same(schemaErrors("ResourceClaim", parseAllDocuments(opaque)[0]?.toJS()), [], "opaque parameters are not checked by the schema");
  const got = claimYaml("got", "") + "status:\n  allocation:\n    devices:\n      results: [{ request: gpu, driver: gpu.tessera.dev, pool: n1, device: gpu-0 }]\n    nodeSelector:\n      nodeSelectorTerms: [{ matchFields: [{ key: metadata.name, operator: In, values: [n1] }] }]\n  reservedFor: [{ resource: pods, name: p, uid: u }]\n";
  t.same(schemaErrors("ResourceClaim", parseAllDocuments(got.replace("  name: got\n", "  name: got\n  uid: u1\n  resourceVersion: \"7\"\n  creationTimestamp: \"2026-01-01T00:00:00Z\"\n  labels: { a: b }\n"))[0]?.toJS()), [], "a claim as the API server returns it passes");
  for (const f of readdirSync(EXAMPLES)) {
    for (const doc of parseAllDocuments(readFileSync(join(EXAMPLES, f), "utf8"))) {
      const o = doc.toJS() as { kind?: string } | null;
      if (o?.kind === "ResourceClaim" || o?.kind === "ResourceClaimTemplate") t.same(schemaErrors(o.kind, o), [], `deploy/examples/${f} ${o.kind} passes strict validation`);
    }
  }
});

t.test("claim input: -f - reads stdin; each document is validated, applied or explained, and reported", async (t) => {
  const { dir, node } = storeNode();
  const stdin = await cli(["claims", "apply", "-f", "-", ...node, "-o", "json"], {}, ONE_GPU);
  t.equal(stdin.code, 0, stdin.err);
  t.match(JSON.parse(stdin.out), { claim: "default/one-gpu", devices: [{ device: "gpu-0" }] }, "one document from stdin: one object");
  t.match(await cli(["claims", "apply", "-f", "-", ...node]), { code: 1, err: /^TESSERA_INPUT: -f - reads standard input, and there is none/ });
  const three = [claimYaml("a", ""), claimYaml("b", "          cuont: 2\n"), "", claimYaml("c", "          count: 2\n")].join("---\n");
  const applied = await cli(["claims", "apply", "-f", "-", ...node, "-o", "json"], {}, three);
  t.equal(applied.code, 1, "exit 1: one document failed");
  t.same(applied.err.trim().split("\n"), ['TESSERA_INPUT: stdin (document 2): unknown field "spec.devices.requests[0].exactly.cuont" (strict validation against ResourceClaim resource.k8s.io/v1, as kubectl --validate=strict; fix or remove the field)'], "one line, naming the document");
  const bodies = JSON.parse(applied.out) as { document: number; claim?: string; devices?: { device: string }[]; error?: string }[];
  t.same(bodies.map((b) => [b.document, b.claim ?? b.error?.split(":")[0], b.devices?.map((d) => d.device)]), [[1, "default/a", ["gpu-1"]], [2, "TESSERA_INPUT", undefined], [4, "default/c", ["gpu-2", "gpu-3"]]], "each applied in order; the empty document is skipped");
  t.same(readdirSync(join(dir, "resourceclaims", "default")).sort(), ["a.json", "c.json", "one-gpu.json"]);
  const explained = await cli(["diag", "explain", "-f", "-", ...node], {}, three.replace("name: b", "name: b").replace("cuont", "count"));
  t.equal(explained.code, 0, explained.err);
  t.equal(explained.out.match(/^claim default\/[abc] /gm)?.length, 3, "explain explains every document");
  const cel = await cli(["diag", "explain", "-f", "-", ...node], {}, [claimYaml("x", "          selectors: [{ cel: { expression: 'device.driver ==' } }]\n"), claimYaml("y", "")].join("---\n"));
  t.equal(cel.code, 1);
  t.match(cel.err, /^TESSERA_CEL: stdin \(document 1\): spec\.devices/, "a validation error names its document");
  t.match(cel.out, /^claim default\/y fits/m, "and the next document is still explained");
});

t.test("claim input: a 4 MiB cap checked before parsing; YAML alias bombs are TESSERA_INPUT", async (t) => {
  const { dir, node } = storeNode();
  const at = join(dir, "..", `cap-${process.pid}.yaml`);
  const comment = (n: number): string => ("#".repeat(63) + "\n").repeat(Math.floor(n / 64)) + "#".repeat(n % 64);
  writeFileSync(at, comment(MAX_INPUT_BYTES));
  t.match(await cli(["diag", "explain", "-f", at, ...node]), { code: 1, err: /holds no document/ }, "exactly 4 MiB is read and parsed");
  writeFileSync(at, "[unclosed\n" + comment(MAX_INPUT_BYTES));
  const over = await cli(["diag", "explain", "-f", at, ...node]);
  t.match(over, { code: 1, err: /^TESSERA_INPUT: .* is over 4 MiB/ }, "one byte more: refused before the YAML error could be seen");
  t.match(await cli(["claims", "apply", "-f", "-", ...node], {}, comment(MAX_INPUT_BYTES + 1)), { code: 1, err: /^TESSERA_INPUT: standard input is over 4 MiB/ }, "stdin too");
  t.match(await cli(["diag", "explain", "-f", dir, ...node]), { code: 1, err: /^TESSERA_INPUT: .* is a directory/ });
  const levels = ["a: &a [x, x, x, x, x, x, x, x, x]", ...["b", "c", "d", "e", "f"].map((k, i) => `${k}: &${k} [${Array(9).fill(`*${"abcde"[i]}`).join(", ")}]`)];
  const bomb = await cli(["diag", "explain", "-f", "-", ...node], {}, levels.join("\n") + "\n");
  t.equal(bomb.code, 1);
  t.match(bomb.err, /^TESSERA_INPUT: stdin document 1: Excessive alias count .* \(more than 100 aliases resolved/, "alias limit: a user error, not TESSERA_INTERNAL");
  t.equal(bomb.err.trim().split("\n").length, 1);
});

// ---- the standalone store -------------------------------------------------------------------------

t.test("claims apply is idempotent; a changed spec of an allocated claim is refused; get, list, delete", async (t) => {
  const { dir, node } = storeNode();
  const kube = ["--kube", `standalone:${dir}`];
  const file = join(EXAMPLES, "one-gpu.yaml");
  t.equal((await cli(["claims", "apply", "-f", file, ...node])).code, 0);
  const stored = join(dir, "resourceclaims", "default", "one-gpu.json");
  const before = { text: readFileSync(stored, "utf8"), mtime: statSync(stored).mtimeMs };
  const again = await cli(["claims", "apply", "-f", file, ...node]);
  t.equal(again.code, 0, again.err);
  t.match(again.out, /^claim default\/one-gpu unchanged \(uid [0-9a-f-]{36}, allocated\):\nREQUEST\s+DEVICE\s+POOL\ngpu\s+gpu-0/);
  t.same({ text: readFileSync(stored, "utf8"), mtime: statSync(stored).mtimeMs }, before, "same object, same allocation, file not rewritten");
  const reordered = "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nspec: { devices: { requests: [{ exactly: { deviceClassName: gpu.tessera.dev }, name: gpu }] } }\nmetadata: { namespace: default, name: one-gpu }\n";
  t.match(JSON.parse((await cli(["claims", "apply", "-f", "-", ...node, "-o", "json"], {}, reordered)).out), { unchanged: true, devices: [{ device: "gpu-0" }] }, "key order does not make a claim different");
  const changed = await cli(["claims", "apply", "-f", "-", ...node], {}, ONE_GPU + "          count: 2\n");
  t.equal(changed.code, 1);
  t.match(changed.err, /^TESSERA_CLAIM_IMMUTABLE: ResourceClaim default\/one-gpu in .* is allocated \(gpu-0\) and the file changes its spec; .*tessera claims delete default\/one-gpu --kube standalone:/);
  t.equal(readFileSync(stored, "utf8"), before.text, "the stored claim is untouched");

  t.equal((await cli(["claims", "apply", "-f", "-", ...node], {}, claimYaml("other", "").replace("  name: other\n", "  name: other\n  namespace: team-a\n"))).code, 0);
  const got = await cli(["claims", "get", "default/one-gpu", ...kube, "-o", "json"]);
  t.same(JSON.parse(got.out), JSON.parse(before.text), "get -o json: the stored object");
  t.match((await cli(["claims", "get", "default/one-gpu", ...kube])).out, /^NAMESPACE\s+NAME\s+STATE\s+DEVICES\s+UID\s+CREATED\ndefault\s+one-gpu\s+allocated\s+gpu-0\s/);
  const list = await cli(["claims", "list", ...kube]);
  t.match(list.out, /default\s+one-gpu\s+allocated\s+gpu-0[\s\S]*team-a\s+other\s+allocated\s+gpu-1/, "list: every namespace");
  const ns = JSON.parse((await cli(["claims", "list", "-n", "team-a", ...kube, "-ojson"])).out) as { kind: string; items: ResourceClaim[] };
  t.same([ns.kind, ns.items.map((c) => c.metadata.name)], ["List", ["other"]], "-n filters");
  t.match(await cli(["claims", "get", "default/nope", ...kube]), { code: 1, err: /^TESSERA_NOT_FOUND: ResourceClaim default\/nope is not in / });
  t.match(await cli(["claims", "get", "one-gpu", ...kube]), { code: 1, err: /^TESSERA_USAGE: usage: tessera claims get <namespace>\/<name>/ });
  t.match(await cli(["claims", "list", "--kube", "auto"], { HOME: dir }), { code: 1, err: /^TESSERA_USAGE: tessera claims list reads a standalone store only/ });
  const del = await cli(["claims", "delete", "default/one-gpu", ...kube, "-o", "json"]);
  t.match(JSON.parse(del.out), { claim: "default/one-gpu", deleted: true });
  t.notOk(existsSync(stored), "the file is gone");
  t.match(await cli(["claims", "delete", "default/one-gpu", ...kube]), { code: 1, err: /^TESSERA_NOT_FOUND/ }, "deleting twice: not found");
  const reapplied = await cli(["claims", "apply", "-f", file, ...node, "-o", "json"]);
  t.match(JSON.parse(reapplied.out), { devices: [{ device: "gpu-0" }] }, "its device is free again");
});

t.test("diag slices --kube: what is published next to what would be, and the difference", async (t) => {
  const { dir, node } = storeNode();
  const empty = await cli(["diag", "slices", ...node]);
  t.equal(empty.code, 0, empty.err);
  t.match(empty.out, /published in standalone store .*: 0 slices, 0 devices, pool generation 0\nwould publish: 1 slices, 8 devices\n/);
  t.match(empty.out, /diff: devices 8 added .* the agent would create 1, update 0, delete 0 slices \(pool generation 0 -> 1\)/);
  const store = createStandaloneStore(dir);
  const [slice] = await fixtureSlices("h100-sxm-8x", "static", "h100-sxm-8x");
  if (!slice) throw new Error("fixture h100-sxm-8x has no slice");
  await store.putSlice({ ...slice, metadata: { ...slice.metadata, uid: "u1", resourceVersion: "1" } });
  t.match((await cli(["diag", "slices", ...node])).out, /diff: in sync: the published slices are what this node would publish \(pool generation 1\)/);
  const devices = (slice.spec.devices ?? []).slice(0, 7).map((d, i) => (i === 0 ? { ...d, attributes: { ...d.attributes, productName: { string: "edited" } } } : d));
  await store.putSlice({ ...slice, spec: { ...slice.spec, devices }, metadata: { ...slice.metadata, uid: "u1", resourceVersion: "2" } });
  const drift = await cli(["diag", "slices", ...node, "-o", "json"]);
  const body = JSON.parse(drift.out) as { kind: string; items: unknown[]; published: { items: unknown[] }; diff: { inSync: boolean; devices: Record<string, string[]>; plan: { update: string[] } } };
  t.equal(body.kind, "List");
  t.equal(body.items.length, 1, "items: what would be published");
  t.equal(body.published.items.length, 1);
  t.same([body.diff.inSync, body.diff.devices], [false, { added: ["h100-sxm-8x/gpu-7"], removed: [], changed: ["h100-sxm-8x/gpu-0"] }], "a missing device and an edited one");
  t.same(body.diff.plan.update, [slice.metadata.name], "the agent would rewrite that slice");
  const text = (await cli(["diag", "slices", ...node])).out;
  t.match(text, /h100-sxm-8x\/gpu-7\s+-\s+yes\s+added/);
  t.match(text, /h100-sxm-8x\/gpu-0\s+yes\s+yes\s+changed/);
  const plain = JSON.parse((await cli(["diag", "slices", "--discovery", "fixture:h100-sxm-8x", "--node-name", "h100-sxm-8x", "-o", "json"])).out) as Record<string, unknown>;
  t.notOk("diff" in plain, "without --kube: only what would be published");
  // The cluster: the same comparison through the API (field selector for this node).
  const api = await startFakeApiServer();
  t.teardown(() => api.close());
  await api.writeKubeconfig(join(dir, "kubeconfig"));
  api.seed("resource.k8s.io", "v1", "resourceslices", slice as never);
  const cluster = await cli(["diag", "slices", "--discovery", "fixture:h100-sxm-8x", "--node-name", "h100-sxm-8x", "--kube", `kubeconfig:${join(dir, "kubeconfig")}`]);
  t.equal(cluster.code, 0, cluster.err);
  t.match(cluster.out, /published in cluster http:\/\/127\.0\.0\.1:\d+: 1 slices, 8 devices[\s\S]*diff: in sync/);
  api.authorize = (r) => r.verb !== "list";
  t.match(await cli(["diag", "slices", "--discovery", "fixture:h100-sxm-8x", "--node-name", "h100-sxm-8x", "--kube", `kubeconfig:${join(dir, "kubeconfig")}`]), { code: 1, err: /^TESSERA_KUBE_FORBIDDEN: list resourceslices: the service account lacks "list" on resource\.k8s\.io\/resourceslices/ }, "403: names the missing permission");
});
