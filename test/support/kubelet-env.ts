// Test environment for the kubelet plugin: a fake node inventory, claims in a standalone store,
// an in-process agent on temp dirs, and gRPC clients built from protos/ acting as the kubelet.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NODE_FLAGS, parseFlags, resolveNodeConfig, type NodeConfig } from "../../agent/common/config.js";
import { createMemoryLogger, type MemoryLogger } from "../../agent/common/log.js";
import { startAgent, type AgentDeps, type AgentHandle } from "../../agent/cli/agent.js";
import { gpuDeviceName, migDeviceName, type Gpu, type Inventory } from "../../agent/discovery/model.js";
import { createStandaloneStore, type StandaloneStore } from "../../agent/kube/standalone-store.js";
import type { DeviceRequestAllocationResult, ResourceClaim } from "../../agent/kube/types.js";
import type { ClaimSource } from "../../agent/plugin/claim-source.js";
import { createDraClient, createRegistrationClient, type DraClient, type RegistrationClient } from "../../agent/plugin/protos.js";

export const DRIVER = "gpu.tessera.dev";
export const NODE = "node-a";

export function gpuUUID(minor: number): string {
  return `GPU-${minor.toString(16).padStart(8, "0")}-1111-2222-3333-444455556666`;
}

/** `count` whole GPUs; GPU 1 is MIG-enabled with one 1g slice (profile 19, placement 0/1). */
export function inventory(count = 34): Inventory {
  const gpus: Gpu[] = [];
  for (let minor = 0; minor < count; minor++) {
    gpus.push({
      name: gpuDeviceName(minor),
      minor,
      index: minor,
      uuid: gpuUUID(minor),
      productName: "NVIDIA H100 80GB HBM3",
      brand: "NVIDIA",
      architecture: "Hopper",
      pciBusId: `0000:${(0x10 + minor).toString(16)}:00.0`,
      memoryBytes: 80 * 2 ** 30,
      migMode: minor === 1 ? "enabled" : "disabled",
      migDevices:
        minor === 1
          ? [{ name: migDeviceName(1, 19, 0, 1), gpuInstanceId: 7, computeInstanceId: 0, uuid: "MIG-0b5c8f1e-7e7e-5a5a-9c9c-000000000001", profileId: 19, profileName: "1g.10gb", placementStart: 0, placementSize: 1, memoryBytes: 10 * 2 ** 30, multiprocessors: 16, copyEngines: 1, decoders: 1, encoders: 0, jpegEngines: 1, ofaEngines: 0, capDevicePaths: ["/dev/nvidia-caps/nvidia-cap66", "/dev/nvidia-caps/nvidia-cap67"] }]
          : [],
    });
  }
  return { nodeName: NODE, numaNodes: [{ id: 0, cpuList: "0-15" }], pcieRoots: ["pci0000:00"], gpus, host: {} };
}

export function uid(n: number): string {
  return `${n.toString(16).padStart(8, "0")}-aaaa-4bbb-8ccc-dddddddddddd`;
}

export interface ClaimSpec {
  name: string;
  uid: string;
  namespace?: string;
  results?: Partial<DeviceRequestAllocationResult>[];
  allocated?: boolean;
  config?: { requests?: string[]; driver?: string; parameters: unknown }[];
}

export function claim(s: ClaimSpec): ResourceClaim {
  const c: ResourceClaim = {
    apiVersion: "resource.k8s.io/v1",
    kind: "ResourceClaim",
    metadata: { name: s.name, namespace: s.namespace ?? "default", uid: s.uid, resourceVersion: "1" },
    spec: { devices: { requests: [{ name: "gpu", exactly: { deviceClassName: "gpu.tessera.dev" } }] } },
  };
  if (s.allocated !== false) {
    c.status = {
      allocation: {
        devices: {
          results: (s.results ?? [{ device: "gpu-0" }]).map((r) => ({ request: "gpu", driver: DRIVER, pool: NODE, device: "gpu-0", ...r })),
          config: (s.config ?? []).map((x) => ({ source: "FromClaim" as const, ...(x.requests ? { requests: x.requests } : {}), opaque: { driver: x.driver ?? DRIVER, parameters: x.parameters } })),
        },
      },
    };
  }
  return c;
}

export function tempDir(prefix = "tessera-kp-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function nodeConfig(root: string, extra: string[] = []): NodeConfig {
  const args = parseFlags(
    ["--kubelet-root", join(root, "k"), "--cdi-root", join(root, "cdi"), "--node-name", NODE, "--kube", `standalone:${join(root, "store")}`, ...extra],
    NODE_FLAGS,
    {},
  );
  return resolveNodeConfig(args);
}

export interface Env {
  root: string;
  config: NodeConfig;
  store: StandaloneStore;
  log: MemoryLogger;
  agent: AgentHandle;
  /** v1 client decoding without defaults: keys absent on the wire stay absent. */
  v1: DraClient;
  v1beta1: DraClient;
  reg: RegistrationClient;
  /** Stops the agent and closes clients (idempotent). */
  close(): Promise<void>;
}

export interface EnvOptions {
  root?: string;
  bootId?: string;
  claims?: ClaimSource;
  inventory?: Inventory;
  toolkitDirs?: string[];
  /** Extra `tessera agent` flags (e.g. --rolling-update-uid). */
  flags?: string[];
  /** More agent deps (httpListen, eventSink, ...). */
  deps?: Partial<AgentDeps>;
}

export async function startEnv(opts: EnvOptions = {}): Promise<Env> {
  const root = opts.root ?? tempDir();
  const config = nodeConfig(root, opts.flags);
  const store = createStandaloneStore(join(root, "store"));
  const log = createMemoryLogger();
  const agent = await startAgent(config, {
    log,
    inventory: opts.inventory ?? inventory(),
    bootId: async () => opts.bootId ?? "boot-1",
    toolkitDirs: opts.toolkitDirs ?? [config.cdiRoot],
    ...(opts.claims ? { claims: opts.claims } : {}),
    ...opts.deps,
  });
  const v1 = createDraClient(agent.draSocket, "v1", { defaults: false });
  const v1beta1 = createDraClient(agent.draSocket, "v1beta1", { defaults: false });
  const reg = createRegistrationClient(agent.registrationSocket);
  let closed: Promise<void> | undefined;
  return {
    root,
    config,
    store,
    log,
    agent,
    v1,
    v1beta1,
    reg,
    close() {
      closed ??= (async () => {
        v1.close();
        v1beta1.close();
        reg.close();
        await agent.stop(2000);
      })();
      return closed;
    },
  };
}

export function ref(c: ResourceClaim): { namespace: string; name: string; uid: string } {
  return { namespace: c.metadata.namespace ?? "", name: c.metadata.name ?? "", uid: c.metadata.uid ?? "" };
}
