#!/usr/bin/env node
// `npm run bench -- <name> [--quick] [...]`: builds, then runs dist/bench/<name>.js. Each bench
// prints contract JSON lines on stdout and human tables on stderr.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const [name, ...rest] = process.argv.slice(2);
const benchDir = join(root, "dist", "bench");
const build = spawnSync("npm", ["run", "build", "--silent"], { cwd: root, stdio: ["ignore", "ignore", "inherit"] });
if (build.status !== 0) process.exit(1);
const available = existsSync(benchDir) ? readdirSync(benchDir).filter((f) => f.endsWith(".js") && !f.startsWith("_")).map((f) => f.slice(0, -3)) : [];
if (!name || !available.includes(name)) {
  process.stderr.write(`TESSERA_USAGE: npm run bench -- <name> [--quick]; benches: ${available.join(", ") || "(none built)"}\n`);
  process.exit(1);
}
const r = spawnSync(process.execPath, ["--expose-gc", join(benchDir, `${name}.js`), ...rest], { cwd: root, stdio: "inherit" });
process.exit(r.status ?? 1);
