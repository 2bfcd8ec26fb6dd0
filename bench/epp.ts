// `npm run bench -- epp [--quick]`: `tessera epp` (a child process, pinned to core 1 where there
// are two) driven by an ext_proc client acting as Envoy (this process, core 0) over real gRPC on
// loopback, 8 mock vLLM servers on 127.0.0.2-9 (one port). Decision latency = the last
// request-body chunk written -> the headers answer (the routing header) received, at concurrency
// 1, for FULL_DUPLEX_STREAMED chat bodies of 1 KB, 10 KB and 220 KB (chunks of 62,000 bytes,
// shared system prompts so prefixes hit); pickings/s at concurrency 16 on 1 KB bodies. Baseline,
// same run, same pool, client and workload: the Inference Extension's Go EPP v1.3.1 (the
// reference picker, _gie.ts: standalone mode against a real kube-apiserver from the tier3
// harness), pinned to the same core after tessera has stopped. Where it cannot run, the lines
// carry baseline null and stderr says why. Also printed: a header-only exchange on tessera (GET,
// decided on the headers: no body, no hashing), the gRPC round trip a picker cannot beat.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { cpus } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createExtProcClient, type ExtProcClient, type ProcessingRequest } from "../agent/epp/protos.js";
import { startMockModelServer, type MockModelServer } from "../agent/proxy/index.js";
import { benchLine, emitLine, quantile } from "./_report.js";
import { findGie, findTier3, GIE_LABEL, startGie } from "./_gie.js";
import { stopChild } from "./_child.js";

