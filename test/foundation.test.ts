// The shared foundation: error catalogue, flag/env config, the standalone store, the CLI's
// error contract, and the fake API server every Kubernetes-facing test uses.
import t from "tap";
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import * as k8s from "@kubernetes/client-node";
import { ERROR_CATALOGUE, TesseraError, formatError, describeChain } from "../agent/common/errors.js";
import { NODE_FLAGS, OUTPUT_FLAG, parseFlags, resolveNodeConfig, assertSocketPath } from "../agent/common/config.js";
import { createStandaloneStore } from "../agent/kube/standalone-store.js";
import { writeFileAtomic } from "../agent/common/atomic-file.js";
import { parseKubeSpec } from "../agent/kube/kube-source.js";
import { main } from "../agent/cli/main.js";
import { captureIO } from "../agent/cli/io.js";
import { startFakeApiServer } from "./support/fake-apiserver.js";

t.test("error catalogue: every code formats as one line `code: message`", async (t) => {
  for (const code of Object.keys(ERROR_CATALOGUE) as (keyof typeof ERROR_CATALOGUE)[]) {
    t.match(code, /^TESSERA_[A-Z_]+$/, `${code} is a TESSERA_ code`);
    const line = formatError(new TesseraError(code));
    t.equal(line, `${code}: ${ERROR_CATALOGUE[code]}`);
    t.notMatch(line, /\n/, `${code} message is one line`);
  }
  const wrapped = new TesseraError("TESSERA_STORE", "cannot write x", { cause: new Error("EACCES") });
  t.equal(describeChain(wrapped), "cannot write x: EACCES", "causes are kept, not flattened");
  t.equal(formatError(new Error("boom")), "TESSERA_INTERNAL: boom");
});

t.test("config: flags beat env, env beats defaults, derived paths match contracts.md", async (t) => {
  const args = parseFlags(["--kubelet-root", "/k", "-o", "json"], [...NODE_FLAGS, OUTPUT_FLAG], { NODE_NAME: "n1", KUBELET_ROOT: "/ignored", CDI_ROOT: "/cdi" });
  const cfg = resolveNodeConfig(args);
  t.equal(cfg.nodeName, "n1");
  t.equal(cfg.kubeletRoot, "/k");
  t.equal(cfg.cdiRoot, "/cdi");
  t.equal(cfg.registrationSocket, "/k/plugins_registry/gpu.tessera.dev-reg.sock");
  t.equal(cfg.draSocket, "/k/plugins/gpu.tessera.dev/dra.sock");
  t.equal(cfg.stateDir, "/k/plugins/gpu.tessera.dev");
  t.equal(cfg.checkpointFile, "/k/plugins/gpu.tessera.dev/checkpoint.json");
  t.equal(args.values.output, "json");
  t.throws(() => parseFlags(["--nope"], NODE_FLAGS), { code: "TESSERA_USAGE" });
  t.throws(() => parseFlags(["--kube"], NODE_FLAGS), { code: "TESSERA_USAGE" });
  t.throws(() => resolveNodeConfig(parseFlags(["--mig-mode", "x"], NODE_FLAGS, {})), { code: "TESSERA_CONFIG" });
  t.throws(() => assertSocketPath("/" + "a".repeat(107)), { code: "TESSERA_SOCKET_PATH_TOO_LONG" });
  t.doesNotThrow(() => assertSocketPath("/" + "a".repeat(106)));
  t.same(parseKubeSpec("standalone:/tmp/x"), { mode: "standalone", dir: "/tmp/x" });
  t.same(parseKubeSpec("kubeconfig:/k.yaml"), { mode: "kubeconfig", path: "/k.yaml" });
  t.throws(() => parseKubeSpec("cluster"), { code: "TESSERA_CONFIG" });
});

