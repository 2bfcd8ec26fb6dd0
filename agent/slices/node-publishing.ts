// The one call `tessera agent` makes for this area: discover (keeping the last good inventory),
// rediscover every --rediscover-interval seconds and on SIGHUP, and keep the node's
// ResourceSlices published in the cluster or the standalone store.
import type { NodeConfig } from "../common/config.js";
import type { Logger } from "../common/log.js";
import { createDiscovery, type Discovery, type DiscoveryDeps } from "../discovery/index.js";
import type { Inventory } from "../discovery/model.js";
import { createInventoryWatcher, type InventoryWatcher } from "../discovery/watcher.js";
import type { KubeTarget } from "../kube/kube-source.js";
import type { DeviceTaint } from "../kube/types.js";
import { sliceBackendFor, type SliceBackend } from "./backend.js";
import { startSlicePublisher, type SlicePublisher } from "./publisher.js";

export interface NodePublishingOptions {
  config: NodeConfig;
  target: KubeTarget;
  logger: Logger;
  rediscoverIntervalS: number; // from DISCOVERY_FLAGS (--rediscover-interval)
  signals?: NodeJS.EventEmitter; // pass `process` for SIGHUP
  discoveryDeps?: DiscoveryDeps;
  /** Replaces discovery (the demo and tests hand in a fixed inventory). */
  discovery?: Discovery;
  backend?: SliceBackend; // default: from target
  /** Also told about every new inventory (e.g. the kubelet plugin's device facts). */
  onInventory?: (inv: Inventory) => void;
  /** Metrics hooks: each discovery run and each slice sync. */
  onDiscovery?: (seconds: number, code?: string) => void;
  onSync?: (outcome: "ok" | "error", seconds: number) => void;
  /** What is published of each discovered inventory (device health adds the GPUs discovery lost). */
  decorate?: (inv: Inventory) => Inventory;
  /** Device taints, read at every build (call `republish()` after they change). */
  taints?: () => ReadonlyMap<string, readonly DeviceTaint[]>;
}

export interface NodePublishing {
  watcher: InventoryWatcher;
  publisher: SlicePublisher;
  /** Publishes the current inventory again through `decorate` and with the current taints. */
  republish(): void;
  stop(): Promise<void>;
}

/** Rejects only when the very first discovery fails (nothing to publish yet); later failures keep the last good inventory. */
export async function startNodePublishing(opts: NodePublishingOptions): Promise<NodePublishing> {
  const { config, logger } = opts;
  let publisher: SlicePublisher | undefined;
  const decorate = opts.decorate ?? ((inv: Inventory) => inv);
  const watcher = createInventoryWatcher({
    discovery: opts.discovery ?? createDiscovery(config, { logger, ...opts.discoveryDeps }),
    intervalMs: opts.rediscoverIntervalS * 1000,
    logger,
    ...(opts.signals ? { signals: opts.signals } : {}),
    ...(opts.onDiscovery ? { onRun: opts.onDiscovery } : {}),
    onChange: (inv) => {
      opts.onInventory?.(inv);
      publisher?.update(decorate(inv));
    },
  });
  const inv = await watcher.start();
  publisher = startSlicePublisher({
    backend: opts.backend ?? sliceBackendFor(opts.target, config.nodeName, config.driverName),
    inventory: decorate(inv),
    driverName: config.driverName,
    nodeName: config.nodeName,
    migMode: config.migMode,
    gpuSharing: config.gpuSharing,
    logger,
    ...(opts.onSync ? { onSync: opts.onSync } : {}),
    ...(opts.taints ? { taints: opts.taints } : {}),
  });
  logger.info("discovered GPUs; publishing ResourceSlices", { gpus: inv.gpus.length, migMode: config.migMode, kube: config.kube });
  const pub = publisher;
  return {
    watcher,
    publisher: pub,
    republish() {
      const current = watcher.current();
      if (current) pub.update(decorate(current));
    },
    async stop() {
      watcher.stop();
      await pub.stop();
    },
  };
}
