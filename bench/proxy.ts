// `npm run bench -- proxy [--quick]`: what the proxy adds over going straight to the backend, for
// 1 KiB, 10 KiB and 100 KiB completion requests: added latency p50/p99 (one connection), max
// requests/s (64 connections) and the proxy process's CPU time per request during that max run
// (/proc utime+stime of every thread; for nginx its master and worker), which the shared machine's
// noise moves far less than rates do. Every request carries a fresh prompt (a numbered prefix
// before the shared text, 512 distinct bodies cycled, 256 at 100 KiB: more blocks than the mock's
// 2,048-block cache holds, so the router hashes, misses and inserts as it does for new prompts).
// Full runs repeat each measurement 3 times, interleaved, and keep the median. Baseline in the
// same run: Debian's nginx-light as a plain reverse proxy (1 worker, upstream keep-alive, proxy_buffering and proxy_request_buffering off). The
// load generator (wrk, else a Node/undici generator) and the mock backend share core 0, the proxy
// under test gets core 1 (taskset). nginx and wrk are installed by this script when missing
// (`apt-get update && apt-get install -y nginx-light wrk`); if that fails the baseline is null and
// stderr says why. The same file also runs the child roles (backend, proxy, loadgen).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync, readFileSync } from "node:fs";
import { connect } from "node:net";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Pool } from "undici";
import { startMockModelServer } from "../agent/proxy/mock-model-server.js";
import { startProxy } from "../agent/proxy/server.js";
import { benchLine, emitLine } from "./_report.js";

const self = fileURLToPath(import.meta.url);
const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const quick = process.argv.includes("--quick");
const SECONDS = quick ? 2 : 5; // wrk takes whole seconds
const REPEATS = quick ? 1 : 3;
const SIZES: [string, number][] = [["1KiB", 1024], ["10KiB", 10 * 1024], ["100KiB", 100 * 1024]];
const NGINX = "nginx-light (1 worker, upstream keep-alive, buffering off)";

/** `bad`: responses that were not 2xx plus socket errors; a run with any is not a measurement. */
interface Figures { p50: number; p99: number; rps: number; requests: number; bad: number }
interface Target { url: string; pids: () => number[] }

// ---- child roles -------------------------------------------------------------------------------
async function role(name: string): Promise<void> {
  if (name === "backend") {
    const m = await startMockModelServer({ tokens: 4 });
    process.stdout.write(m.url + "\n");
  } else if (name === "proxy") {
    const p = await startProxy({ listen: "127.0.0.1:0", endpoints: [arg("backend") as string] });
    process.stdout.write(p.url + "\n");
  } else if (name === "loadgen") {
    process.stdout.write(JSON.stringify(await nodeLoad(arg("url") as string, Number(arg("conns")), Number(arg("seconds")), arg("bodies") as string)) + "\n");
    process.exit(0);
  }
  process.stdin.resume();
  process.stdin.on("end", () => process.exit(0));
}

async function nodeLoad(url: string, conns: number, seconds: number, bodiesFile: string): Promise<Figures> {
  const bodies = readFileSync(bodiesFile, "utf8").split("\n").filter((b) => b.length > 0).map((b) => Buffer.from(b));
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections: conns });
  const lat: number[] = [];
  const end = Date.now() + seconds * 1000;
  let next = 0;
  let bad = 0;
  await Promise.all(Array.from({ length: conns }, async () => {
    while (Date.now() < end) {
      const body = bodies[next++ % bodies.length] as Buffer;
      const t0 = process.hrtime.bigint();
      const r = await pool.request({ path: u.pathname, method: "POST", body, headers: { "content-type": "application/json" } }).catch(() => undefined);
      if (r) await r.body.dump();
      if (!r || r.statusCode < 200 || r.statusCode > 299) bad++;
      lat.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  }));
  await pool.close();
  lat.sort((a, b) => a - b);
  return { p50: lat[Math.floor(lat.length / 2)] ?? 0, p99: lat[Math.floor(lat.length * 0.99)] ?? 0, rps: lat.length / seconds, requests: lat.length, bad };
}

// ---- orchestration -----------------------------------------------------------------------------
const have = (bin: string): boolean => spawnSync("sh", ["-c", `command -v ${bin}`]).status === 0;

