// Fuzz surface `http`: raw bytes over TCP into a real in-process `tessera proxy` in front of two
// mock vLLM servers. Inputs start as valid OpenAI requests (completions, chat, embeddings, models,
// health) and are mutated: request lines and targets, methods, versions, headers (huge, many,
// duplicated, conflicting framing, Expect, Upgrade), bodies (bad JSON, deep nesting, over the limit),
// chunked encodings, pipelining and byte flips. Invariant: every answer is a well-formed HTTP/1.1
// status line, never 5xx (all backends are healthy, so any 5xx is the proxy blaming itself for a
// client's fault); the proxy answers or closes within a deadline; RSS stays bounded.
import * as net from "node:net";
import type { Rng } from "../../bench/sim/prng.js";
import { startMockModelServer, startProxy, type MockModelServer, type RunningProxy } from "../../agent/proxy/index.js";
import { chance, mutateBytes, pick, type FuzzSurface, type FuzzTarget } from "./fuzz.js";

const MAX_BODY = 64 * 1024;
const CASE_DEADLINE_MS = 4000; // request timeout (1 s) + its check interval + slack
const QUIET_MS = 25; // after a complete final answer, this long without bytes ends the case
const RSS_BOUND = 1536 * 1024 * 1024;

interface Req {
  method: string;
  target: string;
  version: string;
  headers: [string, string][];
  body: Buffer;
  chunked: boolean;
}

const PROMPTS = ["Hello", "You are a careful assistant. ".repeat(20), "ünïcødé ✓ 😀", "", "x".repeat(3000)];

function baseRequest(rng: Rng): Req {
  const kind = rng.int(6);
  const prompt = pick(rng, PROMPTS);
  const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
  const r: Req = { method: "POST", target: "/v1/completions", version: "HTTP/1.1", headers: [["host", "proxy"], ["content-type", "application/json"]], body: Buffer.alloc(0), chunked: chance(rng, 0.25) };
  if (kind === 0) r.body = json({ model: "m", prompt, max_tokens: 4, stream: chance(rng, 0.5) });
  else if (kind === 1) {
    r.target = "/v1/chat/completions";
    r.body = json({ model: "m", stream: chance(rng, 0.5), messages: [{ role: "system", content: prompt }, { role: "user", content: "q" }] });
  } else if (kind === 2) {
    r.target = "/v1/embeddings";
    r.body = json({ model: "m", input: prompt });
  } else {
    r.method = "GET";
    r.target = pick(rng, ["/v1/models", "/healthz", "/metrics", "/v1/models?x=1"]);
    r.chunked = false;
  }
  if (chance(rng, 0.6)) r.headers.push(["connection", "close"]);
  if (chance(rng, 0.15)) r.headers.push(["expect", "100-continue"]);
  return r;
}

const TARGETS = ["*", "http://127.0.0.1:1/v1/models", "example.com:443", "", "//", "/%00", "/../../etc/passwd", "/v1/completions#frag", "/" + "a".repeat(9000), "v1/completions", "/\u00e9", "/?" + "q=".repeat(2000)];
const METHODS = ["OPTIONS", "CONNECT", "TRACE", "PUT", "DELETE", "PATCH", "HEAD", "BREW", "get", "POST ", "P\u0000ST", "PRI"];
const VERSIONS = ["HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", "HTTP/0.9", "", "HTTP/9.9"];
const BODIES: (() => Buffer)[] = [
  () => Buffer.from("{not json"),
  () => Buffer.from(`{"model":"m","prompt":${"[".repeat(5000)}${"]".repeat(5000)}}`),
  () => Buffer.from(`{"model":"m","messages":[{"role":"user","content":{"a":${"[".repeat(5000)}${"]".repeat(5000)}}}]}`),
  () => Buffer.from(JSON.stringify({ model: "m", prompt: "y".repeat(MAX_BODY + 10) })),
  () => Buffer.from('{"model":"m","prompt":5}'),
  () => Buffer.from('{"model":"m","messages":"x"}'),
  () => Buffer.from('{"model":"m","messages":[null,{"role":1}]}'),
  () => Buffer.from('{"model":{"$gt":""},"prompt":"p","cache_salt":[1]}'),
  () => Buffer.from("\uFEFF{}"),
  () => Buffer.from([0xff, 0xfe, 0x00, 0x7b]),
];

