// `tessera proxy` end to end over loopback with mock vLLM replicas: streaming, abort propagation,
// every error answer, prefix stickiness, the saturation guard, metrics scraping, the
// InferencePool source against the fake API server, and the CLI's flag checks.
import t from "tap";
import * as net from "node:net";
import * as http from "node:http";
import { once } from "node:events";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { KubeConfig } from "@kubernetes/client-node";
import { startProxy, startMockModelServer, createInferencePoolSource, parseVllmMetrics, type MockModelServer, type ProxyOptions, type RunningProxy } from "../agent/proxy/index.js";
import { parseFlags } from "../agent/common/config.js";
import { PROXY_FLAGS, proxyOptionsFromArgs } from "../agent/cli/proxy.js";
import { until } from "./support/until.js";
import { startFakeApiServer } from "./support/fake-apiserver.js";

interface Rig {
  mocks: MockModelServer[];
  proxy: RunningProxy;
}

async function rig(t: { teardown(fn: () => Promise<void>): void }, n: number, opts: Partial<ProxyOptions> = {}, mockOpts: Parameters<typeof startMockModelServer>[0] = {}): Promise<Rig> {
  const mocks = await Promise.all(Array.from({ length: n }, () => startMockModelServer(mockOpts)));
  const proxy = await startProxy({ listen: "127.0.0.1:0", endpoints: mocks.map((m) => m.url), ...opts });
  t.teardown(async () => {
    await proxy.stop();
    await Promise.all(mocks.map((m) => m.close()));
  });
  return { mocks, proxy };
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal) {
  const res = await request(url, { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body), headers: { "content-type": "application/json", ...headers }, signal });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, text, dest: res.headers["x-gateway-destination-endpoint"] as string | undefined };
}


const completion = (prompt: string, stream = false) => ({ model: "m", prompt, stream, max_tokens: 4 });

t.test("SSE streams through chunk by chunk, byte-identical to the backend", async (t) => {
  const { mocks, proxy } = await rig(t, 1, {}, { tokens: 5, tokenDelayMs: 30 });
  const mock = mocks[0] as MockModelServer;
  const res = await request(`${proxy.url}/v1/chat/completions`, { method: "POST", body: JSON.stringify({ model: "m", stream: true, messages: [{ role: "user", content: "hi" }] }) });
  t.equal(res.statusCode, 200);
  t.equal(res.headers["content-type"], "text/event-stream");
  t.equal(res.headers["x-gateway-destination-endpoint"], mock.id);
  const arrivals: number[] = [];
  let proxied = "";
  for await (const chunk of res.body) {
    arrivals.push(Date.now());
    proxied += String(chunk);
  }
  t.ok(arrivals.length >= 3, `arrived in ${arrivals.length} chunks, not one buffered blob`);
  t.ok((arrivals.at(-1) as number) - (arrivals[0] as number) >= 60, "first chunk arrived well before the last was produced");
  const direct = await post(`${mock.url}/v1/chat/completions`, { model: "m", stream: true, messages: [{ role: "user", content: "hi" }] });
  t.equal(proxied, direct.text, "byte-identical to the direct answer");
  t.match(proxied, /data: \[DONE\]\n\n$/);
});

t.test("a client abort reaches the backend", async (t) => {
  const { mocks, proxy } = await rig(t, 1);
  const mock = mocks[0] as MockModelServer;
  mock.hold = new Promise(() => undefined); // never answers
  const ac = new AbortController();
  const seen = once(mock.events, "request");
  const sent = post(`${proxy.url}/v1/completions`, completion("abort me", true), {}, ac.signal).catch((err: unknown) => err);
  await seen;
  const aborted = once(mock.events, "abort");
  ac.abort();
  await aborted;
  t.equal(mock.stats.aborted, 1, "backend saw the disconnect");
  t.ok((await sent) instanceof Error);
  t.ok(await until(() => proxy.endpoints.states()[0]?.inFlight === 0), "in-flight count released");
});

