// The reference picker for `npm run bench -- epp`: the Gateway API Inference Extension's Go EPP
// (v1.3.1, cmd/epp), run in its standalone mode (--endpoint-selector) against a real
// kube-apiserver (the tier3 harness binary's `-tier serve`: etcd + kube-apiserver in process,
// N Pods whose status says Running/Ready with podIP 127.0.0.(2+i)). The bench's mock model
// servers listen on those addresses, so the EPP scrapes and picks the same pool tessera does.
// Both binaries are built once into ~/.cache/tessera (or taken from where `npm run conformance`
// left tier3); `--quick` only uses what is already built. Every failure is a reason string the
// bench prints next to a null baseline, never a silent fallback.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tesseraCacheDir } from "../test/support/go-tools.js";
import { stopChild } from "./_child.js";

export const GIE_MODULE = "sigs.k8s.io/gateway-api-inference-extension";
export const GIE_VERSION = "v1.3.1";
export const GIE_LABEL = `GIE ${GIE_VERSION} EPP (reference picker)`;
/** Overrides the built EPP binary (a path); the bench says it used it. */
export const GIE_ENV = "TESSERA_BENCH_GIE_EPP";

/** The Inference Extension's default scheduling profile: queue 2, kv-cache 2, prefix 3. */
const GIE_CONFIG = `apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: prefix-cache-scorer
    weight: 3
`;

export type Found = { path: string; note: string } | { missing: string };

const tail = (s: string): string => s.trim().split("\n").slice(-3).join(" | ");
const goBuild = (cwd: string, out: string, pkg: string): string | undefined => {
  mkdirSync(join(out, ".."), { recursive: true });
  const r = spawnSync("nice", ["-n", "10", "go", "build", "-o", out, pkg], { cwd, encoding: "utf8", timeout: 40 * 60_000, env: { ...process.env, GOFLAGS: "-buildvcs=false" } });
  return r.status === 0 && existsSync(out) ? undefined : `\`go build -o ${out} ${pkg}\` in ${cwd} failed: ${r.error?.message ?? tail(r.stderr)}`;
};
const goSources = (dir: string): string[] => readdirSync(dir).filter((f) => f.endsWith(".go") || f === "go.mod" || f === "go.sum").sort();

const TIER3_DIRS = [".", "../report", "../kubelet", "../gen", "../oracle"];

/**
 * tier3 with `-tier serve`: test/conformance/bin/tier3 when newer than its sources, else the one
 * built into ~/.cache/tessera/tier3-<hash of its sources> (checkouts share that cache).
 */
export function findTier3(repo: string, build: boolean, env: NodeJS.ProcessEnv = process.env): Found {
  const src = join(repo, "test", "conformance", "tier3");
  // its own files and the harness packages it imports (go.mod: replace tessera.dev/conformance => ../)
  const files = TIER3_DIRS.flatMap((d) => goSources(join(src, d)).map((f) => join(d, f)));
  const newest = Math.max(...files.map((f) => statSync(join(src, f)).mtimeMs));
  const bin = join(repo, "test", "conformance", "bin", "tier3");
  if (existsSync(bin) && statSync(bin).mtimeMs >= newest) return { path: bin, note: `${bin}, already built` };
  const hash = createHash("sha256");
  for (const f of files) hash.update(f).update(readFileSync(join(src, f)));
  const out = join(tesseraCacheDir(env), `tier3-${hash.digest("hex").slice(0, 12)}`, "tier3");
  if (existsSync(out)) return { path: out, note: `${out}, already built` };
  if (!build) return { missing: `tier3 (-tier serve) is not built or older than ${src}: run \`npm run bench -- epp\` once without --quick (it runs \`go build\` there)` };
  const t0 = Date.now();
  const err = goBuild(src, out, ".");
  return err ? { missing: err } : { path: out, note: `${out}, built in ${((Date.now() - t0) / 1000).toFixed(0)} s` };
}

