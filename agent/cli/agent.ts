// `tessera agent`: the node agent. Start-up order: socket paths and every directory checked
// (preflight) -> the state-dir lock (or a handover from the pod we replace) -> discovery and
// ResourceSlices -> checkpoint and kubelet plugin sockets -> HTTP endpoint. SIGTERM is honoured at
// every stage (a hung nvidia-smi is killed). Then it runs until SIGTERM/SIGINT: stop accepting ->
// finish in-flight calls (deadline) -> flush the checkpoint -> remove its own sockets -> release
// the lock -> exit 0. `startAgent` is the same thing without signals, for the demo and tests.
import * as os from "node:os";
import * as path from "node:path";
import { createAgentMetrics, type AgentMetricsRegistry } from "../common/agent-metrics.js";
import { assertSocketPath, DEFAULT_KMSG_PATH, int, parseFlags, parseHttpListen, resolveHealthConfig, resolveNodeConfig, str, VERB_FLAGS, type HealthConfig, type HostPort, type NodeConfig } from "../common/config.js";
import { TesseraError } from "../common/errors.js";
import { checkDirs } from "../common/preflight.js";
import { clusterEventSink, createEventRecorder, type EventSink } from "../kube/events.js";
import { readBootId } from "../plugin/checkpoint.js";
import { acquireStateLock, type StateLock } from "../plugin/state-lock.js";
import { startAgentHttp, type AgentHttp } from "./agent-http.js";
import { createLogger, type Logger } from "../common/log.js";
import type { DeviceFacts, Inventory } from "../discovery/model.js";
import { preparableFacts } from "../discovery/device-facts.js";
import { defaultFixturesDir, nvidiaSmiSeam, resolveFixture } from "../discovery/index.js";
import { DEFAULT_EXEC_OPTIONS, type ExecFn } from "../discovery/exec.js";
import { existsSync } from "node:fs";
import { startHealthMonitor, type HealthMonitor, type HealthMonitorOptions } from "../health/monitor.js";
import { healthTargets } from "../slices/build.js";
import { createMigManager } from "../mig/manager.js";
import { execFile } from "../discovery/exec.js";
import { createMpsControl, mpsDirs, type MpsControl } from "../sharing/mps.js";
import { createTimeSlicer } from "../sharing/timeslice.js";
import { createComputeModes } from "../sharing/compute-mode.js";
import { openKube, parseKubeSpec, type KubeTarget } from "../kube/kube-source.js";
import { assertModeSupported, publishableTaints, readServerVersion, type ServerVersion } from "../kube/server-version.js";
import { startNodePublishing } from "../slices/node-publishing.js";
import { createKubeClaimSource, createStoreClaimSource, type ClaimSource } from "../plugin/claim-source.js";
import { startKubeletPlugin, type KubeletPlugin } from "../plugin/plugin.js";
import type { CliIO } from "./io.js";

export interface AgentDeps {
  log?: Logger;
  /** Skips discovery (tests, demo). */
  inventory?: Inventory;
  /** Skips --kube resolution. */
  claims?: ClaimSource;
  bootId?: () => Promise<string>;
  toolkitDirs?: readonly string[];
  env?: NodeJS.ProcessEnv;
  /** Seconds between rediscoveries (0: only at start and on SIGHUP). Ignored with `inventory`. */
  rediscoverIntervalS?: number;
  /** Where SIGHUP comes from (pass `process` in the real agent). */
  signals?: NodeJS.EventEmitter;
  /** Aborting stops the start-up at whatever stage it is (TESSERA_STOPPED), killing discovery. */
  signal?: AbortSignal;
  /** The HTTP endpoint; undefined: none (tests that do not need it, the demo). */
  httpListen?: HostPort;
  metrics?: AgentMetricsRegistry;
  /** Where Events go; default: the cluster's core/v1 Events, none in standalone mode. */
  eventSink?: EventSink;
  /** How long a kubelet registration is not required by /healthz after start; default 120 s. */
  registrationGraceMs?: number;
  /** With --rolling-update-uid: how long the previous pod may take to hand over; default 30 s. */
  handoverTimeoutMs?: number;
  /** Seconds between MPS daemon liveness checks (--mps-check-interval); 0 or absent: only `mps.check()`. */
  mpsCheckIntervalS?: number;
  /** Device health settings (HEALTH_FLAGS); default: their flag defaults. */
  health?: HealthConfig;
  /** Seams of device health (tests): the clock, the sweep period, the nvidia-smi exec, the kmsg poll. */
  healthDeps?: { now?: () => Date; sweepMs?: number; exec?: ExecFn; kmsgPollMs?: number };
}

