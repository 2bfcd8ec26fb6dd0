// The one place that reads flags and environment variables. Every setting is a flag with an
// environment mirror; derived paths (sockets, checkpoint, CDI spec names) are computed here so
// every module and the deploy manifests agree with shared/contracts.md.
import { createHash } from "node:crypto";
import * as os from "node:os";
import * as path from "node:path";
import { TesseraError } from "./errors.js";
import type { LogLevel } from "./log.js";

export type FlagType = "string" | "int" | "bool" | "list";

export interface FlagSpec {
  name: string; // long name without dashes, e.g. "kubelet-root"
  type: FlagType;
  env?: string; // environment mirror, e.g. "KUBELET_ROOT"
  default?: string | number | boolean | string[];
  short?: string; // one-letter alias, e.g. "o"
  help: string;
}

export type FlagValue = string | number | boolean | string[] | undefined;
export interface ParsedArgs {
  values: Record<string, FlagValue>;
  positionals: string[];
  /** Flags set on the command line or through their environment mirror (not defaulted). */
  given: ReadonlySet<string>;
}

/** Thrown by parseFlags when argv holds `--help` / `-h`: the CLI prints help for exactly these specs. */
export class HelpRequested extends Error {
  constructor(readonly specs: readonly FlagSpec[]) {
    super("help requested");
    this.name = "HelpRequested";
  }
}

/**
 * Parses `--name value`, `--name=value`, `-o json`, `-ojson` (kubectl style), bool `--flag` /
 * `--flag=false`. Env fills unset flags. `--help`/`-h` anywhere throws HelpRequested once every
 * other argument parsed (an unknown flag is still an error), before any value is converted.
 */
export function parseFlags(argv: readonly string[], specs: readonly FlagSpec[], env: NodeJS.ProcessEnv = process.env): ParsedArgs {
  const byName = new Map<string, FlagSpec>();
  for (const s of specs) {
    byName.set(s.name, s);
    if (s.short) byName.set(s.short, s);
  }
  const raw = new Map<string, string>();
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    if (arg === "--help" || arg === "-h") {
      help = true;
      continue;
    }
    const body = arg.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const key = eq >= 0 ? body.slice(0, eq) : body;
    const spec = byName.get(key) ?? attachedShort(arg, byName);
    if (!spec) throw new TesseraError("TESSERA_USAGE", `unknown flag ${arg}; run \`tessera help\` for the verbs and their flags`);
    if (spec.short !== undefined && key !== spec.short && key !== spec.name) raw.set(spec.name, body.slice(1)); // -ojson
    else if (eq >= 0) raw.set(spec.name, body.slice(eq + 1));
    else if (spec.type === "bool") raw.set(spec.name, "true");
    else {
      const next = argv[i + 1];
      if (next === undefined) throw new TesseraError("TESSERA_USAGE", `flag --${spec.name} needs a value`);
      raw.set(spec.name, next);
      i++;
    }
  }
  if (help) throw new HelpRequested(specs);
  const values: Record<string, FlagValue> = {};
  const given = new Set<string>();
  for (const s of specs) {
    const fromFlag = raw.get(s.name);
    const fromEnv = s.env !== undefined ? env[s.env] : undefined;
    const text = fromFlag ?? (fromEnv !== undefined && fromEnv !== "" ? fromEnv : undefined);
    if (text !== undefined) given.add(s.name);
    values[s.name] = text === undefined ? s.default : convert(s, text, fromFlag !== undefined ? `--${s.name}` : `$${s.env}`);
  }
  return { values, positionals, given };
}

/** `-ojson`: a one-letter flag with its value attached (not for bools, not with `=`). */
function attachedShort(arg: string, byName: ReadonlyMap<string, FlagSpec>): FlagSpec | undefined {
  if (arg.startsWith("--") || arg.length < 3 || arg.includes("=")) return undefined;
  const spec = byName.get(arg.slice(1, 2));
  return spec && spec.short === arg.slice(1, 2) && spec.type !== "bool" ? spec : undefined;
}

function convert(s: FlagSpec, text: string, where: string): FlagValue {
  switch (s.type) {
    case "string":
      return text;
    case "list":
      return text.split(",").map((x) => x.trim()).filter((x) => x.length > 0);
    case "bool":
      if (text === "true" || text === "1") return true;
      if (text === "false" || text === "0") return false;
      throw new TesseraError("TESSERA_CONFIG", `${where}=${text}: expected true or false`);
    case "int": {
      const n = Number(text);
      if (!Number.isInteger(n)) throw new TesseraError("TESSERA_CONFIG", `${where}=${text}: expected a whole number`);
      return n;
    }
  }
}

