// The proxy's own Prometheus metrics, in a registry of its own (no module singletons, so tests
// and the simulator can run several proxies in one process).
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { EndpointState } from "../routing/types.js";

export interface ProxyMetrics {
  registry: Registry;
  requests: Counter<"path" | "code">;
  decisions: Counter<"reason">;
  prefixHitBlocks: Counter;
  promptBlocks: Counter;
  addedLatency: Histogram;
  retries: Counter;
  aborts: Counter;
}

export function createProxyMetrics(states: () => readonly EndpointState[], indexedBlocks: (id: string) => number): ProxyMetrics {
  const registry = new Registry();
  const requests = new Counter({ name: "tessera_proxy_requests_total", help: "Requests answered, by routed path and status code", labelNames: ["path", "code"] as const, registers: [registry] });
  const decisions = new Counter({ name: "tessera_proxy_decisions_total", help: "Routing decisions by reason (prefix, load, guard, tie, only, header)", labelNames: ["reason"] as const, registers: [registry] });
  const prefixHitBlocks = new Counter({ name: "tessera_proxy_prefix_hit_blocks_total", help: "Prompt blocks already indexed on the chosen endpoint", registers: [registry] });
  const promptBlocks = new Counter({ name: "tessera_proxy_prompt_blocks_total", help: "Prompt blocks hashed", registers: [registry] });
  const addedLatency = new Histogram({
    name: "tessera_proxy_added_latency_seconds",
    help: "Time the proxy adds before forwarding: body parse, hashing, scoring and dispatch",
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
    registers: [registry],
  });
  const retries = new Counter({ name: "tessera_proxy_retries_total", help: "Requests retried on another endpoint after a connection failure", registers: [registry] });
  const aborts = new Counter({ name: "tessera_proxy_client_aborts_total", help: "Client disconnects propagated to the backend", registers: [registry] });
  const gauge = (name: string, help: string, pick: (s: EndpointState) => number): void => {
    new Gauge({
      name, help, labelNames: ["endpoint"] as const, registers: [registry],
      collect() {
        this.reset();
        for (const s of states()) this.set({ endpoint: s.id }, pick(s));
      },
    });
  };
  gauge("tessera_proxy_endpoint_ready", "1 when the endpoint's last scrape succeeded", (s) => (s.ready ? 1 : 0));
  gauge("tessera_proxy_endpoint_waiting_requests", "vllm:num_requests_waiting at the last scrape", (s) => s.waitingRequests);
  gauge("tessera_proxy_endpoint_running_requests", "vllm:num_requests_running at the last scrape", (s) => s.runningRequests);
  gauge("tessera_proxy_endpoint_kv_cache_usage", "KV cache usage 0..1 at the last scrape", (s) => s.kvCacheUsage);
  gauge("tessera_proxy_endpoint_in_flight", "Requests this proxy has in flight to the endpoint", (s) => s.inFlight);
  gauge("tessera_proxy_endpoint_indexed_blocks", "Prompt blocks in the endpoint's prefix index", (s) => indexedBlocks(s.id));
  return { registry, requests, decisions, prefixHitBlocks, promptBlocks, addedLatency, retries, aborts };
}