function ensureTools(): string | undefined {
  if (have("nginx") && have("wrk")) return undefined;
  const sh = (cmd: string) => spawnSync("sh", ["-c", cmd], { encoding: "utf8", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive", RUNLEVEL: "1" } });
  process.stderr.write("installing nginx-light and wrk with apt-get ...\n");
  const up = sh("apt-get update -q");
  const inst = up.status === 0 ? sh("apt-get install -y -q nginx-light wrk") : up;
  if (inst.status !== 0) return `apt-get failed (${inst.status}): ${(inst.stderr || inst.stdout || "").trim().split("\n").at(-1) ?? ""}`;
  if (!have("nginx")) return "nginx not on PATH after apt-get install";
  return undefined;
}

const pin = (core: number, cmd: string[]): string[] => (have("taskset") && cpus().length >= 2 ? ["taskset", "-c", String(core), ...cmd] : cmd);

const children: ChildProcess[] = [];
async function child(cmd: string[]): Promise<{ line: string; pid: number }> {
  const c = spawn(cmd[0] as string, cmd.slice(1), { stdio: ["pipe", "pipe", "inherit"] });
  children.push(c);
  return new Promise((resolve, reject) => {
    let out = "";
    c.stdout?.on("data", (d: Buffer) => {
      out += String(d);
      const nl = out.indexOf("\n");
      if (nl >= 0) resolve({ line: out.slice(0, nl).trim(), pid: c.pid as number });
    });
    c.on("exit", (code) => reject(new Error(`${cmd.join(" ")} exited ${code}`)));
  });
}

// CPU time (user + system, every thread) of processes, in µs, from /proc; NaN where unreadable.
const TICK_US = 1e6 / (Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout) || 100);
function cpuUs(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(f[11]) + Number(f[12]); // fields 14 and 15: utime, stime
    } catch {
      return NaN;
    }
  }
  return ticks * TICK_US;
}
const childrenOf = (pid: number): number[] => {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
};

function startNginx(dir: string, backend: string): Target {
  const port = 20000 + Math.floor(Math.random() * 20000);
  mkdirSync(join(dir, "logs"), { recursive: true });
  const conf = join(dir, "nginx.conf");
  writeFileSync(conf, `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  client_max_body_size 10m;
  client_body_buffer_size 128k;
  upstream backend { server ${new URL(backend).host}; keepalive 128; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
`);
  const cmd = pin(1, ["nginx", "-p", dir, "-c", conf]);
  const c = spawn(cmd[0] as string, cmd.slice(1), { stdio: "ignore" });
  children.push(c);
  const master = c.pid as number;
  return { url: `http://127.0.0.1:${port}`, pids: () => [master, ...childrenOf(master)] };
}