export function str(args: ParsedArgs, name: string): string {
  const v = args.values[name];
  if (typeof v !== "string") throw new TesseraError("TESSERA_USAGE", `flag --${name} is required`);
  return v;
}

export function optStr(args: ParsedArgs, name: string): string | undefined {
  const v = args.values[name];
  return typeof v === "string" ? v : undefined;
}

export function int(args: ParsedArgs, name: string): number {
  const v = args.values[name];
  if (typeof v !== "number") throw new TesseraError("TESSERA_USAGE", `flag --${name} is required`);
  return v;
}

export function bool(args: ParsedArgs, name: string): boolean {
  return args.values[name] === true;
}

export function list(args: ParsedArgs, name: string): string[] {
  const v = args.values[name];
  return Array.isArray(v) ? v : [];
}

// ---- Node-level settings shared by agent, diag, claims and demo -------------------------------

export const DEFAULT_DRIVER_NAME = "gpu.tessera.dev";

/** Shared by every long-running verb (agent, proxy). */
export const LOG_LEVEL_FLAG: FlagSpec = { name: "log-level", type: "string", env: "LOG_LEVEL", default: "info", help: "debug | info | warn | error" };

const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

export function logLevelOf(args: ParsedArgs): LogLevel {
  const level = str(args, "log-level");
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new TesseraError("TESSERA_CONFIG", `--log-level=${level}: expected debug, info, warn or error`);
  }
  return level as LogLevel;
}

export const KUBE_FLAG: FlagSpec = { name: "kube", type: "string", env: "KUBE", default: "auto", help: "auto | kubeconfig:<path> | standalone:<dir>" };

export const NODE_FLAGS: readonly FlagSpec[] = [
  { name: "driver-name", type: "string", env: "DRIVER_NAME", default: DEFAULT_DRIVER_NAME, help: "DRA driver name" },
  { name: "node-name", type: "string", env: "NODE_NAME", help: "node name = pool name (default: host name)" },
  { name: "kubelet-root", type: "string", env: "KUBELET_ROOT", default: "/var/lib/kubelet", help: "kubelet root directory" },
  { name: "state-dir", type: "string", env: "STATE_DIR", help: "checkpoint directory (default <kubelet-root>/plugins/<driver>)" },
  { name: "cdi-root", type: "string", env: "CDI_ROOT", default: "/var/run/cdi", help: "CDI spec directory" },
  { name: "sysfs-root", type: "string", env: "SYSFS_ROOT", default: "/sys", help: "sysfs root (fixtures bring their own)" },
  { name: "discovery", type: "string", env: "DISCOVERY", default: "nvidia-smi", help: "nvidia-smi | fixture:<name-or-path>" },
  KUBE_FLAG,
  { name: "mig-mode", type: "string", env: "MIG_MODE", default: "static", help: "static | dynamic" },
  { name: "gpu-sharing", type: "string", env: "GPU_SHARING", default: "none", help: "none | consumable (whole GPUs shared by several claims)" },
  { name: "nvidia-smi", type: "string", env: "NVIDIA_SMI", default: "nvidia-smi", help: "nvidia-smi executable (path or name on PATH)" },
  { name: "mps-control", type: "string", env: "MPS_CONTROL", default: "nvidia-cuda-mps-control", help: "nvidia-cuda-mps-control executable (path or name on PATH), run per MPS claim" },
  { name: "proc-root", type: "string", env: "PROC_ROOT", default: "/proc", help: "host /proc (MIG capability minors: <proc-root>/driver/nvidia-caps/mig-minors)" },
  {
    name: "rolling-update-uid",
    type: "string",
    env: "POD_UID",
    help: "this pod's UID (downward API): per-pod socket names so two agent pods can overlap during a surge rolling update",
  },
  LOG_LEVEL_FLAG,
];

/** The agent's HTTP endpoint (/healthz, /readyz, /metrics). Port 9477: clear of the kubelet
 *  (10248/10250/10255), kube-proxy (10249/10256), node-exporter (9100), dcgm-exporter (9400) and
 *  the proxy beside us in the pod (8080). All addresses: the kubelet's httpGet probes dial the
 *  pod IP (the node IP with hostNetwork), never loopback. */
export const DEFAULT_HTTP_LISTEN = "0.0.0.0:9477";

