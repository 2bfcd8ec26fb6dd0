// `--kube` resolution: where Kubernetes objects come from (contracts.md).
//   auto                 in-cluster when KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG / ~/.kube/config
//   kubeconfig:<path>    that kubeconfig
//   standalone:<dir>     no cluster; the directory store
import { existsSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { KubeConfig } from "@kubernetes/client-node";
import { loadClientNode } from "./client-node.js";
import { TesseraError } from "../common/errors.js";
import { createStandaloneStore, type StandaloneStore } from "./standalone-store.js";

export type KubeSpec =
  | { mode: "auto" }
  | { mode: "kubeconfig"; path: string }
  | { mode: "standalone"; dir: string };

export function parseKubeSpec(spec: string): KubeSpec {
  if (spec === "auto") return { mode: "auto" };
  const colon = spec.indexOf(":");
  const kind = colon < 0 ? spec : spec.slice(0, colon);
  const rest = colon < 0 ? "" : spec.slice(colon + 1);
  if (kind === "kubeconfig" && rest) return { mode: "kubeconfig", path: rest };
  if (kind === "standalone" && rest) return { mode: "standalone", dir: rest };
  throw new TesseraError("TESSERA_CONFIG", `--kube=${spec}: expected auto, kubeconfig:<path> or standalone:<dir>`);
}

export type KubeTarget = { mode: "cluster"; config: KubeConfig } | { mode: "standalone"; store: StandaloneStore };

/** The standalone store, or the cluster's credentials (loading client-node only then). */
export async function openKube(spec: KubeSpec, env: NodeJS.ProcessEnv = process.env): Promise<KubeTarget> {
  if (spec.mode === "standalone") return { mode: "standalone", store: createStandaloneStore(spec.dir) };
  const { KubeConfig } = await loadClientNode();
  const config = new KubeConfig();
  try {
    if (spec.mode === "kubeconfig") config.loadFromFile(spec.path);
    else if (env.KUBERNETES_SERVICE_HOST) config.loadFromCluster();
    else loadKubeconfigs(config, env, () => new KubeConfig());
  } catch (err) {
    if (err instanceof TesseraError) throw err;
    throw new TesseraError("TESSERA_CONFIG", `cannot load Kubernetes credentials for --kube=${spec.mode}; pass --kube kubeconfig:<path> or --kube standalone:<dir>`, { cause: err });
  }
  if (!config.getCurrentCluster()) {
    throw new TesseraError("TESSERA_CONFIG", "no Kubernetes cluster configured (no in-cluster env, no kubeconfig); pass --kube standalone:<dir> to run without a cluster");
  }
  return { mode: "cluster", config };
}

/**
 * `--kube auto` outside a cluster: the kubeconfig files of $KUBECONFIG (path-list) or else
 * ~/.kube/config, merged in order. None there is a Tessera error saying what was looked for,
 * not client-node's fallback to http://localhost:8080 and its TLS complaint.
 */
function loadKubeconfigs(config: KubeConfig, env: NodeJS.ProcessEnv, fresh: () => KubeConfig): void {
  const home = env.HOME || os.homedir();
  const fromEnv = (env.KUBECONFIG ?? "").split(path.delimiter).filter((p) => p.length > 0);
  const candidates = fromEnv.length > 0 ? fromEnv : [path.join(home, ".kube", "config")];
  const found = candidates.filter((p) => existsSync(p));
  if (found.length === 0) {
    const looked = fromEnv.length > 0 ? `$KUBECONFIG (${fromEnv.join(path.delimiter)})` : `$KUBECONFIG (unset) and ~/.kube/config (${candidates[0]})`;
    throw new TesseraError(
      "TESSERA_CONFIG",
      `--kube auto found no cluster: not in a pod (KUBERNETES_SERVICE_HOST unset) and no kubeconfig at ${looked}; pass --kube kubeconfig:<path> for a cluster or --kube standalone:<dir> to work without one`,
    );
  }
  found.forEach((p, i) => {
    if (i === 0) config.loadFromFile(p);
    else {
      const more = fresh();
      more.loadFromFile(p);
      config.mergeConfig(more, true); // the first file's current-context wins, as in kubectl
    }
  });
}
