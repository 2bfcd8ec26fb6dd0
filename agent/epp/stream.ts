// One ext_proc `Process` stream, as a state machine with no I/O: each ProcessingRequest from the
// gateway goes in, the ProcessingResponses to send come out (synchronously, so the decision is
// answered in the same tick the body completes). The decision itself is the shared pick
// (agent/routing/pick.ts) the HTTP proxy uses; this module only speaks Envoy.
//
// Request path: headers, then the body in the mode the gateway uses —
//   BUFFERED: headers are answered at once (CONTINUE), the whole body comes in one message and its
//     answer carries the header mutation;
//   FULL_DUPLEX_STREAMED: nothing is answered until the body is complete (end_of_stream or the
//     trailers); then the headers answer (mutation + dynamic metadata) and the body is streamed
//     back unchanged in chunks of at most 62,000 bytes.
// Header-only requests (end_of_stream on the headers) are decided on the headers. Response path:
// the served endpoint (x-gateway-destination-endpoint-served) is read back to move the in-flight
// count; headers, bodies and trailers are passed on unchanged.
import { performance } from "node:perf_hooks";
import { DESTINATION_HEADER, LB_NAMESPACE, SERVED_KEY, SUBSET_KEY, SUBSET_NAMESPACE, routedKind, type PickResult, type RoutedKind } from "../routing/pick.js";
import { fromStruct, headerText, setHeader, toStruct, type BodySendMode, type ProcessingRequest, type ProcessingResponse, type WireHeaderMap, type WireStruct } from "./protos.js";

/** Largest body chunk sent back in FULL_DUPLEX_STREAMED (under Envoy's 64 KiB recommendation). */
export const MAX_STREAMED_CHUNK = 62_000;

export interface StreamContext {
  maxBodyBytes: number;
  /** Body mode when the stream's protocol_config does not say. */
  defaultBodyMode: "FULL_DUPLEX_STREAMED" | "BUFFERED";
  retryAfterSeconds: number;
  /** The shared pick; kind undefined: a path not routed by prompt (least busy endpoint). */
  decide(kind: RoutedKind | undefined, body: Uint8Array, subset: ReadonlySet<string> | undefined): PickResult;
  acquire(id: string): boolean;
  release(id: string): void;
  /** After every answer to a complete request: result, ms from the body's end to the answer. */
  observe(result: PickResult, path: string, ms: number): void;
}

/** Thrown for a stream the picker cannot serve (mode it does not support): a gRPC error. */
export class StreamRefused extends Error {}

export interface StreamHandler {
  onMessage(m: ProcessingRequest): ProcessingResponse[];
  /** The stream is over (ended by the gateway, cancelled, or failed); idempotent. */
  onEnd(): { decided: boolean };
}

function headerMap(map: WireHeaderMap | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const h of map?.headers ?? []) out.set(h.key.toLowerCase(), headerText(h));
  return out;
}

/** The gateway's subset hint: a list of "ip:port" or one comma-separated string. */
export function subsetHint(meta: Record<string, WireStruct> | undefined): ReadonlySet<string> | undefined {
  const ns = meta?.[SUBSET_NAMESPACE];
  if (!ns) return undefined;
  const v = fromStruct(ns)[SUBSET_KEY];
  const items = Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : typeof v === "string" ? v.split(",") : undefined;
  return items ? new Set(items.map((s) => s.trim()).filter((s) => s.length > 0)) : undefined;
}

function servedFrom(m: ProcessingRequest, headers: Map<string, string>): string | undefined {
  const h = headers.get(SERVED_KEY);
  if (h) return h.split(",")[0]?.trim();
  const lb = m.metadata_context?.filter_metadata?.[LB_NAMESPACE];
  const v = lb ? fromStruct(lb)[SERVED_KEY] : undefined;
  return typeof v === "string" ? v.split(",")[0]?.trim() : undefined;
}

