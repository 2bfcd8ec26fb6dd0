#!/usr/bin/env node
// Answers allocation cases with Tessera's allocator, in the harness's JSON-line shape:
// stdin  {name, node, slices, deviceClasses, allocatedClaims, claim} per line
// stdout {name, fits, devices:[{request,driver,pool,device,adminAccess,shared,consumedCapacity}], error, ns, failure}
// `--repeat N` allocates each case N times and reports the median time (for the bench).
// It imports the built allocator (dist/); `npm run build` first.
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const root = new URL("../../..", import.meta.url).pathname;
const repeatAt = process.argv.indexOf("--repeat");
const repeat = repeatAt > 0 ? Math.max(1, Number(process.argv[repeatAt + 1]) || 1) : 1;
const strategyAt = process.argv.indexOf("--strategy");
const strategy = strategyAt > 0 ? process.argv[strategyAt + 1] : "first-fit";

const mod = await import(pathToFileURL(join(root, "dist", "agent", "allocator", "index.js")).href);
const allocateClaim = mod.allocateClaim;
if (typeof allocateClaim !== "function") {
  process.stderr.write("tessera-allocate: dist/agent/allocator/index.js exports no allocateClaim\n");
  process.exit(1);
}

function toResult(name, out) {
  if (out.ok) {
    const results = out.allocation?.devices?.results ?? [];
    return {
      name,
      fits: true,
      devices: results.map((r) => ({
        request: r.request,
        driver: r.driver,
        pool: r.pool,
        device: r.device,
        ...(r.adminAccess ? { adminAccess: true } : {}),
        ...(r.shareID ? { shared: true } : {}),
        ...(r.consumedCapacity && Object.keys(r.consumedCapacity).length > 0 ? { consumedCapacity: r.consumedCapacity } : {}),
      })),
    };
  }
  const reason = out.explanation?.reason ?? "unknown";
  // "unsatisfiable": does not fit. Others are errors the scheduler reports as errors too
  // (CEL runtime error, more than 32 results) or our search budget.
  if (reason === "unsatisfiable") return { name, fits: false, failure: out.explanation?.message };
  return { name, fits: false, error: `${reason}: ${out.explanation?.message ?? ""}`, failure: reason };
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (!line.trim()) continue;
  const c = JSON.parse(line);
  const input = {
    slices: c.slices ?? [],
    deviceClasses: c.deviceClasses ?? [],
    allocatedClaims: c.allocatedClaims ?? [],
    claim: c.claim,
    nodeName: c.node,
    strategy,
  };
  let result;
  const times = [];
  for (let k = 0; k < repeat; k++) {
    const t0 = process.hrtime.bigint();
    try {
      const out = await allocateClaim(input);
      times.push(Number(process.hrtime.bigint() - t0));
      result = toResult(c.name, out);
    } catch (err) {
      times.push(Number(process.hrtime.bigint() - t0));
      const code = err && typeof err === "object" && "code" in err ? `${err.code}: ` : "";
      result = { name: c.name, fits: false, error: `${code}${err instanceof Error ? err.message : String(err)}` };
    }
  }
  times.sort((a, b) => a - b);
  result.ns = times[Math.floor(times.length / 2)];
  process.stdout.write(JSON.stringify(result) + "\n");
}