/** Flags only `tessera agent` takes (on top of NODE_FLAGS). */
export const AGENT_FLAGS: readonly FlagSpec[] = [
  { name: "http-listen", type: "string", env: "HTTP_LISTEN", default: DEFAULT_HTTP_LISTEN, help: "host:port of /healthz, /readyz, /metrics; off disables" },
  { name: "mps-check-interval", type: "int", env: "MPS_CHECK_INTERVAL", default: 5, help: "seconds between liveness checks of the MPS control daemons (dead ones are restarted with backoff; 0: never)" },
];

export const DEFAULT_KMSG_PATH = "/dev/kmsg";

/** Device health (agent only): XID events, nvidia-smi queries, taints, the kubelet's health stream. */
export const HEALTH_FLAGS: readonly FlagSpec[] = [
  { name: "kmsg", type: "string", env: "KMSG_PATH", help: `kernel log to read XID events from, /dev/kmsg records (default ${DEFAULT_KMSG_PATH}; a fixture node: its kmsg.txt if present; off disables)` },
  { name: "health-interval", type: "int", env: "HEALTH_INTERVAL", default: 10, help: "seconds between nvidia-smi health queries, and between health stream heartbeats" },
  { name: "health-hold-down", type: "int", env: "HEALTH_HOLD_DOWN", default: 300, help: "seconds a device must stay healthy before its taint is cleared" },
  { name: "health-api", type: "list", env: "HEALTH_API", default: ["v1", "v1alpha1"], help: "DRAResourceHealth versions served and advertised: v1,v1alpha1 | v1 | v1alpha1 | off" },
];

export interface HealthConfig {
  /** Explicit --kmsg path; undefined: the default for the discovery backend; "off": none. */
  kmsg?: string;
  intervalS: number;
  holdDownS: number;
  apiVersions: ("v1" | "v1alpha1")[];
}

export function resolveHealthConfig(args: ParsedArgs): HealthConfig {
  const intervalS = int(args, "health-interval");
  if (intervalS < 1 || intervalS > 3600) throw new TesseraError("TESSERA_CONFIG", `--health-interval=${intervalS}: expected 1 to 3600 seconds`);
  const holdDownS = int(args, "health-hold-down");
  if (holdDownS < 0 || holdDownS > 7 * 86400) throw new TesseraError("TESSERA_CONFIG", `--health-hold-down=${holdDownS}: expected 0 to 604800 seconds`);
  const api = list(args, "health-api");
  const apiVersions: ("v1" | "v1alpha1")[] = [];
  for (const v of api) {
    if (v === "off" && api.length === 1) break;
    if (v !== "v1" && v !== "v1alpha1") throw new TesseraError("TESSERA_CONFIG", `--health-api=${api.join(",")}: expected a list of v1 and v1alpha1, or off`);
    if (!apiVersions.includes(v)) apiVersions.push(v);
  }
  const kmsg = optStr(args, "kmsg");
  if (kmsg !== undefined && (kmsg === "" || kmsg.includes("\0"))) throw new TesseraError("TESSERA_CONFIG", `--kmsg: expected a file path or off`);
  return { ...(kmsg !== undefined ? { kmsg: kmsg === "off" ? "off" : path.resolve(kmsg) } : {}), intervalS, holdDownS, apiVersions };
}

export interface HostPort {
  host: string;
  port: number;
}

/** `--http-listen`: host:port ([v6]:port accepted), or undefined for `off`. */
export function parseHttpListen(text: string, flag = "http-listen"): HostPort | undefined {
  if (text === "off") return undefined;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]*)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || !Number.isInteger(port) || port > 65535) {
    throw new TesseraError("TESSERA_CONFIG", `--${flag}=${text}: expected <host>:<port> (e.g. ${DEFAULT_HTTP_LISTEN}) or off`);
  }
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

export const OUTPUT_FLAG: FlagSpec = { name: "output", short: "o", type: "string", default: "table", help: "table | json" };

// ---- Every verb's flags: what it parses and what `tessera help` prints come from here ----------

/** `--rediscover-interval <s>` [REDISCOVER_INTERVAL], 0 disables the timer (agent only). */
export const DISCOVERY_FLAGS: readonly FlagSpec[] = [
  { name: "rediscover-interval", type: "int", env: "REDISCOVER_INTERVAL", default: 60, help: "seconds between GPU rediscoveries (0: only at start and on SIGHUP)" },
];

