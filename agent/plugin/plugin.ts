// Composition of the kubelet plugin: checkpoint -> device state -> DRA server -> registration
// server. Everything with side effects comes in through `deps`, so tests and the demo run it
// in-process on temp dirs.
import type * as grpc from "@grpc/grpc-js";
import { noMetrics, type AgentMetrics } from "../common/agent-metrics.js";
import type { NodeConfig } from "../common/config.js";
import type { EventRecorder } from "../kube/events.js";
import type { Logger } from "../common/log.js";
import type { DeviceFacts } from "../discovery/model.js";
import type { MigManager } from "../mig/manager.js";
import { createCdiWriter, createToolkitScanner, specFileUID } from "./cdi.js";
import { loadCheckpoint, readBootId } from "./checkpoint.js";
import type { ClaimSource } from "./claim-source.js";
import { createDraHandlers, DRA_LIMITS, draServiceImpl } from "./dra-service.js";
import { createSwitchableHandlers } from "./handover.js";
import { createHealthService, type HealthService } from "./health-service.js";
import type { HealthFeed } from "../health/types.js";
import { loadKubeletProtos, type HealthApiVersion, type NodePrepareResourcesRequest, type NodePrepareResourcesResponse } from "./protos.js";
import { clearRegistrationStatus, createRegistration, REGISTRATION_STATUS_FILE, type RegistrationState } from "./registration.js";
import * as path from "node:path";
import { describeChain } from "../common/errors.js";
import { removeStaleTempFiles } from "../common/stale-temp.js";
import { startSocketServer } from "./server.js";
import { createDeviceState, type DeviceState } from "./state.js";
import type { SharingDeps } from "./sharing-steps.js";

export const DEFAULT_CDI_ROOT = "/var/run/cdi";
/** GetInfo and NotifyRegistrationStatus are a few hundred bytes; 64 KiB bounds a hostile status. */
const REGISTRATION_MAX_MESSAGE_BYTES = 64 * 1024;

export interface PluginDeps {
  log: Logger;
  /** Current device facts of this node (discovery's deviceFacts(inventory)); re-read per prepare. */
  devices: () => ReadonlyMap<string, DeviceFacts>;
  claims: ClaimSource;
  bootId?: () => Promise<string>;
  /** Where NVIDIA Container Toolkit specs are looked for; default: --cdi-root, plus /etc/cdi when --cdi-root is the system default. */
  toolkitDirs?: readonly string[];
  now?: () => Date;
  /** Dynamic MIG: instance create/destroy and a rediscovery that reads them back. */
  mig?: MigManager;
  refreshDevices?: () => Promise<ReadonlyMap<string, DeviceFacts>>;
  metrics?: AgentMetrics;
  /** Kubernetes Events (prepare failures on the claim, checkpoint moved aside on the node). */
  events?: EventRecorder;
  /** GPU sharing: the time-slice policy and the claims' MPS control daemons. */
  sharing?: SharingDeps;
  /** How the checkpoint is written (default writeFileAtomic); tests inject EPERM/EROFS. */
  checkpointWrite?: (file: string, text: string, mode: number) => Promise<void>;
  /** Device health for the kubelet's DRAResourceHealth stream; absent: the service is not served (nor advertised). */
  health?: {
    feed: HealthFeed;
    /** Versions served on the DRA socket and advertised in supported_versions. */
    versions: readonly HealthApiVersion[];
    heartbeatMs: number;
    timeoutSeconds: number;
  };
}

export interface KubeletPlugin {
  draSocket: string;
  registrationSocket: string;
  registration: RegistrationState;
  state: DeviceState;
  /** The DRAResourceHealth stream, when served. */
  health?: HealthService;
  /** Surge upgrade: forward every later DRA call to the new pod's socket, let local calls in
   *  flight finish and flush the checkpoint; after it resolves this agent writes nothing. */
  handOver(draSocket: string): Promise<void>;
  /** Registration socket first (the kubelet sees the plugin leave), then DRA with in-flight calls
   *  given deadlineMs, then the checkpoint flushed; both socket files are removed. */
  stop(deadlineMs?: number): Promise<void>;
}

