// `npm run bench -- epp [--quick]`: `tessera epp` (a child process, pinned to core 1 where there
// are two) driven by an ext_proc client acting as Envoy (this process, core 0) over real gRPC on
// loopback, 8 mock vLLM servers. Decision latency = the last request-body chunk written -> the
// headers answer (the routing header) received, at concurrency 1, for FULL_DUPLEX_STREAMED chat
// bodies of 1 KB, 10 KB and 220 KB (chunks of 62,000 bytes, shared system prompts so prefixes
// hit); pickings/s at concurrency 16 on 1 KB bodies. Baseline, same run: a header-only exchange
// (GET, decided on the headers: no body, no hashing) — the gRPC round trip the picker cannot beat.
// The reference picker (the Inference Extension's Go EPP, v1.3.1) builds, but needs a Kubernetes
// API server even with --endpoint-selector, so it is not run as a baseline: see docs/epp.md.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { cpus } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createExtProcClient, type ExtProcClient, type ProcessingRequest } from "../agent/epp/protos.js";
import { startMockModelServer } from "../agent/proxy/index.js";
import { benchLine, emitLine, quantile } from "./_report.js";

const quick = process.argv.includes("--quick");
const ROUNDS = quick ? 300 : 3000;
const PICKS_SECONDS = quick ? 3 : 10;
const CHUNK = 62_000;

const hv = (key: string, value: string) => ({ key, raw_value: Buffer.from(value) });
const headersMsg = (method: string, path: string, eos: boolean): ProcessingRequest => ({
  request_headers: { headers: { headers: [hv(":method", method), hv(":path", path), hv("content-type", "application/json")] }, end_of_stream: eos },
  protocol_config: { request_body_mode: "FULL_DUPLEX_STREAMED", response_body_mode: "NONE" },
});

const systems = Array.from({ length: 16 }, (_, i) => `System prompt ${i}: you answer questions about product line ${i}. `.repeat(12));
const bodyOf = (bytes: number, i: number): Buffer => {
  const sys = systems[i % systems.length] as string;
  const user = `question ${i} `.padEnd(Math.max(16, bytes - sys.length - 120), "x");
  return Buffer.from(JSON.stringify({ model: "m", messages: [{ role: "system", content: sys }, { role: "user", content: user }] }));
};

/** One exchange; returns ms from the last body chunk (or the headers) to the headers answer. */
async function exchange(client: ExtProcClient, body: Buffer | undefined): Promise<number> {
  const s = client.process();
  let t0 = 0;
  if (!body) {
    t0 = performance.now();
    s.write(headersMsg("GET", "/v1/models", true));
  } else {
    s.write(headersMsg("POST", "/v1/chat/completions", false));
    for (let off = 0; off < body.length; off += CHUNK) {
      const last = off + CHUNK >= body.length;
      if (last) t0 = performance.now();
      s.write({ request_body: { body: body.subarray(off, off + CHUNK), end_of_stream: last } });
    }
  }
  const first = await s.next();
  const ms = performance.now() - t0;
  if (!first?.request_headers?.response?.header_mutation) throw new Error(`no routing header: ${JSON.stringify(first)?.slice(0, 200)}`);
  if (body) for (let got = 0; got < body.length;) {
    const r = await s.next();
    got += r?.request_body?.response?.body_mutation?.streamed_response?.body?.length ?? body.length;
  }
  s.end();
  await s.status;
  return ms;
}

const have = (bin: string): boolean => spawnSync("sh", ["-c", `command -v ${bin}`]).status === 0;
const pin = (core: number, cmd: string[]): string[] => (have("taskset") && cpus().length >= 2 ? ["taskset", "-c", String(core), ...cmd] : cmd);

async function startPicker(endpoints: string[]): Promise<{ target: string; child: ChildProcess }> {
  const cmd = pin(1, [process.execPath, join(process.cwd(), "bin", "tessera.js"), "epp", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--log-level", "warn", "--endpoints", endpoints.join(",")]);
  const child = spawn(cmd[0] as string, cmd.slice(1), { stdio: ["ignore", "pipe", "inherit"] });
  const target = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout?.on("data", (d: Buffer) => {
      out += String(d);
      const m = /listening on (\S+)/.exec(out);
      if (m) resolve(m[1] as string);
    });
    child.on("exit", (code) => reject(new Error(`tessera epp exited ${code}`)));
  });
  return { target, child };
}

async function main(): Promise<void> {
  const mocks = await Promise.all(Array.from({ length: 8 }, () => startMockModelServer({})));
  const { target, child } = await startPicker(mocks.map((m) => m.url));
  const client = createExtProcClient(target);
  try {
    for (let i = 0; i < 50; i++) await exchange(client, bodyOf(1024, i)); // warm-up (JIT, connections, index)
    const base: number[] = [];
    for (let i = 0; i < ROUNDS; i++) base.push(await exchange(client, undefined));
    base.sort((a, b) => a - b);
    const b50 = quantile(base, 0.5) * 1000, b99 = quantile(base, 0.99) * 1000;
    const rows: string[] = [`  header-only exchange (baseline): p50 ${b50.toFixed(0)} µs, p99 ${b99.toFixed(0)} µs`];
    const baseline = "header-only ext_proc exchange, same picker";
    for (const [label, bytes] of [["1KB", 1024], ["10KB", 10 * 1024], ["220KB", 220 * 1024]] as const) {
      const n = bytes > 100_000 ? Math.ceil(ROUNDS / 5) : ROUNDS;
      const lat: number[] = [];
      for (let i = 0; i < n; i++) lat.push(await exchange(client, bodyOf(bytes, i)));
      lat.sort((a, b) => a - b);
      const p50 = quantile(lat, 0.5) * 1000, p99 = quantile(lat, 0.99) * 1000;
      emitLine(benchLine("epp", `chat ${label} full-duplex c=1`, "decision_p50_us", "us", Math.round(p50), baseline, Math.round(b50)));
      emitLine(benchLine("epp", `chat ${label} full-duplex c=1`, "decision_p99_us", "us", Math.round(p99), baseline, Math.round(b99)));
      rows.push(`  chat ${label.padEnd(5)} body end -> header answer: p50 ${p50.toFixed(0)} µs, p99 ${p99.toFixed(0)} µs (${n} requests)`);
    }
    // pickings/s: 16 streams at a time for PICKS_SECONDS
    let done = 0;
    const end = performance.now() + PICKS_SECONDS * 1000;
    await Promise.all(Array.from({ length: 16 }, async (_, w) => {
      for (let i = w; performance.now() < end; i += 16) {
        await exchange(client, bodyOf(1024, i));
        done++;
      }
    }));
    const rate = done / PICKS_SECONDS;
    emitLine(benchLine("epp", "chat 1KB full-duplex c=16", "pickings_per_s", "1/s", Math.round(rate)));
    rows.push(`  pickings/s, 16 concurrent streams, 1 KB chat: ${rate.toFixed(0)} (picker on ${have("taskset") && cpus().length >= 2 ? "core 1" : "any core"})`);
    process.stderr.write(`epp bench (${quick ? "quick" : "full"}), 8 mock endpoints, picker in its own process\n${rows.join("\n")}\n`);
    process.stderr.write("  reference picker (Inference Extension Go EPP v1.3.1): not run (needs a Kubernetes API server), see docs/epp.md\n");
  } finally {
    client.close();
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited; // before the mocks close, or its scrapes log their resets
    await Promise.all(mocks.map((m) => m.close()));
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`TESSERA_INTERNAL: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
