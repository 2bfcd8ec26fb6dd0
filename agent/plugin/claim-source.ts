// Where NodePrepareResources reads ResourceClaims from: the Kubernetes API (resource.k8s.io/v1
// through @kubernetes/client-node) or the standalone store. API reads are bounded (30 s by
// default) because the kubelet gives up at 45 s and a hung read must become a clear error.
import type { KubeConfig, ResourceV1Api } from "@kubernetes/client-node";
import { loadClientNode } from "../kube/client-node.js";
import { kubeApiError } from "../kube/api-error.js";
import { echoInput, TesseraError } from "../common/errors.js";
import type { StandaloneStore } from "../kube/standalone-store.js";
import type { ResourceClaim } from "../kube/types.js";

export interface ClaimSource {
  /** The claim, or a TesseraError (TESSERA_NOT_FOUND, TESSERA_KUBE_API, TESSERA_KUBE_TIMEOUT, TESSERA_STORE). */
  get(namespace: string, name: string): Promise<ResourceClaim>;
}

export const CLAIM_READ_TIMEOUT_MS = 30_000;

function notFound(namespace: string, name: string, where: string): TesseraError {
  return new TesseraError("TESSERA_NOT_FOUND", `ResourceClaim ${echoInput(namespace)}/${echoInput(name)} not found in ${where}; it was deleted or never created`);
}

export function createStoreClaimSource(store: StandaloneStore): ClaimSource {
  return {
    async get(namespace, name) {
      const claim = await store.getClaim(namespace, name);
      if (!claim) throw notFound(namespace, name, `the standalone store ${store.dir}`);
      return claim;
    },
  };
}

export function createKubeClaimSource(config: KubeConfig, opts: { timeoutMs?: number } = {}): ClaimSource {
  let api: Promise<ResourceV1Api> | undefined;
  const client = (): Promise<ResourceV1Api> => (api ??= loadClientNode().then((k) => config.makeApiClient(k.ResourceV1Api)));
  const timeoutMs = opts.timeoutMs ?? CLAIM_READ_TIMEOUT_MS;
  return {
    async get(namespace, name) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          reject(new TesseraError("TESSERA_KUBE_TIMEOUT", `reading ResourceClaim ${echoInput(namespace)}/${echoInput(name)} took longer than ${timeoutMs / 1000} s; check the API server and the agent's network`));
        }, timeoutMs);
      });
      // The generated client takes Observable-style middleware only, so the bound is a race: the
      // abandoned request finishes (or fails) in the background and its result is dropped.
      const read = client().then((a) => a.readNamespacedResourceClaim({ name, namespace }));
      try {
        const obj = await Promise.race([read, timeout]);
        // The client returns model instances (Date timestamps); a JSON round trip gives the
        // wire shape the rest of Tessera types.
        return JSON.parse(JSON.stringify(obj)) as ResourceClaim;
      } catch (err) {
        if (err instanceof TesseraError) throw err;
        if (err instanceof (await loadClientNode()).ApiException && err.code === 404) throw notFound(namespace, name, "the cluster");
        throw kubeApiError(err, { verb: "get", group: "resource.k8s.io", resource: "resourceclaims", what: `reading ResourceClaim ${echoInput(namespace)}/${echoInput(name)}` }, "the kubelet will retry");
      } finally {
        clearTimeout(timer);
        read.catch(() => undefined); // a late failure of an abandoned read is not an unhandled rejection
      }
    },
  };
}