t.test("error answers: 400, 413, 503, 429 with Retry-After, slow clients, garbage", async (t) => {
  const { mocks, proxy } = await rig(t, 2, { maxBodyBytes: 1024, requestTimeoutMs: 400, router: { saturationQueue: 3 } });
  const bad = await post(`${proxy.url}/v1/completions`, "{not json");
  t.equal(bad.status, 400);
  t.equal(JSON.parse(bad.text).error.type, "TESSERA_BAD_REQUEST");
  t.equal((await post(`${proxy.url}/v1/chat/completions`, { model: "m", prompt: "no messages" })).status, 400, "chat without messages");
  t.equal((await post(`${proxy.url}/v1/completions`, completion("x".repeat(2000)))).status, 413, "declared length over the limit");
  // chunked body with no length: the limit is enforced while reading
  const chunked = await new Promise<string>((resolve) => {
    const s = net.connect(Number(new URL(proxy.url).port), "127.0.0.1");
    let got = "";
    s.on("data", (d) => (got += String(d)));
    s.on("close", () => resolve(got));
    s.on("error", () => undefined);
    s.write("POST /v1/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n");
    s.write(`800\r\n${"y".repeat(0x800)}\r\n`);
  });
  t.match(chunked, /^HTTP\/1\.1 413/, "streamed body over the limit");
  for (const m of mocks) m.metrics = { waiting: 5 };
  t.ok(await until(() => proxy.endpoints.states().every((s) => s.waitingRequests === 5)));
  const sat = await post(`${proxy.url}/v1/completions`, completion("p"));
  t.equal(sat.status, 429, "all saturated");
  t.equal(sat.headers["retry-after"], "1");
  (mocks[1] as MockModelServer).metrics = {};
  t.ok(await until(() => proxy.endpoints.states().some((s) => s.waitingRequests === 0)));
  t.equal((await post(`${proxy.url}/v1/completions`, completion("p"))).dest, (mocks[1] as MockModelServer).id, "the unsaturated one serves");
  for (const m of mocks) m.failMetrics = true;
  t.ok(await until(() => proxy.endpoints.states().every((s) => !s.ready)), "failed scrapes make endpoints not ready");
  const none = await post(`${proxy.url}/v1/completions`, completion("p"));
  t.equal(none.status, 503);
  t.equal(JSON.parse(none.text).error.type, "TESSERA_NO_ENDPOINT");
  t.equal((await request(`${proxy.url}/healthz`)).statusCode, 503);
  for (const m of mocks) m.failMetrics = false;
  t.ok(await until(() => proxy.endpoints.states().every((s) => s.ready)), "ready again once scrapes answer");
  t.equal((await request(`${proxy.url}/healthz`)).statusCode, 200);
  // a client that never finishes its body is cut off by the request timeout
  const slow = await new Promise<string>((resolve) => {
    const s = net.connect(Number(new URL(proxy.url).port), "127.0.0.1");
    let got = "";
    s.on("data", (d) => (got += String(d)));
    s.on("close", () => resolve(got));
    s.on("error", () => undefined);
    s.write("POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"model\":");
  });
  t.match(slow, /^HTTP\/1\.1 408/, "slow client timed out");
  const garbage = await new Promise<string>((resolve) => {
    const s = net.connect(Number(new URL(proxy.url).port), "127.0.0.1");
    let got = "";
    s.on("data", (d) => (got += String(d)));
    s.on("close", () => resolve(got));
    s.write("\x00\x01 nonsense\r\n\r\n");
  });
  t.match(garbage, /^HTTP\/1\.1 400/, "malformed HTTP answered, server still up");
  t.equal((await post(`${proxy.url}/v1/completions`, completion("still alive"))).status, 200);
});