function parseWrk(out: string): Figures {
  const toUs = (v: string, unit: string): number => Number(v) * (unit === "us" ? 1 : unit === "ms" ? 1000 : 1e6);
  const pick = (p: string): number => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s)`, "m").exec(out);
    return m ? toUs(m[1] as string, m[2] as string) : NaN;
  };
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const n = /(\d+) requests in/.exec(out);
  // wrk counts error answers as requests: "Non-2xx or 3xx responses: N" and "Socket errors: connect
  // A, read B, write C, timeout D" are printed only when there were any.
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const sock = /Socket errors:\s+connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = sock ? sock.slice(1).reduce((a, v) => a + Number(v), 0) : 0;
  return { p50: pick("50"), p99: pick("99"), rps: rps ? Number(rps[1]) : NaN, requests: n ? Number(n[1]) : NaN, bad: non2xx + socketErrors };
}

async function load(url: string, conns: number, bodiesFile: string, luaFile: string, useWrk: boolean, seconds = SECONDS): Promise<Figures> {
  if (useWrk) {
    const cmd = pin(0, ["wrk", "-t1", `-c${conns}`, `-d${seconds}s`, "--latency", "-s", luaFile, `${url}/v1/completions`]);
    const r = spawnSync(cmd[0] as string, cmd.slice(1), { encoding: "utf8" });
    const f = parseWrk(r.stdout);
    if (!Number.isFinite(f.rps)) process.stderr.write(`wrk failed on ${url}: ${(r.stderr || r.stdout || String(r.error)).trim()}\n`);
    return checked(url, conns, f);
  }
  const out = await child(pin(0, [process.execPath, self, "--role", "loadgen", "--url", `${url}/v1/completions`, "--conns", String(conns), "--seconds", String(seconds), "--bodies", bodiesFile]));
  return checked(url, conns, JSON.parse(out.line) as Figures);
}

/** A run that got error answers measured the error path (an nginx 400 costs it almost nothing). */
function checked(url: string, conns: number, f: Figures): Figures {
  if (f.bad > 0) throw new Error(`TESSERA_BENCH: ${f.bad} of ${f.requests} requests to ${url} at ${conns} connections were not answered 2xx (or hit socket errors); the figures would measure the error path. Check the target with: curl -i -X POST -H 'content-type: application/json' --data '{"model":"m","prompt":"x"}' ${url}/v1/completions`);
  return f;
}

/** One completion through `url` before it is measured: 200, the mock's JSON answer, the mock's header. */
async function preflight(name: string, url: string): Promise<void> {
  const pool = new Pool(new URL(url).origin, { connections: 1 });
  try {
    const r = await pool.request({ path: "/v1/completions", method: "POST", body: JSON.stringify({ model: "m", prompt: "preflight", max_tokens: 4 }), headers: { "content-type": "application/json" } });
    const text = await r.body.text();
    let choices: unknown;
    try {
      choices = (JSON.parse(text) as { choices?: unknown } | null)?.choices;
    } catch {
      // not JSON: choices stays undefined, reported below with the answer's first bytes
    }
    const answered = r.statusCode === 200 && r.headers["x-mock-server"] !== undefined && Array.isArray(choices) && choices.length === 1;
    if (!answered) throw new Error(`TESSERA_BENCH: ${name} at ${url} answered ${r.statusCode} ${text.slice(0, 120)}; expected the mock backend's completion`);
  } finally {
    await pool.close();
  }
}

/** `count` distinct completion bodies of `size` bytes, one per line: a numbered prompt prefix, then shared text. */
function bodies(size: number, count: number): string {
  const lines: string[] = [];
  for (let i = 0; i < count; i++) {
    const head = `request ${i}: `;
    const shell = JSON.stringify({ model: "m", prompt: head, max_tokens: 4 });
    const text = "The quick brown fox jumps over the lazy dog. ".repeat(Math.ceil(size / 45)).slice(0, size - shell.length);
    lines.push(JSON.stringify({ model: "m", prompt: head + text, max_tokens: 4 }));
  }
  return lines.join("\n") + "\n";
}

/** Resolves true once `url` accepts a TCP connection (nginx prints nothing when ready), false after `ms`. */
async function listening(url: string, ms: number): Promise<boolean> {
  const u = new URL(url);
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(Number(u.port), u.hostname, () => resolve(true));
      s.on("error", () => resolve(false));
      s.on("connect", () => s.destroy());
    });
    if (ok) return true;
  }
  return false;
}

const median = (xs: number[]): number => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 === 1 ? (s[s.length >> 1] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};

interface Measured { p50: number; p99: number; rps: number; cpuPerReq: number }

