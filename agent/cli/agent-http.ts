// The agent's HTTP endpoint (--http-listen, default 0.0.0.0:9477; `off` disables), for the
// kubelet's httpGet probes and Prometheus:
//   /healthz  200 when both plugin sockets accept connections (checked in-process: a connect to
//             each public socket path, nothing spawned) and the kubelet's registration was seen
//             or is not required yet (standalone mode, or within the grace period after start);
//             503 when the kubelet rejected the plugin.
//   /readyz   200 once the ResourceSlices were published at least once and the checkpoint is loaded.
//   /metrics  the agent's own metrics Registry (agent/common/agent-metrics.ts).
// Bodies are one JSON object: {"ok":bool,"checks":{name: "ok" | reason}}.
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import type { AgentMetricsRegistry } from "../common/agent-metrics.js";
import { TesseraError } from "../common/errors.js";
import type { HostPort } from "../common/config.js";
import { socketAnswers } from "../plugin/server.js";

export type CheckResult = "ok" | string;

export interface HealthSource {
  /** Public socket paths of this agent (both must accept). */
  sockets(): readonly string[];
  /** undefined: nothing heard and not required yet; "ok"; or why it is a failure. */
  registration(): CheckResult | undefined;
  /** Readiness checks by name. */
  readiness(): Record<string, CheckResult>;
}

export interface AgentHttp {
  url: string;
  close(): Promise<void>;
}

async function healthChecks(src: HealthSource): Promise<Record<string, CheckResult>> {
  const checks: Record<string, CheckResult> = {};
  await Promise.all(src.sockets().map(async (s) => void (checks[`socket ${s}`] = (await socketAnswers(s, 1000)) ? "ok" : "does not accept connections")));
  const reg = src.registration();
  checks.registration = reg ?? "ok";
  return checks;
}

export async function startAgentHttp(listen: HostPort, src: HealthSource, metrics: AgentMetricsRegistry): Promise<AgentHttp> {
  const answer = (res: http.ServerResponse, checks: Record<string, CheckResult>): void => {
    const ok = Object.values(checks).every((c) => c === "ok");
    res.writeHead(ok ? 200 : 503, { "content-type": "application/json" }).end(JSON.stringify({ ok, checks }) + "\n");
  };
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    const serve = async (): Promise<void> => {
      if (path === "/healthz") answer(res, await healthChecks(src));
      else if (path === "/readyz") answer(res, src.readiness());
      else if (path === "/metrics") res.writeHead(200, { "content-type": metrics.contentType }).end(metrics.text());
      else res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: "not found; try /healthz, /readyz or /metrics" }) + "\n");
    };
    serve().catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: err instanceof Error ? err.message : String(err) }) + "\n");
    });
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(new TesseraError("TESSERA_CONFIG", `--http-listen=${listen.host}:${listen.port}: cannot listen (${err.code ?? err.message}); choose a free port or --http-listen off`, { cause: err })),
    );
    server.listen(listen.port, listen.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host === "0.0.0.0" ? "127.0.0.1" : host === "[::]" ? "[::1]" : host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