t.test("connection refused before any byte: retried once on the next best endpoint", async (t) => {
  const { mocks, proxy } = await rig(t, 2, { scrapeIntervalMs: 60_000 });
  const [a, b] = mocks as [MockModelServer, MockModelServer];
  let prompt = "";
  for (let i = 0; ; i++) {
    prompt = `retry case ${i} `.repeat(10);
    if (proxy.router.peek(prompt, "m", proxy.endpoints.states()).endpoint === a.id) break;
  }
  await a.close();
  const r = await post(`${proxy.url}/v1/completions`, completion(prompt));
  t.equal(r.status, 200);
  t.equal(r.dest, b.id, "served by the other replica");
  const metrics = await (await request(`${proxy.url}/metrics`)).body.text();
  t.match(metrics, /tessera_proxy_retries_total 1/);
});

t.test("destination header: ignored by default, honoured with --trust-endpoint-header", async (t) => {
  for (const trust of [false, true]) {
    const { mocks, proxy } = await rig(t, 2, { trustEndpointHeader: trust });
    const prompt = "pin me ".repeat(20);
    const natural = proxy.router.peek(prompt, "m", proxy.endpoints.states()).endpoint;
    const other = (mocks.find((m) => m.id !== natural) as MockModelServer).id;
    const r = await post(`${proxy.url}/v1/completions`, completion(prompt), { "x-gateway-destination-endpoint": other });
    t.equal(r.dest, trust ? other : natural, trust ? "trusted header picks" : "client cannot pick a backend");
  }
});

t.test("shared prefixes stick to one replica; different prefixes spread; other paths pass through", async (t) => {
  const { proxy } = await rig(t, 3);
  const system = "You are a careful assistant. ".repeat(40);
  const dests = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const r = await post(`${proxy.url}/v1/chat/completions`, { model: "m", messages: [{ role: "system", content: system }, { role: "user", content: `question ${i}` }] });
    t.equal(r.status, 200);
    dests.add(r.dest as string);
  }
  t.equal(dests.size, 1, "one replica served the shared prefix");
  const spread = new Set<string>();
  for (let i = 0; i < 30; i++) spread.add((await post(`${proxy.url}/v1/completions`, completion(`unrelated prompt ${i} `.repeat(8)))).dest as string);
  t.ok(spread.size >= 2, `distinct prefixes used ${spread.size} replicas`);
  const models = await request(`${proxy.url}/v1/models`);
  t.equal(models.statusCode, 200);
  t.ok(models.headers["x-gateway-destination-endpoint"]);
  t.match(await models.body.text(), /"path":"\/v1\/models"/);
  const metrics = await (await request(`${proxy.url}/metrics`)).body.text();
  t.match(metrics, /tessera_proxy_decisions_total\{reason="prefix"\} (19|[2-9]\d)/);
  t.match(metrics, /tessera_proxy_endpoint_ready\{endpoint="127\.0\.0\.1:\d+"\} 1/);
  t.match(metrics, /tessera_proxy_added_latency_seconds_count \d+/);
});

t.test("the guard spreads a hot prefix once its replica is overloaded", async (t) => {
  const { mocks, proxy } = await rig(t, 3, { router: { guardThreshold: 2 } });
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  for (const m of mocks) m.hold = gate;
  const system = "Shared agent scaffold. ".repeat(40);
  const pending = Array.from({ length: 12 }, (_, i) => post(`${proxy.url}/v1/completions`, completion(system + `task ${i}`)));
  t.ok(await until(() => mocks.reduce((n, m) => n + m.stats.requests, 0) === 12), "all 12 reached a backend");
  release();
  const results = await Promise.all(pending);
  t.ok(results.every((r) => r.status === 200));
  const per = mocks.map((m) => m.stats.requests);
  t.ok(per.filter((n) => n > 0).length >= 2, `load spread: ${per.join("/")}`);
  t.ok(Math.max(...per) >= 4, "the prefix holder still took the most");
  t.match(await (await request(`${proxy.url}/metrics`)).body.text(), /tessera_proxy_decisions_total\{reason="guard"\} [1-9]/);
});