/** Where XIDs and health queries come from: --kmsg (a fixture: its kmsg.txt), the nvidia-smi seam.
 *  An injected inventory (tests, demo) has no nvidia-smi and reads a kernel log only when named. */
function healthSources(config: NodeConfig, health: HealthConfig, injected: boolean, seams: AgentDeps["healthDeps"]): Pick<HealthMonitorOptions, "kmsgPath" | "query" | "kmsgPollMs"> {
  const out: Pick<HealthMonitorOptions, "kmsgPath" | "query" | "kmsgPollMs"> = {};
  if (seams?.kmsgPollMs) out.kmsgPollMs = seams.kmsgPollMs;
  const fixture = config.discovery.startsWith("fixture:") ? resolveFixture(config.discovery, defaultFixturesDir()) : undefined;
  if (health.kmsg !== undefined) {
    if (health.kmsg !== "off") out.kmsgPath = health.kmsg;
  } else if (fixture) {
    if (existsSync(path.join(fixture, "kmsg.txt"))) out.kmsgPath = path.join(fixture, "kmsg.txt");
  } else if (!injected) out.kmsgPath = DEFAULT_KMSG_PATH;
  if (!injected || seams?.exec) {
    const seam = nvidiaSmiSeam(config, seams?.exec ? { exec: seams.exec } : {});
    out.query = { exec: seam.exec, bin: seam.bin, timeoutMs: Math.min(DEFAULT_EXEC_OPTIONS.timeoutMs, health.intervalS * 1000) };
  }
  return out;
}

export const DEFAULT_HEALTH_CONFIG: HealthConfig = { intervalS: 10, holdDownS: 300, apiVersions: ["v1", "v1alpha1"] };

export interface AgentHandle {
  draSocket: string;
  registrationSocket: string;
  plugin: KubeletPlugin;
  /** The claims' MPS control daemons (status for diag; check() runs one supervision round). */
  mps: MpsControl;
  lock: StateLock;
  metrics: AgentMetricsRegistry;
  /** Device health: taints, evidence, the kubelet's health feed. */
  health: HealthMonitor;
  http?: AgentHttp;
  /** Resolves after the next ResourceSlice sync that left the backend as desired. */
  slicesSynced(): Promise<void>;
  stop(deadlineMs?: number): Promise<void>;
}

export async function claimSourceFor(config: NodeConfig, env: NodeJS.ProcessEnv = process.env): Promise<ClaimSource> {
  return claimSourceOf(await openKube(parseKubeSpec(config.kube), env));
}

function claimSourceOf(target: KubeTarget): ClaimSource {
  return target.mode === "standalone" ? createStoreClaimSource(target.store) : createKubeClaimSource(target.config);
}

function stopped(stage: string): TesseraError {
  return new TesseraError("TESSERA_STOPPED", `stopped by a signal while ${stage}`);
}