const quick = process.argv.includes("--quick");
const ROUNDS = quick ? 300 : 3000;
const PICKS_SECONDS = quick ? 3 : 10;
const CHUNK = 62_000;
const WARMUP = 500;

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
  if (!first?.request_headers?.response?.header_mutation) {
    const ir = first?.immediate_response;
    throw new Error(ir ? `no routing header: immediate response ${JSON.stringify(ir.status)} ${Buffer.from(ir.body ?? new Uint8Array()).toString().slice(0, 200)}` : `no routing header: ${JSON.stringify(first)?.slice(0, 200)}`);
  }
  // Drain the echoed body (the EPP re-serialises it, so its length may differ) to its last chunk.
  if (body) for (;;) {
    const r = await s.next();
    const sr = r?.request_body?.response?.body_mutation?.streamed_response;
    if (!r || !sr || sr.end_of_stream) break;
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

const CASES = [["1KB", 1024], ["10KB", 10 * 1024], ["220KB", 220 * 1024]] as const;
interface Figures { p50: number[]; p99: number[]; picks: number; header?: { p50: number; p99: number } }

/** The workload, identical for every picker: warm-up, header-only (when asked), the three body sizes at c=1, pickings/s at c=16. */
async function measure(client: ExtProcClient, headerOnly: boolean): Promise<Figures> {
  // warm-up, the same for every picker (JIT: tessera is V8 code; in --quick runs its 1 KB p50 fell
  // from ~1,100 to ~650 µs going from 50 to 500; connections; prefix index); the first picks wait for the picker to
  // see its pool
  const warmEnd = performance.now() + 15_000;
  for (let ok = 0, i = 0; ok < WARMUP; i++) {
    try {
      await exchange(client, bodyOf(1024, i));
      ok++;
    } catch (err) {
      if (performance.now() > warmEnd) throw err;
      await new Promise((r) => setTimeout(r, 100)); // polling an external process's pool view: no event to await
    }
  }
  const us = (xs: number[], q: number): number => Math.round(quantile(xs, q) * 1000);
  const f: Figures = { p50: [], p99: [], picks: 0 };
  if (headerOnly) {
    const base: number[] = [];
    for (let i = 0; i < ROUNDS; i++) base.push(await exchange(client, undefined));
    base.sort((a, b) => a - b);
    f.header = { p50: us(base, 0.5), p99: us(base, 0.99) };
  }
  for (const [, bytes] of CASES) {
    const n = bytes > 100_000 ? Math.ceil(ROUNDS / 5) : ROUNDS;
    const lat: number[] = [];
    for (let i = 0; i < n; i++) lat.push(await exchange(client, bodyOf(bytes, i)));
    lat.sort((a, b) => a - b);
    f.p50.push(us(lat, 0.5));
    f.p99.push(us(lat, 0.99));
  }
  let done = 0;
  const end = performance.now() + PICKS_SECONDS * 1000;
  await Promise.all(Array.from({ length: 16 }, async (_, w) => {
    for (let i = w; performance.now() < end; i += 16) {
      await exchange(client, bodyOf(1024, i));
      done++;
    }
  }));
  f.picks = Math.round(done / PICKS_SECONDS);
  return f;
}

/** 8 mock vLLM servers on 127.0.0.2-9, one port for all (the reference picker's pods share a target port). */
async function startMocks(): Promise<MockModelServer[]> {
  for (let attempt = 0; ; attempt++) {
    const first = await startMockModelServer({ host: "127.0.0.2" });
    const port = Number(first.id.split(":")[1]);
    const rest = await Promise.allSettled(Array.from({ length: 7 }, (_, i) => startMockModelServer({ host: `127.0.0.${3 + i}`, port })));
    const up = rest.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    if (up.length === 7) return [first, ...up];
    await Promise.all([first, ...up].map((m) => m.close()));
    if (attempt === 4) throw new Error(`could not bind 8 mock servers on 127.0.0.2-9 with one port: ${String((rest.find((r) => r.status === "rejected") as PromiseRejectedResult).reason)}`);
  }
}


/** The reference picker's figures on the same pool, or why there are none. */
async function measureGie(mocks: MockModelServer[]): Promise<{ f: Figures; note: string } | { why: string }> {
  const tier3 = findTier3(process.cwd(), !quick);
  if ("missing" in tier3) return { why: tier3.missing };
  const epp = findGie(!quick);
  if ("missing" in epp) return { why: epp.missing };
  const port = Number((mocks[0] as MockModelServer).id.split(":")[1]);
  let run;
  try {
    run = await startGie(tier3.path, epp.path, mocks.map((m) => m.id.split(":")[0] as string), port, (cmd) => pin(1, cmd));
  } catch (err) {
    return { why: `could not start it: ${err instanceof Error ? err.message : String(err)}` };
  }
  const client = createExtProcClient(run.target);
  try {
    return { f: await measure(client, false), note: `tier3 ${tier3.note}, epp ${epp.note}` };
  } catch (err) {
    return { why: `it did not answer the workload: ${err instanceof Error ? err.message : String(err)}` };
  } finally {
    client.close();
    await run.stop();
  }
}

async function main(): Promise<void> {
  const mocks = await startMocks();
  try {
    const { target, child } = await startPicker(mocks.map((m) => m.url));
    const client = createExtProcClient(target);
    let t: Figures;
    try {
      t = await measure(client, true);
    } finally {
      client.close();
      await stopChild(child);
    }
    const g = await measureGie(mocks);
    const gf = "f" in g ? g.f : undefined;
    const base = gf ? GIE_LABEL : null;
    const rows: string[] = [`  header-only exchange (tessera, GET decided on headers): p50 ${t.header?.p50} µs, p99 ${t.header?.p99} µs`];
    rows.push(`  ${"case".padEnd(28)} ${"tessera p50/p99 µs".padEnd(20)} ${"GIE p50/p99 µs".padEnd(18)} ratio p50`);
    CASES.forEach(([label], i) => {
      const kase = `chat ${label} full-duplex c=1`;
      const [p50, p99] = [t.p50[i] as number, t.p99[i] as number];
      const [g50, g99] = gf ? [gf.p50[i] as number, gf.p99[i] as number] : [null, null];
      emitLine(benchLine("epp", kase, "decision_p50_us", "us", p50, base, g50));
      emitLine(benchLine("epp", kase, "decision_p99_us", "us", p99, base, g99));
      rows.push(`  ${kase.padEnd(28)} ${`${p50} / ${p99}`.padEnd(20)} ${(g50 === null ? "-" : `${g50} / ${g99}`).padEnd(18)} ${g50 ? (p50 / g50).toFixed(3) : "-"}`);
    });
    emitLine(benchLine("epp", "header-only GET c=1", "decision_p50_us", "us", t.header?.p50 ?? NaN));
    emitLine(benchLine("epp", "header-only GET c=1", "decision_p99_us", "us", t.header?.p99 ?? NaN));
    emitLine(benchLine("epp", "chat 1KB full-duplex c=16", "pickings_per_s", "1/s", t.picks, base, gf ? gf.picks : null));
    const where = have("taskset") && cpus().length >= 2 ? "core 1" : "any core";
    rows.push(`  pickings/s, 16 concurrent streams, 1 KB chat: tessera ${t.picks}, GIE ${gf ? gf.picks : "-"} (each picker alone, on ${where})`);
    process.stderr.write(`epp bench (${quick ? "quick" : "full"}), 8 mock endpoints on 127.0.0.2-9, picker in its own process\n${rows.join("\n")}\n`);
    process.stderr.write("f" in g ? `  reference picker: ${GIE_LABEL}, standalone mode against tier3's kube-apiserver (${g.note})\n` : `  reference picker (${GIE_LABEL}): not run, baselines null: ${g.why}\n`);
  } finally {
    await Promise.all(mocks.map((m) => m.close()));
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`TESSERA_INTERNAL: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
