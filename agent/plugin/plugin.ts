// Composition of the kubelet plugin: checkpoint -> device state -> DRA server -> registration
// server. Everything with side effects comes in through `deps`, so tests and the demo run it
// in-process on temp dirs.
import * as path from "node:path";
import type { NodeConfig } from "../common/config.js";
import { describeChain } from "../common/errors.js";
import { removeStaleTempFiles } from "../common/stale-temp.js";
import type { Logger } from "../common/log.js";
import type { DeviceFacts } from "../discovery/model.js";
import { createCdiWriter, createToolkitScanner, specFileUID } from "./cdi.js";
import { loadCheckpoint, readBootId } from "./checkpoint.js";
import type { ClaimSource } from "./claim-source.js";
import { createDraHandlers, DRA_LIMITS, draServiceImpl } from "./dra-service.js";
import { loadKubeletProtos } from "./protos.js";
import { clearRegistrationStatus, createRegistration, REGISTRATION_STATUS_FILE, type RegistrationState } from "./registration.js";
import { startSocketServer } from "./server.js";
import { createDeviceState, type DeviceState } from "./state.js";

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
  /** How the checkpoint is written (default writeFileAtomic); tests inject EPERM/EROFS. */
  checkpointWrite?: (file: string, text: string, mode: number) => Promise<void>;
}

export interface KubeletPlugin {
  draSocket: string;
  registrationSocket: string;
  registration: RegistrationState;
  state: DeviceState;
  /** Registration socket first (the kubelet sees the plugin leave), then DRA with in-flight calls
   *  given deadlineMs, then the checkpoint flushed; both socket files are removed. */
  stop(deadlineMs?: number): Promise<void>;
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
  const bootId = await (deps.bootId ?? (() => readBootId()))();
  await removeOurStaleTempFiles(config, log);
  const { checkpoint, result } = await loadCheckpoint(config.checkpointFile, { bootId, log, ...(deps.now ? { now: deps.now } : {}), ...(deps.checkpointWrite ? { write: deps.checkpointWrite } : {}) });
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
  });
  await state.restore(result);

  const protos = loadKubeletProtos();
  const handlers = createDraHandlers(state, log);
  const dra = await startSocketServer(config.draSocket, [
    { definition: protos.v1, impl: draServiceImpl(handlers, "v1") },
    { definition: protos.v1beta1, impl: draServiceImpl(handlers, "v1beta1") },
  ], { maxMessageBytes: DRA_LIMITS.maxMessageBytes });
  const registration = createRegistration({ driverName: config.driverName, draSocket: config.draSocket, log, stateDir: config.stateDir, ...(deps.now ? { now: deps.now } : {}) });
  let reg;
  try {
    await clearRegistrationStatus(config.stateDir);
    reg = await startSocketServer(config.registrationSocket, [{ definition: protos.registration, impl: registration.impl }], { maxMessageBytes: REGISTRATION_MAX_MESSAGE_BYTES });
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
    stop(deadlineMs = 10_000) {
      stopping ??= (async () => {
        await reg.stop(Math.min(deadlineMs, 1000));
        await dra.stop(deadlineMs);
        await checkpoint.flush();
        log.info("kubelet plugin stopped", { driver: config.driverName });
      })();
      return stopping;
    },
  };
}
