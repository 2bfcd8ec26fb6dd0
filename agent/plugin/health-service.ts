// The kubelet's DRAResourceHealth service (v1 and v1alpha1, one implementation): NodeWatchResources
// is a server stream whose every message is the complete list of this driver's devices with
// HEALTHY | UNHEALTHY | UNKNOWN. A message goes out at once, on every change the feed announces,
// and as a heartbeat; a stream the kubelet cancels (or whose connection drops) is unsubscribed
// and its timer cleared at once. `close()` ends every stream (shutdown: the server can then stop).
import type * as grpc from "@grpc/grpc-js";
import type { DeviceHealthEntry, HealthFeed } from "../health/types.js";
import type { Logger } from "../common/log.js";

/** The kubelet keeps at most 1,024 characters of a message; we send at most 1,024 bytes. */
export const HEALTH_MESSAGE_MAX_BYTES = 1024;

export interface WireDeviceHealth {
  device: { pool_name: string; device_name: string };
  health: "UNKNOWN" | "HEALTHY" | "UNHEALTHY";
  last_updated_time: string;
  health_check_timeout_seconds: string;
  message: string;
}
export interface NodeWatchResourcesResponse {
  devices: WireDeviceHealth[];
}

export interface HealthServiceOptions {
  poolName: string;
  feed: HealthFeed;
  /** Milliseconds between heartbeat messages when nothing changes. */
  heartbeatMs: number;
  /** What the kubelet waits for an update before it calls a device Unknown (a few heartbeats). */
  timeoutSeconds: number;
  log: Logger;
}

export interface HealthService {
  impl: grpc.UntypedServiceImplementation;
  /** Streams open now (tests: a dropped stream is gone). */
  streams(): number;
  close(): void;
}

/** Cut to at most `max` UTF-8 bytes, "..." marking a cut, never splitting a character. */
export function clampMessage(text: string, max = HEALTH_MESSAGE_MAX_BYTES): string {
  if (Buffer.byteLength(text) <= max) return text;
  let out = "";
  let bytes = 0;
  for (const ch of text) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > max - 3) break;
    out += ch;
    bytes += n;
  }
  return out + "...";
}

export function wireHealth(poolName: string, entries: readonly DeviceHealthEntry[], timeoutSeconds: number): NodeWatchResourcesResponse {
  return {
    devices: entries.map((e) => ({
      device: { pool_name: poolName, device_name: e.device },
      health: e.health,
      last_updated_time: String(Math.floor(e.lastUpdated)),
      health_check_timeout_seconds: String(timeoutSeconds),
      message: clampMessage(e.message),
    })),
  };
}

export function createHealthService(opts: HealthServiceOptions): HealthService {
  const open = new Set<() => void>();
  const impl: grpc.UntypedServiceImplementation = {
    NodeWatchResources(call: grpc.ServerWritableStream<unknown, NodeWatchResourcesResponse>) {
      let done = false;
      const send = (): void => {
        if (done) return;
        // A slow kubelet that stops reading must not make us buffer without bound: while the
        // previous message is still queued, this one is dropped (the next carries the full list).
        if (call.writableLength > 0) return;
        call.write(wireHealth(opts.poolName, opts.feed.list(), opts.timeoutSeconds));
      };
      const unsubscribe = opts.feed.subscribe(send);
      const timer = setInterval(send, opts.heartbeatMs);
      timer.unref();
      const finish = (): void => {
        if (done) return;
        done = true;
        clearInterval(timer);
        unsubscribe();
        open.delete(end);
      };
      const end = (): void => {
        finish();
        call.end();
      };
      open.add(end);
      call.on("cancelled", finish);
      call.on("close", finish);
      call.on("error", (err: Error) => {
        opts.log.debug("health stream ended with an error", { err: err.message });
        finish();
      });
      send();
    },
  };
  return {
    impl,
    streams: () => open.size,
    close() {
      for (const end of [...open]) end();
    },
  };
}
