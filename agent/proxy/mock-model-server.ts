// A small stand-in for a vLLM replica, shared by the demo, tests and benches: OpenAI-style
// POST /v1/completions and /v1/chat/completions (JSON or SSE when "stream": true) and a
// vLLM-style Prometheus GET /metrics. Load figures are its own live counters unless a test
// overrides them; it can fail its scrapes, hold responses, and reports client aborts.
import * as http from "node:http";
import { EventEmitter } from "node:events";
import type { AddressInfo } from "node:net";

export interface MockModelServerOptions {
  host?: string; // default 127.0.0.1
  port?: number; // default 0 (any free port)
  model?: string;
  tokens?: number; // SSE chunks per streamed answer (default 4)
  tokenDelayMs?: number; // pause between chunks (default 0)
  maxRunning?: number; // requests beyond this count as waiting (default 8)
  numGpuBlocks?: number; // cache_config_info num_gpu_blocks (default 2048)
  legacyKvMetric?: boolean; // serve vllm:gpu_cache_usage_perc instead of kv_cache_usage_perc
}

export interface MockMetricsOverride {
  waiting?: number;
  running?: number;
  kv?: number;
}

export interface MockModelServer {
  url: string;
  id: string; // "ip:port"
  events: EventEmitter; // "request" (path, body, headers), "abort" (path), "done" (path)
  stats: { requests: number; aborted: number; completed: number; inFlight: number; scrapes: number };
  /** Fixed load figures for /metrics (undefined fields follow the live counters). */
  metrics: MockMetricsOverride;
  /** When true, /metrics answers 500. */
  failMetrics: boolean;
  /** When set, answers wait for this promise before the first byte. */
  hold: Promise<void> | undefined;
  close(): Promise<void>;
}

function completionChunk(model: string, chat: boolean, i: number, id: string): string {
  const choice = chat ? { index: 0, delta: { content: `tok${i} ` }, finish_reason: null } : { index: 0, text: `tok${i} `, finish_reason: null };
  return `data: ${JSON.stringify({ id: `cmpl-${id}`, object: chat ? "chat.completion.chunk" : "text_completion", model, choices: [choice] })}\n\n`;
}

export async function startMockModelServer(opts: MockModelServerOptions = {}): Promise<MockModelServer> {
  const model = opts.model ?? "mock-model";
  const tokens = opts.tokens ?? 4;
  const delay = opts.tokenDelayMs ?? 0;
  const maxRunning = opts.maxRunning ?? 8;
  const events = new EventEmitter();
  const stats = { requests: 0, aborted: 0, completed: 0, inFlight: 0, scrapes: 0 };
  let id = "";
  const self: MockModelServer = {
    url: "", id: "", events, stats, metrics: {}, failMetrics: false, hold: undefined,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };

  const metricsText = (): string => {
    const running = self.metrics.running ?? Math.min(stats.inFlight, maxRunning);
    const waiting = self.metrics.waiting ?? Math.max(0, stats.inFlight - maxRunning);
    const kv = self.metrics.kv ?? Math.min(1, stats.inFlight / 64);
    const kvName = opts.legacyKvMetric ? "vllm:gpu_cache_usage_perc" : "vllm:kv_cache_usage_perc";
    const l = `{model_name="${model}"}`;
    return [
      "# HELP vllm:num_requests_running Number of requests in model execution batches.",
      "# TYPE vllm:num_requests_running gauge",
      `vllm:num_requests_running${l} ${running}`,
      "# TYPE vllm:num_requests_waiting gauge",
      `vllm:num_requests_waiting${l} ${waiting}`,
      `# TYPE ${kvName} gauge`,
      `${kvName}${l} ${kv}`,
      "# TYPE vllm:cache_config_info gauge",
      `vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",num_gpu_blocks="${opts.numGpuBlocks ?? 2048}"} 1.0`,
      "",
    ].join("\n");
  };

  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    if (req.method === "GET" && path === "/metrics") {
      stats.scrapes++;
      if (self.failMetrics) {
        res.writeHead(500).end("scrape failure injected\n");
        return;
      }
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(metricsText());
      return;
    }
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => void answer(req, res, path, Buffer.concat(chunks)));
  });

  async function answer(req: http.IncomingMessage, res: http.ServerResponse, path: string, raw: Buffer): Promise<void> {
    stats.requests++;
    stats.inFlight++;
    let finished = false;
    res.on("close", () => {
      stats.inFlight--;
      if (!finished) {
        stats.aborted++;
        events.emit("abort", path);
      }
    });
    let body: Record<string, unknown> = {};
    try {
      body = raw.length > 0 ? (JSON.parse(raw.toString("utf8")) as Record<string, unknown>) : {};
    } catch {
      finished = true;
      res.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "invalid JSON" } }));
      return;
    }
    events.emit("request", path, body, req.headers);
    if (self.hold) await self.hold;
    if (res.destroyed) return;
    const chat = path === "/v1/chat/completions";
    if (path !== "/v1/completions" && !chat) {
      finished = true;
      res.writeHead(200, { "content-type": "application/json", "x-mock-server": id }).end(JSON.stringify({ object: "list", data: [{ id: model, object: "model" }], path, method: req.method }));
      return;
    }
    if (body.stream === true) {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", "x-mock-server": id });
      for (let i = 0; i < tokens; i++) {
        if (res.destroyed) return;
        res.write(completionChunk(model, chat, i, id));
        if (delay > 0) await new Promise((r) => setTimeout(r, delay));
      }
      if (res.destroyed) return;
      finished = true;
      stats.completed++;
      res.end("data: [DONE]\n\n");
      events.emit("done", path);
      return;
    }
    const text = Array.from({ length: tokens }, (_, i) => `tok${i} `).join("");
    const choice = chat ? { index: 0, message: { role: "assistant", content: text }, finish_reason: "length" } : { index: 0, text, finish_reason: "length" };
    finished = true;
    stats.completed++;
    res.writeHead(200, { "content-type": "application/json", "x-mock-server": id });
    res.end(JSON.stringify({ id: `cmpl-${id}`, object: chat ? "chat.completion" : "text_completion", model, choices: [choice], usage: { prompt_tokens: Math.ceil(raw.length / 4), completion_tokens: tokens } }));
    events.emit("done", path);
  }

  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", () => resolve());
  });
  const addr = server.address() as AddressInfo;
  id = `${addr.address}:${addr.port}`;
  self.id = id;
  self.url = `http://${id}`;
  return self;
}
