// The routing decision from a request body, the one code path behind both transports: the HTTP
// proxy (agent/proxy) and the Envoy ext_proc endpoint picker (agent/epp) hand it the body bytes
// and their endpoint states and get back either the endpoint to use or the answer to refuse
// with. Pure apart from the router's own index (a pick inserts the prompt).
import type { ErrorCode } from "../common/errors.js";
import { isTesseraError } from "../common/errors.js";
import { routedRequest, type RoutedRequest } from "./prompt.js";
import type { EndpointState } from "./types.js";
import type { WasmPrefixRouter } from "./wasm-router.js";

export type RoutedKind = "completions" | "chat";

/** The Gateway API Inference Extension's names: the routing header (and dynamic metadata key
 *  in namespace `envoy.lb`), the subset hint and the served-endpoint read-back. */
export const DESTINATION_HEADER = "x-gateway-destination-endpoint";
export const LB_NAMESPACE = "envoy.lb";
export const SUBSET_NAMESPACE = "envoy.lb.subset_hint";
export const SUBSET_KEY = "x-gateway-destination-endpoint-subset";
export const SERVED_KEY = "x-gateway-destination-endpoint-served";

/** The ready endpoint with the fewest requests in flight (paths that are not routed by prompt). */
export function leastBusy(states: readonly EndpointState[]): EndpointState | undefined {
  let best: EndpointState | undefined;
  for (const s of states) if (s.ready && (!best || s.inFlight < best.inFlight)) best = s;
  return best;
}

/** The OpenAI path a request is routed by, or undefined (passed through / not ours to pick). */
export function routedKind(method: string | undefined, path: string): RoutedKind | undefined {
  if (method !== "POST") return undefined;
  const p = path.split("?")[0];
  return p === "/v1/completions" ? "completions" : p === "/v1/chat/completions" ? "chat" : undefined;
}

export type PickResult =
  | {
      kind: "picked";
      endpoint: string;
      /** Why: the router's reason, or "header" when the endpoint was named by the caller. */
      reason: string;
      matchedBlocks: number;
      totalBlocks: number;
      request: RoutedRequest;
      /** Next-best endpoints by the same scores, distinct from `endpoint` (PickOptions.fallbacks). */
      fallbacks?: readonly string[];
    }
  | { kind: "refused"; status: 400 | 413 | 429 | 503; code: ErrorCode; message: string | undefined };

export interface PickOptions {
  /** An endpoint the caller names (trusted header): used if ready, else 503. */
  pinned?: string;
  /** Only these endpoints are eligible (the gateway's subset hint); none of them ready: 503. */
  subset?: ReadonlySet<string>;
  /** How many next-best endpoints to add after the primary (the picker's fallback list; default 0). */
  fallbacks?: number;
}

/** Largest fallback list a caller may ask for. */
export const MAX_FALLBACKS = 16;

const refused = (status: 400 | 429 | 503, code: ErrorCode, message?: string): PickResult => ({ kind: "refused", status, code, message });

/** Parses `body` as the `kind` request, picks an endpoint among `states` (ready ones count). */
export function pickForBody(router: WasmPrefixRouter, kind: RoutedKind, body: Uint8Array, states: readonly EndpointState[], opts: PickOptions = {}): PickResult {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("utf8"));
  } catch (err) {
    return refused(400, "TESSERA_BAD_REQUEST", `invalid JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  let rr: RoutedRequest | undefined;
  try {
    rr = routedRequest(kind, parsed);
  } catch {
    // JSON.stringify of a non-text content part recurses: a deeply nested one overflows the stack
    return refused(400, "TESSERA_BAD_REQUEST", "request JSON nests too deeply to route");
  }
  if (!rr) return refused(400, "TESSERA_BAD_REQUEST", kind === "chat" ? "expected a JSON object with a messages array" : "expected a JSON object with a prompt");
  return pickForRequest(router, rr, states, opts);
}

/** Up to `n` more endpoints, each the router's choice (same scores, no indexing) once the ones
 *  before it are left out; stops early when no ready endpoint is left or the rest are saturated. */
function nextBest(router: WasmPrefixRouter, rr: RoutedRequest, eligible: readonly EndpointState[], primary: string, n: number): string[] {
  const out: string[] = [];
  let rest = eligible.filter((s) => s.id !== primary);
  while (out.length < n && rest.some((s) => s.ready)) {
    let id: string;
    try {
      id = router.peek(rr.prompt, rr.model, rest, rr.salt).endpoint;
    } catch {
      break; // saturated or no endpoint: the list ends here
    }
    out.push(id);
    rest = rest.filter((s) => s.id !== id);
  }
  return out;
}

/** The ready endpoints with the fewest requests in flight, fewest first, at most n (header-only
 *  requests: the primary and its fallbacks). */
export function leastBusyList(states: readonly EndpointState[], n: number): EndpointState[] {
  return states.filter((s) => s.ready).sort((a, b) => a.inFlight - b.inFlight).slice(0, n);
}

/** Picks for an already extracted request (the proxy's retry path uses it too). */
export function pickForRequest(router: WasmPrefixRouter, rr: RoutedRequest, states: readonly EndpointState[], opts: PickOptions = {}): PickResult {
  const subset = opts.subset;
  const eligible = subset ? states.filter((s) => subset.has(s.id)) : states;
  if (opts.pinned !== undefined) {
    const id = opts.pinned.trim();
    const s = eligible.find((e) => e.id === id);
    if (!s || !s.ready) return refused(503, "TESSERA_NO_ENDPOINT", `endpoint ${id.slice(0, 64)} named by the request is not a ready endpoint`);
    return { kind: "picked", endpoint: s.id, reason: "header", matchedBlocks: 0, totalBlocks: 0, request: rr };
  }
  if (subset && !eligible.some((s) => s.ready)) return refused(503, "TESSERA_NO_ENDPOINT", "no ready endpoint in the gateway's subset hint");
  try {
    const d = router.route(rr.prompt, rr.model, eligible, rr.salt);
    const picked: PickResult = { kind: "picked", endpoint: d.endpoint, reason: d.reason, matchedBlocks: d.matchedBlocks, totalBlocks: d.totalBlocks, request: rr };
    if (opts.fallbacks) picked.fallbacks = nextBest(router, rr, eligible, d.endpoint, opts.fallbacks);
    return picked;
  } catch (err) {
    if (isTesseraError(err) && err.code === "TESSERA_SATURATED") return refused(429, "TESSERA_SATURATED");
    if (isTesseraError(err) && err.code === "TESSERA_NO_ENDPOINT") return refused(503, "TESSERA_NO_ENDPOINT");
    throw err;
  }
}
