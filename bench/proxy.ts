// `npm run bench -- proxy [--quick]`: what the proxy adds over going straight to the backend, for
// 1 KiB, 10 KiB and 100 KiB completion requests: added latency p50/p99 (one connection) and max
// requests/s (64 connections). Baseline in the same run: Debian's nginx-light as a plain reverse
// proxy (1 worker, upstream keep-alive, proxy_buffering and proxy_request_buffering off). The
// load generator (wrk, else a Node/undici generator) and the mock backend share core 0, the proxy
// under test gets core 1 (taskset). nginx and wrk are installed by this script when missing
// (`apt-get update && apt-get install -y nginx-light wrk`); if that fails the baseline is null and
// stderr says why. The same file also runs the child roles (backend, proxy, loadgen).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Pool } from "undici";
import { startMockModelServer } from "../agent/proxy/mock-model-server.js";
import { startProxy } from "../agent/proxy/server.js";

const self = fileURLToPath(import.meta.url);
const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const quick = process.argv.includes("--quick");
const SECONDS = quick ? 2 : 10; // wrk takes whole seconds
const SIZES: [string, number][] = [["1KiB", 1024], ["10KiB", 10 * 1024], ["100KiB", 100 * 1024]];
const NGINX = "nginx-light (1 worker, upstream keep-alive, buffering off)";

interface Figures { p50: number; p99: number; rps: number }

// ---- child roles -------------------------------------------------------------------------------
async function role(name: string): Promise<void> {
  if (name === "backend") {
    const m = await startMockModelServer({ tokens: 4 });
    process.stdout.write(m.url + "\n");
  } else if (name === "proxy") {
    const p = await startProxy({ listen: "127.0.0.1:0", endpoints: [arg("backend") as string] });
    process.stdout.write(p.url + "\n");
  } else if (name === "loadgen") {
    process.stdout.write(JSON.stringify(await nodeLoad(arg("url") as string, Number(arg("conns")), Number(arg("seconds")), arg("body") as string)) + "\n");
    process.exit(0);
  }
  process.stdin.resume();
  process.stdin.on("end", () => process.exit(0));
}

