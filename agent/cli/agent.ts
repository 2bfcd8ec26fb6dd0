// `tessera agent`: the node agent. Discovers devices, serves the kubelet plugin sockets, and runs
// until SIGTERM/SIGINT: stop accepting -> finish in-flight calls (deadline) -> flush the
// checkpoint -> remove sockets -> exit 0. `startAgent` is the same thing without signals, for
// the demo and tests.
import { assertSocketPath, int, parseFlags, resolveNodeConfig, VERB_FLAGS, type NodeConfig } from "../common/config.js";
import { TesseraError } from "../common/errors.js";
import { createLogger, type Logger } from "../common/log.js";
import type { DeviceFacts, Inventory } from "../discovery/model.js";
import { preparableFacts } from "../discovery/device-facts.js";
import { nvidiaSmiSeam } from "../discovery/index.js";
import { DEFAULT_EXEC_OPTIONS } from "../discovery/exec.js";
import { createMigManager } from "../mig/manager.js";
import { openKube, parseKubeSpec, type KubeTarget } from "../kube/kube-source.js";
import { assertModeSupported, readServerVersion } from "../kube/server-version.js";
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
}

export interface AgentHandle {
  draSocket: string;
  registrationSocket: string;
  plugin: KubeletPlugin;
  stop(deadlineMs?: number): Promise<void>;
}

export function claimSourceFor(config: NodeConfig, env: NodeJS.ProcessEnv = process.env): ClaimSource {
  return claimSourceOf(openKube(parseKubeSpec(config.kube), env));
}

function claimSourceOf(target: KubeTarget): ClaimSource {
  return target.mode === "standalone" ? createStoreClaimSource(target.store) : createKubeClaimSource(target.config);
}

export async function startAgent(config: NodeConfig, deps: AgentDeps = {}): Promise<AgentHandle> {
  const log = deps.log ?? createLogger({ level: config.logLevel });
  // Refuse a path the kernel would truncate before discovering, publishing or creating anything.
  assertSocketPath(config.draSocket);
  assertSocketPath(config.registrationSocket);
  const target: KubeTarget = openKube(parseKubeSpec(config.kube), deps.env);
  // Publish only what this API server validates: its minor decides the allowed layouts.
  if (target.mode === "cluster") {
    const version = await readServerVersion(target.config);
    if (version) assertModeSupported(version, config);
    else log.warn("the API server's version is not a plain major.minor; publishing as for the newest minor");
  }
  let facts: Map<string, DeviceFacts> = new Map();

  // Discovery and ResourceSlice publishing: the watcher rediscovers on a timer and on SIGHUP,
  // keeps the last good inventory on failure, and republishes on every change. An injected
  // inventory (demo, tests) is a discovery that always answers it, with no timer.
  const fixed = deps.inventory;
  const publishing = await startNodePublishing({
    config,
    target,
    logger: log,
    rediscoverIntervalS: fixed ? 0 : (deps.rediscoverIntervalS ?? 60),
    ...(fixed ? { discovery: { discover: async () => fixed } } : {}),
    ...(deps.signals ? { signals: deps.signals } : {}),
    onInventory: (inv) => {
      facts = preparableFacts(inv, config.migMode);
    },
  });
  const stopPublishing = (): Promise<void> => publishing.stop();
  const inventory = publishing.watcher.current() as Inventory;
  facts = preparableFacts(inventory, config.migMode);
  log.info("discovered devices", { node: config.nodeName, gpus: inventory.gpus.length, devices: facts.size });

  let plugin: KubeletPlugin;
  try {
    plugin = await startKubeletPlugin(config, {
      log,
      devices: () => facts,
      claims: deps.claims ?? claimSourceOf(target),
      ...(deps.bootId ? { bootId: deps.bootId } : {}),
      ...(deps.toolkitDirs ? { toolkitDirs: deps.toolkitDirs } : {}),
      // Dynamic MIG: instances are created through the same nvidia-smi seam discovery reads, and
      // read back by a fresh rediscovery (which also republishes the slices).
      ...(config.migMode === "dynamic" ? { mig: createMigManager({ ...nvidiaSmiSeam(config), execOptions: DEFAULT_EXEC_OPTIONS, log }) } : {}),
      refreshDevices: async () => {
        const inv = await publishing.watcher.refresh();
        if (inv) facts = preparableFacts(inv, config.migMode);
        return facts;
      },
    });
  } catch (err) {
    // The publisher's retry timers and watch would keep a failed agent alive (hung, not exit 1).
    await stopPublishing();
    throw err;
  }

  return {
    draSocket: plugin.draSocket,
    registrationSocket: plugin.registrationSocket,
    plugin,
    // Slices stay published on shutdown: deleting them on every rolling update would make pods
    // unschedulable meanwhile; the kubelet removes a plugin's slices once it is gone for good.
    async stop(deadlineMs) {
      await stopPublishing();
      await plugin.stop(deadlineMs);
    },
  };
}

export const SHUTDOWN_DEADLINE_MS = 10_000;

export async function runAgent(argv: string[], io: CliIO): Promise<number> {
  const args = parseFlags(argv, VERB_FLAGS.agent, io.env);
  if (args.positionals.length > 0) throw new TesseraError("TESSERA_USAGE", `tessera agent takes no arguments, got "${args.positionals.join(" ")}"`);
  const config = resolveNodeConfig(args);
  const log = createLogger({ level: config.logLevel, write: (line) => io.stderr(line + "\n") });
  // Listen before starting: a SIGTERM during startup must still end in the clean shutdown path.
  const signalled = new Promise<NodeJS.Signals>((resolve) => {
    process.once("SIGTERM", () => resolve("SIGTERM"));
    process.once("SIGINT", () => resolve("SIGINT"));
  });
  const agent = await startAgent(config, { log, env: io.env, rediscoverIntervalS: int(args, "rediscover-interval"), signals: process });
  const signal = await signalled;
  log.info("shutting down", { signal });
  await agent.stop(SHUTDOWN_DEADLINE_MS);
  return 0;
}