type Impl = grpc.UntypedServiceImplementation;
type Handler = (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => void;

/** Counts and times every call of a service; `after` sees each successful answer. */
function instrument(impl: Impl, metrics: AgentMetrics, after?: (method: string, req: unknown, res: unknown) => void): Impl {
  const out: Impl = {};
  for (const [method, fn] of Object.entries(impl)) {
    const h = fn as Handler;
    out[method] = ((call, cb) => {
      const t0 = performance.now();
      h(call, (err, res) => {
        metrics.request(method, err ? "error" : "ok", (performance.now() - t0) / 1000);
        if (!err) after?.(method, call.request, res);
        cb(err, res);
      });
    }) as Handler;
  }
  return out;
}

/** Prepare answers: per-claim error codes to metrics, and an Event on each failed claim. */
function reportPrepareErrors(metrics: AgentMetrics, events: EventRecorder | undefined) {
  return (method: string, req: unknown, res: unknown): void => {
    if (method !== "NodePrepareResources") return;
    const claims = (req as NodePrepareResourcesRequest).claims ?? [];
    const answers = (res as NodePrepareResourcesResponse).claims ?? {};
    for (const c of claims) {
      const error = answers[c.uid]?.error;
      if (!error) continue;
      metrics.prepareError(/^(TESSERA_[A-Z_]+)/.exec(error)?.[1] ?? "TESSERA_INTERNAL");
      events?.warn({ apiVersion: "resource.k8s.io/v1", kind: "ResourceClaim", name: c.name, namespace: c.namespace, uid: c.uid }, "PrepareFailed", error);
    }
  };
}

/** What killed predecessors left half-written: temp files of the checkpoint, the registration status and our CDI specs. */
async function removeOurStaleTempFiles(config: NodeConfig, log: Logger): Promise<void> {
  const stateFiles = new Set([path.basename(config.checkpointFile), REGISTRATION_STATUS_FILE]);
  const places: [string, (target: string) => boolean][] = [
    [path.dirname(config.checkpointFile), (t) => stateFiles.has(t)],
    [config.cdiRoot, (t) => specFileUID(t) !== undefined],
  ];
  for (const [dir, owns] of places) {
    try {
      const removed = await removeStaleTempFiles(dir, owns);
      if (removed.length > 0) log.info("removed temp files left by an earlier run", { dir, count: removed.length });
    } catch (err) {
      // Not fatal here: a state dir we cannot write fails the checkpoint with its own clear error.
      log.warn("cannot clean temp files left by an earlier run", { dir, err: describeChain(err) });
    }
  }
}

export async function startKubeletPlugin(config: NodeConfig, deps: PluginDeps): Promise<KubeletPlugin> {
  const { log } = deps;
  const metrics = deps.metrics ?? noMetrics;
  const bootId = await (deps.bootId ?? (() => readBootId()))();
  await removeOurStaleTempFiles(config, log);
  const { checkpoint, result } = await loadCheckpoint(config.checkpointFile, { bootId, log, onWrite: (o) => metrics.checkpointWrite(o), ...(deps.now ? { now: deps.now } : {}), ...(deps.checkpointWrite ? { write: deps.checkpointWrite } : {}) });
  if (result.kind === "moved-aside") {
    metrics.checkpointRecovery("moved_aside");
    deps.events?.warn({ apiVersion: "v1", kind: "Node", name: config.nodeName }, "CheckpointMovedAside", `checkpoint ${config.checkpointFile} was unusable (${result.reason}); moved to ${result.movedTo} and rebuilt from the CDI specs`);
  } else if (result.kind === "loaded" && result.rebooted) metrics.checkpointRecovery("rebooted");
  metrics.preparedSource(() => {
    const entries = checkpoint.entries();
    return { claims: entries.length, devices: entries.reduce((n, [, e]) => n + e.devices.length, 0) };
  });
  const cdi = createCdiWriter(config.cdiRoot);
  const toolkitDirs = deps.toolkitDirs ?? (config.cdiRoot === DEFAULT_CDI_ROOT ? ["/etc/cdi", config.cdiRoot] : [config.cdiRoot]);
  const state = createDeviceState({
    driverName: config.driverName,
    poolName: config.nodeName,
    checkpoint,
    cdi,
    claims: deps.claims,
    devices: deps.devices,
    toolkitUUIDs: createToolkitScanner(toolkitDirs),
    log,
    ...(deps.mig ? { mig: deps.mig } : {}),
    ...(deps.refreshDevices ? { refreshDevices: deps.refreshDevices } : {}),
    ...(deps.sharing ? { sharing: deps.sharing } : {}),
  });
  const mps = deps.sharing?.mps;
  if (mps) {
    metrics.mpsSource(() => {
      const by: Record<string, number> = {};
      for (const d of mps.status()) by[d.state] = (by[d.state] ?? 0) + 1;
      return by;
    });
  }
  await state.restore(result);

  const protos = loadKubeletProtos();
  const switchable = createSwitchableHandlers(createDraHandlers(state, log), log);
  const handlers = switchable.handlers;
  const healthVersions = deps.health?.versions ?? [];
  const health = deps.health && healthVersions.length > 0
    ? createHealthService({ poolName: config.nodeName, feed: deps.health.feed, heartbeatMs: deps.health.heartbeatMs, timeoutSeconds: deps.health.timeoutSeconds, log })
    : undefined;
  const dra = await startSocketServer(config.draSocket, [
    { definition: protos.v1, impl: instrument(draServiceImpl(handlers, "v1"), metrics, reportPrepareErrors(metrics, deps.events)) },
    { definition: protos.v1beta1, impl: instrument(draServiceImpl(handlers, "v1beta1"), metrics, reportPrepareErrors(metrics, deps.events)) },
    // A server stream is not instrumented per call: it lives as long as the kubelet watches.
    ...(health ? healthVersions.map((v) => ({ definition: protos.health[v], impl: health.impl })) : []),
  ], { maxMessageBytes: DRA_LIMITS.maxMessageBytes });
  const registration = createRegistration({ driverName: config.driverName, draSocket: config.draSocket, log, stateDir: config.stateDir, ...(health ? { healthVersions } : {}), ...(deps.now ? { now: deps.now } : {}) });
  let reg;
  try {
    await clearRegistrationStatus(config.stateDir);
    reg = await startSocketServer(config.registrationSocket, [{ definition: protos.registration, impl: instrument(registration.impl, metrics) }], { maxMessageBytes: REGISTRATION_MAX_MESSAGE_BYTES });
  } catch (err) {
    await dra.stop(0);
    throw err;
  }
  log.info("kubelet plugin serving", { driver: config.driverName, draSocket: config.draSocket, registrationSocket: config.registrationSocket, claims: checkpoint.entries().length });

  let stopping: Promise<void> | undefined;
  return {
    draSocket: dra.socket,
    registrationSocket: reg.socket,
    registration,
    state,
    ...(health ? { health } : {}),
    async handOver(draSocket) {
      await switchable.forwardTo(draSocket);
      await checkpoint.flush();
    },
    stop(deadlineMs = 10_000) {
      stopping ??= (async () => {
        await reg.stop(Math.min(deadlineMs, 1000));
        health?.close(); // open streams would hold the server's graceful shutdown to its deadline
        await dra.stop(deadlineMs);
        await checkpoint.flush();
        switchable.close();
        log.info("kubelet plugin stopped", { driver: config.driverName });
      })();
      return stopping;
    },
  };
}