async function main(): Promise<void> {
  const why = ensureTools();
  if (why) process.stderr.write(`baseline unavailable: ${why}\n`);
  const nginxOk = why === undefined || have("nginx");
  const useWrk = have("wrk");
  const dir = mkdtempSync(join(tmpdir(), "tessera-bench-proxy-"));
  const be = await child(pin(0, [process.execPath, self, "--role", "backend"]));
  const px = await child(pin(1, [process.execPath, self, "--role", "proxy", "--backend", be.line]));
  const targets: [string, Target][] = [["direct", { url: be.line, pids: () => [be.pid] }], ["tessera", { url: px.line, pids: () => [px.pid] }]];
  if (nginxOk) {
    const ng = startNginx(dir, be.line);
    if (await listening(ng.url, 5000)) targets.push(["nginx", ng]);
    else process.stderr.write(`baseline unavailable: nginx did not listen on ${ng.url} within 5 s (see ${dir}/logs/error.log)\n`);
  }
  for (const [name, target] of targets) await preflight(name, target.url);
  const rows: string[] = [];
  const warmed = new Set<string>();
  const line = (c: string, metric: string, unit: string, value: number, baseValue: number | undefined): void => {
    const ok = baseValue !== undefined && Number.isFinite(baseValue);
    const l = benchLine("proxy", c, metric, unit, Math.round(value * 10) / 10, ok ? NGINX : null, ok ? Math.round((baseValue as number) * 10) / 10 : null);
    emitLine({ ...l, ratio: l.ratio === null ? null : Math.round(l.ratio * 100) / 100 });
  };
  for (const [label, size] of SIZES) {
    const bodiesFile = join(dir, `bodies-${label}.txt`);
    writeFileSync(bodiesFile, bodies(size, size > 64 * 1024 ? 256 : 512));
    const lua = join(dir, `post-${label}.lua`);
    // every request a fresh prompt: pre-formatted requests cycled (no per-request work in wrk). The
    // headers given to wrk.format are the whole header set: without Host every HTTP/1.1 server
    // (nginx, Node) answers 400, which is what every figure between 1e7289d and this check measured.
    writeFileSync(lua, `local reqs = {}\nlocal n = 0\nlocal i = 0\nfor l in io.lines("${bodiesFile}") do\n  n = n + 1\n  reqs[n] = wrk.format("POST", nil, { ["Host"] = "bench", ["Content-Type"] = "application/json" }, l)\nend\nrequest = function()\n  i = i % n + 1\n  return reqs[i]\nend\n`);
    const runs = new Map<string, { p50: number[]; p99: number[]; rps: number[]; cpu: number[] }>(targets.map(([n]) => [n, { p50: [], p99: [], rps: [], cpu: [] }]));
    for (let rep = 0; rep < REPEATS; rep++) {
      for (const [name, target] of targets) {
        // one unmeasured run per target first: the Node proxy's JIT warms up, nginx has none
        if (!warmed.has(name)) await load(target.url, 8, bodiesFile, lua, useWrk, 1);
        warmed.add(name);
        const r = runs.get(name) as { p50: number[]; p99: number[]; rps: number[]; cpu: number[] };
        const lat = await load(target.url, 1, bodiesFile, lua, useWrk);
        const cpu0 = cpuUs(target.pids());
        const max = await load(target.url, 64, bodiesFile, lua, useWrk);
        const cpu = (cpuUs(target.pids()) - cpu0) / max.requests;
        r.p50.push(lat.p50);
        r.p99.push(lat.p99);
        r.rps.push(max.rps);
        r.cpu.push(cpu);
      }
    }
    const m = new Map<string, Measured>([...runs].map(([n, r]) => [n, { p50: median(r.p50), p99: median(r.p99), rps: median(r.rps), cpuPerReq: median(r.cpu) }]));
    const direct = m.get("direct") as Measured;
    const ours = m.get("tessera") as Measured;
    const base = m.get("nginx");
    const c = `${label} body, fresh prompts (loadgen+backend core 0, proxy core 1, ${useWrk ? "wrk" : "undici loadgen"})`;
    line(c, "added_p50_us", "us", ours.p50 - direct.p50, base ? base.p50 - direct.p50 : undefined);
    line(c, "added_p99_us", "us", ours.p99 - direct.p99, base ? base.p99 - direct.p99 : undefined);
    line(c, "max_rps", "req/s", ours.rps, base?.rps);
    line(c, "cpu_us_per_request", "us", ours.cpuPerReq, base?.cpuPerReq);
    const fmt = (n: string, f: Measured | undefined) => (f ? `${n.padEnd(8)} p50 ${f.p50.toFixed(0).padStart(6)} us  p99 ${f.p99.toFixed(0).padStart(6)} us  max ${f.rps.toFixed(0).padStart(7)} req/s  cpu ${f.cpuPerReq.toFixed(0).padStart(5)} us/req` : `${n.padEnd(8)} (unavailable)`);
    rows.push(`${label}:`, fmt("direct", direct), fmt("tessera", ours), fmt("nginx", base));
  }
  process.stderr.write(`proxy bench, ${SECONDS}s per run, median of ${REPEATS}, latency at 1 connection, max and cpu at 64 connections\n${rows.join("\n")}\n`);
}

const r = arg("role");
if (r) await role(r);
else {
  try {
    await main();
  } catch (err) {
    // one line, no stack: a bench that cannot measure says why and exits non-zero
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  }
}
