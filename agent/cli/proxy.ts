// `tessera proxy --listen <host:port> --endpoints <url,...> | --inference-pool <ns>/<name>`:
// the in-node prefix-aware router. Runs until SIGTERM/SIGINT, then stops accepting, lets
// in-flight streams finish (2 s deadline) and exits 0.
import * as os from "node:os";
import { bool, int, list, LOG_LEVEL_FLAG, logLevelOf, optStr, parseFlags, str, type FlagSpec, type ParsedArgs } from "../common/config.js";
import { TesseraError } from "../common/errors.js";
import { createLogger } from "../common/log.js";
import type { ProxyOptions } from "../proxy/server.js";
import type { CliIO } from "./io.js";

export const PROXY_FLAGS: readonly FlagSpec[] = [
  { name: "listen", type: "string", env: "PROXY_LISTEN", default: "0.0.0.0:8080", help: "address to serve on" },
  { name: "endpoints", type: "list", env: "PROXY_ENDPOINTS", help: "model server URLs, http://ip:port,..." },
  { name: "inference-pool", type: "string", env: "INFERENCE_POOL", help: "<namespace>/<name> of an inference.networking.k8s.io/v1 InferencePool" },
  { name: "node-name", type: "string", env: "NODE_NAME", help: "only pods on this node (default: host name)" },
  { name: "kube", type: "string", env: "KUBE", default: "auto", help: "auto | kubeconfig:<path>" },
  { name: "trust-endpoint-header", type: "bool", env: "PROXY_TRUST_ENDPOINT_HEADER", default: false, help: "honour a client's x-gateway-destination-endpoint" },
  { name: "scrape-interval-ms", type: "int", env: "PROXY_SCRAPE_INTERVAL_MS", default: 50, help: "endpoint /metrics scrape period" },
  { name: "max-body-bytes", type: "int", env: "PROXY_MAX_BODY_BYTES", default: 8 * 1024 * 1024, help: "request body limit (413 above)" },
  { name: "request-timeout-ms", type: "int", env: "PROXY_REQUEST_TIMEOUT_MS", default: 30_000, help: "a client must send its whole request within" },
  { name: "upstream-connections", type: "int", env: "PROXY_UPSTREAM_CONNECTIONS", default: 128, help: "backend connections per endpoint at most (more requests wait for one)" },
  { name: "upstream-keepalive-ms", type: "int", env: "PROXY_UPSTREAM_KEEPALIVE_MS", default: 4000, help: "an idle backend connection is closed after this" },
  { name: "block-size", type: "int", env: "PROXY_BLOCK_SIZE", default: 64, help: "bytes per hashed prompt block" },
  { name: "max-blocks", type: "int", env: "PROXY_MAX_BLOCKS", default: 256, help: "blocks hashed per prompt at most" },
  { name: "capacity-blocks", type: "int", env: "PROXY_CAPACITY_BLOCKS", default: 31_250, help: "index capacity per endpoint until cache_config_info says otherwise" },
  { name: "weight-prefix", type: "string", env: "PROXY_WEIGHT_PREFIX", default: "3", help: "prefix scorer weight" },
  { name: "weight-queue", type: "string", env: "PROXY_WEIGHT_QUEUE", default: "2", help: "queue scorer weight" },
  { name: "weight-kv", type: "string", env: "PROXY_WEIGHT_KV", default: "2", help: "KV-cache scorer weight" },
  { name: "weight-inflight", type: "string", env: "PROXY_WEIGHT_INFLIGHT", default: "1", help: "in-flight scorer weight" },
  { name: "guard-threshold", type: "string", env: "PROXY_GUARD_THRESHOLD", default: "16", help: "queue excess (waiting + in-flight) over the least loaded that voids the prefix score" },
  { name: "saturation-queue", type: "string", env: "PROXY_SATURATION_QUEUE", default: "128", help: "waiting + in-flight at which an endpoint is saturated (0: off); all saturated -> 429" },
  LOG_LEVEL_FLAG,
];

function number(args: ParsedArgs, name: string): number {
  const text = str(args, name);
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n)) throw new TesseraError("TESSERA_CONFIG", `--${name}=${text}: expected a number`);
  return n;
}

/** Flags -> ProxyOptions (without an InferencePool source, which needs the cluster). */
export function proxyOptionsFromArgs(args: ParsedArgs): ProxyOptions {
  const endpoints = list(args, "endpoints");
  if (endpoints.length === 0 && optStr(args, "inference-pool") === undefined) {
    throw new TesseraError("TESSERA_USAGE", "tessera proxy needs --endpoints http://ip:port,... or --inference-pool <namespace>/<name>");
  }
  if (endpoints.length > 0 && optStr(args, "inference-pool") !== undefined) {
    throw new TesseraError("TESSERA_USAGE", "give either --endpoints or --inference-pool, not both");
  }
  for (const name of ["scrape-interval-ms", "max-body-bytes", "request-timeout-ms", "upstream-connections", "upstream-keepalive-ms"]) {
    if (int(args, name) <= 0) throw new TesseraError("TESSERA_CONFIG", `--${name}=${int(args, name)}: expected a positive number`);
  }
  return {
    listen: str(args, "listen"),
    endpoints,
    trustEndpointHeader: bool(args, "trust-endpoint-header"),
    scrapeIntervalMs: int(args, "scrape-interval-ms"),
    maxBodyBytes: int(args, "max-body-bytes"),
    requestTimeoutMs: int(args, "request-timeout-ms"),
    connections: int(args, "upstream-connections"),
    upstreamKeepAliveMs: int(args, "upstream-keepalive-ms"),
    router: {
      blockSize: int(args, "block-size"),
      maxBlocks: int(args, "max-blocks"),
      capacityBlocks: int(args, "capacity-blocks"),
      weights: { prefix: number(args, "weight-prefix"), queue: number(args, "weight-queue"), kv: number(args, "weight-kv"), inflight: number(args, "weight-inflight") },
      guardThreshold: number(args, "guard-threshold"),
      saturationQueue: number(args, "saturation-queue"),
    },
  };
}

export async function runProxy(argv: string[], io: CliIO): Promise<number> {
  const args = parseFlags(argv, PROXY_FLAGS, io.env);
  const options = proxyOptionsFromArgs(args);
  const log = createLogger({ level: logLevelOf(args), write: (line) => io.stderr(line + "\n") });
  options.log = log;
  const { resolveRouterConfig } = await import("../routing/config.js");
  resolveRouterConfig(options.router); // flag errors before anything starts
  const pool = optStr(args, "inference-pool");
  if (pool !== undefined) {
    // loaded only here: @kubernetes/client-node is heavy and --endpoints does not need it
    const { openKube, parseKubeSpec } = await import("../kube/kube-source.js");
    const kube = openKube(parseKubeSpec(str(args, "kube")), io.env);
    if (kube.mode !== "cluster") throw new TesseraError("TESSERA_CONFIG", "--inference-pool needs a cluster: --kube auto or kubeconfig:<path>");
    const { createInferencePoolSource } = await import("../proxy/inference-pool.js");
    options.source = createInferencePoolSource({ kube: kube.config, pool, nodeName: optStr(args, "node-name") ?? os.hostname(), log });
  }
  const { startProxy } = await import("../proxy/server.js");
  const proxy = await startProxy(options);
  io.stdout(`tessera proxy listening on ${proxy.url}\n`);
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off("SIGTERM", stop);
      process.off("SIGINT", stop);
      resolve();
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  });
  await proxy.stop();
  return 0;
}
