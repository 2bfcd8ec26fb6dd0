#!/usr/bin/env node
// `npm test`: build what the tests need (TypeScript + the .wasm), run every compiled test file
// under tap, stream tap's own TAP output, and end with the line CI reads:
//   tests: N passed, N failed, N skipped
// Counts are of leaf test points (assertions and leaf subtests), not of files.
import { spawnSync, spawn } from "node:child_process";
import { readdirSync, existsSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const build = spawnSync("npm", ["run", "build", "--silent"], { cwd: root, stdio: "inherit" });
if (build.status !== 0) {
  console.log("tests: 0 passed, 1 failed, 0 skipped");
  process.exit(1);
}

const testDir = join(root, "dist", "test");
const filter = process.argv.slice(2);
const files = existsSync(testDir)
  ? readdirSync(testDir).filter((f) => f.endsWith(".test.js")).filter((f) => filter.length === 0 || filter.some((x) => f.includes(x))).map((f) => join("dist", "test", f))
  : [];
if (files.length === 0) {
  console.log("no test files found under dist/test");
  console.log("tests: 0 passed, 1 failed, 0 skipped");
  process.exit(1);
}

// Go programs some test files run (kustomize, helm): built once into ~/.cache/tessera before tap
// starts, since a cold build outlasts tap's per-file timeout. A build that cannot happen is
// reported here and fails the test that needs the tool, with the same message.
const { TOOLS_BY_TEST, buildTool } = await import(join(root, "dist", "test", "support", "go-tools.js"));
const tools = [...new Set(files.flatMap((f) => Object.entries(TOOLS_BY_TEST).filter(([name]) => f.endsWith(name)).flatMap(([, t]) => t)))];
for (const tool of tools) {
  const r = buildTool(tool);
  if (r.error) console.error(`# ${r.error}`);
  else if (r.seconds > 0) console.error(`# built ${tool.name} ${tool.version} into ${r.path} in ${r.seconds.toFixed(0)} s`);
}

const tapBin = join(root, "node_modules", ".bin", "tap");
const child = spawn(tapBin, ["--reporter=tap", "--allow-incomplete-coverage", "--coverage-report=text-summary", "--timeout=300", ...files], {
  cwd: root,
  stdio: ["ignore", "pipe", "inherit"],
  env: { ...process.env, FORCE_COLOR: "0" },
});

let passed = 0, failed = 0, skipped = 0;
const stack = []; // indents of open "# Subtest:" blocks
let buf = "";
function onLine(line) {
  const sub = /^(\s*)# Subtest: /.exec(line);
  if (sub) { stack.push(sub[1].length); return; }
  const pt = /^(\s*)(not ok|ok) \d+/.exec(line);
  if (!pt) return;
  const indent = pt[1].length;
  if (stack.length > 0 && stack[stack.length - 1] === indent) { stack.pop(); if (pt[2] === "not ok" && !/# (TODO|SKIP)/i.test(line)) { /* counted through its children */ } return; }
  if (/# SKIP/i.test(line) || /# TODO/i.test(line)) skipped++;
  else if (pt[2] === "ok") passed++;
  else failed++;
}
// tap prints "# ERROR: incomplete ... coverage" for anything under 100 %; we allow that on
// purpose (--allow-incomplete-coverage), so say it in words that do not read as a failure.
const echo = (line) => process.stdout.write(line.replace(/^# ERROR: incomplete (\w+) coverage/, "# coverage (informational): $1") + "\n");
child.stdout.on("data", (chunk) => {
  buf += chunk.toString("utf8");
  let nl;
  while ((nl = buf.indexOf("\n")) >= 0) { const line = buf.slice(0, nl); echo(line); onLine(line); buf = buf.slice(nl + 1); }
});
child.on("close", (code) => {
  if (buf) { echo(buf); onLine(buf); }
  if (code !== 0 && failed === 0) failed = 1; // a crash or timeout outside any test point still fails the run
  console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
  process.exit(code === 0 && failed === 0 ? 0 : 1);
});
