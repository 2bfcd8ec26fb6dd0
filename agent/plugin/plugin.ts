// Composition of the kubelet plugin: checkpoint -> device state -> DRA server -> registration
// server. Everything with side effects comes in through `deps`, so tests and the demo run it
// in-process on temp dirs.
import type { NodeConfig } from "../common/config.js";
import type { Logger } from "../common/log.js";
import type { DeviceFacts } from "../discovery/model.js";
import type { MigManager } from "../mig/manager.js";
import { createCdiWriter, createToolkitScanner } from "./cdi.js";
import { loadCheckpoint, readBootId } from "./checkpoint.js";
import type { ClaimSource } from "./claim-source.js";
import { createDraHandlers, draServiceImpl } from "./dra-service.js";
import { loadKubeletProtos } from "./protos.js";
import { clearRegistrationStatus, createRegistration, type RegistrationState } from "./registration.js";
import { startSocketServer } from "./server.js";
import { createDeviceState, type DeviceState } from "./state.js";

export const DEFAULT_CDI_ROOT = "/var/run/cdi";

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

export async function startKubeletPlugin(config: NodeConfig, deps: PluginDeps): Promise<KubeletPlugin> {
  const { log } = deps;
  const bootId = await (deps.bootId ?? (() => readBootId()))();
  const { checkpoint, result } = await loadCheckpoint(config.checkpointFile, { bootId, log, ...(deps.now ? { now: deps.now } : {}) });
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
  });
  await state.restore(result);

  const protos = loadKubeletProtos();
  const handlers = createDraHandlers(state, log);
  const dra = await startSocketServer(config.draSocket, [
    { definition: protos.v1, impl: draServiceImpl(handlers, "v1") },
    { definition: protos.v1beta1, impl: draServiceImpl(handlers, "v1beta1") },
  ]);
  const registration = createRegistration({ driverName: config.driverName, draSocket: config.draSocket, log, stateDir: config.stateDir, ...(deps.now ? { now: deps.now } : {}) });
  let reg;
  try {
    await clearRegistrationStatus(config.stateDir);
    reg = await startSocketServer(config.registrationSocket, [{ definition: protos.registration, impl: registration.impl }]);
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
