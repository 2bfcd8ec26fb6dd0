// The router's view of its endpoints, shared by `tessera proxy` and `tessera epp`: one undici
// keep-alive Pool per endpoint for traffic (the proxy's; created idle, so the picker, which
// forwards nothing, pays no connection), one single-connection Client per endpoint for /metrics
// (so scrapes never queue behind streams), the scraped load, and our in-flight count. An endpoint is ready only after a successful scrape
// and stops being ready as soon as one fails. Endpoints come and go with setEndpoints().
import { Client, Pool } from "undici";
import { TesseraError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import type { EndpointState } from "../routing/types.js";
import { parseVllmMetrics } from "./scrape.js";

/** Where endpoint URLs come from (static list, InferencePool watch); calls onChange with the full set. */
export interface EndpointSource {
  start(onChange: (urls: string[]) => void): Promise<void>;
  stop(): Promise<void>;
}

export interface Endpoint {
  state: EndpointState; // handed to the router as is
  origin: string; // "http://ip:port"
  pool: Pool;
  scraper: Client;
  scraping: Promise<void> | undefined; // the scrape in progress, if any
  cacheBlocks: number | undefined;
}

export interface EndpointTableOptions {
  scrapeIntervalMs: number;
  scrapeTimeoutMs: number;
  connections: number; // per endpoint, at most (undici queues the rest)
  keepAliveMs: number; // idle backend connections close after this
  upstreamHeadersTimeoutMs: number;
  upstreamBodyTimeoutMs: number;
  connectTimeoutMs: number;
  blockSizeBytes: number;
  log: Logger;
  onAdded(id: string): void;
  onRemoved(id: string): void;
  onCapacity(id: string, blocks: number): void;
}

export interface EndpointTable {
  byId: Map<string, Endpoint>;
  states(): EndpointState[];
  setEndpoints(urls: readonly string[]): void;
  /** One scrape of every endpoint, awaited (used at start so the first request finds ready endpoints). */
  scrapeAll(): Promise<void>;
  close(): Promise<void>;
}

/** "http://10.0.0.1:8000/" -> ["http://10.0.0.1:8000", "10.0.0.1:8000"]; throws on anything else. */
export function parseEndpointUrl(raw: string): { origin: string; id: string } {
  let u: URL;
  try {
    u = new URL(raw.includes("://") ? raw : `http://${raw}`);
  } catch (err) {
    throw new TesseraError("TESSERA_CONFIG", `endpoint ${JSON.stringify(raw)} is not a URL; expected http://<ip>:<port>`, { cause: err });
  }
  if (u.protocol !== "http:" || (u.pathname !== "/" && u.pathname !== "") || u.search !== "") {
    throw new TesseraError("TESSERA_CONFIG", `endpoint ${raw}: expected http://<ip>:<port> without a path`);
  }
  const port = u.port === "" ? "80" : u.port;
  return { origin: `http://${u.hostname}:${port}`, id: `${u.hostname.replace(/^\[|\]$/g, "")}:${port}` };
}

export function createEndpointTable(opts: EndpointTableOptions): EndpointTable {
  const byId = new Map<string, Endpoint>();
  let list: EndpointState[] = [];
  let closed = false;

  const scrape = (ep: Endpoint): Promise<void> => {
    if (closed) return Promise.resolve();
    ep.scraping ??= scrapeOnce(ep).finally(() => {
      ep.scraping = undefined;
    });
    return ep.scraping;
  };

  const scrapeOnce = async (ep: Endpoint): Promise<void> => {
    try {
      const res = await ep.scraper.request({ path: "/metrics", method: "GET", headersTimeout: opts.scrapeTimeoutMs, bodyTimeout: opts.scrapeTimeoutMs });
      const text = await res.body.text();
      const load = res.statusCode === 200 ? parseVllmMetrics(text, opts.blockSizeBytes) : undefined;
      if (!load) throw new Error(`GET /metrics answered ${res.statusCode} without vLLM queue gauges`);
      ep.state.waitingRequests = load.waiting;
      ep.state.runningRequests = load.running;
      ep.state.kvCacheUsage = load.kvCacheUsage;
      if (load.cacheBlocks !== undefined && load.cacheBlocks !== ep.cacheBlocks) {
        ep.cacheBlocks = load.cacheBlocks;
        opts.onCapacity(ep.state.id, load.cacheBlocks);
      }
      if (!ep.state.ready) opts.log.info("endpoint ready", { endpoint: ep.state.id });
      ep.state.ready = true;
    } catch (err) {
      // a scrape cut short by close() or by the endpoint's removal is not the endpoint failing
      if (closed || byId.get(ep.state.id) !== ep) return;
      if (ep.state.ready) opts.log.warn("endpoint not ready: scrape failed", { endpoint: ep.state.id, error: err instanceof Error ? err.message : String(err) });
      ep.state.ready = false;
    }
  };

  const timer = setInterval(() => {
    for (const ep of byId.values()) void scrape(ep);
  }, opts.scrapeIntervalMs);
  timer.unref();

  const closeEndpoint = (ep: Endpoint): void => {
    // let streams in progress finish; new requests no longer see this endpoint
    void ep.pool.close().catch(() => undefined);
    void ep.scraper.destroy().catch(() => undefined);
  };

  return {
    byId,
    states: () => list,
    setEndpoints(urls) {
      const wanted = new Map(urls.map((u) => {
        const p = parseEndpointUrl(u);
        return [p.id, p.origin] as const;
      }));
      for (const [id, ep] of byId) {
        if (wanted.has(id)) continue;
        byId.delete(id);
        closeEndpoint(ep);
        opts.onRemoved(id);
        opts.log.info("endpoint removed", { endpoint: id });
      }
      for (const [id, origin] of wanted) {
        if (byId.has(id)) continue;
        const ep: Endpoint = {
          state: { id, ready: false, waitingRequests: 0, runningRequests: 0, kvCacheUsage: 0, inFlight: 0 },
          origin,
          pool: new Pool(origin, {
            connections: opts.connections,
            // an idle socket closes after keepAliveMs, and a server's Keep-Alive hint cannot stretch it
            keepAliveTimeout: opts.keepAliveMs,
            keepAliveMaxTimeout: opts.keepAliveMs,
            headersTimeout: opts.upstreamHeadersTimeoutMs,
            bodyTimeout: opts.upstreamBodyTimeoutMs,
            connect: { timeout: opts.connectTimeoutMs },
          }),
          scraper: new Client(origin, { pipelining: 1, keepAliveTimeout: opts.keepAliveMs, keepAliveMaxTimeout: opts.keepAliveMs, connect: { timeout: opts.scrapeTimeoutMs } }),
          scraping: undefined,
          cacheBlocks: undefined,
        };
        byId.set(id, ep);
        opts.onAdded(id);
        opts.log.info("endpoint added", { endpoint: id });
        void scrape(ep);
      }
      list = [...byId.values()].map((e) => e.state);
    },
    async scrapeAll() {
      await Promise.all([...byId.values()].map((ep) => scrape(ep)));
    },
    async close() {
      closed = true;
      clearInterval(timer);
      await Promise.all([...byId.values()].map(async (ep) => {
        await ep.pool.destroy().catch(() => undefined);
        await ep.scraper.destroy().catch(() => undefined);
      }));
      byId.clear();
      list = [];
    },
  };
}

/** Fills the table from the static list and the source (which keeps it current), then scrapes
 *  every endpoint once, so the first request finds ready ones. The proxy's and the picker's start. */
export async function fillEndpoints(table: EndpointTable, urls: readonly string[], source: EndpointSource | undefined, log: Logger): Promise<void> {
  table.setEndpoints(urls);
  if (source) await source.start((list) => {
    try {
      table.setEndpoints(list);
    } catch (err) {
      log.error("endpoint list rejected", { error: err instanceof Error ? err.message : String(err) });
    }
  });
  await table.scrapeAll();
}