export function createStreamHandler(ctx: StreamContext): StreamHandler {
  let mode: BodySendMode = ctx.defaultBodyMode;
  let responseMode: BodySendMode = "NONE";
  let path = "";
  let kind: RoutedKind | undefined;
  let subset: ReadonlySet<string> | undefined;
  let chunks: Buffer[] = [];
  let size = 0;
  let decided = false;
  let done = false; // an immediate response was sent: Envoy ignores anything after it
  let held: string | undefined;
  let ended = false;

  const immediate = (status: number, code: string, message: string | undefined, extra: Record<string, string> = {}): ProcessingResponse => ({
    immediate_response: {
      status: { code: status },
      headers: { set_headers: [setHeader("content-type", "application/json"), ...Object.entries(extra).map(([k, v]) => setHeader(k, v))] },
      body: Buffer.from(JSON.stringify({ error: { message: message ?? code, type: code, code: status } })),
      details: code,
    },
  });

  /** Decides for the complete request; returns the header answer, or an immediate response. */
  const decideNow = (): { headers: ProcessingResponse } | { refuse: ProcessingResponse } => {
    const t0 = performance.now();
    const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
    const result = ctx.decide(kind, body, subset);
    decided = true;
    let out: { headers: ProcessingResponse } | { refuse: ProcessingResponse };
    if (result.kind === "refused") {
      done = true;
      out = { refuse: immediate(result.status, result.code, result.message, result.status === 429 ? { "retry-after": String(ctx.retryAfterSeconds) } : {}) };
    } else {
      if (ctx.acquire(result.endpoint)) held = result.endpoint;
      // primary first, then the fallbacks (the gateway tries them in order): "ip:port,ip:port,..."
      const value = result.fallbacks && result.fallbacks.length > 0 ? [result.endpoint, ...result.fallbacks].join(",") : result.endpoint;
      out = {
        headers: {
          request_headers: { response: { header_mutation: { set_headers: [setHeader(DESTINATION_HEADER, value)] }, clear_route_cache: true } },
          dynamic_metadata: toStruct({ [LB_NAMESPACE]: { [DESTINATION_HEADER]: value } }),
        },
      };
    }
    ctx.observe(result, path, performance.now() - t0);
    return out;
  };

  /** The buffered body back to Envoy (FULL_DUPLEX_STREAMED must echo it), in bounded chunks. */
  const echoBody = (last: boolean): ProcessingResponse[] => {
    const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
    const out: ProcessingResponse[] = [];
    for (let off = 0; off < body.length || out.length === 0; off += MAX_STREAMED_CHUNK) {
      const part = body.subarray(off, Math.min(body.length, off + MAX_STREAMED_CHUNK));
      const eos = last && off + MAX_STREAMED_CHUNK >= body.length;
      out.push({ request_body: { response: { body_mutation: { streamed_response: { body: part, end_of_stream: eos } } } } });
    }
    chunks = [];
    return out;
  };

  const tooLarge = (): ProcessingResponse => {
    done = true;
    decided = true;
    ctx.observe({ kind: "refused", status: 413, code: "TESSERA_BODY_TOO_LARGE", message: undefined }, path, 0);
    return immediate(413, "TESSERA_BODY_TOO_LARGE", `request body over ${ctx.maxBodyBytes} bytes; raise --max-body-bytes or send less`);
  };

  return {
    onMessage(m) {
      if (done || ended) return [];
      const quiet = m.observability_mode === true; // answers are ignored: send none
      const reply = (rs: ProcessingResponse[]): ProcessingResponse[] => (quiet ? [] : rs);
      switch (m.request) {
        case "request_headers": {
          if (m.protocol_config?.request_body_mode) mode = m.protocol_config.request_body_mode;
          if (m.protocol_config?.response_body_mode) responseMode = m.protocol_config.response_body_mode;
          if (mode === "STREAMED") throw new StreamRefused("request_body_mode STREAMED cannot carry a routing header; configure BUFFERED or FULL_DUPLEX_STREAMED");
          const h = headerMap(m.request_headers?.headers);
          path = h.get(":path") ?? "";
          kind = routedKind(h.get(":method"), path);
          subset = subsetHint(m.metadata_context?.filter_metadata);
          if (m.request_headers?.end_of_stream || mode === "NONE") {
            const d = decideNow();
            return reply(["refuse" in d ? d.refuse : d.headers]);
          }
          // BUFFERED: the body follows only once the headers are answered
          return reply(mode === "FULL_DUPLEX_STREAMED" ? [] : [{ request_headers: { response: {} } }]);
        }
        case "request_body": {
          const b = m.request_body?.body;
          if (b && b.length > 0) {
            size += b.length;
            if (size > ctx.maxBodyBytes) return reply([tooLarge()]);
            chunks.push(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
          }
          if (decided) return reply(mode === "FULL_DUPLEX_STREAMED" ? echoBody(m.request_body?.end_of_stream === true) : [{ request_body: { response: {} } }]);
          if (mode === "FULL_DUPLEX_STREAMED") {
            if (!m.request_body?.end_of_stream) return [];
            const d = decideNow();
            return reply("refuse" in d ? [d.refuse] : [d.headers, ...echoBody(true)]);
          }
          // BUFFERED (and BUFFERED_PARTIAL): the one body message; the mutation rides on its answer
          const d = decideNow();
          if ("refuse" in d) return reply([d.refuse]);
          chunks = [];
          return reply([{ request_body: { response: d.headers.request_headers?.response }, dynamic_metadata: d.headers.dynamic_metadata }]);
        }
        case "request_trailers": {
          if (!decided && mode === "FULL_DUPLEX_STREAMED") {
            // trailers end a body that had no end_of_stream chunk
            const d = decideNow();
            return reply("refuse" in d ? [d.refuse] : [d.headers, ...echoBody(false), { request_trailers: {} }]);
          }
          return reply([{ request_trailers: {} }]);
        }
        case "response_headers": {
          const served = servedFrom(m, headerMap(m.response_headers?.headers));
          if (served && served !== held && ctx.acquire(served)) {
            if (held) ctx.release(held);
            held = served;
          }
          return reply([{ response_headers: { response: {} } }]);
        }
        case "response_body": {
          const b = m.response_body?.body ?? Buffer.alloc(0);
          if (responseMode === "FULL_DUPLEX_STREAMED") return reply([{ response_body: { response: { body_mutation: { streamed_response: { body: b, end_of_stream: m.response_body?.end_of_stream === true } } } } }]);
          return reply([{ response_body: { response: {} } }]);
        }
        case "response_trailers":
          return reply([{ response_trailers: {} }]);
        default:
          return [];
      }
    },
    onEnd() {
      if (!ended) {
        ended = true;
        if (held) ctx.release(held);
        held = undefined;
      }
      return { decided };
    },
  };
}
