// Kubernetes Events the agent records for the admin: a failed prepare (on the ResourceClaim), a
// checkpoint moved aside (on the Node), later a tainted device. core/v1 Events through the
// injected KubeConfig, rate limited per object + reason: the first occurrence creates an Event,
// repeats within `minIntervalMs` are only counted, the next one after the window patches the same
// Event (count, lastTimestamp, message) like the kubelet's recorder does. Standalone mode writes
// none: events are logged. Recording never throws and never delays the caller's answer.
import { echoInput } from "../common/errors.js";
import { randomBytes } from "node:crypto";
import type { CoreV1Api, CoreV1Event, KubeConfig } from "@kubernetes/client-node";
import { loadClientNode, type ClientNode as ClientNodeModule } from "./client-node.js";
import type { AgentMetrics } from "../common/agent-metrics.js";
import { noMetrics } from "../common/agent-metrics.js";
import { describeChain } from "../common/errors.js";
import type { Logger } from "../common/log.js";

export interface EventObject {
  apiVersion: string;
  kind: string;
  name: string;
  namespace?: string;
  uid?: string;
}

export interface EventRecorder {
  /** type Warning; `reason` CamelCase (PrepareFailed, CheckpointMovedAside, DeviceTainted). */
  warn(object: EventObject, reason: string, message: string): void;
  /** type Normal: things going back to how they should be (DeviceTaintCleared). */
  normal(object: EventObject, reason: string, message: string): void;
  /** Resolves when every write started so far has finished (tests, shutdown). */
  idle(): Promise<void>;
}

/** What the recorder calls; the cluster one is core/v1 through client-node. */
export interface EventSink {
  create(namespace: string, event: CoreV1Event): Promise<void>;
  /** Merge patch; rejects with a 404-status error when the Event expired. */
  patch(namespace: string, name: string, patch: Record<string, unknown>): Promise<void>;
}

type EventType = "Warning" | "Normal";

export const EVENT_MIN_INTERVAL_MS = 60_000;
export const EVENT_COMPONENT = "tessera-agent";

export function clusterEventSink(kc: KubeConfig): EventSink {
  let api: Promise<{ core: CoreV1Api; mergePatch: ReturnType<ClientNodeModule["setHeaderOptions"]> }> | undefined;
  const client = () =>
    (api ??= loadClientNode().then((k) => ({ core: kc.makeApiClient(k.CoreV1Api), mergePatch: k.setHeaderOptions("Content-Type", "application/merge-patch+json") })));
  return {
    create: async (namespace, body) => void (await (await client()).core.createNamespacedEvent({ namespace, body })),
    async patch(namespace, name, body) {
      const { core, mergePatch } = await client();
      await core.patchNamespacedEvent({ name, namespace, body }, mergePatch);
    },
  };
}

interface Series {
  name: string;
  namespace: string;
  count: number;
  lastSent: number;
  suppressed: number;
}

/** Core Events of cluster-scoped objects (Node) live in "default", as the kubelet's do. */
const eventNamespace = (o: EventObject): string => o.namespace ?? "default";

const statusOf = (err: unknown): number | undefined => {
  const e = err as { code?: unknown; statusCode?: unknown } | null;
  return typeof e?.code === "number" ? e.code : typeof e?.statusCode === "number" ? e.statusCode : undefined;
};

export function createEventRecorder(opts: {
  sink?: EventSink;
  nodeName: string;
  log: Logger;
  metrics?: AgentMetrics;
  now?: () => number;
  minIntervalMs?: number;
}): EventRecorder {
  const now = opts.now ?? Date.now;
  const metrics = opts.metrics ?? noMetrics;
  const minInterval = opts.minIntervalMs ?? EVENT_MIN_INTERVAL_MS;
  const series = new Map<string, Series>();
  const pending = new Set<Promise<void>>();

  async function send(type: EventType, object: EventObject, reason: string, message: string, s: Series, first: boolean): Promise<void> {
    const sink = opts.sink as EventSink;
    const at = new Date(now());
    const create = (): Promise<void> =>
      sink.create(s.namespace, {
        metadata: { name: s.name, namespace: s.namespace },
        involvedObject: { apiVersion: object.apiVersion, kind: object.kind, name: object.name, ...(object.namespace ? { namespace: object.namespace } : {}), ...(object.uid ? { uid: object.uid } : {}) },
        reason,
        message,
        type,
        count: s.count,
        firstTimestamp: at,
        lastTimestamp: at,
        source: { component: EVENT_COMPONENT, host: opts.nodeName },
        reportingComponent: EVENT_COMPONENT,
        reportingInstance: opts.nodeName,
      });
    try {
      if (first) await create();
      else {
        try {
          await sink.patch(s.namespace, s.name, { count: s.count, lastTimestamp: at.toISOString(), message });
        } catch (err) {
          if (statusOf(err) !== 404) throw err;
          await create(); // expired (events live about an hour): start over
        }
      }
      metrics.event(reason, "emitted");
    } catch (err) {
      metrics.event(reason, "failed");
      opts.log.warn("cannot record a Kubernetes Event (check RBAC: events create, patch)", { reason, object: `${object.kind} ${object.namespace ? `${object.namespace}/` : ""}${object.name}`, status: statusOf(err), detail: describeChain(err) });
    }
  }

  function record(type: EventType, object: EventObject, reason: string, message: string): void {
    if (!opts.sink) {
      metrics.event(reason, "logged");
      const fields = { reason, object: `${object.kind} ${object.namespace ? `${echoInput(object.namespace)}/` : ""}${echoInput(object.name)}`, message };
      if (type === "Warning") opts.log.warn("event", fields);
      else opts.log.info("event", fields);
      return;
    }
    const key = `${object.kind}/${object.namespace ?? ""}/${object.name}/${object.uid ?? ""}/${reason}`;
    const t = now();
    let s = series.get(key);
    const first = s === undefined;
    if (s && t - s.lastSent < minInterval) {
      s.count++;
      s.suppressed++;
      metrics.event(reason, "suppressed");
      return;
    }
    if (!s) {
      s = { name: `${object.name}.${randomBytes(8).toString("hex")}`, namespace: eventNamespace(object), count: 0, lastSent: t, suppressed: 0 };
      series.set(key, s);
      if (series.size > 4096) series.delete(series.keys().next().value as string);
    }
    s.count++;
    s.lastSent = t;
    const note = s.suppressed > 0 ? `${message} (${s.suppressed} more since the last event)` : message;
    s.suppressed = 0;
    const p = send(type, object, reason, note, s, first);
    pending.add(p);
    void p.finally(() => pending.delete(p));
  }

  return {
    warn: (object, reason, message) => record("Warning", object, reason, message),
    normal: (object, reason, message) => record("Normal", object, reason, message),
    idle: async () => void (await Promise.all([...pending])),
  };
}
