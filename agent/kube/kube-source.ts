// `--kube` resolution: where Kubernetes objects come from (contracts.md).
//   auto                 in-cluster when KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG / ~/.kube/config
//   kubeconfig:<path>    that kubeconfig
//   standalone:<dir>     no cluster; the directory store
import { KubeConfig } from "@kubernetes/client-node";
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

export function openKube(spec: KubeSpec, env: NodeJS.ProcessEnv = process.env): KubeTarget {
  if (spec.mode === "standalone") return { mode: "standalone", store: createStandaloneStore(spec.dir) };
  const config = new KubeConfig();
  try {
    if (spec.mode === "kubeconfig") config.loadFromFile(spec.path);
    else if (env.KUBERNETES_SERVICE_HOST) config.loadFromCluster();
    else config.loadFromDefault();
  } catch (err) {
    throw new TesseraError("TESSERA_CONFIG", `cannot load Kubernetes credentials for --kube=${spec.mode}; pass --kube kubeconfig:<path> or --kube standalone:<dir>`, { cause: err });
  }
  if (!config.getCurrentCluster()) {
    throw new TesseraError("TESSERA_CONFIG", "no Kubernetes cluster configured (no in-cluster env, no kubeconfig); pass --kube standalone:<dir> to run without a cluster");
  }
  return { mode: "cluster", config };
}
