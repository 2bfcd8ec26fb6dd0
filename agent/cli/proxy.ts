// `tessera proxy --listen <host:port> --endpoints <url,...> | --inference-pool <ns>/<name>`:
// the in-node prefix-aware router. Runs until SIGTERM/SIGINT, then stops accepting, lets
// in-flight streams finish (2 s deadline) and exits 0.
import * as os from "node:os";
import { bool, int, list, logLevelOf, optStr, parseFlags, PROXY_FLAGS, str, VERB_FLAGS, type ParsedArgs } from "../common/config.js";
import { TesseraError } from "../common/errors.js";
import { createLogger, type Logger } from "../common/log.js";
import type { EndpointSource } from "../endpoints/table.js";
import type { ProxyOptions } from "../proxy/server.js";
import type { RouterConfigInput } from "../routing/config.js";
import type { CliIO } from "./io.js";

export { PROXY_FLAGS };

function number(args: ParsedArgs, name: string): number {
  const text = str(args, name);
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n)) throw new TesseraError("TESSERA_CONFIG", `--${name}=${text}: expected a number`);
  return n;
}

/** Flags -> ProxyOptions (without an InferencePool source, which needs the cluster). */
export function proxyOptionsFromArgs(args: ParsedArgs): ProxyOptions {
  const { endpoints } = endpointSourceFlags(args, "proxy");
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
    router: routerOptionsFromArgs(args),
  };
}

/** The routing profile's flags (the same for `tessera proxy` and `tessera epp`). */
export function routerOptionsFromArgs(args: ParsedArgs): RouterConfigInput {
  return {
    blockSize: int(args, "block-size"),
    maxBlocks: int(args, "max-blocks"),
    capacityBlocks: int(args, "capacity-blocks"),
    weights: { prefix: number(args, "weight-prefix"), queue: number(args, "weight-queue"), kv: number(args, "weight-kv"), inflight: number(args, "weight-inflight") },
    guardThreshold: number(args, "guard-threshold"),
    saturationQueue: number(args, "saturation-queue"),
  };
}

/** `--endpoints` or `--inference-pool`, exactly one (both verbs). */
export function endpointSourceFlags(args: ParsedArgs, verb: string): { endpoints: string[]; pool: string | undefined } {
  const endpoints = list(args, "endpoints");
  const pool = optStr(args, "inference-pool");
  if (endpoints.length === 0 && pool === undefined) {
    throw new TesseraError("TESSERA_USAGE", `tessera ${verb} needs --endpoints http://ip:port,... or --inference-pool <namespace>/<name>`);
  }
  if (endpoints.length > 0 && pool !== undefined) throw new TesseraError("TESSERA_USAGE", "give either --endpoints or --inference-pool, not both");
  return { endpoints, pool };
}

/** `--inference-pool <ns>/<name>` as an endpoint source (undefined without the flag); pods on
 *  `nodeName` only, or on every node when it is undefined (the picker). */
export async function inferencePoolSource(args: ParsedArgs, io: CliIO, log: Logger, nodeName: string | undefined): Promise<EndpointSource | undefined> {
  const pool = optStr(args, "inference-pool");
  if (pool === undefined) return undefined;
  // loaded only here: @kubernetes/client-node is heavy and --endpoints does not need it
  const { openKube, parseKubeSpec } = await import("../kube/kube-source.js");
  const kube = await openKube(parseKubeSpec(str(args, "kube")), io.env);
  if (kube.mode !== "cluster") throw new TesseraError("TESSERA_CONFIG", "--inference-pool needs a cluster: --kube auto or kubeconfig:<path>");
  const { createInferencePoolSource } = await import("../endpoints/inference-pool.js");
  return createInferencePoolSource({ kube: kube.config, pool, nodeName, log });
}

/** Runs until SIGTERM/SIGINT. */
export function untilSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off("SIGTERM", stop);
      process.off("SIGINT", stop);
      resolve();
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  });
}

/** What a router verb (`proxy`, `epp`) serves: started from its options, stopped at a signal. */
export interface RunningRouter {
  banner: string;
  stop(): Promise<void>;
}

/** The one path from flags to a serving router for `proxy` and `epp` (they differ only in
 *  transport): logger, router flags checked before anything starts, the endpoint source (pods on
 *  `nodeName`, or every node when undefined), then serve until SIGTERM/SIGINT. */
export async function serveRouter<O extends { log?: Logger; router?: RouterConfigInput; source?: EndpointSource }>(args: ParsedArgs, io: CliIO, options: O, nodeName: string | undefined, start: (o: O) => Promise<RunningRouter>): Promise<number> {
  const log = createLogger({ level: logLevelOf(args), write: (line) => io.stderr(line + "\n") });
  options.log = log;
  const { resolveRouterConfig } = await import("../routing/config.js");
  resolveRouterConfig(options.router); // flag errors before anything starts
  const source = await inferencePoolSource(args, io, log, nodeName);
  if (source) options.source = source;
  const running = await start(options);
  io.stdout(running.banner + "\n");
  await untilSignal();
  await running.stop();
  return 0;
}

export async function runProxy(argv: string[], io: CliIO): Promise<number> {
  const args = parseFlags(argv, VERB_FLAGS.proxy, io.env);
  return serveRouter(args, io, proxyOptionsFromArgs(args), optStr(args, "node-name") ?? os.hostname(), async (o) => {
    const { startProxy } = await import("../proxy/server.js");
    const proxy = await startProxy(o);
    return { banner: `tessera proxy listening on ${proxy.url}`, stop: () => proxy.stop() };
  });
}