function mutate(rng: Rng, r: Req): void {
  switch (rng.int(12)) {
    case 0: r.target = pick(rng, TARGETS); break;
    case 1: r.method = pick(rng, METHODS); break;
    case 2: r.version = pick(rng, VERSIONS); break;
    case 3: r.headers.push([`x-big-${rng.int(9)}`, "v".repeat(pick(rng, [100, 8000, 20_000, 70_000]))]); break;
    case 4: for (let i = 0, n = pick(rng, [50, 150, 2100]); i < n; i++) r.headers.push([`x-h${i}`, String(i)]); break;
    case 5: r.headers.push(["content-length", pick(rng, ["-1", "1e9", "99999999999999999999", "0", "3", " 12", "0x10", "5, 6"])]); break;
    case 6: r.headers.push(pick(rng, [["transfer-encoding", "chunked"], ["transfer-encoding", "gzip, chunked"], ["transfer-encoding", "identity"], ["te", "trailers"], ["upgrade", "websocket"], ["connection", "upgrade"], ["expect", "100-continue"], ["expect", "something-else"], ["host", ""], ["x-gateway-destination-endpoint", "10.0.0.1:1"], ["content-type", "text/plain"]] as [string, string][])); break;
    case 7: r.headers.push(pick(rng, [["bad name", "v"], ["x-ctl", "a\u0001b"], ["x-fold", "a\r\n b"], ["", "empty"], ["x-utf8", "ü😀"], ["x-nul", "\u0000"]] as [string, string][])); break;
    case 8: r.body = (pick(rng, BODIES))(); break;
    case 9: r.chunked = !r.chunked; break;
    case 10: r.headers = r.headers.filter(() => chance(rng, 0.7)); break;
    default: r.headers.reverse(); break;
  }
}

function serialize(rng: Rng, r: Req): Buffer {
  const framing: [string, string][] = r.chunked ? [["transfer-encoding", "chunked"]] : r.body.length > 0 || r.method === "POST" ? [["content-length", String(r.body.length)]] : [];
  const head = `${r.method} ${r.target} ${r.version}`.replace(/ $/, "") + "\r\n" + [...framing, ...r.headers].map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n";
  if (!r.chunked) return Buffer.concat([Buffer.from(head, "latin1"), r.body]);
  const parts: Buffer[] = [Buffer.from(head, "latin1")];
  let at = 0;
  while (at < r.body.length) {
    const n = Math.min(r.body.length - at, 1 + rng.int(4096));
    const size = chance(rng, 0.02) ? pick(rng, ["zz", "ffffffffffffffff", "-1", `${n.toString(16)};ext=1`, ""]) : n.toString(16);
    parts.push(Buffer.from(`${size}\r\n`), r.body.subarray(at, at + n), Buffer.from("\r\n"));
    at += n;
  }
  if (!chance(rng, 0.03)) parts.push(Buffer.from(chance(rng, 0.05) ? "0\r\nx-trailer: 1\r\n\r\n" : "0\r\n\r\n"));
  return Buffer.concat(parts);
}

function genInput(rng: Rng): Uint8Array {
  const requests = chance(rng, 0.1) ? 2 : 1; // pipelining
  const out: Buffer[] = [];
  for (let i = 0; i < requests; i++) {
    const r = baseRequest(rng);
    for (let m = rng.int(4); m > 0; m--) mutate(rng, r);
    out.push(serialize(rng, r));
  }
  let bytes: Uint8Array = Buffer.concat(out);
  if (chance(rng, 0.1)) bytes = mutateBytes(rng, bytes, 5);
  if (chance(rng, 0.03)) bytes = bytes.subarray(0, rng.int(bytes.length + 1));
  return bytes;
}

