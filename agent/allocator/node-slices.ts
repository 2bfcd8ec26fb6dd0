// This node's ResourceSlices as the agent publishes them: discovery (real or fixture) fed to
// buildResourceSlices. What `claims apply` and `diag explain` allocate against without a cluster.
import { NODE_FLAGS, parseFlags, resolveNodeConfig, type NodeConfig } from "../common/config.js";
import { createDiscovery } from "../discovery/index.js";
import type { DeviceTaint, ResourceSlice } from "../kube/types.js";
import { buildResourceSlices, healthTargets } from "../slices/build.js";
import { createKeeper, taintsByDevice } from "../health/keeper.js";
import { readHealthFile } from "../health/store.js";

/** With the taints the agent keeps in the state dir (health.json), as it would publish them. */
export async function discoverNodeSlices(config: NodeConfig): Promise<ResourceSlice[]> {
  const inv = await createDiscovery(config).discover();
  const { file } = await readHealthFile(config.stateDir);
  const taints = file ? taintsByDevice(createKeeper({ now: () => new Date(), holdDownMs: Number.MAX_SAFE_INTEGER, initial: file }), healthTargets(inv, config.migMode, config.gpuSharing)) : new Map<string, DeviceTaint[]>();
  return buildResourceSlices(inv, { driverName: config.driverName, nodeName: config.nodeName, migMode: config.migMode, gpuSharing: config.gpuSharing, taints });
}

/** Slices of a fixture node (tests, bench): `fixture:<name>`, node name = fixture name. */
export async function fixtureSlices(fixture: string, migMode: "static" | "dynamic" = "static", nodeName = fixture): Promise<ResourceSlice[]> {
  const config = resolveNodeConfig(parseFlags(["--discovery", `fixture:${fixture}`, "--node-name", nodeName, "--mig-mode", migMode], NODE_FLAGS, {}));
  return discoverNodeSlices(config);
}