/** Flags of the verbs that read a claim file and allocate (claims apply, diag explain). */
export const CLAIM_FILE_FLAGS: readonly FlagSpec[] = [
  { name: "filename", short: "f", type: "string", help: "claim file (YAML or JSON, several documents allowed; - reads stdin)" },
  { name: "strategy", type: "string", env: "ALLOCATION_STRATEGY", default: "first-fit", help: "first-fit | best-fit" },
];

export const UID_FLAG: FlagSpec = { name: "uid", type: "string", help: "claim UID (unprepare of a claim that no longer exists)" };

export const NAMESPACE_FLAG: FlagSpec = { name: "namespace", short: "n", type: "string", env: "CLAIMS_NAMESPACE", help: "only claims of this namespace (default: all)" };

export const DEMO_FLAGS: readonly FlagSpec[] = [
  { name: "fixture", type: "string", env: "DEMO_FIXTURE", default: "mixed-2numa-h100-mig", help: "fixture node to run on" },
  { name: "keep", type: "bool", env: "DEMO_KEEP", default: false, help: "keep the temporary directory" },
];

/** The routing profile's flags (agent/routing/config.ts), the same for the proxy and the picker. */
function routerFlags(env: "PROXY" | "EPP"): FlagSpec[] {
  return [
    { name: "block-size", type: "int", env: `${env}_BLOCK_SIZE`, default: 64, help: "bytes per hashed prompt block" },
    { name: "max-blocks", type: "int", env: `${env}_MAX_BLOCKS`, default: 256, help: "blocks hashed per prompt at most" },
    { name: "capacity-blocks", type: "int", env: `${env}_CAPACITY_BLOCKS`, default: 31_250, help: "index capacity per endpoint until cache_config_info says otherwise" },
    { name: "weight-prefix", type: "string", env: `${env}_WEIGHT_PREFIX`, default: "3", help: "prefix scorer weight" },
    { name: "weight-queue", type: "string", env: `${env}_WEIGHT_QUEUE`, default: "2", help: "queue scorer weight" },
    { name: "weight-kv", type: "string", env: `${env}_WEIGHT_KV`, default: "2", help: "KV-cache scorer weight" },
    { name: "weight-inflight", type: "string", env: `${env}_WEIGHT_INFLIGHT`, default: "1", help: "in-flight scorer weight" },
    { name: "guard-threshold", type: "string", env: `${env}_GUARD_THRESHOLD`, default: "16", help: "queue excess (waiting + in-flight) over the least loaded that voids the prefix score" },
    { name: "saturation-queue", type: "string", env: `${env}_SATURATION_QUEUE`, default: "128", help: "waiting + in-flight at which an endpoint is saturated (0: off); all saturated -> 429" },
  ];
}

export const PROXY_FLAGS: readonly FlagSpec[] = [
  { name: "listen", type: "string", env: "PROXY_LISTEN", default: "0.0.0.0:8080", help: "address to serve on" },
  { name: "endpoints", type: "list", env: "PROXY_ENDPOINTS", help: "model server URLs, http://ip:port,..." },
  { name: "inference-pool", type: "string", env: "INFERENCE_POOL", help: "<namespace>/<name> of an inference.networking.k8s.io/v1 InferencePool" },
  { name: "node-name", type: "string", env: "NODE_NAME", help: "only pods on this node (default: host name)" },
  { name: "kube", type: "string", env: "KUBE", default: "auto", help: "auto | kubeconfig:<path>" },
  { name: "trust-endpoint-header", type: "bool", env: "PROXY_TRUST_ENDPOINT_HEADER", default: false, help: "honour a client's x-gateway-destination-endpoint" },
  { name: "scrape-interval-ms", type: "int", env: "PROXY_SCRAPE_INTERVAL_MS", default: 50, help: "endpoint /metrics scrape period" },
  { name: "max-body-bytes", type: "int", env: "PROXY_MAX_BODY_BYTES", default: 8 * 1024 * 1024, help: "request body limit (413 above)" },
  { name: "request-timeout-ms", type: "int", env: "PROXY_REQUEST_TIMEOUT_MS", default: 30_000, help: "a client must send its whole request within" },
  { name: "upstream-connections", type: "int", env: "PROXY_UPSTREAM_CONNECTIONS", default: 128, help: "backend connections per endpoint at most (more requests wait for one)" },
  { name: "upstream-keepalive-ms", type: "int", env: "PROXY_UPSTREAM_KEEPALIVE_MS", default: 4000, help: "an idle backend connection is closed after this" },
  ...routerFlags("PROXY"),
  LOG_LEVEL_FLAG,
];

