// Reads what the router needs from a vLLM-style Prometheus text page. Pure parsing; the loop that
// fetches pages lives in endpoints.ts. Several series of one metric (one per model) are summed
// (queues) or maxed (KV usage).

const MAX_CACHE_BLOCKS = 1 << 28; // capacityBlocks' upper bound in agent/routing/config.ts

export interface ScrapedLoad {
  waiting: number;
  running: number;
  kvCacheUsage: number; // 0..1
  /** LRU capacity in router blocks derived from vllm:cache_config_info, when present. */
  cacheBlocks: number | undefined;
}

function labels(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (let m = re.exec(text); m; m = re.exec(text)) out.set(m[1] as string, m[2] as string);
  return out;
}

/**
 * Parses the metrics page. `blockSizeBytes` converts the engine's cache (num_gpu_blocks x
 * block_size tokens) into router blocks, counting 4 bytes of prompt per token.
 */
export function parseVllmMetrics(page: string, blockSizeBytes: number): ScrapedLoad | undefined {
  let waiting = 0, running = 0, kv = 0;
  let seen = 0;
  let cacheBlocks: number | undefined;
  for (const line of page.split("\n")) {
    if (line.length === 0 || line.charCodeAt(0) === 35 /* # */) continue;
    const brace = line.indexOf("{");
    const space = line.indexOf(" ");
    const nameEnd = brace >= 0 && brace < space ? brace : space;
    if (nameEnd <= 0) continue;
    const name = line.slice(0, nameEnd);
    if (!name.startsWith("vllm:")) continue;
    const close = brace >= 0 && brace < space ? line.indexOf("}", brace) : -1;
    const rest = line.slice(close >= 0 ? close + 1 : nameEnd).trim().split(/\s+/);
    const value = Number(rest[0]);
    if (!Number.isFinite(value)) continue;
    switch (name) {
      case "vllm:num_requests_waiting": waiting += value; seen |= 1; break;
      case "vllm:num_requests_running": running += value; seen |= 2; break;
      case "vllm:kv_cache_usage_perc":
      case "vllm:gpu_cache_usage_perc": kv = Math.max(kv, value); seen |= 4; break;
      case "vllm:cache_config_info": {
        const l = labels(line.slice(brace, close + 1));
        const blocks = Number(l.get("num_gpu_blocks"));
        const tokens = Number(l.get("block_size"));
        if (Number.isFinite(blocks) && Number.isFinite(tokens) && blocks > 0 && tokens > 0) {
          // clamped to the --capacity-blocks limit: the WASM core takes a u32, larger values would wrap
          cacheBlocks = Math.min(MAX_CACHE_BLOCKS, Math.max(1, Math.floor((blocks * tokens * 4) / blockSizeBytes)));
        }
        break;
      }
    }
  }
  // a page without the queue gauges is not a model server we can route to
  if ((seen & 3) !== 3) return undefined;
  return { waiting, running, kvCacheUsage: Math.min(1, Math.max(0, kv)), cacheBlocks };
}
