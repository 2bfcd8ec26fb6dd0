// `tessera agent`: the node agent. Discovers devices, serves the kubelet plugin sockets, and runs
// until SIGTERM/SIGINT: stop accepting -> finish in-flight calls (deadline) -> flush the
// checkpoint -> remove sockets -> exit 0. `startAgent` is the same thing without signals, for
// the demo and tests.
import { NODE_FLAGS, parseFlags, resolveNodeConfig, type NodeConfig } from "../common/config.js";
import { TesseraError } from "../common/errors.js";
import { createLogger, type Logger } from "../common/log.js";
import { createDiscovery } from "../discovery/index.js";
import { deviceFacts, type DeviceFacts, type Inventory } from "../discovery/model.js";
import { openKube, parseKubeSpec } from "../kube/kube-source.js";
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
}

export interface AgentHandle {
  draSocket: string;
  registrationSocket: string;
  plugin: KubeletPlugin;
  /** Replaces the device facts the plugin prepares from (after rediscovery). */
  setInventory(inv: Inventory): void;
  stop(deadlineMs?: number): Promise<void>;
}

export function claimSourceFor(config: NodeConfig, env: NodeJS.ProcessEnv = process.env): ClaimSource {
  const target = openKube(parseKubeSpec(config.kube), env);
  return target.mode === "standalone" ? createStoreClaimSource(target.store) : createKubeClaimSource(target.config);
}

export async function startAgent(config: NodeConfig, deps: AgentDeps = {}): Promise<AgentHandle> {
  const log = deps.log ?? createLogger({ level: config.logLevel });
  const inventory = deps.inventory ?? (await createDiscovery(config, { logger: log }).discover());
  let facts: Map<string, DeviceFacts> = deviceFacts(inventory);
  log.info("discovered devices", { node: config.nodeName, gpus: inventory.gpus.length, devices: facts.size });
  const claims = deps.claims ?? claimSourceFor(config, deps.env);
  const plugin = await startKubeletPlugin(config, {
    log,
    devices: () => facts,
    claims,
    ...(deps.bootId ? { bootId: deps.bootId } : {}),
    ...(deps.toolkitDirs ? { toolkitDirs: deps.toolkitDirs } : {}),
  });

  // ---- ResourceSlice publishing (issue: ResourceSlices) ------------------------------------------
  // INTEGRATOR: start `startSlicePublisher` here with (config, inventory, kube target, log) and stop
  // it in stop() below, before plugin.stop(), so slices go away before the sockets do.
  // -------------------------------------------------------------------------------------------------

  return {
    draSocket: plugin.draSocket,
    registrationSocket: plugin.registrationSocket,
    plugin,
    setInventory(inv) {
      facts = deviceFacts(inv);
    },
    stop: (deadlineMs) => plugin.stop(deadlineMs),
  };
}

export const SHUTDOWN_DEADLINE_MS = 10_000;

export async function runAgent(argv: string[], io: CliIO): Promise<number> {
  const args = parseFlags(argv, NODE_FLAGS, io.env);
  if (args.positionals.length > 0) throw new TesseraError("TESSERA_USAGE", `tessera agent takes no arguments, got "${args.positionals.join(" ")}"`);
  const config = resolveNodeConfig(args);
  const log = createLogger({ level: config.logLevel, write: (line) => io.stderr(line + "\n") });
  // Listen before starting: a SIGTERM during startup must still end in the clean shutdown path.
  const signalled = new Promise<NodeJS.Signals>((resolve) => {
    process.once("SIGTERM", () => resolve("SIGTERM"));
    process.once("SIGINT", () => resolve("SIGINT"));
  });
  const agent = await startAgent(config, { log, env: io.env });
  const signal = await signalled;
  log.info("shutting down", { signal });
  await agent.stop(SHUTDOWN_DEADLINE_MS);
  return 0;
}