/** `tessera epp`: the same router (flags, defaults) behind Envoy's ext_proc instead of HTTP. */
export const EPP_FLAGS: readonly FlagSpec[] = [
  { name: "listen", type: "string", env: "EPP_LISTEN", default: "0.0.0.0:9002", help: "gRPC address of the ext_proc service and grpc.health.v1" },
  { name: "metrics-listen", type: "string", env: "EPP_METRICS_LISTEN", default: "0.0.0.0:9090", help: "host:port of /metrics and /healthz; off disables" },
  { name: "endpoints", type: "list", env: "EPP_ENDPOINTS", help: "model server URLs, http://ip:port,..." },
  { name: "inference-pool", type: "string", env: "INFERENCE_POOL", help: "<namespace>/<name> of an inference.networking.k8s.io/v1 InferencePool (its ready pods on every node)" },
  { name: "kube", type: "string", env: "KUBE", default: "auto", help: "auto | kubeconfig:<path>" },
  { name: "body-mode", type: "string", env: "EPP_BODY_MODE", default: "full-duplex", help: "full-duplex | buffered: Envoy's request_body_mode when its stream does not say (protocol_config)" },
  { name: "scrape-interval-ms", type: "int", env: "EPP_SCRAPE_INTERVAL_MS", default: 50, help: "endpoint /metrics scrape period" },
  { name: "max-body-bytes", type: "int", env: "EPP_MAX_BODY_BYTES", default: 8 * 1024 * 1024, help: "request body limit (413 above)" },
  ...routerFlags("EPP"),
  { name: "cold-slack", type: "string", env: "EPP_COLD_SLACK", default: "4", help: "cold prefixes: rendezvous hash over endpoints within this many waiting requests of the least loaded (0: off)" },
  { name: "fallbacks", type: "int", env: "EPP_FALLBACKS", default: 0, help: "next-best endpoints after the primary in the routing header and metadata (primary,fb1,...; 0: the primary only)" },
  LOG_LEVEL_FLAG,
];

const NODE_OUT: readonly FlagSpec[] = [...NODE_FLAGS, OUTPUT_FLAG];

/** The flags of every verb, by verb. A verb parses with its entry; help and usage print it. */
export const VERB_FLAGS = {
  agent: [...NODE_FLAGS, ...AGENT_FLAGS, ...DISCOVERY_FLAGS, ...HEALTH_FLAGS],
  demo: DEMO_FLAGS,
  "diag ping": NODE_OUT,
  "diag prepare": NODE_OUT,
  "diag unprepare": [...NODE_OUT, UID_FLAG],
  "diag topology": NODE_OUT,
  "diag slices": NODE_OUT,
  "diag explain": [...NODE_OUT, ...CLAIM_FILE_FLAGS],
  "diag health": NODE_OUT,
  "claims apply": [...NODE_OUT, ...CLAIM_FILE_FLAGS],
  "claims get": [KUBE_FLAG, OUTPUT_FLAG],
  "claims list": [KUBE_FLAG, OUTPUT_FLAG, NAMESPACE_FLAG],
  "claims delete": [KUBE_FLAG, OUTPUT_FLAG],
  proxy: PROXY_FLAGS,
  epp: EPP_FLAGS,
  version: [OUTPUT_FLAG],
} as const satisfies Record<string, readonly FlagSpec[]>;

export type VerbName = keyof typeof VERB_FLAGS;

export interface NodeConfig {
  driverName: string;
  nodeName: string;
  kubeletRoot: string;
  stateDir: string;
  cdiRoot: string;
  sysfsRoot: string;
  discovery: string;
  kube: string;
  migMode: "static" | "dynamic";
  gpuSharing: "none" | "consumable";
  /** nvidia-smi executable; a name is looked up on PATH (no shell). */
  nvidiaSmi: string;
  /** nvidia-cuda-mps-control executable; a name is looked up on PATH (no shell). */
  mpsControl: string;
  procRoot: string;
  logLevel: LogLevel;
  /** Pod UID with --rolling-update-uid: socket names carry it (surge upgrades). */
  rollingUpdateUid?: string;
  registrationSocket: string;
  draSocket: string;
  checkpointFile: string;
}

const MAX_SOCKET_PATH = 107; // sun_path is 108 bytes including the terminating NUL

