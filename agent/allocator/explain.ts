// Per-request stage reports and the one-sentence reason a claim does not fit, in words a user
// understands. Pure functions over the search outcome.
import type { Problem } from "./flatten.js";
import type { AlternativeReport, Explanation, FailureReason, FailureStage, RequestReport, StageCounts } from "./types.js";
import { R, type SearchOutcome } from "./wasm-bridge.js";

export const STAGE_NAMES: FailureStage[] = ["classSelectors", "requestSelectors", "available", "taints", "constraints"];

export const STAGE_WORDS: Record<FailureStage, string> = {
  classSelectors: "match the DeviceClass",
  requestSelectors: "match the request's selectors",
  available: "are free (not in use, enough capacity and counters left)",
  taints: "have no untolerated taints",
  constraints: "can be chosen together (constraints, devices shared with other requests)",
};

export function requestReports(p: Problem, out: SearchOutcome): RequestReport[] {
  return p.requests.map((r, i) => ({
    name: r.name,
    alternatives: r.alternatives.map((a, j): AlternativeReport => {
      const s = out.stages[(p.reqAltStart[i] as number) + j] ?? [0, 0, 0, 0, 0];
      const stages: StageCounts = { classSelectors: s[0] ?? 0, requestSelectors: s[1] ?? 0, available: s[2] ?? 0, taints: s[3] ?? 0, constraints: s[4] ?? 0 };
      return { name: a.resultName, deviceClassName: a.deviceClassName, need: a.mode === "All" ? stages.requestSelectors : a.count, stages };
    }),
  }));
}

function need(a: AlternativeReport, mode: "ExactCount" | "All"): string {
  return mode === "All" ? "all matching devices" : `${a.need} device${a.need === 1 ? "" : "s"}`;
}

export function explainFailure(p: Problem, out: SearchOutcome, requests: RequestReport[]): Explanation {
  const reason: FailureReason =
    out.code === R.CEL_ERROR ? "cel-error" : out.code === R.TOO_MANY ? "too-many-results" : out.code === R.BUDGET ? "search-budget" : out.code === R.ALL_CONSTRAINT ? "constraint-error" : "unsatisfiable";
  const alt = out.failAlt >= 0 ? p.alts[out.failAlt] : undefined;
  const req = out.failReq >= 0 ? p.requests[out.failReq] : undefined;
  const base = { reason, request: req?.name, alternative: alt?.resultName, requests };
  if (reason === "cel-error") {
    const msg = p.celErrors.get(`${out.failAlt}:${out.poisonDev}`) ?? "a selector failed to evaluate";
    const hint = /field not found|no such key/.test(msg) ? `; guard optional attributes with \`"name" in device.attributes["domain"]\`` : "";
    return { ...base, message: `CEL runtime error: ${msg}${hint}` };
  }
  if (reason === "too-many-results") return { ...base, message: `request ${alt?.resultName ?? "?"} would need more than 32 devices, the most one claim may hold` };
  if (reason === "constraint-error") return { ...base, stage: "constraints", message: `request ${alt?.resultName ?? "?"} asks for all matching devices, but a constraint of the claim rules some of them out; narrow its selectors or drop the constraint` };
  if (reason === "search-budget") return { ...base, message: "the search gave up after exploring too many combinations; simplify the constraints or split the claim" };
  const report = requests[out.failReq]?.alternatives.find((a) => a.name === alt?.resultName);
  const stage = STAGE_NAMES[out.failStage] ?? "constraints";
  if (!alt || !report) return { ...base, stage, message: "the claim cannot be allocated on this node" };
  const count = report.stages[stage];
  const tried = (req?.alternatives.length ?? 1) > 1 ? ` (none of its ${req?.alternatives.length} alternatives fit; the first is shown)` : "";
  const incomplete = p.incompletePools.length > 0 ? `; pool ${p.incompletePools.join(", ")} is incomplete (slices still being published)` : "";
  let message: string;
  if (p.devices.length === 0) message = `request ${alt.resultName}: this node publishes no devices${incomplete}`;
  else if (stage === "constraints") {
    const cons = p.constraints.filter((c) => c.applies[out.failAlt]).map((c) => `${c.kind === 0 ? "matchAttribute" : "distinctAttribute"} ${c.attribute}`);
    const why = cons.length > 0 ? `the claim's constraints (${cons.join(", ")})` : "devices taken by the claim's other requests";
    message = `request ${alt.resultName} needs ${need(report, alt.mode)}; ${report.stages.taints} pass every per-device check, but at most ${count} can be chosen together because of ${why}${tried}`;
  } else {
    message = `request ${alt.resultName} needs ${need(report, alt.mode)} of class ${alt.deviceClassName}, but only ${count} ${STAGE_WORDS[stage]}${tried}${incomplete}`;
  }
  return { ...base, stage, message };
}