/** `work`, or TESSERA_STOPPED as soon as `signal` aborts; `undo` cleans up a late result. */
async function unlessAborted<T>(signal: AbortSignal | undefined, stage: string, work: Promise<T>, undo?: (v: T) => Promise<void>): Promise<T> {
  if (!signal) return work;
  if (signal.aborted) {
    void work.then((v) => undo?.(v), () => undefined);
    throw stopped(stage);
  }
  let onAbort: () => void = () => undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(stopped(stage));
    signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([work, aborted]);
  } catch (err) {
    if (signal.aborted) void work.then((v) => undo?.(v), () => undefined);
    throw err;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** Directories the agent writes, with the flag that names each, checked before anything else. */
function writableDirs(config: NodeConfig): { flag: string; dir: string }[] {
  return [
    { flag: "--kubelet-root", dir: config.kubeletRoot },
    { flag: "--kubelet-root (plugins_registry)", dir: path.dirname(config.registrationSocket) },
    { flag: "--kubelet-root (plugins)", dir: path.dirname(config.draSocket) },
    { flag: "--state-dir", dir: config.stateDir },
    { flag: "--cdi-root", dir: config.cdiRoot },
  ];
}

export async function startAgent(config: NodeConfig, deps: AgentDeps = {}): Promise<AgentHandle> {
  const log = deps.log ?? createLogger({ level: config.logLevel });
  const signal = deps.signal;
  const metrics = deps.metrics ?? createAgentMetrics();
  const healthConfig = deps.health ?? DEFAULT_HEALTH_CONFIG;
  // Refuse a path the kernel would truncate, or a directory we could not write, before
  // discovering, locking, publishing or creating anything else.
  assertSocketPath(config.draSocket);
  assertSocketPath(config.registrationSocket);
  await unlessAborted(signal, "checking directories", checkDirs(writableDirs(config)));
  const target: KubeTarget = await openKube(parseKubeSpec(config.kube), deps.env);
  // Publish only what this API server validates: its minor decides the allowed layouts.
  let version: ServerVersion | undefined;
  if (target.mode === "cluster") {
    version = await unlessAborted(signal, "reading the API server version", readServerVersion(target.config));
    if (version) assertModeSupported(version, config);
    else log.warn("the API server's version is not a plain major.minor; publishing as for the newest minor");
  }
  const bootId = await (deps.bootId ?? (() => readBootId()))();

  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async (): Promise<void> => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  };
  try {
    const handoverTimeoutMs = deps.handoverTimeoutMs ?? 30_000;
    const lock = await unlessAborted(
      signal,
      "waiting for the state-dir lock",
      acquireStateLock(
        config.stateDir,
        { pid: process.pid, startedAt: new Date().toISOString(), bootId, draSocket: config.draSocket, ...(config.rollingUpdateUid ? { podUid: config.rollingUpdateUid } : {}) },
        config.rollingUpdateUid ? { handover: { podUid: config.rollingUpdateUid, draSocket: config.draSocket, timeoutMs: handoverTimeoutMs } } : {},
      ),
      (l) => l.release(),
    );
    cleanups.push(() => lock.release());
    const events = createEventRecorder({ nodeName: config.nodeName, log, metrics, ...(deps.eventSink ? { sink: deps.eventSink } : target.mode === "cluster" ? { sink: clusterEventSink(target.config) } : {}) });
    let facts: Map<string, DeviceFacts> = new Map();

    // Discovery and ResourceSlice publishing: the watcher rediscovers on a timer and on SIGHUP,
    // keeps the last good inventory on failure, and republishes on every change. An injected
    // inventory (demo, tests) is a discovery that always answers it, with no timer.
    const fixed = deps.inventory;
    // Device health: started once the first inventory is known; until then nothing is tainted.
    let monitor: HealthMonitor | undefined;
    const published = (inv: Inventory): Inventory => {
      const ghosts = monitor?.ghosts() ?? [];
      return ghosts.length === 0 ? inv : { ...inv, gpus: [...inv.gpus, ...ghosts.filter((g) => !inv.gpus.some((x) => x.name === g.name))] };
    };
    const publishing = await unlessAborted(
      signal,
      "discovering GPUs",
      startNodePublishing({
        config,
        target,
        logger: log,
        rediscoverIntervalS: fixed ? 0 : (deps.rediscoverIntervalS ?? 60),
        ...(fixed ? { discovery: { discover: async () => fixed } } : {}),
        ...(deps.signals ? { signals: deps.signals } : {}),
        ...(signal ? { discoveryDeps: { execOptions: { signal } } } : {}),
        onInventory: (inv) => {
          facts = preparableFacts(inv, config.migMode);
          monitor?.inventoryChanged(inv);
        },
        decorate: published,
        taints: () => publishableTaints(monitor?.taints() ?? new Map(), version),
        onDiscovery: (s, code) => metrics.discovery(s, code),
        onSync: (o, s) => metrics.slicePublish(o, s),
      }),
      (p) => p.stop(),
    );
    let publishingStopped: Promise<void> | undefined;
    const stopPublishing = (): Promise<void> => (publishingStopped ??= publishing.stop());
    cleanups.push(stopPublishing);
    const inventory = publishing.watcher.current() as Inventory;
    facts = preparableFacts(inventory, config.migMode);
    log.info("discovered devices", { node: config.nodeName, gpus: inventory.gpus.length, devices: facts.size });
    const healthMonitor = await startHealthMonitor({
      nodeName: config.nodeName,
      stateDir: config.stateDir,
      bootId,
      holdDownMs: healthConfig.holdDownS * 1000,
      intervalMs: healthConfig.intervalS * 1000,
      log,
      metrics,
      events,
      inventory,
      targets: () => healthTargets(published(publishing.watcher.current() as Inventory), config.migMode, config.gpuSharing),
      onTaintsChanged: () => publishing.republish(),
      ...healthSources(config, healthConfig, fixed !== undefined, deps.healthDeps),
      ...(deps.healthDeps?.now ? { now: deps.healthDeps.now } : {}),
      ...(deps.healthDeps?.sweepMs ? { sweepMs: deps.healthDeps.sweepMs } : {}),
    });
    monitor = healthMonitor;
    cleanups.push(() => healthMonitor.stop());
    publishing.republish(); // taints restored from the state dir
    void healthMonitor.check().catch(() => undefined);

    const mps = createMpsControl({
      exec: execFile,
      bin: config.mpsControl,
      stateDir: config.stateDir,
      execOptions: DEFAULT_EXEC_OPTIONS,
      log,
      onRestart: () => metrics.mpsRestart(),
      intervalMs: (deps.mpsCheckIntervalS ?? 0) * 1000,
    });
    cleanups.push(async () => mps.close());
    const smi = { ...nvidiaSmiSeam(config), execOptions: DEFAULT_EXEC_OPTIONS, log };
    const sharing = { timeSlicer: createTimeSlicer(smi), computeModes: createComputeModes(smi), mps, mpsDirs: (uid: string) => mpsDirs(config.stateDir, uid) };
    const plugin = await unlessAborted(
      signal,
      "starting the kubelet plugin",
      startKubeletPlugin(config, {
        // (device health feeds the kubelet's DRAResourceHealth stream)
        log,
        devices: () => facts,
        claims: deps.claims ?? claimSourceOf(target),
        bootId: async () => bootId,
        metrics,
        events,
        sharing,
        health: {
          feed: healthMonitor.feed,
          versions: healthConfig.apiVersions,
          heartbeatMs: healthConfig.intervalS * 1000,
          timeoutSeconds: healthConfig.intervalS * 3,
        },
        ...(deps.toolkitDirs ? { toolkitDirs: deps.toolkitDirs } : {}),
        // Dynamic MIG: instances are created through the same nvidia-smi seam discovery reads, and
        // read back by a fresh rediscovery (which also republishes the slices).
        ...(config.migMode === "dynamic" ? { mig: createMigManager({ ...nvidiaSmiSeam(config), execOptions: DEFAULT_EXEC_OPTIONS, log }) } : {}),
        refreshDevices: async () => {
          const inv = await publishing.watcher.refresh();
          if (inv) facts = preparableFacts(inv, config.migMode);
          return facts;
        },
      }),
      (p) => p.stop(0),
    );
    cleanups.push(() => plugin.stop(0));
    // A newer pod of a surge rolling update asks for the state dir: it publishes from now on, and
    // every DRA call we still get is forwarded to it.
    lock.onHandover(async (req) => {
      log.info("handing the state dir over to the new agent pod", { podUid: req.podUid, draSocket: req.draSocket });
      await stopPublishing();
      await plugin.handOver(req.draSocket);
    });

    const started = Date.now();
    const graceMs = deps.registrationGraceMs ?? 120_000;
    const http = deps.httpListen
      ? await startAgentHttp(deps.httpListen, {
          sockets: () => [plugin.draSocket, plugin.registrationSocket],
          registration() {
            const last = plugin.registration.last();
            if (last) return last.plugin_registered ? "ok" : `the kubelet rejected the plugin at ${last.at}: ${last.error}`;
            if (target.mode === "standalone" || Date.now() - started < graceMs) return undefined;
            return `no registration from the kubelet within ${graceMs / 1000} s; is ${path.dirname(config.registrationSocket)} the kubelet's plugins_registry?`;
          },
          readiness() {
            const st = publishing.publisher.status();
            return {
              slices: st.syncs > 0 || publishingStopped ? "ok" : `not published yet${st.lastError ? `: ${st.lastError}` : ""}`,
              checkpoint: "ok", // loaded before the plugin started serving
            };
          },
        }, metrics)
      : undefined;
    if (http) log.info("HTTP endpoint serving", { url: http.url, paths: ["/healthz", "/readyz", "/metrics"] });

    let stopping: Promise<void> | undefined;
    return {
      draSocket: plugin.draSocket,
      registrationSocket: plugin.registrationSocket,
      plugin,
      mps,
      lock,
      metrics,
      health: healthMonitor,
      ...(http ? { http } : {}),
      slicesSynced: () => publishing.publisher.synced(),
      // Slices stay published on shutdown: deleting them on every rolling update would make pods
      // unschedulable meanwhile; the kubelet removes a plugin's slices once it is gone for good.
      stop(deadlineMs) {
        stopping ??= (async () => {
          await stopPublishing();
          await healthMonitor.stop();
          await plugin.stop(deadlineMs);
          mps.close();
          await events.idle();
          await http?.close();
          await lock.release();
        })();
        return stopping;
      },
    };
  } catch (err) {
    // The publisher's retry timers and watch would keep a failed agent alive (hung, not exit 1).
    await cleanup();
    throw err;
  }
}