/** Complete final answers in `raw` so far (1xx skipped), with their status codes; throws on a malformed one. */
export function parseAnswers(raw: Buffer, bodiless = false): { statuses: number[]; complete: boolean } {
  if (bodiless) {
    // Answers to HEAD carry no body whatever their framing headers say, and which answer belongs to
    // a HEAD is unknown when requests were pipelined: check the first status line and every line
    // that looks like one.
    if (raw.length >= 9 && !raw.subarray(0, 9).equals(Buffer.from("HTTP/1.1 "))) throw new Error(`answer does not start with a status line: ${JSON.stringify(raw.subarray(0, 40).toString("latin1"))}`);
    const statuses = [...raw.toString("latin1").matchAll(/(?:^|\r\n)HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1])).filter((c) => c >= 200 || c < 100);
    return { statuses, complete: statuses.length > 0 };
  }
  const statuses: number[] = [];
  let at = 0;
  let complete = false;
  while (at < raw.length) {
    const end = raw.indexOf("\r\n\r\n", at);
    if (end < 0) {
      if (!/^HTTP\/1\.1 /.test(raw.subarray(at, at + 9).toString("latin1")) && raw.length - at >= 9) throw new Error(`answer does not start with a status line: ${JSON.stringify(raw.subarray(at, at + 40).toString("latin1"))}`);
      return { statuses, complete: false };
    }
    const head = raw.subarray(at, end).toString("latin1");
    const m = /^HTTP\/1\.1 (\d{3}) [^\r\n]*/.exec(head);
    if (!m) throw new Error(`answer does not start with a status line: ${JSON.stringify(head.slice(0, 60))}`);
    const status = Number(m[1]);
    at = end + 4;
    if (status >= 100 && status < 200) continue;
    statuses.push(status);
    const len = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (len) {
      if (raw.length < at + Number(len[1])) return { statuses, complete: false };
      at += Number(len[1]);
      complete = true;
    } else if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
      const last = raw.indexOf("\r\n0\r\n\r\n", at - 2);
      if (last < 0) return { statuses, complete: false };
      at = last + 7;
      complete = true;
    } else return { statuses, complete: false }; // read to close
  }
  return { statuses, complete };
}

function exchange(port: number, input: Uint8Array, head: boolean): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let quiet: NodeJS.Timeout | undefined;
    let done = false;
    const s = net.connect(port, "127.0.0.1");
    const finish = (err?: Error): void => {
      if (done) return;
      done = true;
      clearTimeout(quiet);
      clearTimeout(deadline);
      s.destroy();
      if (err) reject(err);
      else resolve(Buffer.concat(chunks));
    };
    const deadline = setTimeout(() => finish(new Error(`proxy neither answered nor closed within ${CASE_DEADLINE_MS} ms`)), CASE_DEADLINE_MS);
    s.on("data", (d: Buffer) => {
      chunks.push(d);
      clearTimeout(quiet);
      let ok = false;
      try {
        ok = parseAnswers(Buffer.concat(chunks), head).complete;
      } catch {
        ok = true; // malformed: stop reading, the caller reports it
      }
      if (ok) quiet = setTimeout(() => finish(), QUIET_MS);
    });
    s.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNREFUSED") finish(new Error("proxy is down (connection refused)"));
      else finish(); // a reset after an error answer is a valid way to close
    });
    s.on("close", () => finish());
    s.write(input, () => undefined);
  });
}

export const httpSurface: FuzzSurface = {
  name: "http",
  concurrency: 16,
  async open(): Promise<FuzzTarget> {
    const mocks: MockModelServer[] = await Promise.all([startMockModelServer({ tokens: 2 }), startMockModelServer({ tokens: 2 })]);
    const proxy: RunningProxy = await startProxy({ listen: "127.0.0.1:0", endpoints: mocks.map((m) => m.url), maxBodyBytes: MAX_BODY, requestTimeoutMs: 1000, headersTimeoutMs: 500, scrapeIntervalMs: 200 });
    const port = Number(new URL(proxy.url).port);
    return {
      gen: genInput,
      async exec(input) {
        // A pipelined HEAD may follow a body with no line end ("...}HEAD /"): any "HEAD " counts
        // (the bodiless check is the more lenient one, never a wrong failure).
        const head = Buffer.from(input).includes("HEAD ");
        const raw = await exchange(port, input, head);
        const { statuses } = parseAnswers(raw, head);
        const bad = statuses.find((s) => s >= 500 || s < 200 || s > 599);
        if (bad !== undefined) throw new Error(`answered ${bad} to a client's request (first bytes ${JSON.stringify(raw.subarray(0, 300).toString("latin1"))})`);
        const rss = process.memoryUsage.rss();
        if (rss > RSS_BOUND) throw new Error(`RSS ${rss} bytes over the ${RSS_BOUND} bound`);
      },
      async close() {
        await proxy.stop();
        await Promise.all(mocks.map((m) => m.close()));
      },
    };
  },
};