t.test("standalone store: contract layout, atomic writes, no path tricks", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tessera-store-"));
  const store = createStandaloneStore(dir);
  await store.putClaim({ apiVersion: "resource.k8s.io/v1", kind: "ResourceClaim", metadata: { name: "c1", namespace: "ns1", uid: "u1" }, spec: {} });
  t.same(readdirSync(join(dir, "resourceclaims", "ns1")), ["c1.json"], "no temp files left behind");
  t.equal((await store.getClaim("ns1", "c1"))?.metadata.uid, "u1");
  t.equal(await store.getClaim("ns1", "missing"), undefined);
  t.equal((await store.listClaims()).length, 1);
  await t.rejects(store.getClaim("..", "c1"), { code: "TESSERA_INPUT" });
  await t.rejects(store.getSlice("../../etc/passwd"), { code: "TESSERA_INPUT" });
  t.same(await store.listSlices(), []);
  // A write that fails after the temp file exists (here: data the write rejects) cleans it up.
  const tmpDir = mkdtempSync(join(tmpdir(), "tessera-atomic-"));
  await t.rejects(writeFileAtomic(join(tmpDir, "x.json"), 42 as unknown as string));
  t.same(readdirSync(tmpDir), [], "no temp file left after a failed write");
});

t.test("cli: unknown verb is one line on stderr and exit 1", async (t) => {
  const io = captureIO();
  t.equal(await main(["frobnicate"], io), 1);
  t.equal(io.err.join(""), 'TESSERA_USAGE: unknown command "frobnicate"; run `tessera --help`\n');
});

t.test("fake API server: real client-node against real paths, watch, conflicts, faults", async (t) => {
  const api = await startFakeApiServer();
  t.teardown(() => api.close());
  const dir = mkdtempSync(join(tmpdir(), "tessera-kc-"));
  await api.writeKubeconfig(join(dir, "kubeconfig"));
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(join(dir, "kubeconfig"));
  const res = kc.makeApiClient(k8s.ResourceV1Api);
  const created = await res.createResourceSlice({
    body: { apiVersion: "resource.k8s.io/v1", kind: "ResourceSlice", metadata: { name: "s1" }, spec: { driver: "gpu.tessera.dev", nodeName: "n1", pool: { name: "n1", generation: 1, resourceSliceCount: 1 }, devices: [] } },
  });
  t.ok(created.metadata?.uid, "server assigns a uid");
  const listed = await res.listResourceSlice({ fieldSelector: "spec.nodeName=n1,spec.driver=gpu.tessera.dev" });
  t.equal(listed.items.length, 1);
  const none = await res.listResourceSlice({ fieldSelector: "spec.nodeName=n2" });
  t.equal(none.items.length, 0);
  const stale = { ...created, metadata: { ...created.metadata, resourceVersion: "1" } };
  await t.rejects(res.replaceResourceSlice({ name: "s1", body: stale }), /409|Conflict/);
  api.fault = (r) => (r.verb === "get" ? { status: 500 } : undefined);
  await t.rejects(res.readResourceSlice({ name: "s1" }), /500|InternalError/);
  api.fault = undefined;
  await t.rejects(res.readResourceSlice({ name: "nope" }), /404|NotFound/);

  const events: string[] = [];
  const watch = new k8s.Watch(kc);
  let seenDelete!: () => void;
  const deleted = new Promise<void>((r) => (seenDelete = r));
  const req = await watch.watch("/apis/resource.k8s.io/v1/resourceslices", {}, (type) => {
    events.push(type);
    if (type === "DELETED") seenDelete();
  }, () => undefined);
  api.remove("resource.k8s.io", "resourceslices", "s1");
  await deleted;
  req.abort();
  t.same(events, ["DELETED"]);
  t.ok(api.requests.some((r) => r.verb === "watch" && r.resource === "resourceslices"), "request log records verbs for RBAC checks");
});

// ---- the repository itself: a user's clone has nothing beside it -------------------------------