export const SHUTDOWN_DEADLINE_MS = 10_000;

/**
 * The Node.js options the DaemonSet gives the agent (`NODE_OPTIONS` in deploy/base and the Helm
 * chart; test/deploy.test.ts holds both to this value, bench/footprint.ts starts the agent with it):
 * 1 MiB semi-spaces, so the young generation the start-up burst grows is not kept committed.
 */
export const AGENT_NODE_OPTIONS = "--max-semi-space-size=1";

export async function runAgent(argv: string[], io: CliIO): Promise<number> {
  const args = parseFlags(argv, VERB_FLAGS.agent, io.env);
  if (args.positionals.length > 0) throw new TesseraError("TESSERA_USAGE", `tessera agent takes no arguments, got "${args.positionals.join(" ")}"`);
  const config = resolveNodeConfig(args, os.hostname);
  const httpListen = parseHttpListen(str(args, "http-listen"));
  const health = resolveHealthConfig(args);
  const log = createLogger({ level: config.logLevel, write: (line) => io.stderr(line + "\n") });
  // Listen before starting: a SIGTERM during startup aborts whatever stage is running.
  const abort = new AbortController();
  let signalAt = 0;
  const signalled = new Promise<NodeJS.Signals>((resolve) => {
    const on = (s: NodeJS.Signals) => () => {
      signalAt = performance.now();
      abort.abort();
      resolve(s);
    };
    process.once("SIGTERM", on("SIGTERM"));
    process.once("SIGINT", on("SIGINT"));
  });
  let agent: AgentHandle;
  try {
    agent = await startAgent(config, { log, env: io.env, rediscoverIntervalS: int(args, "rediscover-interval"), mpsCheckIntervalS: int(args, "mps-check-interval"), signals: process, signal: abort.signal, health, ...(httpListen ? { httpListen } : {}) });
  } catch (err) {
    if (!abort.signal.aborted) throw err;
    const signal = await signalled;
    log.info("stopped during start-up", { signal, afterSignalMs: Math.round(performance.now() - signalAt), stage: err instanceof Error ? err.message : String(err) });
    return 0;
  }
  const signal = await signalled;
  log.info("shutting down", { signal });
  await agent.stop(SHUTDOWN_DEADLINE_MS);
  return 0;
}
