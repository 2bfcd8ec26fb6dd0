#!/usr/bin/env node
// One more run of the whole suite under the Node.js major the Docker image runs (the default
// NODE_IMAGE in the Dockerfile, e.g. node:24-slim -> 24), with the Node binary the npm package
// `node` ships, fetched through npx into the npm cache (node_modules is not touched). Reading
// the major from the Dockerfile keeps the image and this run on the same line. CI (.ci/run) calls it.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";

const root = new URL("..", import.meta.url).pathname;

/** The Node major of the image's default base (`ARG NODE_IMAGE=node:<major>...`). */
export function imageNodeMajor(dockerfile) {
  const m = /^ARG NODE_IMAGE=node:(\d+)[.\-]/m.exec(dockerfile);
  if (!m) throw new Error("Dockerfile: no `ARG NODE_IMAGE=node:<major>-...` line");
  return Number(m[1]);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const major = imageNodeMajor(readFileSync(new URL("Dockerfile", new URL("..", import.meta.url)), "utf8"));
  if (Number(process.versions.node.split(".")[0]) === major) {
    console.log(`# already on Node ${process.versions.node}, the image's major: one run is enough`);
    process.exit(spawnSync(process.execPath, ["scripts/run-tests.mjs", ...process.argv.slice(2)], { cwd: root, stdio: "inherit" }).status ?? 1);
  }
  console.log(`# the suite again under Node ${major} (the image's node:${major}), from the npm package node@${major}`);
  const r = spawnSync("npx", ["-y", "-p", `node@${major}`, "node", "scripts/run-tests.mjs", ...process.argv.slice(2)], { cwd: root, stdio: "inherit" });
  if (r.status !== 0 && r.error) console.log(`npx failed: ${r.error.message}\ntests: 0 passed, 1 failed, 0 skipped`);
  process.exit(r.status ?? 1);
}
