// The claim allocator's one entry point: allocateClaim(). Pure and deterministic: the same input
// gives the same output, no I/O besides loading the WASM core once, no clock in the result.
// Bad input (validation, unknown DeviceClass, CEL compile errors) throws TesseraError; a claim that
// does not fit, or a CEL runtime error the search reaches, returns { ok: false, explanation }.
import { createHash } from "node:crypto";
import { performance } from "node:perf_hooks";
import { TesseraError } from "../common/errors.js";
import type { AllocationResult, DeviceAllocationConfiguration, DeviceClass, DeviceRequestAllocationResult } from "../kube/types.js";
import { builtinDeviceClasses } from "./builtin-classes.js";
import { explainFailure, requestReports } from "./explain.js";
import { flatten, type Problem } from "./flatten.js";
import { formatQuantity } from "./quantity.js";
import type { AllocateInput, AllocateOutput, ChosenDevice } from "./types.js";
import { LIMITS, validateClaim } from "./validate.js";
import { R, runSearch } from "./wasm-bridge.js";

export type * from "./types.js";
export { validateClaim, LIMITS } from "./validate.js";
export { builtinDeviceClasses } from "./builtin-classes.js";
export { STAGE_NAMES, STAGE_WORDS } from "./explain.js";

// ~100 M search nodes per second in the WASM core: about 2.5 s before giving up, where the Go
// allocator needs minutes for the same tree.
export const DEFAULT_MAX_STEPS = 250_000_000;

export function allocateClaim(input: AllocateInput): AllocateOutput {
  const t0 = performance.now();
  const requests = validateClaim(input.claim);
  const builtins = builtinDeviceClasses(input.driverName);
  const classes = (name: string): DeviceClass | undefined => input.deviceClasses.find((c) => c.metadata.name === name) ?? builtins.find((c) => c.metadata.name === name);
  const p = flatten({ slices: input.slices, classes, allocatedClaims: input.allocatedClaims, claim: input.claim, requests, nodeName: input.nodeName, driverName: input.driverName });
  const t1 = performance.now();
  const allAlt = p.alts.find((a) => a.mode === "All");
  if (allAlt && p.incompletePools.length > 0) {
    const message = `request ${allAlt.resultName} asks for all devices, but pool ${p.incompletePools.join(", ")} is being updated (not all of its ResourceSlices are published); retry shortly`;
    return { ok: false, explanation: { reason: "incomplete-pool", request: p.requests[allAlt.requestIndex]?.name, alternative: allAlt.resultName, message, requests: [] }, timing: { prepareMs: t1 - t0, searchMs: 0, steps: 0 } };
  }
  const limit = resultLimit(p);
  if (limit) return { ok: false, explanation: { ...limit, requests: [] }, timing: { prepareMs: t1 - t0, searchMs: 0, steps: 0 } };
  const out = runSearch(p, input.strategy === "best-fit" ? 1 : 0, input.maxSteps ?? DEFAULT_MAX_STEPS, LIMITS.results);
  const t2 = performance.now();
  const timing = { prepareMs: t1 - t0, searchMs: t2 - t1, steps: out.steps };
  const reports = requestReports(p, out);
  if (out.code !== R.OK) {
    if (!(Object.values(R) as number[]).includes(out.code)) {
      throw new TesseraError("TESSERA_INTERNAL", `allocator search returned code ${out.code}`);
    }
    return { ok: false, explanation: explainFailure(p, out, reports), timing };
  }
  const { allocation, devices } = buildAllocation(p, out.results, input);
  return { ok: true, allocation, devices, requests: reports, timing };
}

/** The scheduler's setup check: the fewest devices each request needs (All: every matching device),
 *  summed in claim order, must stay within the 32 results of a claim; otherwise it is an error. */
