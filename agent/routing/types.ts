// The routing contract shared by the proxy, the simulator (bench/routing) and tests. The
// implementation behind it is the WASM core (wasm-core/assembly/routing.ts) via agent/routing/.

/** What a router knows about one endpoint at decision time (scraped metrics + our own counters). */
export interface EndpointState {
  id: string; // "ip:port"
  ready: boolean;
  waitingRequests: number; // vllm:num_requests_waiting
  runningRequests: number; // vllm:num_requests_running
  kvCacheUsage: number; // 0..1, vllm:kv_cache_usage_perc
  inFlight: number; // requests this proxy has sent and not finished
}

export interface RouteDecision {
  endpoint: string;
  /** Blocks of the prompt already indexed on the chosen endpoint. */
  matchedBlocks: number;
  totalBlocks: number;
  /** cold: no endpoint held a block, rendezvous hash among the least waiting (coldSlack > 0). */
  reason: "prefix" | "load" | "guard" | "tie" | "only" | "cold";
}

export interface PrefixRouter {
  addEndpoint(id: string, capacityBlocks?: number): void;
  removeEndpoint(id: string): void;
  /** Hashes the prompt (UTF-8 bytes) seeded by model (+salt), scores, picks, inserts into the index. */
  route(prompt: string | Uint8Array, model: string, endpoints: readonly EndpointState[], salt?: string): RouteDecision;
}
