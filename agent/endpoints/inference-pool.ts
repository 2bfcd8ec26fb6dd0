// `--inference-pool <ns>/<name>`: endpoints from an inference.networking.k8s.io/v1 InferencePool.
// Two list+watch caches (client-node ListWatch): the pool itself (its selector and target port)
// and the pods it selects: on this node only (fieldSelector spec.nodeName) for the in-node proxy,
// on every node for the endpoint picker (no nodeName). Every change
// recomputes the endpoint set: ready pods with an IP, http://<podIP>:<targetPort>. A watch that
// fails is restarted after a short backoff. The KubeConfig is injected (tests point it at
// test/support/fake-apiserver.ts).
import { kubeApiError } from "../kube/api-error.js";
import { CoreV1Api, CustomObjectsApi, ListWatch, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject, type V1Pod } from "@kubernetes/client-node";
import { TesseraError } from "../common/errors.js";
import { silentLogger, type Logger } from "../common/log.js";
import type { EndpointSource } from "./table.js";

export const POOL_GROUP = "inference.networking.k8s.io";
export const POOL_VERSION = "v1";

export interface InferencePoolSourceOptions {
  kube: KubeConfig;
  pool: string; // "<namespace>/<name>"
  /** Only pods on this node (the proxy); undefined: every node (the endpoint picker). */
  nodeName: string | undefined;
  restartDelayMs?: number; // default 1000
  log?: Logger;
}

interface PoolObject extends KubernetesObject {
  spec?: { selector?: { matchLabels?: Record<string, string> } | Record<string, string>; targetPorts?: { number?: number }[]; targetPortNumber?: number };
}

export function parsePoolRef(ref: string): { namespace: string; name: string } {
  const m = /^([a-z0-9][-a-z0-9]*)\/([a-z0-9][-a-z0-9.]*)$/.exec(ref);
  if (!m) throw new TesseraError("TESSERA_CONFIG", `--inference-pool=${ref}: expected <namespace>/<name>`);
  return { namespace: m[1] as string, name: m[2] as string };
}

/** Equality label selector and port of a pool (v1 shape; the older map selector is accepted too). */
export function poolTarget(pool: PoolObject): { selector: string; port: number } | undefined {
  const sel = pool.spec?.selector;
  const labels = sel && typeof sel === "object" && "matchLabels" in sel && typeof sel.matchLabels === "object" ? sel.matchLabels : (sel as Record<string, string> | undefined);
  const port = pool.spec?.targetPorts?.[0]?.number ?? pool.spec?.targetPortNumber;
  if (!labels || Object.keys(labels).length === 0 || typeof port !== "number") return undefined;
  const selector = Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join(",");
  return { selector, port };
}

function podReady(p: V1Pod): boolean {
  if (!p.status?.podIP || p.metadata?.deletionTimestamp) return false;
  return (p.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
}

export function createInferencePoolSource(opts: InferencePoolSourceOptions): EndpointSource {
  const { namespace, name } = parsePoolRef(opts.pool);
  const log = opts.log ?? silentLogger;
  const delay = opts.restartDelayMs ?? 1000;
  const core = opts.kube.makeApiClient(CoreV1Api);
  const custom = opts.kube.makeApiClient(CustomObjectsApi);
  let onChange: (urls: string[]) => void = () => undefined;
  let poolCache: ListWatch<PoolObject> | undefined;
  let podCache: ListWatch<V1Pod> | undefined;
  let target: { selector: string; port: number } | undefined;
  let stopped = false;
  let last = "";

  const publish = (): void => {
    const urls = !target || !podCache ? [] : podCache.list().filter(podReady).map((p) => `http://${p.status?.podIP}:${target?.port}`).sort();
    const key = urls.join(",");
    if (key === last) return;
    last = key;
    log.info("inference pool endpoints", { pool: opts.pool, endpoints: urls });
    onChange(urls);
  };

  const keepAlive = <T extends KubernetesObject>(lw: ListWatch<T>, what: string): void => {
    lw.on("error", (err: unknown) => {
      if (stopped) return;
      log.warn("watch failed; restarting", { what, error: err instanceof Error ? err.message : String(err) });
      setTimeout(() => void (stopped ? undefined : lw.start().catch(() => undefined)), delay).unref();
    });
  };

  const watchPods = async (): Promise<void> => {
    if (podCache) await podCache.stop();
    podCache = undefined;
    if (!target) return publish();
    const selector = target.selector;
    const fieldSelector = opts.nodeName === undefined ? undefined : `spec.nodeName=${opts.nodeName}`;
    const list = () => core.listNamespacedPod({ namespace, labelSelector: selector, fieldSelector }) as Promise<KubernetesListObject<V1Pod>>;
    const lw = new ListWatch<V1Pod>(`/api/v1/namespaces/${namespace}/pods`, new Watch(opts.kube), list, false, selector, fieldSelector);
    for (const ev of ["add", "update", "delete"] as const) lw.on(ev, publish);
    keepAlive(lw, "pods");
    podCache = lw;
    await lw.start();
    publish();
  };

  /** Reads the pool's selector and port; true when they changed (the pod watch must restart). */
  const updateTarget = (): boolean => {
    const pool = poolCache?.list()[0];
    const next = pool ? poolTarget(pool) : undefined;
    if (pool && !next) log.warn("inference pool has no label selector or target port", { pool: opts.pool });
    if (next?.selector === target?.selector && next?.port === target?.port) return false;
    target = next;
    return true;
  };
  let podsStarted: Promise<void> = Promise.resolve();
  const onPool = (): void => {
    if (!updateTarget()) return;
    podsStarted = podsStarted.then(watchPods).catch((err: unknown) => log.warn("pod watch failed", { error: err instanceof Error ? err.message : String(err) }));
  };

  return {
    async start(cb) {
      onChange = cb;
      const fieldSelector = `metadata.name=${name}`;
      const list = () => custom.listNamespacedCustomObject({ group: POOL_GROUP, version: POOL_VERSION, namespace, plural: "inferencepools", fieldSelector }) as Promise<KubernetesListObject<PoolObject>>;
      const lw = new ListWatch<PoolObject>(`/apis/${POOL_GROUP}/${POOL_VERSION}/namespaces/${namespace}/inferencepools`, new Watch(opts.kube), list, false, undefined, fieldSelector);
      for (const ev of ["add", "update", "delete"] as const) lw.on(ev, onPool);
      keepAlive(lw, "inferencepool");
      poolCache = lw;
      try {
        await lw.start();
      } catch (err) {
        throw kubeApiError(err, { verb: "list", group: POOL_GROUP, resource: "inferencepools", what: `listing InferencePool ${opts.pool}` }, "check --kube and RBAC (list/watch inferencepools, pods)");
      }
      onPool();
      await podsStarted;
      publish();
    },
    async stop() {
      stopped = true;
      await poolCache?.stop();
      await podCache?.stop();
    },
  };
}
