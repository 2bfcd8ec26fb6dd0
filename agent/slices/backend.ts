// Where slices are published: the cluster (resource.k8s.io/v1 through @kubernetes/client-node) or
// the standalone store. One small interface so the publisher's logic is tested once against both.
import { randomUUID } from "node:crypto";
import type { CoreV1Api, KubeConfig, ResourceV1Api, V1ResourceSlice } from "@kubernetes/client-node";
import { loadClientNode, loadClientNodeSerializer, type ClientNode, type ClientNodeSerializer } from "../kube/client-node.js";
import type { StandaloneStore } from "../kube/standalone-store.js";
import type { KubeTarget } from "../kube/kube-source.js";
import type { OwnerReference, ResourceSlice } from "../kube/types.js";

export type WatchEvent = "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";

export interface SliceBackend {
  readonly describe: string;
  /** This node's slices of our driver (field selector spec.nodeName + spec.driver). */
  list(): Promise<ResourceSlice[]>;
  create(s: ResourceSlice): Promise<ResourceSlice>;
  /** Replace; `metadata.resourceVersion` must be current or the call fails with status 409. */
  update(s: ResourceSlice): Promise<ResourceSlice>;
  /** Delete; an object that is already gone is not an error. */
  delete(name: string): Promise<void>;
  /** Owner reference to the Node object, or undefined when it cannot be read (then retried later). */
  ownerReference(): Promise<OwnerReference | undefined>;
  /** Streams events of this node's slices; onDone fires when the stream ends for any reason. */
  watch?(onEvent: (type: WatchEvent, slice: ResourceSlice) => void, onDone: (err?: unknown) => void): Promise<{ stop(): void }>;
}

export { statusOf } from "../kube/api-error.js";
import { statusOf } from "../kube/api-error.js";

function fieldSelector(nodeName: string, driverName: string): string {
  return `spec.nodeName=${nodeName},spec.driver=${driverName}`;
}

// client-node's generated models rename some wire fields (DeviceAttribute `int` is `_int` inside
// the model) and its serializer drops keys it does not know: a plain object passed as a body would
// lose every int attribute. Convert at this border, both ways, through the model serializer.
type Serializer = ClientNodeSerializer["ObjectSerializer"];
const asSlice = (ser: Serializer, o: V1ResourceSlice): ResourceSlice => ser.serialize(o, "V1ResourceSlice", "") as ResourceSlice;
const asV1 = (ser: Serializer, s: ResourceSlice): V1ResourceSlice => ser.deserialize(JSON.parse(JSON.stringify(s)), "V1ResourceSlice", "") as V1ResourceSlice;

interface ClusterClients {
  k: ClientNode;
  ser: Serializer;
  api: ResourceV1Api;
  core: CoreV1Api;
}

export function clusterSliceBackend(kc: KubeConfig, nodeName: string, driverName: string): SliceBackend {
  let clients: Promise<ClusterClients> | undefined;
  const client = (): Promise<ClusterClients> =>
    (clients ??= Promise.all([loadClientNode(), loadClientNodeSerializer()]).then(([k, s]) => ({ k, ser: s.ObjectSerializer, api: kc.makeApiClient(k.ResourceV1Api), core: kc.makeApiClient(k.CoreV1Api) })));
  const selector = fieldSelector(nodeName, driverName);
  return {
    describe: `cluster ${kc.getCurrentCluster()?.server ?? "?"}`,
    async list() {
      const { api, ser } = await client();
      const res = await api.listResourceSlice({ fieldSelector: selector });
      return res.items.map((o) => asSlice(ser, o));
    },
    async create(s) {
      const { api, ser } = await client();
      return asSlice(ser, await api.createResourceSlice({ body: asV1(ser, s) }));
    },
    async update(s) {
      const { api, ser } = await client();
      return asSlice(ser, await api.replaceResourceSlice({ name: s.metadata.name ?? "", body: asV1(ser, s) }));
    },
    async delete(name) {
      const { api } = await client();
      try {
        await api.deleteResourceSlice({ name });
      } catch (err) {
        if (statusOf(err) !== 404) throw err;
      }
    },
    async ownerReference() {
      try {
        const { core } = await client();
        const node = await core.readNode({ name: nodeName });
        const uid = node.metadata?.uid;
        return uid ? { apiVersion: "v1", kind: "Node", name: nodeName, uid, controller: true } : undefined;
      } catch {
        return undefined;
      }
    },
    async watch(onEvent, onDone) {
      const { k } = await client();
      const w = new k.Watch(kc);
      const ctl = await w.watch(
        "/apis/resource.k8s.io/v1/resourceslices",
        { fieldSelector: selector, allowWatchBookmarks: true },
        (type, obj) => onEvent(type as WatchEvent, obj as ResourceSlice),
        (err) => onDone(err),
      );
      return { stop: () => ctl.abort() };
    },
  };
}

/** The standalone store: full objects as the API server would hold them (uid, resourceVersion). */
export function storeSliceBackend(store: StandaloneStore, nodeName: string, driverName: string, now: () => Date = () => new Date()): SliceBackend {
  const ours = (s: ResourceSlice): boolean => s.spec?.nodeName === nodeName && s.spec?.driver === driverName;
  let rv = Date.now();
  const stamp = (s: ResourceSlice, prev?: ResourceSlice): ResourceSlice => ({
    ...s,
    metadata: {
      ...s.metadata,
      uid: prev?.metadata.uid ?? randomUUID(),
      creationTimestamp: prev?.metadata.creationTimestamp ?? now().toISOString(),
      resourceVersion: String(++rv),
      generation: (prev?.metadata.generation ?? 0) + 1,
    },
  });
  const conflict = (msg: string): Error => Object.assign(new Error(msg), { statusCode: 409 });
  return {
    describe: `standalone store ${store.dir}`,
    list: async () => (await store.listSlices()).filter(ours),
    async create(s) {
      const name = s.metadata.name ?? "";
      if (await store.getSlice(name)) throw conflict(`resourceslice ${name} already exists`);
      const out = stamp(s);
      await store.putSlice(out);
      return out;
    },
    async update(s) {
      const name = s.metadata.name ?? "";
      const prev = await store.getSlice(name);
      if (!prev) throw Object.assign(new Error(`resourceslice ${name} not found`), { statusCode: 404 });
      if (s.metadata.resourceVersion !== undefined && s.metadata.resourceVersion !== prev.metadata.resourceVersion) throw conflict(`resourceslice ${name} was modified`);
      const out = stamp(s, prev);
      await store.putSlice(out);
      return out;
    },
    delete: (name) => store.deleteSlice(name),
    ownerReference: async () => undefined, // no Node object without a cluster
  };
}

export function sliceBackendFor(target: KubeTarget, nodeName: string, driverName: string): SliceBackend {
  return target.mode === "standalone" ? storeSliceBackend(target.store, nodeName, driverName) : clusterSliceBackend(target.config, nodeName, driverName);
}
