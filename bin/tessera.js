#!/usr/bin/env node
// Entry point of the `tessera` command. The TypeScript sources are compiled to dist/ by
// `npm run build` (run automatically by `npm ci` through the `prepare` script).
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const entry = new URL("../dist/agent/cli/main.js", import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write("TESSERA_USAGE: tessera is not built (dist/ is missing); run `npm ci` or `npm run build` in the project root\n");
  process.exit(1);
}
const { runProcess } = await import(entry.href);
const argv = process.argv.slice(2);
process.exitCode = await runProcess(argv);
if (argv[0] === "agent") {
  // The agent has run its shutdown path (sockets removed, checkpoint flushed). A request still
  // hanging inside a client library (an API call, an nvidia-smi run) must not keep it alive.
  setTimeout(() => process.exit(), 500).unref();
}
