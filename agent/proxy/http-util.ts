// Small HTTP helpers for the proxy: bounded body reads, OpenAI-style error answers, and header
// filtering (hop-by-hop headers never cross a proxy; our routing header is ours to set), the
// request-target check, and the body limit for bodies that stream through.
import type * as http from "node:http";
import { Transform, type TransformCallback } from "node:stream";
import type { ErrorCode } from "../common/errors.js";
import { ERROR_CATALOGUE } from "../common/errors.js";

import { DESTINATION_HEADER } from "../routing/pick.js";

export { DESTINATION_HEADER };

// `expect` is answered by this proxy (RFC 9110 §10.1.1: 100 Continue or a final status), never
// forwarded: the backend hop has its own body already in hand, and undici refuses the header.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "host", "content-length", "expect", DESTINATION_HEADER]);

export type BodyResult = { kind: "ok"; body: Buffer } | { kind: "too-large" } | { kind: "aborted" };

/** True when the request declares a Content-Length over `limit` (its body need not be read). */
export function declaredTooLarge(req: http.IncomingMessage, limit: number): boolean {
  const declared = Number(req.headers["content-length"]);
  return Number.isFinite(declared) && declared > limit;
}

/** Origin-form request target (RFC 9112 §3.2.1): "/path?query". Not "*", not absolute or authority form. */
export function isOriginForm(target: string | undefined): boolean {
  return target !== undefined && target.startsWith("/");
}

/** Thrown into a streamed body once it passes the limit (see limitedBody). */
export class BodyLimitError extends Error {
  constructor(readonly limit: number) {
    super(`request body over ${limit} bytes`);
    this.name = "BodyLimitError";
  }
}

/** A pass-through stream that counts bytes and fails with BodyLimitError once over `limit`. */
export function limitedBody(limit: number, onOver: () => void): Transform {
  let size = 0;
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      size += chunk.length;
      if (size > limit) {
        onOver();
        done(new BodyLimitError(limit));
      } else done(null, chunk);
    },
  });
}

/** Reads the whole request body, stopping at `limit` bytes. */
export function readBody(req: http.IncomingMessage, limit: number): Promise<BodyResult> {
  if (declaredTooLarge(req, limit)) return Promise.resolve({ kind: "too-large" });
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (r: BodyResult): void => {
      if (done) return;
      done = true;
      req.off("data", onData);
      resolve(r);
    };
    const onData = (c: Buffer): void => {
      size += c.length;
      if (size > limit) {
        req.pause();
        finish({ kind: "too-large" });
      } else chunks.push(c);
    };
    req.on("data", onData);
    req.once("end", () => finish({ kind: "ok", body: chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size) }));
    req.once("error", () => finish({ kind: "aborted" }));
    req.once("close", () => finish({ kind: "aborted" }));
  });
}

/** An OpenAI-style JSON error; closes the connection when the request body was not consumed. */
export function sendError(res: http.ServerResponse, status: number, code: ErrorCode, message?: string, extra: Record<string, string> = {}, close = false): void {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: { message: message ?? ERROR_CATALOGUE[code], type: code, code: status } });
  const headers: Record<string, string | number> = { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...extra };
  if (close) headers.connection = "close";
  res.writeHead(status, headers);
  res.end(body);
}

/** Request headers to send upstream: hop-by-hop and routing headers removed. */
export function upstreamHeaders(h: http.IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

/** Response headers to send back: hop-by-hop removed, our routing header added. */
export function downstreamHeaders(h: Record<string, string | string[] | undefined>, endpoint: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  if (h["content-length"] !== undefined) out["content-length"] = h["content-length"];
  out[DESTINATION_HEADER] = endpoint;
  return out;
}

// Only failures where no request byte can have reached the backend: a reset or "other side
// closed" may follow a request the engine already started, and a POST must not run twice.
const CONNECT_ERRORS = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN", "UND_ERR_CONNECT_TIMEOUT", "UND_ERR_CLOSED", "UND_ERR_DESTROYED"]);

/** True when undici refused the request as given (a header value it will not send): the client's fault. */
export function isRequestRefused(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "UND_ERR_INVALID_ARG" || code === "UND_ERR_NOT_SUPPORTED";
}

/** True when the failure happened while connecting, i.e. before the backend saw a byte. */
export function isConnectFailure(err: unknown): boolean {
  for (let e: unknown = err, i = 0; e && i < 4; i++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && CONNECT_ERRORS.has(code)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}
