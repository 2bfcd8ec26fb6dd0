// Surge upgrades: two agent pods on one node, each with its own sockets (--rolling-update-uid).
// The kubelet may send any call to either pod and moves to the new one at its own pace, so the
// old pod must keep answering; but only one pod may write the checkpoint. The handover (asked by
// the new pod over the state-dir lock, agent/plugin/state-lock.ts):
//   old: new calls are forwarded to the new pod's DRA socket (waiting until it serves) ->
//        in-flight local calls finish -> checkpoint flushed -> lock released
//   new: takes the lock -> loads the checkpoint -> serves its sockets
// After that the old pod is a forwarder until the kubelet and the DaemonSet let it go.
import type { Logger } from "../common/log.js";
import type { DraHandlers } from "./dra-service.js";
import { createDraClient, type DraClient } from "./protos.js";

/** The kubelet gives a DRA call 45 s; a forwarded call waits for the new pod's socket at most this. */
export const FORWARD_DEADLINE_MS = 40_000;

export interface SwitchableHandlers {
  handlers: DraHandlers;
  /** From now on, calls go to `draSocket`; resolves when every local call in flight has finished. */
  forwardTo(draSocket: string): Promise<void>;
  /** Where calls are forwarded, once handed over. */
  forwardingTo(): string | undefined;
  close(): void;
}

function forwarder(draSocket: string): { handlers: DraHandlers; close(): void } {
  const clients: Record<"v1" | "v1beta1", DraClient> = {
    v1: createDraClient(draSocket, "v1", { defaults: false, deadlineMs: FORWARD_DEADLINE_MS, waitForReady: true }),
    v1beta1: createDraClient(draSocket, "v1beta1", { defaults: false, deadlineMs: FORWARD_DEADLINE_MS, waitForReady: true }),
  };
  return {
    handlers: {
      prepare: (req, version) => clients[version].prepare(req),
      unprepare: (req) => clients.v1.unprepare(req),
    },
    close() {
      clients.v1.close();
      clients.v1beta1.close();
    },
  };
}

export function createSwitchableHandlers(local: DraHandlers, log: Logger): SwitchableHandlers {
  let inFlight = 0;
  let idle: (() => void)[] = [];
  let target: ReturnType<typeof forwarder> | undefined;
  let targetSocket: string | undefined;
  const track = async <T>(fn: () => Promise<T>): Promise<T> => {
    inFlight++;
    try {
      return await fn();
    } finally {
      if (--inFlight === 0) for (const r of idle.splice(0)) r();
    }
  };
  return {
    handlers: {
      prepare: (req, version) => (target ? target.handlers.prepare(req, version) : track(() => local.prepare(req, version))),
      unprepare: (req) => (target ? target.handlers.unprepare(req) : track(() => local.unprepare(req))),
    },
    async forwardTo(draSocket) {
      target = forwarder(draSocket);
      targetSocket = draSocket;
      log.info("handing over: forwarding DRA calls to the new agent pod", { draSocket, inFlight });
      if (inFlight > 0) await new Promise<void>((r) => idle.push(r));
      idle = [];
    },
    forwardingTo: () => targetSocket,
    close: () => target?.close(),
  };
}
