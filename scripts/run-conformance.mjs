#!/usr/bin/env node
// `npm run conformance`: builds Tessera and the Go harness in test/conformance/, then runs the
// tiers that can run here (docs/conformance.md). Without Go it says so and exits 0, skipped.
// Flags: --no-build (dist/ is fresh), --tier 1|2|3|4|5 (only that tier), --count N (random cases).
// Every check prints one JSON line {tier, check, status, detail, count}; this script counts
// them and ends with `conformance: N passed, N failed, N skipped`; exit 1 on any failure.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const harness = join(root, "test", "conformance");
const bin = join(harness, "bin");
const args = process.argv.slice(2);
const flag = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const onlyTier = flag("--tier");
const count = flag("--count") ?? "1000";
const counts = { passed: 0, failed: 0, skipped: 0 };
const started = Date.now();
const children = new Map(); // child -> promise of its close

let interrupted = false;

function finish() {
  if (interrupted) counts.failed++; // an interrupted run never reports success
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`conformance: finished in ${secs}s`);
  // The closing line CI reads: exactly "word: N passed, N failed, N skipped".
  console.log(`conformance: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped`);
  process.exit(counts.failed > 0 ? 1 : 0);
}

// Ctrl-C / SIGTERM: ask every child group to stop, wait (bounded) until the children have
// stopped what they started (agent, API server), then report. Keeping their stdout open
// while they clean up matters: a child writing to a closed pipe could die half-way.
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    if (interrupted) return;
    interrupted = true;
    console.log(`conformance: interrupted by ${sig}; stopping the tiers`);
    for (const c of children.keys()) killGroup(c);
    await Promise.race([Promise.all(children.values()), new Promise((r) => setTimeout(r, 45_000))]);
    finish();
  });
}

function killGroup(child) {
  try {
    process.kill(-child.pid, "SIGTERM");
  } catch {
    /* already gone */
  }
}

const goEnv = { ...process.env, GOFLAGS: process.env.GOFLAGS ?? "-mod=mod" };
const go = spawnSync("go", ["version"], { encoding: "utf8" });
if (go.error || go.status !== 0) {
  console.log("conformance: Go not found on PATH; the conformance suite is skipped (install Go 1.26+ to run it)");
  counts.skipped++;
  finish();
}
console.error(`conformance: ${go.stdout.trim()}`);

