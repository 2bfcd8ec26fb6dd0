// Validation of a ResourceClaim's spec.devices as the resource.k8s.io/v1 API server does it
// (the parts the allocator relies on), normalised into requests with alternatives. Every error
// names the field path and says how to fix it.
import { TesseraError } from "../common/errors.js";
import type { DeviceRequest, ExactDeviceRequest, ResourceClaim } from "../kube/types.js";
import { parseQuantityNano } from "./quantity.js";
import type { NormAlternative, NormRequest } from "./types.js";

export const LIMITS = {
  requests: 32, // DeviceRequestsMaxSize
  subrequests: 8, // FirstAvailableDeviceRequestMaxSize
  constraints: 32,
  config: 32,
  selectors: 32,
  tolerations: 16,
  results: 32, // AllocationResultsMaxSize
  celLength: 10 * 1024,
} as const;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const QUALIFIED = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/[A-Za-z0-9]([-A-Za-z0-9_.]{0,62}[A-Za-z0-9])?$/;

function fail(path: string, msg: string): never {
  throw new TesseraError("TESSERA_VALIDATION", `${path}: ${msg}`);
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function arr(v: unknown, path: string, max: number, what: string): unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) fail(path, `must be a list of ${what}`);
  if (v.length > max) fail(path, `has ${v.length} ${what}, the API allows at most ${max}; split the claim`);
  return v;
}

/** Checks the claim's shape and limits; returns its requests normalised. Throws TESSERA_VALIDATION/TESSERA_INPUT. */
export function validateClaim(claim: ResourceClaim): NormRequest[] {
  if (!isObj(claim) || claim.kind !== "ResourceClaim") {
    throw new TesseraError("TESSERA_INPUT", `expected kind ResourceClaim (apiVersion resource.k8s.io/v1), got ${isObj(claim) ? String(claim.kind) : typeof claim}`);
  }
  if (claim.apiVersion !== "resource.k8s.io/v1") fail("apiVersion", `"${String(claim.apiVersion)}" is not supported; use resource.k8s.io/v1`);
  const name = claim.metadata?.name;
  if (typeof name !== "string" || !DNS_SUBDOMAIN.test(name)) fail("metadata.name", "is required and must be a lower-case DNS subdomain");
  const ns = claim.metadata.namespace;
  if (ns !== undefined && !DNS_LABEL.test(ns)) fail("metadata.namespace", `"${ns}" is not a valid namespace name`);
  const devices = claim.spec?.devices;
  if (devices !== undefined && !isObj(devices)) fail("spec.devices", "must be an object");
  const reqs = arr(devices?.requests, "spec.devices.requests", LIMITS.requests, "requests");
  const out: NormRequest[] = [];
  const names = new Set<string>();
  const resultNames = new Set<string>();
  reqs.forEach((raw, i) => {
    const path = `spec.devices.requests[${i}]`;
    if (!isObj(raw)) fail(path, "must be an object");
    const r = raw as unknown as DeviceRequest;
    if (typeof r.name !== "string" || !DNS_LABEL.test(r.name)) fail(`${path}.name`, "is required and must be a DNS label (lower-case letters, digits, '-')");
    if (names.has(r.name)) fail(`${path}.name`, `duplicate request name "${r.name}"`);
    names.add(r.name);
    if ((r.exactly === undefined) === (r.firstAvailable === undefined)) fail(path, "exactly one of `exactly` or `firstAvailable` must be set");
    const alternatives: NormAlternative[] = [];
    if (r.exactly !== undefined) {
      alternatives.push(normAlt(r.exactly, r.name, i, `${path}.exactly`));
    } else {
      const subs = arr(r.firstAvailable, `${path}.firstAvailable`, LIMITS.subrequests, "subrequests");
      if (subs.length === 0) fail(`${path}.firstAvailable`, "must list at least one subrequest");
      const subNames = new Set<string>();
      subs.forEach((s, j) => {
        const sp = `${path}.firstAvailable[${j}]`;
        if (!isObj(s)) fail(sp, "must be an object");
        const sub = s as unknown as ExactDeviceRequest & { name: string };
        if (typeof sub.name !== "string" || !DNS_LABEL.test(sub.name)) fail(`${sp}.name`, "is required and must be a DNS label");
        if (subNames.has(sub.name)) fail(`${sp}.name`, `duplicate subrequest name "${sub.name}"`);
        subNames.add(sub.name);
        if (sub.adminAccess !== undefined) fail(`${sp}.adminAccess`, "is not allowed in a subrequest");
        alternatives.push(normAlt(sub, `${r.name}/${sub.name}`, i, sp));
      });
    }
    for (const a of alternatives) resultNames.add(a.resultName);
    out.push({ name: r.name, alternatives });
  });
  // Fewest results any choice of alternatives needs: over the limit is a validation error, not a search.
  const minResults = out.reduce((s, r) => s + Math.min(...r.alternatives.map((a) => (a.mode === "All" ? 1 : a.count))), 0);
  if (minResults > LIMITS.results) fail("spec.devices.requests", `ask for ${minResults} devices, more than the ${LIMITS.results} results a claim may hold`);
  const cons = arr(devices?.constraints, "spec.devices.constraints", LIMITS.constraints, "constraints");
  cons.forEach((c, i) => {
    const path = `spec.devices.constraints[${i}]`;
    if (!isObj(c)) fail(path, "must be an object");
    const m = c.matchAttribute;
    const d = c.distinctAttribute;
    if ((m === undefined) === (d === undefined)) fail(path, "exactly one of matchAttribute or distinctAttribute must be set");
    const attr = (m ?? d) as unknown;
    const field = m !== undefined ? "matchAttribute" : "distinctAttribute";
    if (typeof attr !== "string" || !QUALIFIED.test(attr)) fail(`${path}.${field}`, `"${String(attr)}" must be a fully qualified attribute name <domain>/<name>, e.g. resource.kubernetes.io/pcieRoot`);
    arr(c.requests, `${path}.requests`, LIMITS.requests, "request names").forEach((n, j) => {
      if (typeof n !== "string" || !(names.has(n) || resultNames.has(n))) fail(`${path}.requests[${j}]`, `"${String(n)}" is not a request (or <request>/<subrequest>) of this claim`);
    });
  });
  const config = arr(devices?.config, "spec.devices.config", LIMITS.config, "config entries");
  config.forEach((c, i) => {
    const path = `spec.devices.config[${i}]`;
    if (!isObj(c)) fail(path, "must be an object");
    if (!isObj(c.opaque)) fail(`${path}.opaque`, "is required (driver + parameters)");
    arr(c.requests, `${path}.requests`, LIMITS.requests, "request names").forEach((n, j) => {
      if (typeof n !== "string" || !(names.has(n) || resultNames.has(n))) fail(`${path}.requests[${j}]`, `"${String(n)}" is not a request of this claim`);
    });
  });
  return out;
}

