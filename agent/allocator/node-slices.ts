// This node's ResourceSlices as the agent publishes them: discovery (real or fixture) fed to
// buildResourceSlices. What `claims apply` and `diag explain` allocate against without a cluster.
import { NODE_FLAGS, parseFlags, resolveNodeConfig, type NodeConfig } from "../common/config.js";
import { createDiscovery } from "../discovery/index.js";
import type { ResourceSlice } from "../kube/types.js";
import { buildResourceSlices } from "../slices/build.js";

export async function discoverNodeSlices(config: NodeConfig): Promise<ResourceSlice[]> {
  const inv = await createDiscovery(config).discover();
  return buildResourceSlices(inv, { driverName: config.driverName, nodeName: config.nodeName, migMode: config.migMode, gpuSharing: config.gpuSharing });
}

/** Slices of a fixture node (tests, bench): `fixture:<name>`, node name = fixture name. */
export async function fixtureSlices(fixture: string, migMode: "static" | "dynamic" = "static", nodeName = fixture): Promise<ResourceSlice[]> {
  const config = resolveNodeConfig(parseFlags(["--discovery", `fixture:${fixture}`, "--node-name", nodeName, "--mig-mode", migMode], NODE_FLAGS, {}));
  return discoverNodeSlices(config);
}
