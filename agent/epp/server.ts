// `tessera epp` in-process: the prefix router as an Envoy ext_proc v3 endpoint picker (Gateway API
// Inference Extension protocol). One gRPC server carries envoy.service.ext_proc.v3.ExternalProcessor
// and grpc.health.v1.Health (services "liveness", "readiness" and the ext_proc service name); an
// HTTP listener carries /metrics and /healthz. Endpoints, scraping, metrics and the decision are
// the proxy's own (agent/endpoints, agent/routing/pick.ts): the two differ only in transport.
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { parseHttpListen } from "../common/config.js";
import { TesseraError } from "../common/errors.js";
import { silentLogger, type Logger } from "../common/log.js";
import { createEndpointTable, fillEndpoints, type EndpointSource, type EndpointTable } from "../endpoints/table.js";
import { createRouterMetrics, recordPick, type RouterMetrics } from "../endpoints/metrics.js";
import { PICKER_COLD_SLACK, type RouterConfigInput } from "../routing/config.js";
import { leastBusyList, MAX_FALLBACKS, pickForBody, type PickResult } from "../routing/pick.js";
import { createWasmPrefixRouter, type WasmPrefixRouter } from "../routing/wasm-router.js";
import { EXT_PROC_SERVICE, loadEppProtos, type ProcessingRequest, type ProcessingResponse } from "./protos.js";
import { createStreamHandler, StreamRefused, type StreamContext } from "./stream.js";

export interface EppOptions {
  listen: string; // gRPC "host:port"; port 0 picks a free one
  metricsListen?: string; // "host:port" or "off" (default off in-process; the CLI's default is 0.0.0.0:9090)
  endpoints?: readonly string[];
  source?: EndpointSource;
  router?: RouterConfigInput;
  bodyMode?: "full-duplex" | "buffered"; // when a stream's protocol_config does not say
  scrapeIntervalMs?: number; // default 50
  scrapeTimeoutMs?: number; // default 1000
  maxBodyBytes?: number; // default 8 MiB
  retryAfterSeconds?: number; // on 429 (default 1)
  fallbacks?: number; // next-best endpoints after the primary in the header and metadata (default 0)
  healthPollMs?: number; // how often a health Watch re-checks readiness (default 250)
  log?: Logger;
}

export interface RunningEpp {
  /** gRPC target, "127.0.0.1:port". */
  target: string;
  /** http://host:port of /metrics, when served. */
  metricsUrl: string | undefined;
  router: WasmPrefixRouter;
  metrics: RouterMetrics;
  endpoints: EndpointTable;
  /** Process streams open now. */
  streams(): number;
  stop(): Promise<void>;
}

/** Cold prefixes by rendezvous hash: the picker's default (replicas agree without shared state). */
export const DEFAULT_EPP_COLD_SLACK = PICKER_COLD_SLACK;
export const MAX_EPP_BODY = 256 * 1024 * 1024;

type HealthStatus = "SERVING" | "NOT_SERVING";