function normAlt(x: ExactDeviceRequest, resultName: string, requestIndex: number, path: string): NormAlternative {
  if (!isObj(x)) fail(path, "must be an object");
  if (typeof x.deviceClassName !== "string" || !DNS_SUBDOMAIN.test(x.deviceClassName)) {
    fail(`${path}.deviceClassName`, "is required and must name a DeviceClass (e.g. gpu.tessera.dev)");
  }
  const mode = x.allocationMode ?? "ExactCount";
  if (mode !== "ExactCount" && mode !== "All") fail(`${path}.allocationMode`, `"${String(mode)}" must be ExactCount or All`);
  let count = 1;
  if (mode === "All") {
    if (x.count !== undefined) fail(`${path}.count`, "must not be set with allocationMode All");
  } else if (x.count !== undefined) {
    if (!Number.isInteger(x.count) || x.count < 1) fail(`${path}.count`, `${String(x.count)} must be a whole number >= 1`);
    if (x.count > LIMITS.results) fail(`${path}.count`, `${x.count} exceeds the ${LIMITS.results} results a claim may hold`);
    count = x.count;
  }
  const selectors = arr(x.selectors, `${path}.selectors`, LIMITS.selectors, "selectors").map((s, i) => {
    const sp = `${path}.selectors[${i}].cel.expression`;
    const expr = isObj(s) && isObj(s.cel) ? s.cel.expression : undefined;
    if (typeof expr !== "string" || expr.trim() === "") fail(sp, "is required (a CEL expression over `device`)");
    if (expr.length > LIMITS.celLength) fail(sp, `is ${expr.length} characters, over the ${LIMITS.celLength} limit`);
    return { expression: expr, path: sp };
  });
  const tolerations = arr(x.tolerations, `${path}.tolerations`, LIMITS.tolerations, "tolerations").map((t, i) => {
    if (!isObj(t)) fail(`${path}.tolerations[${i}]`, "must be an object");
    if (t.operator !== undefined && t.operator !== "Exists" && t.operator !== "Equal") fail(`${path}.tolerations[${i}].operator`, "must be Exists or Equal");
    return t as NormAlternative["tolerations"][number];
  });
  const capacityRequests: Record<string, string> = {};
  const reqs = x.capacity?.requests;
  if (reqs !== undefined) {
    if (!isObj(reqs)) fail(`${path}.capacity.requests`, "must map capacity names to quantities");
    for (const [k, v] of Object.entries(reqs)) {
      if (typeof v !== "string" || parseQuantityNano(v) === undefined || (parseQuantityNano(v) ?? 0n) < 0n) {
        fail(`${path}.capacity.requests.${k}`, `"${String(v)}" is not a valid non-negative quantity (e.g. 10Gi)`);
      }
      capacityRequests[k] = v;
    }
  }
  return { resultName, requestIndex, deviceClassName: x.deviceClassName, selectors, mode, count, adminAccess: x.adminAccess === true, tolerations, capacityRequests, path };
}
