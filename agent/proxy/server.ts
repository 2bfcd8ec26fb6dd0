// `tessera proxy` in-process: an HTTP/1.1 server that routes OpenAI completions and chat requests
// by prompt prefix (WASM router) and load (scraped vLLM metrics + our in-flight counts), streams
// answers chunk by chunk through undici keep-alive pools, and propagates client aborts. Other
// paths pass through to the least busy ready endpoint. No request can crash the process: every
// failure becomes an HTTP answer or a closed connection.
import * as http from "node:http";
import type { Duplex, Readable } from "node:stream";
import { performance } from "node:perf_hooks";
import type { AddressInfo } from "node:net";
import type { Dispatcher } from "undici";
import { TesseraError } from "../common/errors.js";
import { silentLogger, type Logger } from "../common/log.js";
import { createWasmPrefixRouter, type WasmPrefixRouter } from "../routing/wasm-router.js";
import type { RouterConfigInput } from "../routing/config.js";
import { leastBusy, pickForBody, pickForRequest, routedKind, type RoutedKind } from "../routing/pick.js";
import type { EndpointState } from "../routing/types.js";
import { createEndpointTable, fillEndpoints, type Endpoint, type EndpointSource, type EndpointTable } from "../endpoints/table.js";
import { createRouterMetrics, recordPick, type RouterMetrics } from "../endpoints/metrics.js";
import { startRelay, type Relay, type RelayOutcome } from "./relay.js";
import { DESTINATION_HEADER, declaredTooLarge, isConnectFailure, isOriginForm, isRequestRefused, limitedBody, readBody, sendError, upstreamHeaders } from "./http-util.js";

export type { EndpointSource };

export interface ProxyOptions {
  listen: string; // "host:port"; port 0 picks a free one
  endpoints?: readonly string[];
  source?: EndpointSource;
  router?: RouterConfigInput;
  scrapeIntervalMs?: number; // default 50
  scrapeTimeoutMs?: number; // default 1000
  maxBodyBytes?: number; // default 8 MiB
  trustEndpointHeader?: boolean; // default false
  requestTimeoutMs?: number; // whole client request must arrive within (default 30 s)
  headersTimeoutMs?: number; // client request headers within (default 10 s)
  upstreamHeadersTimeoutMs?: number; // backend's first header within (default 300 s: queues can be long)
  upstreamBodyTimeoutMs?: number; // between two backend chunks, and the longest a client may stall a response (default 300 s)
  connectTimeoutMs?: number; // default 2 s
  connections?: number; // connections per endpoint at most; more requests queue (default 128)
  upstreamKeepAliveMs?: number; // an idle backend connection is closed after this (default 4 s, under uvicorn's 5 s)
  retryAfterSeconds?: number; // on 429 (default 1)
  log?: Logger;
}

export interface RunningProxy {
  url: string;
  router: WasmPrefixRouter;
  metrics: RouterMetrics;
  endpoints: EndpointTable;
  stop(): Promise<void>;
}

export const DEFAULT_SATURATION_QUEUE = 128;
/** Backend connections per endpoint: as many as the saturation guard lets be in flight. */
export const DEFAULT_UPSTREAM_CONNECTIONS = 128;
/** Idle backend connections close before a uvicorn (vLLM) server's own 5 s keep-alive does. */
export const DEFAULT_UPSTREAM_KEEPALIVE_MS = 4000;

function parseListen(listen: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(listen);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw new TesseraError("TESSERA_CONFIG", `--listen=${listen}: expected <host>:<port>, e.g. 0.0.0.0:8080`);
  return { host: (m[1] as string).replace(/^\[|\]$/g, "") || "0.0.0.0", port };
}

function checkRange(flag: string, v: number | undefined, min: number, max: number): void {
  if (v !== undefined && !(Number.isInteger(v) && v >= min && v <= max)) throw new TesseraError("TESSERA_CONFIG", `--${flag}=${v}: expected an integer ${min}..${max}`);
}

/** Largest request body the proxy can be configured to accept. */
export const MAX_BODY_LIMIT = 256 * 1024 * 1024;