if (!args.includes("--no-build")) {
  const b = spawnSync("npm", ["run", "build", "--silent"], { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
  if (b.status !== 0) console.error("conformance: npm run build reported errors (tsc still emits); going on with dist/");
}

function record(line) {
  let r;
  try {
    r = JSON.parse(line);
  } catch {
    console.log(line);
    return;
  }
  if (typeof r?.status !== "string") return void console.log(line);
  const n = r.count ?? 1;
  if (r.status === "pass") counts.passed += n;
  else if (r.status === "skip") counts.skipped += n;
  else counts.failed += n;
  const mark = r.status === "pass" ? "ok  " : r.status === "skip" ? "skip" : "FAIL";
  console.log(`${mark} tier${r.tier} ${r.check}${n > 1 ? ` (${n})` : ""}${r.detail ? ` — ${r.detail}` : ""}`);
}

/** Runs a harness command, counting its JSON lines; kills its group after limitMs. */
function runHarness(cmd, argv, limitMs, { cwd = root, env = goEnv } = {}) {
  return new Promise((resolve) => {
    const child = spawn(cmd, argv, { cwd, env, detached: true, stdio: ["ignore", "pipe", "inherit"] });
    children.set(child, new Promise((r) => child.on("close", r)));
    let buf = "";
    child.stdout.on("data", (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        record(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
    const timer = setTimeout(() => {
      console.log(`FAIL ${argv[0]} ran past ${limitMs / 1000}s; stopped`);
      counts.failed++;
      killGroup(child);
    }, limitMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      children.delete(child);
      if (buf.trim()) record(buf);
      killGroup(child); // anything it left behind in its group
      resolve(code ?? 1);
    });
  });
}

function goBuild(dir, out, what) {
  const t0 = Date.now();
  const r = spawnSync("go", ["build", "-o", out, "."], { cwd: dir, env: goEnv, encoding: "utf8" });
  console.error(`conformance: go build ${what}: ${r.status === 0 ? "ok" : "failed"} in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
  return r;
}

mkdirSync(bin, { recursive: true });
const main = goBuild(join(harness, "cmd", "tessera-conformance"), join(bin, "tessera-conformance"), "harness");
if (main.status !== 0) {
  console.log(`FAIL harness build — ${(main.stderr || "").trim().split("\n").slice(-5).join(" | ")}`);
  counts.failed++;
  finish();
}
// The harness's own unit tests (comparison rules, generator, oracle wrapper) come first:
// a wrong harness would make every tier meaningless.
{
  const t = spawnSync("go", ["test", "./..."], { cwd: harness, env: goEnv, encoding: "utf8" });
  if (t.status === 0) record(JSON.stringify({ tier: 0, check: "harness unit tests (go test)", status: "pass" }));
  else record(JSON.stringify({ tier: 0, check: "harness unit tests (go test)", status: "fail", detail: (t.stdout + t.stderr).trim().split("\n").slice(-6).join(" | ") }));
}
const fixtures = existsSync(join(root, "fixtures", "nodes"))
  ? readdirSync(join(root, "fixtures", "nodes"), { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name)
  : [];
const outDir = join(bin, "out"); // git-ignored with the binaries
rmSync(outDir, { recursive: true, force: true });

if (!onlyTier || onlyTier === "2") {
  await runHarness(join(bin, "tessera-conformance"), ["allocator", "--repo", root, "--count", count,
    "--fixtures", fixtures.join(","), "--out", join(outDir, "disagreements")], 10 * 60_000);
}
if (!onlyTier || onlyTier === "1") {
  await runHarness(join(bin, "tessera-conformance"), ["kubelet", "--repo", root], 3 * 60_000);
  // Envoy's own ext_proc Go types (go-control-plane) against a running `tessera epp`.
  await runHarness(join(bin, "tessera-conformance"), ["epp", "--repo", root], 2 * 60_000);
  // The kubelet's own plugin watcher + DRA manager, from k8s.io/kubernetes (separate module).
  const mgr = goBuild(join(harness, "kubeletmgr"), join(bin, "kubelet-dra"), "kubelet DRA manager (k8s.io/kubernetes)");
  if (mgr.status === 0) {
    await runHarness(join(bin, "kubelet-dra"), ["--repo", root], 3 * 60_000);
  } else {
    const why = (mgr.stderr || "").trim().split("\n").slice(-3).join(" | ");
    console.log(`FAIL tier1 kubelet-dra-manager build — ${why}`);
    counts.failed++;
  }
}
// Tiers 3 and 4 are one binary: kube-apiserver + etcd (Tier 3), with kube-scheduler, the
// ResourceClaim controller and the kubelet's DRA manager added for Tier 4 (real scheduling).
let tier3Build;
const buildTier3 = () =>
  (tier3Build ??= goBuild(join(harness, "tier3"), join(bin, "tier3"), "Tier 3/4 (kube-apiserver + etcd + kube-scheduler + kube-controller-manager + kubelet DRA manager)"));
for (const t of ["3", "4"]) {
  if (onlyTier && onlyTier !== t) continue;
  const b = buildTier3();
  if (b.status === 0) {
    // Tier 3 runs its RBAC checks twice (kustomize, the Helm chart): 150 s at load 5, more on a busy machine.
    await runHarness(join(bin, "tier3"), ["--repo", root, "--tier", t], (t === "3" ? 8 : 5) * 60_000);
  } else {
    const why = (b.stderr || "").trim().split("\n").slice(-3).join(" | ");
    console.log(`FAIL tier${t} build — ${why}`);
    counts.failed++;
  }
}
if (!onlyTier || onlyTier === "5") {
  // Tier 5: the slices Tessera builds (every fixture × --mig-mode × --gpu-sharing) validated by the
  // API server code of every supported minor: one small module per minor (test/conformance/validate/).
  const slicesDir = join(outDir, "slices");
  mkdirSync(slicesDir, { recursive: true });
  for (const f of fixtures) {
    for (const mode of ["static", "dynamic"]) {
      for (const sharing of ["none", "consumable"]) {
        const r = spawnSync("node", [join(root, "bin", "tessera.js"), "diag", "slices", "-o", "json", "--discovery", `fixture:${f}`,
          "--mig-mode", mode, ...(sharing === "none" ? [] : ["--gpu-sharing", sharing])], { cwd: root, encoding: "utf8" });
        // `none` is the default: leaving the flag out keeps those cases meaningful on an agent
        // without --gpu-sharing. A case Tessera cannot build is written as {"error"}: the validator fails it by name.
        const text = r.status === 0 ? r.stdout : JSON.stringify({ error: `tessera diag slices failed: ${(r.stderr || "").trim().split("\n").pop()}` });
        writeFileSync(join(slicesDir, `${f}__${mode}__${sharing}.json`), text);
      }
    }
  }
  const vdir = join(harness, "validate");
  const minors = existsSync(vdir) ? readdirSync(vdir).filter((d) => /^v1_\d+$/.test(d)).sort() : [];
  for (const m of minors) {
    const minor = m.replace("v1_", "1.");
    const out = join(bin, `validate-${minor}`);
    const b = goBuild(join(vdir, m), out, `validate-slices ${minor} (k8s.io/kubernetes ${minor})`);
    if (b.status !== 0) {
      const why = (b.stderr || "").trim().split("\n").slice(-3).join(" | ");
      console.log(`FAIL tier5 validate-${minor} build — ${why}`);
      counts.failed++;
      continue;
    }
    // What the agent refuses on this minor, from its own rule (agent/kube/server-version.ts in dist/).
    const { assertModeSupported } = await import(join(root, "dist", "agent", "kube", "server-version.js"));
    const refused = [];
    for (const migMode of ["static", "dynamic"]) for (const gpuSharing of ["none", "consumable"]) {
      try {
        assertModeSupported({ major: 1, minor: Number(minor.split(".")[1]), gitVersion: `v${minor}.0` }, { migMode, gpuSharing });
      } catch {
        refused.push(`${migMode}/${gpuSharing}`);
      }
    }
    await runHarness(out, ["-dir", slicesDir, "-matrix", join(outDir, `validate-${minor}.json`), "-refused", refused.join(",")], 5 * 60_000);
  }
}
finish();