t.test("metrics scraping: current and legacy KV gauges, cache_config_info sets capacity", async (t) => {
  const page = 'vllm:num_requests_waiting{model_name="a"} 2\nvllm:num_requests_waiting{model_name="b"} 1\nvllm:num_requests_running{model_name="a"} 4\nvllm:gpu_cache_usage_perc{model_name="a"} 0.25\nvllm:cache_config_info{block_size="16",num_gpu_blocks="100"} 1.0\n';
  t.same(parseVllmMetrics(page, 64), { waiting: 3, running: 4, kvCacheUsage: 0.25, cacheBlocks: 100 });
  t.equal(parseVllmMetrics("# nothing\nprocess_cpu 1\n", 64), undefined, "not a model server");
  const huge = 'vllm:num_requests_waiting 0\nvllm:num_requests_running 0\nvllm:cache_config_info{block_size="16",num_gpu_blocks="1e12"} 1\n';
  t.equal(parseVllmMetrics(huge, 64)?.cacheBlocks, 2 ** 28, "an absurd cache size is clamped, never wrapped as a u32 in the core");
  const { mocks, proxy } = await rig(t, 1, {}, { legacyKvMetric: true, numGpuBlocks: 8 });
  (mocks[0] as MockModelServer).metrics = { kv: 0.5 };
  t.ok(await until(() => proxy.endpoints.states()[0]?.kvCacheUsage === 0.5), "legacy gpu_cache_usage_perc read");
  for (let i = 0; i < 5; i++) await post(`${proxy.url}/v1/completions`, completion(`fill ${i} `.repeat(100)));
  t.equal(proxy.router.indexedBlocks((mocks[0] as MockModelServer).id), 8, "index capacity from cache_config_info (8 x 16 tokens x 4 bytes / 64)");
});

t.test("InferencePool source: pods of the pool on this node, following changes", async (t) => {
  const api = await startFakeApiServer();
  const dir = mkdtempSync(join(tmpdir(), "tessera-proxy-"));
  await api.writeKubeconfig(join(dir, "kubeconfig"));
  const kc = new KubeConfig();
  kc.loadFromFile(join(dir, "kubeconfig"));
  const pod = (name: string, node: string, ip: string, ready: boolean, app = "llm") => ({
    apiVersion: "v1", kind: "Pod", metadata: { name, namespace: "ai", labels: { app } },
    spec: { nodeName: node, containers: [] }, status: { phase: "Running", podIP: ip, conditions: [{ type: "Ready", status: ready ? "True" : "False" }] },
  });
  api.seed("inference.networking.k8s.io", "v1", "inferencepools", { apiVersion: "inference.networking.k8s.io/v1", kind: "InferencePool", metadata: { name: "pool", namespace: "ai" }, spec: { selector: { matchLabels: { app: "llm" } }, targetPorts: [{ number: 8000 }] } });
  api.seed("", "v1", "pods", pod("a", "node-1", "10.0.0.1", true));
  api.seed("", "v1", "pods", pod("b", "node-2", "10.0.0.2", true));
  api.seed("", "v1", "pods", pod("c", "node-1", "10.0.0.3", false));
  api.seed("", "v1", "pods", pod("d", "node-1", "10.0.0.4", true, "other"));
  const src = createInferencePoolSource({ kube: kc, pool: "ai/pool", nodeName: "node-1", restartDelayMs: 50 });
  const seen: string[][] = [];
  let notify: (() => void) | undefined;
  await src.start((urls) => {
    seen.push(urls);
    notify?.();
  });
  t.teardown(async () => {
    await src.stop();
    await api.close();
  });
  t.same(seen.at(-1), ["http://10.0.0.1:8000"], "only ready pods of the pool on this node");
  const next = () => new Promise<void>((r) => (notify = r));
  let changed = next();
  api.seed("", "v1", "pods", pod("c", "node-1", "10.0.0.3", true));
  await changed;
  t.same(seen.at(-1), ["http://10.0.0.1:8000", "http://10.0.0.3:8000"], "a pod turning ready joins");
  changed = next();
  api.seed("inference.networking.k8s.io", "v1", "inferencepools", { apiVersion: "inference.networking.k8s.io/v1", kind: "InferencePool", metadata: { name: "pool", namespace: "ai" }, spec: { selector: { matchLabels: { app: "llm" } }, targetPorts: [{ number: 9000 }] } });
  await changed;
  t.same(seen.at(-1), ["http://10.0.0.1:9000", "http://10.0.0.3:9000"], "the pool's target port is followed");
});