function resultLimit(p: Problem): { reason: "too-many-results"; request: string; message: string } | undefined {
  let accounted = 0;
  for (const [i, r] of p.requests.entries()) {
    let min = Infinity;
    for (let j = 0; j < r.alternatives.length; j++) {
      const a = (p.reqAltStart[i] as number) + j;
      const alt = p.alts[a];
      const bits = p.bits[a];
      if (!alt || !bits) continue;
      if (alt.mode !== "All") {
        min = Math.min(min, alt.count);
        continue;
      }
      if ((bits[4] as Uint8Array).some((x) => x === 1)) return undefined; // a CEL error comes first; the search reports it
      let n = 0;
      (bits[1] as Uint8Array).forEach((x, d) => void (x && (bits[2] as Uint8Array)[d] && n++));
      min = Math.min(min, n);
    }
    if (min > LIMITS.results - accounted) {
      return { reason: "too-many-results", request: r.name, message: `request ${r.name} needs at least ${min} devices, but a claim holds at most ${LIMITS.results} results and ${accounted} are already needed by earlier requests` };
    }
    accounted += min;
  }
  return undefined;
}

/** Deterministic share ID (UUID-shaped) for one result on a multi-allocatable device. */
function shareId(claimKey: string, index: number): string {
  const h = createHash("sha256").update(`${claimKey}\u0000${index}`).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function buildAllocation(p: Problem, picks: [number, number][], input: AllocateInput): { allocation: AllocationResult; devices: ChosenDevice[] } {
  const claimKey = input.claim.metadata.uid ?? `${input.claim.metadata.namespace ?? "default"}/${input.claim.metadata.name}`;
  const results: DeviceRequestAllocationResult[] = [];
  const devices: ChosenDevice[] = [];
  const used = new Set<number>();
  picks.forEach(([a, d], i) => {
    const alt = p.alts[a];
    const ref = p.devices[d];
    if (!alt || !ref) throw new TesseraError("TESSERA_INTERNAL", "allocator returned an index out of range");
    used.add(a);
    const r: DeviceRequestAllocationResult = { request: alt.resultName, driver: ref.driver, pool: ref.pool, device: ref.device.name };
    if (alt.adminAccess) r.adminAccess = true;
    if (alt.tolerations.length > 0) r.tolerations = alt.tolerations;
    if (ref.device.bindingConditions?.length) r.bindingConditions = ref.device.bindingConditions;
    if (ref.device.bindingFailureConditions?.length) r.bindingFailureConditions = ref.device.bindingFailureConditions;
    if (p.multi[d]) {
      r.shareID = shareId(claimKey, i);
      const consumed: Record<string, string> = {};
      for (let e = p.devCapStart[d] as number; e < (p.devCapStart[d] as number) + (p.devCapCount[d] as number); e++) {
        const entry = p.capEntries[e];
        if (entry) consumed[entry.name] = formatQuantity(p.capCons[a]?.[e] ?? 0n);
      }
      r.consumedCapacity = consumed;
    }
    results.push(r);
    devices.push({ request: r.request, driver: r.driver, pool: r.pool, device: r.device });
  });
  const config: DeviceAllocationConfiguration[] = [];
  for (const a of [...used].sort((x, y) => x - y)) {
    const alt = p.alts[a];
    const cls = p.classes[a];
    if (!alt || !cls) continue;
    for (const c of cls.spec.config ?? []) if (c.opaque) config.push({ source: "FromClass", requests: [alt.resultName], opaque: c.opaque });
  }
  for (const c of input.claim.spec?.devices?.config ?? []) if (c.opaque) config.push({ source: "FromClaim", ...(c.requests ? { requests: c.requests } : {}), opaque: c.opaque });
  const allocation: AllocationResult = {
    devices: { results, ...(config.length > 0 ? { config } : {}) },
    nodeSelector: { nodeSelectorTerms: [{ matchFields: [{ key: "metadata.name", operator: "In", values: [input.nodeName] }] }] },
  };
  return { allocation, devices };
}
