// The one loader of @kubernetes/client-node. It costs about 2 s of start-up and 80 MB of RSS on a
// small machine (docs/performance.md), so only cluster paths load it, on first use: `tessera
// agent --kube standalone:…`, the node-only diag verbs and the proxy with --endpoints never do.
// Modules that talk to the API server import its types only (`import type`) and await this.
export type ClientNode = typeof import("@kubernetes/client-node");
export type ClientNodeSerializer = typeof import("@kubernetes/client-node/dist/gen/models/ObjectSerializer.js");

let module: Promise<ClientNode> | undefined;
let serializer: Promise<ClientNodeSerializer> | undefined;

export function loadClientNode(): Promise<ClientNode> {
  return (module ??= import("@kubernetes/client-node"));
}

/** client-node's model serializer (a deep import, loaded with the package). */
export function loadClientNodeSerializer(): Promise<ClientNodeSerializer> {
  return (serializer ??= import("@kubernetes/client-node/dist/gen/models/ObjectSerializer.js"));
}
