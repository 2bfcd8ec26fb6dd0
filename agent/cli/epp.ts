// `tessera epp --listen <host:port> --endpoints <url,...> | --inference-pool <ns>/<name>`: the
// prefix router as an Envoy ext_proc endpoint picker for gateways (docs/epp.md). Runs until
// SIGTERM/SIGINT, then lets open streams finish (2 s deadline) and exits 0.
import { int, parseFlags, str, VERB_FLAGS, type ParsedArgs } from "../common/config.js";
import { TesseraError } from "../common/errors.js";
import type { EppOptions } from "../epp/server.js";
import { MAX_FALLBACKS } from "../routing/pick.js";
import { endpointSourceFlags, routerOptionsFromArgs, serveRouter } from "./proxy.js";
import type { CliIO } from "./io.js";

/** Flags -> EppOptions (without the InferencePool source, which needs the cluster). */
export function eppOptionsFromArgs(args: ParsedArgs): EppOptions {
  const { endpoints } = endpointSourceFlags(args, "epp");
  for (const name of ["scrape-interval-ms", "max-body-bytes"]) {
    if (int(args, name) <= 0) throw new TesseraError("TESSERA_CONFIG", `--${name}=${int(args, name)}: expected a positive number`);
  }
  const fallbacks = int(args, "fallbacks");
  if (fallbacks < 0 || fallbacks > MAX_FALLBACKS) throw new TesseraError("TESSERA_CONFIG", `--fallbacks=${fallbacks}: expected 0..${MAX_FALLBACKS} next-best endpoints after the primary`);
  const bodyMode = str(args, "body-mode");
  if (bodyMode !== "full-duplex" && bodyMode !== "buffered") throw new TesseraError("TESSERA_CONFIG", `--body-mode=${bodyMode.slice(0, 64)}: expected full-duplex or buffered`);
  const slackText = str(args, "cold-slack");
  const coldSlack = Number(slackText);
  if (slackText.trim() === "" || !Number.isFinite(coldSlack)) throw new TesseraError("TESSERA_CONFIG", `--cold-slack=${slackText.slice(0, 64)}: expected a number`);
  return {
    listen: str(args, "listen"),
    metricsListen: str(args, "metrics-listen"),
    endpoints,
    bodyMode,
    scrapeIntervalMs: int(args, "scrape-interval-ms"),
    maxBodyBytes: int(args, "max-body-bytes"),
    fallbacks: int(args, "fallbacks"),
    router: { ...routerOptionsFromArgs(args), coldSlack },
  };
}

export async function runEpp(argv: string[], io: CliIO): Promise<number> {
  const args = parseFlags(argv, VERB_FLAGS.epp, io.env);
  // every ready pod of the pool, on every node: the gateway reaches them all
  return serveRouter(args, io, eppOptionsFromArgs(args), undefined, async (o) => {
    const { startEpp } = await import("../epp/server.js");
    const epp = await startEpp(o);
    return { banner: `tessera epp listening on ${epp.target} (ext_proc gRPC)${epp.metricsUrl ? `, metrics on ${epp.metricsUrl}/metrics` : ""}`, stop: () => epp.stop() };
  });
}