export async function startEpp(opts: EppOptions): Promise<RunningEpp> {
  const log = opts.log ?? silentLogger;
  const listen = parseHttpListen(opts.listen, "listen");
  if (!listen) throw new TesseraError("TESSERA_CONFIG", "--listen=off: the picker needs a gRPC address, e.g. 0.0.0.0:9002");
  const metricsAt = parseHttpListen(opts.metricsListen ?? "off", "metrics-listen");
  const maxBody = opts.maxBodyBytes ?? 8 * 1024 * 1024;
  if (!(Number.isInteger(maxBody) && maxBody > 0 && maxBody <= MAX_EPP_BODY)) throw new TesseraError("TESSERA_CONFIG", `--max-body-bytes=${maxBody}: expected 1..${MAX_EPP_BODY} (256 MiB)`);
  const fallbacks = opts.fallbacks ?? 0;
  if (!(Number.isInteger(fallbacks) && fallbacks >= 0 && fallbacks <= MAX_FALLBACKS)) throw new TesseraError("TESSERA_CONFIG", `--fallbacks=${fallbacks}: expected 0..${MAX_FALLBACKS}`);
  const router = createWasmPrefixRouter({ saturationQueue: 128, coldSlack: DEFAULT_EPP_COLD_SLACK, ...opts.router });
  let endpoints!: EndpointTable;
  const metrics = createRouterMetrics("tessera_epp", () => endpoints.states(), (id) => router.indexedBlocks(id));
  endpoints = createEndpointTable({
    scrapeIntervalMs: opts.scrapeIntervalMs ?? 50,
    scrapeTimeoutMs: opts.scrapeTimeoutMs ?? 1000,
    connections: 1, // the picker forwards nothing: its pools stay idle
    keepAliveMs: 4000,
    upstreamHeadersTimeoutMs: 1000,
    upstreamBodyTimeoutMs: 1000,
    connectTimeoutMs: 1000,
    blockSizeBytes: router.config.blockSize,
    log,
    onAdded: (id) => router.addEndpoint(id),
    onRemoved: (id) => router.removeEndpoint(id),
    onCapacity: (id, blocks) => router.setCapacity(id, blocks),
  });

  const flushIndex = (): void => void router.flush();
  const ctx: StreamContext = {
    maxBodyBytes: maxBody,
    defaultBodyMode: opts.bodyMode === "buffered" ? "BUFFERED" : "FULL_DUPLEX_STREAMED",
    retryAfterSeconds: opts.retryAfterSeconds ?? 1,
    decide(kind, body, subset): PickResult {
      if (kind) {
        // The pick's index update runs after the header answer is written (the stream handler
        // writes it synchronously after this returns), so it is not in the picker's latency; a
        // decision that comes sooner applies it itself first.
        setImmediate(flushIndex);
        return pickForBody(router, kind, body, endpoints.states(), { subset, fallbacks });
      }
      const states = subset ? endpoints.states().filter((s) => subset.has(s.id)) : endpoints.states();
      const [s, ...rest] = leastBusyList(states, 1 + fallbacks);
      return s
        ? { kind: "picked", endpoint: s.id, reason: "other", matchedBlocks: 0, totalBlocks: 0, request: { model: "", prompt: "", salt: undefined }, ...(fallbacks > 0 ? { fallbacks: rest.map((e) => e.id) } : {}) }
        : { kind: "refused", status: 503, code: "TESSERA_NO_ENDPOINT", message: subset ? "no ready endpoint in the gateway's subset hint" : undefined };
    },
    acquire(id) {
      const ep = endpoints.byId.get(id);
      if (!ep) return false;
      ep.state.inFlight++;
      return true;
    },
    release(id) {
      const ep = endpoints.byId.get(id);
      if (ep && ep.state.inFlight > 0) ep.state.inFlight--;
    },
    observe(result, path, ms) {
      recordPick(metrics, result);
      const routed = path.split("?")[0] === "/v1/completions" || path.split("?")[0] === "/v1/chat/completions" ? (path.split("?")[0] as string) : "other";
      metrics.requests.labels(routed, String(result.kind === "picked" ? 200 : result.status)).inc();
      if (result.kind === "picked") metrics.addedLatency.observe(ms / 1000);
    },
  };

  let openStreams = 0;
  metrics.registry.gauge({ name: "tessera_epp_streams_open", help: "ext_proc Process streams open now", collect: (g) => g.set(openStreams) });
  const onProcess = (call: grpc.ServerDuplexStream<ProcessingRequest, ProcessingResponse>): void => {
    const h = createStreamHandler(ctx);
    let over = false;
    let decided = false;
    let abortCounted = false;
    openStreams++;
    const finish = (): void => {
      if (over) return;
      over = true;
      openStreams--;
      decided = h.onEnd().decided;
    };
    // a stream cancelled before its decision is a client abort, whichever event came first
    const aborted = (): void => {
      finish();
      if (decided || abortCounted) return;
      abortCounted = true;
      metrics.aborts.inc();
    };
    call.on("data", (m: ProcessingRequest) => {
      if (over) return;
      let out: ProcessingResponse[];
      try {
        out = h.onMessage(m);
      } catch (err) {
        finish();
        abortCounted = true; // refused by us, not aborted by the client
        const refused = err instanceof StreamRefused;
        if (!refused) log.error("ext_proc message failed", { error: err instanceof Error ? err.message : String(err) });
        call.emit("error", { code: refused ? grpc.status.INVALID_ARGUMENT : grpc.status.INTERNAL, details: refused ? err.message : "internal picker error; see the picker log" });
        return;
      }
      for (const r of out) call.write(r);
    });
    call.on("end", () => {
      // A cancelled call ends its readable side too, and grpc-js may tell "cancelled" only after
      // "end": the abort is counted by the "cancelled" handler whenever it comes.
      setImmediate(() => {
        if (call.cancelled) return aborted();
        finish();
        call.end();
      });
    });
    call.on("cancelled", aborted);
    call.on("error", aborted);
  };

  const readiness = (): HealthStatus => (endpoints.states().some((s) => s.ready) ? "SERVING" : "NOT_SERVING");
  const statusOf = (service: string): HealthStatus | undefined =>
    service === "" || service === "liveness" ? "SERVING" : service === "readiness" || service === EXT_PROC_SERVICE ? readiness() : undefined;
  const pollMs = opts.healthPollMs ?? 250;
  const health: grpc.UntypedServiceImplementation = {
    Check(call: grpc.ServerUnaryCall<{ service?: string }, { status: HealthStatus }>, cb: grpc.sendUnaryData<{ status: HealthStatus }>) {
      const s = statusOf(call.request.service ?? "");
      if (!s) return cb({ code: grpc.status.NOT_FOUND, details: `unknown health service ${JSON.stringify((call.request.service ?? "").slice(0, 64))}; ask liveness, readiness or ${EXT_PROC_SERVICE}` });
      cb(null, { status: s });
    },
    Watch(call: grpc.ServerWritableStream<{ service?: string }, { status: HealthStatus | "SERVICE_UNKNOWN" }>) {
      let last = "";
      const send = (): void => {
        const s = statusOf(call.request.service ?? "") ?? "SERVICE_UNKNOWN";
        if (s !== last) call.write({ status: s });
        last = s;
      };
      send();
      const timer = setInterval(send, pollMs);
      timer.unref();
      call.on("cancelled", () => clearInterval(timer));
      call.on("close", () => clearInterval(timer));
    },
  };

  const protos = loadEppProtos();
  const server = new grpc.Server({ "grpc.max_receive_message_length": 16 * 1024 * 1024 });
  server.addService(protos.extProc, { Process: onProcess });
  server.addService(protos.health, health);

  let web: http.Server | undefined;
  try {
    await fillEndpoints(endpoints, opts.endpoints ?? [], opts.source, log);
    const host = listen.host.includes(":") ? `[${listen.host}]` : listen.host;
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${host}:${listen.port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(new TesseraError("TESSERA_EPP", `cannot listen on ${opts.listen}: ${err.message}`, { cause: err })) : resolve(p)));
    });
    listen.port = port;
    if (metricsAt) {
      web = http.createServer((req, res) => {
        const p = (req.url ?? "/").split("?")[0];
        if (req.method === "GET" && p === "/metrics") {
          res.writeHead(200, { "content-type": metrics.registry.contentType }).end(metrics.registry.text());
        } else if (req.method === "GET" && p === "/healthz") {
          const ok = readiness() === "SERVING";
          res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(ok ? "ok\n" : "no ready endpoint\n");
        } else res.writeHead(404, { "content-type": "text/plain" }).end("not found: /metrics, /healthz\n");
      });
      const w = web;
      await new Promise<void>((resolve, reject) => {
        w.once("error", (err) => reject(new TesseraError("TESSERA_EPP", `cannot listen on --metrics-listen=${opts.metricsListen}: ${err.message}`, { cause: err })));
        w.listen(metricsAt.port, metricsAt.host, () => resolve());
      });
    }
  } catch (err) {
    server.forceShutdown();
    web?.close();
    await opts.source?.stop().catch(() => undefined);
    await endpoints.close();
    throw err;
  }
  const shown = listen.host === "0.0.0.0" ? "127.0.0.1" : listen.host.includes(":") ? `[${listen.host}]` : listen.host;
  const waddr = web?.address() as AddressInfo | undefined;
  const metricsUrl = waddr ? `http://${waddr.family === "IPv6" ? `[${waddr.address}]` : waddr.address}:${waddr.port}` : undefined;
  log.info("endpoint picker listening", { listen: `${shown}:${listen.port}`, metrics: metricsUrl ?? "off", endpoints: endpoints.states().map((s) => s.id) });
  let stopped = false;
  return {
    target: `${shown}:${listen.port}`,
    metricsUrl,
    router,
    metrics,
    endpoints,
    streams: () => openStreams,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (opts.source) await opts.source.stop();
      // streams in progress get 2 s to finish their exchange, then are cut
      await new Promise<void>((resolve) => {
        const deadline = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000);
        server.tryShutdown(() => {
          clearTimeout(deadline);
          resolve();
        });
      });
      if (web) {
        const w = web;
        const closed = new Promise<void>((resolve) => w.close(() => resolve()));
        w.closeAllConnections();
        await closed;
      }
      await endpoints.close();
    },
  };
}