export function resolveNodeConfig(args: ParsedArgs, hostname: () => string = os.hostname): NodeConfig {
  const driverName = str(args, "driver-name");
  const kubeletRoot = path.resolve(str(args, "kubelet-root"));
  const pluginDir = path.join(kubeletRoot, "plugins", driverName);
  const stateDir = path.resolve(optStr(args, "state-dir") ?? pluginDir);
  const migMode = str(args, "mig-mode");
  if (migMode !== "static" && migMode !== "dynamic") {
    throw new TesseraError("TESSERA_CONFIG", `--mig-mode=${migMode}: expected static or dynamic`);
  }
  const gpuSharing = str(args, "gpu-sharing");
  if (gpuSharing !== "none" && gpuSharing !== "consumable") {
    throw new TesseraError("TESSERA_CONFIG", `--gpu-sharing=${gpuSharing}: expected none or consumable`);
  }
  const nvidiaSmi = executableFlag(args, "nvidia-smi");
  const mpsControl = executableFlag(args, "mps-control");
  const logLevel = logLevelOf(args);
  const rollingUpdateUid = optStr(args, "rolling-update-uid");
  if (rollingUpdateUid !== undefined && !/^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/.test(rollingUpdateUid)) {
    throw new TesseraError("TESSERA_CONFIG", `--rolling-update-uid=${rollingUpdateUid}: expected a pod UID (letters, digits, dashes), from the downward API metadata.uid`);
  }
  const registryDir = path.join(kubeletRoot, "plugins_registry");
  return {
    driverName,
    nodeName: optStr(args, "node-name") ?? hostname(),
    kubeletRoot,
    stateDir,
    cdiRoot: path.resolve(str(args, "cdi-root")),
    sysfsRoot: path.resolve(str(args, "sysfs-root")),
    discovery: str(args, "discovery"),
    kube: str(args, "kube"),
    migMode,
    gpuSharing,
    nvidiaSmi,
    mpsControl,
    procRoot: path.resolve(str(args, "proc-root")),
    logLevel,
    ...(rollingUpdateUid !== undefined ? { rollingUpdateUid } : {}),
    registrationSocket: path.join(registryDir, rollingUpdateUid === undefined ? `${driverName}-reg.sock` : rollingRegistrationName(registryDir, driverName, rollingUpdateUid)),
    draSocket: path.join(pluginDir, rollingUpdateUid === undefined ? "dra.sock" : `dra-${rollingUpdateUid}.sock`),
    checkpointFile: path.join(stateDir, "checkpoint.json"),
  };
}

/** An executable flag: a name looked up on PATH, or a path to it (resolved). */
function executableFlag(args: ParsedArgs, name: string): string {
  const v = str(args, name);
  if (v === "" || v.includes("\0") || (v.includes("/") && !path.isAbsolute(v) && !v.startsWith("."))) {
    throw new TesseraError("TESSERA_CONFIG", `--${name}=${JSON.stringify(v.slice(0, 200))}: expected an executable name on PATH or a path to it`);
  }
  return v.includes("/") ? path.resolve(v) : v;
}

/** The kubelet helper's rule (kubeletplugin.RollingUpdateRegistrarSocketFile): the first of
 *  <driver>-<uid>-reg.sock, <driver>-<b64(sha256(uid)[:8])>-reg.sock,
 *  dra-<b64(sha256(driver NUL uid)[:16])>-reg.sock whose full path fits a unix socket
 *  (107 bytes here: sun_path keeps its NUL; upstream allows 108). */
export function rollingRegistrationName(registryDir: string, driverName: string, uid: string): string {
  const b64 = (data: string, n: number): string => createHash("sha256").update(data).digest().subarray(0, n).toString("base64url");
  const candidates = [`${driverName}-${uid}-reg.sock`, `${driverName}-${b64(uid, 8)}-reg.sock`, `dra-${b64(`${driverName}\0${uid}`, 16)}-reg.sock`];
  return candidates.find((c) => Buffer.byteLength(path.join(registryDir, c)) <= MAX_SOCKET_PATH) ?? (candidates[2] as string);
}

/** Refuses socket paths the kernel would silently truncate. */
export function assertSocketPath(p: string): void {
  if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
    throw new TesseraError(
      "TESSERA_SOCKET_PATH_TOO_LONG",
      `socket path ${p} is ${Buffer.byteLength(p)} bytes, over the ${MAX_SOCKET_PATH}-byte limit of unix sockets; use a shorter --kubelet-root`,
    );
  }
}

export function outputFormat(args: ParsedArgs): "table" | "json" {
  const o = str(args, "output");
  if (o !== "table" && o !== "json") throw new TesseraError("TESSERA_USAGE", `-o ${o}: expected table or json`);
  return o;
}