async function nodeLoad(url: string, conns: number, seconds: number, bodyFile: string): Promise<Figures> {
  const { readFileSync } = await import("node:fs");
  const body = readFileSync(bodyFile);
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections: conns });
  const lat: number[] = [];
  const end = Date.now() + seconds * 1000;
  await Promise.all(Array.from({ length: conns }, async () => {
    while (Date.now() < end) {
      const t0 = process.hrtime.bigint();
      const r = await pool.request({ path: u.pathname, method: "POST", body, headers: { "content-type": "application/json" } });
      await r.body.dump();
      lat.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  }));
  await pool.close();
  lat.sort((a, b) => a - b);
  return { p50: lat[Math.floor(lat.length / 2)] ?? 0, p99: lat[Math.floor(lat.length * 0.99)] ?? 0, rps: lat.length / seconds };
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
async function child(cmd: string[]): Promise<string> {
  const c = spawn(cmd[0] as string, cmd.slice(1), { stdio: ["pipe", "pipe", "inherit"] });
  children.push(c);
  return new Promise((resolve, reject) => {
    let out = "";
    c.stdout?.on("data", (d: Buffer) => {
      out += String(d);
      const nl = out.indexOf("\n");
      if (nl >= 0) resolve(out.slice(0, nl).trim());
    });
    c.on("exit", (code) => reject(new Error(`${cmd.join(" ")} exited ${code}`)));
  });
}

function startNginx(dir: string, backend: string): string | undefined {
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
  const c = spawn(pin(1, ["nginx", "-p", dir, "-c", conf])[0] as string, pin(1, ["nginx", "-p", dir, "-c", conf]).slice(1), { stdio: "ignore" });
  children.push(c);
  return `http://127.0.0.1:${port}`;
}

function parseWrk(out: string): Figures {
  const toUs = (v: string, unit: string): number => Number(v) * (unit === "us" ? 1 : unit === "ms" ? 1000 : 1e6);
  const pick = (p: string): number => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s)`, "m").exec(out);
    return m ? toUs(m[1] as string, m[2] as string) : NaN;
  };
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  return { p50: pick("50"), p99: pick("99"), rps: rps ? Number(rps[1]) : NaN };
}

async function load(url: string, conns: number, bodyFile: string, luaFile: string, useWrk: boolean, seconds = SECONDS): Promise<Figures> {
  if (useWrk) {
    const r = spawnSync(pin(0, ["wrk"])[0] as string, [...pin(0, ["wrk"]).slice(1), "-t1", `-c${conns}`, `-d${seconds}s`, "--latency", "-s", luaFile, `${url}/v1/completions`], { encoding: "utf8" });
    const f = parseWrk(r.stdout);
    if (!Number.isFinite(f.rps)) process.stderr.write(`wrk failed on ${url}: ${(r.stderr || r.stdout || String(r.error)).trim()}\n`);
    return f;
  }
  const out = await child(pin(0, [process.execPath, self, "--role", "loadgen", "--url", `${url}/v1/completions`, "--conns", String(conns), "--seconds", String(seconds), "--body", bodyFile]));
  return JSON.parse(out) as Figures;
}

async function main(): Promise<void> {
  const why = ensureTools();
  if (why) process.stderr.write(`baseline unavailable: ${why}\n`);
  const nginxOk = why === undefined || have("nginx");
  const useWrk = have("wrk");
  const dir = mkdtempSync(join(tmpdir(), "tessera-bench-proxy-"));
  const backend = await child(pin(0, [process.execPath, self, "--role", "backend"]));
  const proxy = await child(pin(1, [process.execPath, self, "--role", "proxy", "--backend", backend]));
  const nginx = nginxOk ? startNginx(dir, backend) : undefined;
  if (nginx) await new Promise((r) => setTimeout(r, 300)); // nginx prints nothing when ready
  const rows: string[] = [];
  const warmed = new Set<string>();
  const line = (c: string, metric: string, unit: string, value: number, baseValue: number | null): void => {
    const ok = baseValue !== null && Number.isFinite(baseValue);
    process.stdout.write(JSON.stringify({ bench: "proxy", case: c, metric, unit, value: +value.toFixed(1), baseline: ok ? NGINX : null, baselineValue: ok ? +(baseValue as number).toFixed(1) : null, ratio: ok && baseValue !== 0 ? +(value / (baseValue as number)).toFixed(2) : null }) + "\n");
  };
  for (const [label, size] of SIZES) {
    const bodyFile = join(dir, `body-${label}.json`);
    const prompt = "The quick brown fox jumps over the lazy dog. ".repeat(Math.ceil(size / 45)).slice(0, size - 60);
    writeFileSync(bodyFile, JSON.stringify({ model: "m", prompt, max_tokens: 4 }));
    const lua = join(dir, `post-${label}.lua`);
    writeFileSync(lua, `wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nlocal f = io.open("${bodyFile}", "rb")\nwrk.body = f:read("*a")\nf:close()\n`);
    const measure = async (url: string): Promise<{ lat: Figures; max: Figures }> => {
      // one unmeasured run per target first: the Node proxy's JIT warms up, nginx has none
      if (!warmed.has(url)) await load(url, 8, bodyFile, lua, useWrk, 1);
      warmed.add(url);
      return { lat: await load(url, 1, bodyFile, lua, useWrk), max: await load(url, 64, bodyFile, lua, useWrk) };
    };
    const direct = await measure(backend);
    const ours = await measure(proxy);
    const base = nginx ? await measure(nginx) : undefined;
    const c = `${label} body (loadgen+backend core 0, proxy core 1, ${useWrk ? "wrk" : "undici loadgen"})`;
    line(c, "added_p50_us", "us", ours.lat.p50 - direct.lat.p50, base ? base.lat.p50 - direct.lat.p50 : null);
    line(c, "added_p99_us", "us", ours.lat.p99 - direct.lat.p99, base ? base.lat.p99 - direct.lat.p99 : null);
    line(c, "max_rps", "req/s", ours.max.rps, base ? base.max.rps : null);
    const fmt = (n: string, f: { lat: Figures; max: Figures }) => `${n.padEnd(8)} p50 ${f.lat.p50.toFixed(0).padStart(6)} us  p99 ${f.lat.p99.toFixed(0).padStart(6)} us  max ${f.max.rps.toFixed(0).padStart(7)} req/s`;
    rows.push(`${label}:`, fmt("direct", direct), fmt("tessera", ours), base ? fmt("nginx", base) : "nginx    (unavailable)");
  }
  process.stderr.write(`proxy bench, ${SECONDS}s per run, latency at 1 connection, max at 64 connections\n${rows.join("\n")}\n`);
}

const r = arg("role");
if (r) await role(r);
else {
  try {
    await main();
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  }
}
