// The router's own Prometheus metrics, in a registry of its own (no module singletons, so tests
// and the simulator can run several routers in one process). One set of series for both
// transports, named by prefix: `tessera_proxy_*` for the HTTP proxy, `tessera_epp_*` for the
// Envoy ext_proc endpoint picker.
import { Registry, type Counter, type Histogram } from "../common/prom-text.js";
import type { PickResult } from "../routing/pick.js";
import type { EndpointState } from "../routing/types.js";

export type MetricsPrefix = "tessera_proxy" | "tessera_epp";

export interface RouterMetrics {
  registry: Registry;
  requests: Counter<readonly ["path", "code"]>;
  decisions: Counter<readonly ["reason"]>;
  prefixHitBlocks: Counter;
  promptBlocks: Counter;
  addedLatency: Histogram;
  retries: Counter;
  aborts: Counter;
}

export function createRouterMetrics(prefix: MetricsPrefix, states: () => readonly EndpointState[], indexedBlocks: (id: string) => number): RouterMetrics {
  const registry = new Registry();
  const requests = registry.counter({ name: `${prefix}_requests_total`, help: "Requests answered, by routed path and status code", labelNames: ["path", "code"] });
  const decisions = registry.counter({ name: `${prefix}_decisions_total`, help: "Routing decisions by reason (prefix, load, guard, tie, only, header, cold)", labelNames: ["reason"] });
  const prefixHitBlocks = registry.counter({ name: `${prefix}_prefix_hit_blocks_total`, help: "Prompt blocks already indexed on the chosen endpoint" });
  const promptBlocks = registry.counter({ name: `${prefix}_prompt_blocks_total`, help: "Prompt blocks hashed" });
  const addedLatency = registry.histogram({
    name: `${prefix}_added_latency_seconds`,
    help: prefix === "tessera_epp"
      ? "Time from the request body's end to the header answer: parse, hashing, scoring"
      : "Time the proxy adds before forwarding: body parse, hashing, scoring and dispatch",
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
  });
  const retries = registry.counter({ name: `${prefix}_retries_total`, help: "Requests retried on another endpoint after a connection failure" });
  const aborts = registry.counter({ name: `${prefix}_client_aborts_total`, help: "Client (or gateway stream) cancellations before the answer" });
  const gauge = (name: string, help: string, pick: (s: EndpointState) => number): void => {
    registry.gauge({
      name: `${prefix}_${name}`, help, labelNames: ["endpoint"],
      collect(g) {
        // endpoints come and go: only the current ones are shown
        g.reset();
        for (const s of states()) g.labels(s.id).set(pick(s));
      },
    });
  };
  gauge("endpoint_ready", "1 when the endpoint's last scrape succeeded", (s) => (s.ready ? 1 : 0));
  gauge("endpoint_waiting_requests", "vllm:num_requests_waiting at the last scrape", (s) => s.waitingRequests);
  gauge("endpoint_running_requests", "vllm:num_requests_running at the last scrape", (s) => s.runningRequests);
  gauge("endpoint_kv_cache_usage", "KV cache usage 0..1 at the last scrape", (s) => s.kvCacheUsage);
  gauge("endpoint_in_flight", "Requests this router has in flight to the endpoint", (s) => s.inFlight);
  gauge("endpoint_indexed_blocks", "Prompt blocks in the endpoint's prefix index", (s) => indexedBlocks(s.id));
  return { registry, requests, decisions, prefixHitBlocks, promptBlocks, addedLatency, retries, aborts };
}

/** Counts one pick the same way for both transports (decision reason, prefix blocks). */
export function recordPick(metrics: RouterMetrics, result: PickResult): void {
  if (result.kind !== "picked") return;
  metrics.decisions.labels(result.reason).inc();
  metrics.prefixHitBlocks.inc(result.matchedBlocks);
  metrics.promptBlocks.inc(result.totalBlocks);
}