/** GIE's cmd/epp at GIE_VERSION, built in its module directory (`go install` asks the proxy for the version list, which it refuses). */
export function findGie(build: boolean, env: NodeJS.ProcessEnv = process.env): Found {
  const override = env[GIE_ENV];
  if (override) return existsSync(override) ? { path: override, note: `${GIE_ENV}=${override}` } : { missing: `${GIE_ENV}=${override}: no such file` };
  const out = join(tesseraCacheDir(env), `epp-${GIE_VERSION}`, "epp");
  if (existsSync(out)) return { path: out, note: "already built" };
  if (!build) return { missing: `${GIE_MODULE}@${GIE_VERSION} cmd/epp is not built at ${out}: run \`npm run bench -- epp\` once without --quick (a cold build took 552 s here)` };
  const dl = spawnSync("go", ["mod", "download", "-json", `${GIE_MODULE}@${GIE_VERSION}`], { encoding: "utf8", timeout: 10 * 60_000, env: { ...process.env, GOFLAGS: "-mod=mod" } });
  let dir = "";
  try {
    dir = (JSON.parse(dl.stdout) as { Dir?: string }).Dir ?? "";
  } catch {
    // reported below
  }
  if (dl.status !== 0 || !dir) return { missing: `\`go mod download ${GIE_MODULE}@${GIE_VERSION}\` failed: ${dl.error?.message ?? tail(dl.stderr || dl.stdout)}` };
  const t0 = Date.now();
  const err = goBuild(dir, out, "./cmd/epp");
  return err ? { missing: err } : { path: out, note: `built in ${((Date.now() - t0) / 1000).toFixed(0)} s` };
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => s.once("error", reject).listen(0, "127.0.0.1", () => resolve()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Resolves with the first line of `from` that `match` accepts; rejects when the child exits first or on timeout. */
function awaitLine(child: ChildProcess, from: NodeJS.ReadableStream | null, what: string, ms: number, match: (line: string) => boolean, log: () => string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`${what}: no ready line after ${ms / 1000} s; last output: ${log()}`)), ms);
    from?.on("data", (d: Buffer) => {
      buf += String(d);
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (match(line)) {
          clearTimeout(timer);
          resolve(line);
        }
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited ${code}; last output: ${log()}`));
    });
  });
}

export interface GieRun {
  /** host:port of its ext_proc server. */
  target: string;
  stop(): Promise<void>;
}


/**
 * Starts tier3 `-tier serve` with one Pod per podIP, then the EPP against it (selector app=bench,
 * target port `port`, plaintext ext_proc, no tracing), `pin` wrapping its command line.
 */
export async function startGie(tier3: string, epp: string, podIPs: readonly string[], port: number, pin: (cmd: string[]) => string[]): Promise<GieRun> {
  const dir = mkdtempSync(join(tmpdir(), "tessera-bench-gie-"));
  const kubeconfig = join(dir, "kubeconfig");
  const config = join(dir, "epp-config.yaml");
  writeFileSync(config, GIE_CONFIG);
  let apiLog = "";
  const api = spawn(tier3, ["-tier", "serve", "-kubeconfig-out", kubeconfig, "-pods", String(podIPs.length), "-pod-ip-base", podIPs[0] as string, "-labels", "app=bench"], { stdio: ["ignore", "pipe", "pipe"] });
  api.stderr?.on("data", (d: Buffer) => { apiLog = (apiLog + String(d)).slice(-2000); });
  api.stdout?.resume();
  let eppChild: ChildProcess | undefined;
  const stop = async (): Promise<void> => {
    if (eppChild) await stopChild(eppChild);
    await stopChild(api);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const ready = await awaitLine(api, api.stdout, "tier3 -tier serve", 120_000, (l) => l.startsWith('{"ready":true'), () => tail(apiLog));
    const ips = (JSON.parse(ready) as { podIPs: string[] }).podIPs;
    if (ips.join(",") !== podIPs.join(",")) throw new Error(`tier3 made pods ${ips.join(",")}, want ${podIPs.join(",")}`);
    const [grpc, health, metrics] = [await freePort(), await freePort(), await freePort()];
    const cmd = pin([epp, "--endpoint-selector", "app=bench", "--endpoint-target-ports", String(port), "--config-file", config,
      "--grpc-port", String(grpc), "--grpc-health-port", String(health), "--metrics-port", String(metrics),
      "--secure-serving=false", "--tracing=false", "--metrics-endpoint-auth=false", "--enable-pprof=false"]);
    let eppLog = "";
    // POD_NAME: standalone mode names its pool after the Deployment parsed out of its own pod name.
    eppChild = spawn(cmd[0] as string, cmd.slice(1), { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, KUBECONFIG: kubeconfig, POD_NAME: "gie-epp-5d8f7c9b4-bench0", NAMESPACE: "default" } });
    const keep = (d: Buffer): void => { eppLog = (eppLog + String(d)).slice(-2000); };
    eppChild.stderr?.on("data", keep); // its log (zap, on stderr); read on, so it never blocks on a full pipe
    eppChild.stdout?.resume();
    await awaitLine(eppChild, eppChild.stderr, "GIE epp", 60_000, (l) => l.includes('"gRPC server listening"') && l.includes('"ext-proc"'), () => tail(eppLog));
    return { target: `127.0.0.1:${grpc}`, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