t.test("a client that stops reading a stream is cut off and the backend released", async (t) => {
  // the backend streams until its socket pushes back; undici's body timeout sleeps while the
  // consumer is paused, so only the proxy's own stall timeout can end this
  let backendClosed!: () => void;
  const closed = new Promise<void>((resolve) => (backendClosed = resolve));
  const chunk = Buffer.alloc(64 * 1024, "d");
  const backend = http.createServer((req, res) => {
    if (req.url === "/metrics") return void res.end("vllm:num_requests_waiting 0\nvllm:num_requests_running 0\n");
    req.resume();
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.on("close", backendClosed);
    const pump = (): void => {
      while (!res.destroyed && res.write(chunk));
      if (!res.destroyed) res.once("drain", pump);
    };
    pump();
  });
  await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
  t.teardown(() => new Promise<void>((resolve) => { backend.closeAllConnections(); backend.close(() => resolve()); }));
  const proxy = await startProxy({ listen: "127.0.0.1:0", endpoints: [`http://127.0.0.1:${(backend.address() as net.AddressInfo).port}`], upstreamBodyTimeoutMs: 300 });
  t.teardown(() => proxy.stop());
  const client = net.connect(Number(new URL(proxy.url).port), "127.0.0.1");
  t.teardown(() => void client.destroy());
  client.on("error", () => undefined);
  const body = JSON.stringify(completion("stall", true));
  client.write(`POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
  client.pause(); // never reads
  const outcome = await Promise.race([closed.then(() => "released"), new Promise((resolve) => setTimeout(() => resolve("still streaming after 8 s"), 8000).unref())]);
  t.equal(outcome, "released", "backend response closed");
  t.ok(await until(() => proxy.endpoints.states()[0]?.inFlight === 0), "in-flight count released");
});

t.test("a chat content nested too deeply to canonicalize is a 400, not a 500", async (t) => {
  const { proxy } = await rig(t, 1);
  const deep = `{"model":"m","messages":[{"role":"user","content":{"a":${"[".repeat(100_000)}${"]".repeat(100_000)}}}]}`;
  const res = await post(`${proxy.url}/v1/chat/completions`, deep);
  t.equal(res.status, 400);
  t.equal(JSON.parse(res.text).error.type, "TESSERA_BAD_REQUEST");
  t.equal((await post(`${proxy.url}/v1/chat/completions`, { model: "m", messages: [{ role: "user", content: "fine" }] })).status, 200, "still serving");
});

t.test("a start that cannot listen stops its endpoint source and closes its pools", async (t) => {
  const holder = await startProxy({ listen: "127.0.0.1:0", endpoints: [] });
  t.teardown(() => holder.stop());
  let stopped = 0;
  const source = { start: async (cb: (urls: string[]) => void) => cb(["http://127.0.0.1:9"]), stop: async () => void stopped++ };
  await t.rejects(startProxy({ listen: `127.0.0.1:${new URL(holder.url).port}`, source }), { code: "TESSERA_PROXY" }, "port in use");
  t.equal(stopped, 1, "the source (a pool watch) was stopped, so the process can exit");
});

t.test("CLI flags: endpoints or a pool, numbers checked", async (t) => {
  const parse = (argv: string[]) => proxyOptionsFromArgs(parseFlags(argv, PROXY_FLAGS, {}));
  t.throws(() => parse([]), { code: "TESSERA_USAGE" });
  t.throws(() => parse(["--endpoints", "http://a:1", "--inference-pool", "ns/p"]), { code: "TESSERA_USAGE" });
  t.throws(() => parse(["--endpoints", "http://a:1", "--weight-kv", "lots"]), { code: "TESSERA_CONFIG" });
  t.throws(() => parse(["--endpoints", "http://a:1", "--scrape-interval-ms", "0"]), { code: "TESSERA_CONFIG" });
  const o = parse(["--endpoints", "http://127.0.0.1:8001,http://127.0.0.1:8002", "--trust-endpoint-header", "--weight-prefix", "5"]);
  t.same(o.endpoints, ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]);
  t.equal(o.trustEndpointHeader, true);
  t.equal(o.router?.weights?.prefix, 5);
  await t.rejects(startProxy({ listen: "127.0.0.1:0", endpoints: ["ftp://x:1"] }), { code: "TESSERA_CONFIG" });
  await t.rejects(startProxy({ listen: "nonsense", endpoints: [] }), { code: "TESSERA_CONFIG" });
  await t.rejects(startProxy({ listen: "127.0.0.1:0", endpoints: [], maxBodyBytes: 2 ** 31 }), { code: "TESSERA_CONFIG" }, "a body limit beyond what the WASM staging can hold is refused");
});

// ---- hostile input (issue 13): Expect, body limits on every path, request targets, pool bounds ----

/** Raw HTTP/1.1 over TCP: `steps` writes, each after the answer so far matches its `after`; resolves with all bytes at close. */
function rawExchange(url: string, steps: { after?: RegExp; write: string }[]): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(Number(new URL(url).port), "127.0.0.1");
    let got = "";
    let i = 0;
    const pump = (): void => {
      while (i < steps.length && (steps[i]?.after === undefined || (steps[i]?.after as RegExp).test(got))) s.write((steps[i++] as { write: string }).write);
    };
    s.on("data", (d) => {
      got += String(d);
      pump();
    });
    s.on("close", () => resolve(got));
    s.on("error", () => undefined);
    pump();
  });
}

const statusOf = (raw: string): number => Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0);
const finalStatus = (raw: string): number => Number([...raw.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => m[1]).filter((c) => c !== "100").pop() ?? 0);

t.test("Expect: 100-continue is answered here (100, or a final status unread), never forwarded", async (t) => {
  const { mocks, proxy } = await rig(t, 1, { maxBodyBytes: 4096 });
  const mock = mocks[0] as MockModelServer;
  const body = JSON.stringify(completion("long prompt ".repeat(100)));
  let upstream: http.IncomingHttpHeaders | undefined;
  mock.events.on("request", (_path: string, _body: unknown, headers: http.IncomingHttpHeaders) => (upstream ??= headers));
  const ok = await rawExchange(proxy.url, [
    { write: `POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n` },
    { after: /^HTTP\/1\.1 100 Continue\r\n\r\n/, write: body },
  ]);
  t.match(ok, /^HTTP\/1\.1 100 Continue\r\n\r\n/, "100 Continue before the body");
  t.equal(finalStatus(ok), 200, "then the backend's answer (was 502: undici refuses Expect)");
  t.ok(upstream, "the backend got the request");
  t.equal(upstream?.expect, undefined, "Expect is not forwarded upstream");
  const passthrough = await rawExchange(proxy.url, [
    { write: "POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n" },
    { after: /100 Continue/, write: "{}" },
  ]);
  t.equal(finalStatus(passthrough), 200, "a passthrough path continues too");
  // over the limit: a final 413 at once, without waiting for (or reading) the body
  const big = await rawExchange(proxy.url, [{ write: "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5000000\r\nexpect: 100-continue\r\n\r\n" }]);
  t.equal(statusOf(big), 413, "413 instead of 100 when the declared length is over --max-body-bytes");
  t.notMatch(big, /100 Continue/);
  t.equal(JSON.parse(big.slice(big.indexOf("\r\n\r\n") + 4)).error.type, "TESSERA_BODY_TOO_LARGE");
  t.equal((await post(`${proxy.url}/v1/completions`, completion("still serving"))).status, 200, "proxy keeps serving");
});

t.test("--max-body-bytes holds on every path: declared and streamed passthrough bodies get 413", async (t) => {
  const { mocks, proxy } = await rig(t, 1, { maxBodyBytes: 1024 });
  const mock = mocks[0] as MockModelServer;
  const declared = await request(`${proxy.url}/v1/embeddings`, { method: "POST", body: JSON.stringify({ input: "x".repeat(5000) }) });
  t.equal(declared.statusCode, 413, "declared length over the limit on /v1/embeddings (was passed through)");
  t.equal((JSON.parse(await declared.body.text()) as { error: { type: string } }).error.type, "TESSERA_BODY_TOO_LARGE");
  const before = mock.stats.requests;
  const streamed = await rawExchange(proxy.url, [
    { write: "POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" },
    { write: `400\r\n${"y".repeat(0x400)}\r\n` },
    { write: `400\r\n${"y".repeat(0x400)}\r\n` },
  ]);
  t.equal(statusOf(streamed), 413, "a chunked passthrough body is cut off once over the limit");
  t.equal(mock.stats.requests, before, "the backend never got a complete oversized request");
  const small = await request(`${proxy.url}/v1/embeddings`, { method: "POST", body: JSON.stringify({ input: "fine" }) });
  t.equal(small.statusCode, 200, "under the limit passes through");
  await small.body.text();
  t.equal((await post(`${proxy.url}/v1/completions`, completion("still serving"))).status, 200, "proxy keeps serving");
});

t.test("a streamed body over the limit while its backend request waits for a connection: 413, the proxy lives", async (t) => {
  // One upstream connection, held by a slow stream: the passthrough request is queued, nobody reads
  // its body yet, and the limit's error has no reader (found by the http fuzzer: an uncaught
  // exception that ended the proxy).
  const { proxy } = await rig(t, 1, { maxBodyBytes: 1024, connections: 1 }, { tokens: 30, tokenDelayMs: 30 });
  const slow = post(`${proxy.url}/v1/completions`, { ...completion("hold the connection"), stream: true });
  await new Promise((r) => setTimeout(r, 100));
  for (let i = 0; i < 5; i++) {
    const early = await rawExchange(proxy.url, [{ write: `POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n800\r\n${"z".repeat(0x800)}\r\n` }]);
    t.equal(statusOf(early), 413, `queued and over the limit (${i}): 413`);
  }
  t.equal((await slow).status, 200, "the stream that held the connection completes");
  t.equal((await post(`${proxy.url}/v1/completions`, completion("still serving"))).status, 200, "proxy keeps serving");
});

t.test("a request target that is not an origin-form path is a 400 TESSERA_BAD_REQUEST", async (t) => {
  const { proxy } = await rig(t, 1);
  for (const target of ["*", "http://127.0.0.1:1/v1/models", "example.com:443"]) {
    const method = target === "*" ? "OPTIONS" : target.includes("://") ? "GET" : "CONNECT";
    const raw = await rawExchange(proxy.url, [{ write: `${method} ${target} HTTP/1.1\r\nhost: x\r\n\r\n` }]);
    t.equal(statusOf(raw), 400, `${method} ${target}: 400 (was 502)`);
    if (statusOf(raw) === 400 && raw.includes("{")) t.equal(JSON.parse(raw.slice(raw.indexOf("\r\n\r\n") + 4)).error.type, "TESSERA_BAD_REQUEST", `${method} ${target}: a clear body`);
  }
  t.equal((await post(`${proxy.url}/v1/completions`, completion("still serving"))).status, 200, "proxy keeps serving");
});

t.test("backend connections are bounded per endpoint and idle ones are closed", async (t) => {
  const sockets = new Set<net.Socket>();
  let peak = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let held = 0;
  let allHeld!: () => void;
  const heldAll = new Promise<void>((r) => (allHeld = r));
  const backend = http.createServer((req, res) => {
    if (req.url === "/metrics") return void res.end("vllm:num_requests_waiting 0\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc 0\n");
    req.resume();
    if (++held === 2) allHeld();
    void gate.then(() => res.end("{}"));
  });
  backend.keepAliveTimeout = 60_000; // only the proxy's own idle timeout can close these sockets
  backend.on("connection", (s: net.Socket) => {
    sockets.add(s);
    peak = Math.max(peak, sockets.size);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
  t.teardown(() => new Promise<void>((resolve) => { backend.closeAllConnections(); backend.close(() => resolve()); }));
  const proxy = await startProxy({ listen: "127.0.0.1:0", endpoints: [`http://127.0.0.1:${(backend.address() as net.AddressInfo).port}`], connections: 2, upstreamKeepAliveMs: 200, scrapeIntervalMs: 60_000 });
  t.teardown(() => proxy.stop());
  const pending = Array.from({ length: 10 }, (_, i) => post(`${proxy.url}/v1/completions`, completion(`bounded ${i}`)));
  await heldAll;
  release();
  const results = await Promise.all(pending);
  t.ok(results.every((r) => r.status === 200), "all 10 requests served through 2 connections");
  // one socket is the scraper's own single connection
  t.ok(peak <= 3, `backend saw at most 2 traffic connections + 1 scrape connection (peak ${peak})`);
  const idleClosed = new Promise<void>((resolve) => {
    const check = (): void => void (sockets.size === 0 ? resolve() : [...sockets][0]?.once("close", check));
    check();
  });
  const outcome = await Promise.race([idleClosed.then(() => "closed"), new Promise((r) => setTimeout(() => r("still open after 3 s"), 3000).unref())]);
  t.equal(outcome, "closed", "idle keep-alive sockets closed after upstreamKeepAliveMs (200 ms)");
  t.throws(() => proxyOptionsFromArgs(parseFlags(["--endpoints", "http://a:1", "--upstream-connections", "0"], PROXY_FLAGS, {})), { code: "TESSERA_CONFIG" });
  await t.rejects(startProxy({ listen: "127.0.0.1:0", endpoints: [], connections: 0 }), { code: "TESSERA_CONFIG" });
  const o = proxyOptionsFromArgs(parseFlags(["--endpoints", "http://a:1"], PROXY_FLAGS, { PROXY_UPSTREAM_CONNECTIONS: "16", PROXY_UPSTREAM_KEEPALIVE_MS: "1500" }));
  t.same([o.connections, o.upstreamKeepAliveMs], [16, 1500], "both settings have env mirrors");
});

t.test("a CONNECT with a body neither leaks its socket nor hangs stop() (found by the http fuzzer, seed 1 case 2269)", async (t) => {
  const proxy = await startProxy({ listen: "127.0.0.1:0", endpoints: [] });
  const raw = await new Promise<string>((resolve) => {
    const s = net.connect(Number(new URL(proxy.url).port), "127.0.0.1");
    let got = "";
    s.on("data", (d) => {
      got += String(d);
      if (got.includes("}")) s.destroy(); // the client goes away once answered, as the fuzzer does
    });
    s.on("close", () => resolve(got));
    s.on("error", () => undefined);
    s.write(`CONNECT /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 65536\r\n\r\n${"y".repeat(65_536)}`);
  });
  t.equal(statusOf(raw), 400, "CONNECT answered 400");
  const outcome = await Promise.race([proxy.stop().then(() => "stopped"), new Promise((r) => setTimeout(() => r("stop() still waiting after 6 s"), 6000).unref())]);
  t.equal(outcome, "stopped", "stop() returns: the tunnel socket was not left open");
});