t.test("repository: no tracked file over 5 MB, nothing reads outside the repository", async (t) => {
  const root = join(new URL(".", import.meta.url).pathname, "..", "..");
  const git = spawnSync("git", ["ls-files", "-z"], { cwd: root, encoding: "utf8" });
  if (git.status !== 0) {
    // A source tarball (no .git) has no tracked files to check; say so rather than pass silently.
    t.fail(`git ls-files failed in ${root}: ${git.stderr.trim()} (run the tests from a git checkout)`);
    return;
  }
  const files = git.stdout.split("\0").filter((f) => f.length > 0);
  t.ok(files.length > 50, `git tracks ${files.length} files`);
  const big = files.filter((f) => existsSync(join(root, f)) && statSync(join(root, f)).size > 5_000_000);
  t.same(big, [], "no tracked file is over 5 MB (build outputs and binaries are ignored, not committed)");
  const code = files.filter((f) => /^(agent|test|scripts|bench)\/.*\.(ts|mjs|js|go|sh)$/.test(f));
  // Paths that only exist on a developer's machine: the steering repo's shared/ and the workspace.
  const outside = /\.\.\/shared\/|["'`]\/work\/|join\([^)]*"\.\.",\s*"shared"/;
  const readers = code.filter((f) => outside.test(readFileSync(join(root, f), "utf8").replace(/\/\/.*$/gm, "")));
  t.same(readers, [], "no test, script, bench or agent file reads the steering repo's shared folder or the workspace");
});

t.test("node range: engines cover every runtime dependency's, the image's Node major is in range and is tested", async (t) => {
  const root = join(new URL(".", import.meta.url).pathname, "..", "..");
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { engines: { node: string }; dependencies: Record<string, string> };
  const floor = (range: string): number[] => (/(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(range.split("||").map((r) => r.trim()).pop() ?? "") ?? []).slice(1).map((x) => Number(x ?? 0));
  const ge = (a: number[], b: number[]): boolean => (a[0] ?? 0) !== (b[0] ?? 0) ? (a[0] ?? 0) > (b[0] ?? 0) : (a[1] ?? 0) !== (b[1] ?? 0) ? (a[1] ?? 0) > (b[1] ?? 0) : (a[2] ?? 0) >= (b[2] ?? 0);
  const ours = floor(pkg.engines.node);
  for (const dep of Object.keys(pkg.dependencies)) {
    const theirs = (JSON.parse(readFileSync(join(root, "node_modules", dep, "package.json"), "utf8")) as { engines?: { node?: string } }).engines?.node;
    if (theirs) t.ok(ge(ours, floor(theirs)), `engines ${pkg.engines.node} is within ${dep}'s ${theirs}`);
  }
  const script = (await import(join(root, "scripts", "run-tests-image-node.mjs"))) as { imageNodeMajor(d: string): number };
  const major = script.imageNodeMajor(readFileSync(join(root, "Dockerfile"), "utf8"));
  t.ok(major >= (ours[0] ?? 0), `the image's Node ${major} satisfies engines ${pkg.engines.node}`);
  t.match(readFileSync(join(root, ".ci", "run"), "utf8"), /^node scripts\/run-tests-image-node\.mjs/m, "CI runs the suite on the image's Node major");
  t.match(readFileSync(join(root, "README.md"), "utf8"), `Node.js ≥ ${pkg.engines.node.replace(">=", "")}`, "README states the range");
  t.throws(() => script.imageNodeMajor("FROM node:24-slim\n"), /no `ARG NODE_IMAGE/);
});

t.test("start-up graph: the agent and node-only verbs load no heavy module they do not use", async (t) => {
  // What `tessera agent --kube standalone:…` and `diag topology` load before their first await:
  // the compiled modules' static imports, followed from the entry (`import type` is erased by tsc).
  const dist = new URL("../agent/", import.meta.url).pathname;
  const reach = (entry: string): Set<string> => {
    const seen = new Set<string>();
    const pkgs = new Set<string>();
    const walk = (file: string): void => {
      if (seen.has(file)) return;
      seen.add(file);
      const src = readFileSync(file, "utf8");
      for (const m of src.matchAll(/^(?:import|export)\s[^;]*?from\s+"([^"]+)"|^import\s+"([^"]+)"/gm)) {
        const spec = (m[1] ?? m[2]) as string;
        if (spec.startsWith(".")) walk(join(dirname(file), spec));
        else if (!spec.startsWith("node:")) pkgs.add(spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : (spec.split("/")[0] as string));
      }
    };
    walk(join(dist, entry));
    return pkgs;
  };
  const heavy = ["@kubernetes/client-node", "undici", "systeminformation", "@bufbuild/cel", "yaml"];
  for (const entry of ["cli/agent.js", "cli/diag-node.js", "cli/main.js"]) {
    const pkgs = reach(entry);
    t.same(heavy.filter((p) => pkgs.has(p)), [], `${entry} loads none of ${heavy.join(", ")} at start (it loads: ${[...pkgs].sort().join(", ")})`);
  }
});