export async function startProxy(opts: ProxyOptions): Promise<RunningProxy> {
  const log = opts.log ?? silentLogger;
  const { host, port } = parseListen(opts.listen);
  const maxBody = opts.maxBodyBytes ?? 8 * 1024 * 1024;
  // The WASM core stages a prompt in its linear memory, whose staging region doubles up to 4 GiB;
  // bodies far beyond any real prompt would overflow that arithmetic, so they are refused here.
  if (!(maxBody > 0 && maxBody <= MAX_BODY_LIMIT)) {
    throw new TesseraError("TESSERA_CONFIG", `--max-body-bytes=${maxBody}: expected 1..${MAX_BODY_LIMIT} (256 MiB)`);
  }
  checkRange("upstream-connections", opts.connections, 1, 4096);
  checkRange("upstream-keepalive-ms", opts.upstreamKeepAliveMs, 100, 600_000);
  const retryAfter = String(opts.retryAfterSeconds ?? 1);
  // the proxy sheds load (429) by default at 128 waiting + in-flight per endpoint; the bare
  // router (simulator) keeps the filter off unless asked
  const router = createWasmPrefixRouter({ saturationQueue: DEFAULT_SATURATION_QUEUE, ...opts.router });
  const stallMs = opts.upstreamBodyTimeoutMs ?? 300_000;
  let endpoints!: EndpointTable;
  const metrics = createRouterMetrics("tessera_proxy", () => endpoints.states(), (id) => router.indexedBlocks(id));
  endpoints = createEndpointTable({
    scrapeIntervalMs: opts.scrapeIntervalMs ?? 50,
    scrapeTimeoutMs: opts.scrapeTimeoutMs ?? 1000,
    connections: opts.connections ?? DEFAULT_UPSTREAM_CONNECTIONS,
    keepAliveMs: opts.upstreamKeepAliveMs ?? DEFAULT_UPSTREAM_KEEPALIVE_MS,
    upstreamHeadersTimeoutMs: opts.upstreamHeadersTimeoutMs ?? 300_000,
    upstreamBodyTimeoutMs: stallMs,
    connectTimeoutMs: opts.connectTimeoutMs ?? 2000,
    blockSizeBytes: router.config.blockSize,
    log,
    onAdded: (id) => router.addEndpoint(id),
    onRemoved: (id) => router.removeEndpoint(id),
    onCapacity: (id, blocks) => router.setCapacity(id, blocks),
  });

  const count = (path: string, code: number): void => metrics.requests.labels(path, String(code)).inc();
  const routedPath = (path: string): string => (path === "/v1/completions" || path === "/v1/chat/completions" ? path : "other");
  const expectsContinue = new WeakSet<http.IncomingMessage>();
  const flushIndex = (): void => void router.flush();

  /** Forwards to `ep`; on a connection failure before any byte, once more to the next best. */
  async function forward(req: http.IncomingMessage, res: http.ServerResponse, ep: Endpoint, path: string, body: Buffer | Readable, t0: number, retry: (() => Endpoint | undefined) | undefined): Promise<void> {
    let relay: Relay | undefined;
    let overLimit = false;
    if (!Buffer.isBuffer(body)) {
      // a streamed body is counted as it passes; over the limit the backend request is stopped
      const limited = limitedBody(maxBody, () => {
        overLimit = true;
        req.unpipe();
        relay?.cancel();
      });
      // Once stopped, undici no longer listens to the body: the limit's error is ours to take
      // (answered as 413 below), never an uncaught exception that would end the proxy.
      limited.on("error", () => {
        overLimit = true;
      });
      body = body.pipe(limited);
    }
    const headers = upstreamHeaders(req.headers);
    if (Buffer.isBuffer(body)) headers["content-length"] = String(body.length);
    const method = req.method as Dispatcher.HttpMethod;
    ep.state.inFlight++;
    let outcome: RelayOutcome;
    try {
      relay = startRelay(ep.pool, { path: req.url ?? path, method, headers, body: method === "GET" || method === "HEAD" ? null : body }, res, ep.state.id, stallMs);
      if (overLimit) relay.cancel();
      metrics.addedLatency.observe((performance.now() - t0) / 1000);
      outcome = await relay.done;
    } finally {
      ep.state.inFlight--;
    }
    if (outcome.kind === "done") return count(path, outcome.status);
    if (overLimit) {
      count(path, 413);
      return sendError(res, 413, "TESSERA_BODY_TOO_LARGE", `request body over ${maxBody} bytes; raise --max-body-bytes or send less`, {}, true);
    }
    if (outcome.kind === "client-gone" || outcome.kind === "cancelled") {
      metrics.aborts.inc();
      count(path, 499);
      return;
    }
    const err = outcome.error;
    if (!outcome.headersSent && isRequestRefused(err)) {
      count(path, 400);
      return sendError(res, 400, "TESSERA_BAD_REQUEST", `the request cannot be forwarded as sent: ${err.message}`, {}, true);
    }
    if (!outcome.headersSent && retry && isConnectFailure(err)) {
      ep.state.ready = false; // until its next successful scrape
      const next = retry();
      if (next) {
        metrics.retries.inc();
        log.warn("connection failed; retrying on the next best endpoint", { endpoint: ep.state.id, next: next.state.id });
        return forward(req, res, next, path, body, t0, undefined);
      }
    }
    log.warn("upstream failed", { endpoint: ep.state.id, error: err.message });
    count(path, 502);
    sendError(res, 502, "TESSERA_UPSTREAM", `endpoint ${ep.state.id}: ${err.message}`);
  }

  const ready = (): EndpointState[] => endpoints.states().filter((s) => s.ready);

  async function handleRouted(req: http.IncomingMessage, res: http.ServerResponse, kind: RoutedKind, path: string): Promise<void> {
    continueIfExpected(req, res);
    const got = await readBody(req, maxBody);
    if (got.kind === "aborted") return;
    if (got.kind === "too-large") {
      count(path, 413);
      return sendError(res, 413, "TESSERA_BODY_TOO_LARGE", `request body over ${maxBody} bytes; raise --max-body-bytes or send less`, {}, true);
    }
    const t0 = performance.now();
    const pinned = opts.trustEndpointHeader ? req.headers[DESTINATION_HEADER] : undefined;
    const picked = pickForBody(router, kind, got.body, endpoints.states(), { pinned: typeof pinned === "string" ? pinned : undefined });
    recordPick(metrics, picked);
    const chosen = picked.kind === "picked" ? endpoints.byId.get(picked.endpoint) : undefined;
    if (picked.kind === "refused" || !chosen) {
      const status = picked.kind === "refused" ? picked.status : 503;
      count(path, status);
      if (picked.kind === "refused") return sendError(res, status, picked.code, picked.message, status === 429 ? { "retry-after": retryAfter } : {});
      return sendError(res, 503, "TESSERA_NO_ENDPOINT");
    }
    const first = chosen;
    const rr = picked.request;
    const retry = picked.reason === "header" ? undefined : (): Endpoint | undefined => {
      const next = pickForRequest(router, rr, endpoints.states().filter((s) => s.id !== first.state.id));
      setImmediate(flushIndex);
      return next.kind === "picked" ? endpoints.byId.get(next.endpoint) : undefined;
    };
    // The pick's index update runs once forward() below has started the upstream request (its
    // synchronous part runs before any immediate), so it is not in the added latency; a decision
    // that comes sooner applies it itself first.
    setImmediate(flushIndex);
    await forward(req, res, chosen, path, got.body, t0, retry);
  }

  async function handlePassthrough(req: http.IncomingMessage, res: http.ServerResponse, path: string): Promise<void> {
    const least = leastBusy(endpoints.states());
    const best = least ? endpoints.byId.get(least.id) : undefined;
    if (!best) {
      count("other", 503);
      return sendError(res, 503, "TESSERA_NO_ENDPOINT", undefined, {}, true);
    }
    continueIfExpected(req, res);
    await forward(req, res, best, "other", req, performance.now(), undefined);
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    // Only origin-form targets name a path on our backends; "*" (OPTIONS *), absolute and
    // authority forms are not ours to forward. The body was not read: close after answering.
    if (!isOriginForm(req.url)) {
      count("other", 400);
      return sendError(res, 400, "TESSERA_BAD_REQUEST", `request target ${JSON.stringify(String(req.url).slice(0, 64))} is not a path; send an origin-form target such as POST /v1/completions`, {}, true);
    }
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    // The limit holds for every path; a declared length over it is refused before any byte is read.
    if (declaredTooLarge(req, maxBody)) {
      count(routedPath(path), 413);
      return sendError(res, 413, "TESSERA_BODY_TOO_LARGE", `request body over ${maxBody} bytes; raise --max-body-bytes or send less`, {}, true);
    }
    if (req.method === "GET" && path === "/healthz") {
      const n = ready().length;
      res.writeHead(n > 0 ? 200 : 503, { "content-type": "text/plain" }).end(n > 0 ? `ok: ${n} ready endpoints\n` : "no ready endpoint\n");
      return;
    }
    if (req.method === "GET" && path === "/metrics") {
      res.writeHead(200, { "content-type": metrics.registry.contentType }).end(metrics.registry.text());
      return;
    }
    const kind = routedKind(req.method, path);
    if (kind) await handleRouted(req, res, kind, path);
    else await handlePassthrough(req, res, path);
  }

  /** `Expect: 100-continue` (Node holds it back for us, see checkContinue): the client may send its body now. */
  function continueIfExpected(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (expectsContinue.has(req)) {
      expectsContinue.delete(req);
      res.writeContinue();
    }
  }

  const requestTimeout = opts.requestTimeoutMs ?? 30_000;
  const server = http.createServer({
    requestTimeout,
    headersTimeout: Math.min(opts.headersTimeoutMs ?? 10_000, requestTimeout),
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(requestTimeout / 2))),
    keepAliveTimeout: 5000,
  }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error("request failed", { error: err instanceof Error ? err.message : String(err) });
      sendError(res, 500, "TESSERA_INTERNAL", "internal proxy error; see the proxy log");
    });
  });
  // With this listener Node does not answer 100 Continue by itself: handle() first refuses what it
  // can refuse without the body (bad target, declared length over the limit, no endpoint), and
  // only then tells the client to send it (RFC 9110 §10.1.1).
  server.on("checkContinue", (req: http.IncomingMessage, res: http.ServerResponse) => {
    expectsContinue.add(req);
    server.emit("request", req, res);
  });
  // CONNECT asks for a tunnel, which this proxy does not offer (Node would drop the socket unanswered).
  server.on("connect", (req: http.IncomingMessage, socket: Duplex) => {
    count("other", 400);
    const body = JSON.stringify({ error: { message: `CONNECT ${String(req.url).slice(0, 64)}: this proxy does not tunnel; send an origin-form target such as POST /v1/completions`, type: "TESSERA_BAD_REQUEST", code: 400 } });
    // Node hands the socket over paused and no longer tracks it: drain what the client sends (else a
    // close is never seen and the socket, and stop(), wait forever) and destroy it after a grace.
    socket.on("error", () => undefined);
    socket.resume();
    setTimeout(() => socket.destroy(), 1000).unref();
    socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  });
  server.on("clientError", (err: NodeJS.ErrnoException, socket) => {
    const status = err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? "408 Request Timeout" : err.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
    if (!socket.writable) return void socket.destroy();
    socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    setTimeout(() => socket.destroy(), 1000).unref(); // a peer that never closes its side
  });

  try {
    await fillEndpoints(endpoints, opts.endpoints ?? [], opts.source, log);
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err) => reject(new TesseraError("TESSERA_PROXY", `cannot listen on ${opts.listen}: ${err.message}`, { cause: err })));
      server.listen(port, host, () => resolve());
    });
  } catch (err) {
    // a failed start must not leave the pool watch and keep-alive pools holding the process open
    await opts.source?.stop().catch(() => undefined);
    await endpoints.close();
    throw err;
  }
  const addr = server.address() as AddressInfo;
  const shownHost = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  log.info("proxy listening", { listen: `${shownHost}:${addr.port}`, endpoints: endpoints.states().map((s) => s.id) });
  let stopped = false;
  return {
    url: `http://${shownHost}:${addr.port}`,
    router,
    metrics,
    endpoints,
    async stop() {
      if (stopped) return;
      stopped = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      if (opts.source) await opts.source.stop();
      const deadline = setTimeout(() => server.closeAllConnections(), 2000);
      await closed;
      clearTimeout(deadline);
      await endpoints.close();
    },
  };
}
