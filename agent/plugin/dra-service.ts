// The DRAPlugin gRPC service, v1 and v1beta1 sharing one implementation. Every requested UID gets
// an entry; failures go into that entry's `error` and never fail the whole call (the kubelet
// would then ignore every answer). An empty request answers an empty map: the kubelet's liveness
// probe.
import * as grpc from "@grpc/grpc-js";
import { describeChain, echoInput, isTesseraError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { assertClaimRef, type PreparedDevice } from "./prepared.js";
import type {
  NodePrepareResourcesRequest,
  NodePrepareResourcesResponse,
  NodeUnprepareResourcesRequest,
  NodeUnprepareResourcesResponse,
  WireDevice,
} from "./protos.js";
import type { DeviceState } from "./state.js";
import { createLimiter, type Limiter } from "./limiter.js";

/**
 * Bounds of one node's claim work. The kubelet sends one call per pod with that pod's claims
 * (a pod holds a handful; a node runs a few hundred pods), so 512 claims in one call is far above
 * any real node and far below what exhausted the 512 MiB limit (2,000,000 claims in one call).
 */
export const DRA_LIMITS = {
  /** Claims in one NodePrepareResources / NodeUnprepareResources; more -> RESOURCE_EXHAUSTED. */
  maxClaimsPerCall: 512,
  /** Claims worked on at once, across all calls. */
  concurrency: 16,
  /** Claims waiting for a slot, across all calls; a call that would exceed it -> RESOURCE_EXHAUSTED. */
  maxQueued: 4096,
  /**
   * Largest gRPC message accepted or sent on the DRA socket. 512 claims of maximal names (63 + 253
   * + 64 characters) take ~200 KiB; a larger message is refused before grpc-js decodes it, which
   * bounds the time one call can hold the event loop (a 1 MiB message of empty claims took >100 ms).
   */
  maxMessageBytes: 256 * 1024,
} as const;

/** A whole-call refusal: a gRPC status the kubelet reports, with our one-line text as details. */
export class CallRefused extends Error {
  readonly code: grpc.status;
  readonly details: string;
  constructor(code: grpc.status, details: string) {
    super(details);
    this.code = code;
    this.details = details;
  }
}

function admit(claims: readonly unknown[], limiter: Limiter, call: string): void {
  if (claims.length > DRA_LIMITS.maxClaimsPerCall) {
    throw new CallRefused(grpc.status.RESOURCE_EXHAUSTED, `TESSERA_REQUEST_TOO_LARGE: ${call} names ${claims.length} claims, over the limit of ${DRA_LIMITS.maxClaimsPerCall} per call; a kubelet sends one pod's claims per call, so this is not a kubelet`);
  }
  if (!limiter.admits(claims.length)) {
    throw new CallRefused(grpc.status.RESOURCE_EXHAUSTED, `TESSERA_OVERLOADED: ${limiter.pending()} claims are already queued (limit ${DRA_LIMITS.concurrency + DRA_LIMITS.maxQueued}); ${call} with ${claims.length} claims refused, retry later`);
  }
}

export type ApiVersion = "v1" | "v1beta1";

export function toWireDevice(d: PreparedDevice, version: ApiVersion): WireDevice {
  const w: WireDevice = { request_names: d.requestNames, pool_name: d.poolName, device_name: d.deviceName, cdi_device_ids: d.cdiDeviceIds };
  // share_id has presence in v1 only; the key stays absent without a shareID.
  if (version === "v1" && d.shareID !== undefined) w.share_id = d.shareID;
  return w;
}

/** One line for the kubelet's event: the code first, then what, where and how to fix. */
function errorText(err: unknown): string {
  return isTesseraError(err) ? `${err.code}: ${describeChain(err)}` : `TESSERA_INTERNAL: ${describeChain(err)}`;
}

export interface DraHandlers {
  prepare(req: NodePrepareResourcesRequest, version: ApiVersion): Promise<NodePrepareResourcesResponse>;
  unprepare(req: NodeUnprepareResourcesRequest): Promise<NodeUnprepareResourcesResponse>;
}

export function createDraHandlers(state: DeviceState, log: Logger, limiter: Limiter = createLimiter(DRA_LIMITS.concurrency, DRA_LIMITS.maxQueued)): DraHandlers {
  return {
    async prepare(req, version) {
      const claims = req.claims ?? [];
      admit(claims, limiter, "NodePrepareResources");
      const entries = await Promise.all(
        claims.map(async (c) => {
          try {
            assertClaimRef(c);
            const devices = await limiter.run(() => state.prepare(c));
            return [c.uid, { devices: devices.map((d) => toWireDevice(d, version)), error: "" }] as const;
          } catch (err) {
            const error = errorText(err);
            log.warn("prepare failed", { namespace: echoInput(c.namespace), name: echoInput(c.name), uid: echoInput(c.uid), error });
            return [c.uid, { devices: [], error }] as const;
          }
        }),
      );
      return { claims: Object.fromEntries(entries) };
    },
    async unprepare(req) {
      const claims = req.claims ?? [];
      admit(claims, limiter, "NodeUnprepareResources");
      const entries = await Promise.all(
        claims.map(async (c) => {
          try {
            await limiter.run(() => state.unprepare(c));
            return [c.uid, { error: "" }] as const;
          } catch (err) {
            const error = errorText(err);
            log.warn("unprepare failed", { namespace: echoInput(c.namespace), name: echoInput(c.name), uid: echoInput(c.uid), error });
            return [c.uid, { error }] as const;
          }
        }),
      );
      return { claims: Object.fromEntries(entries) };
    },
  };
}

/** A refusal keeps its status; anything else (a bug) is INTERNAL with a one-line text, never a crash. */
function callError(err: unknown): Partial<grpc.ServiceError> {
  if (err instanceof CallRefused) return { code: err.code, details: err.details };
  return { code: grpc.status.INTERNAL, details: errorText(err) };
}

/** grpc-js handler objects for one API version. */
export function draServiceImpl(h: DraHandlers, version: ApiVersion): grpc.UntypedServiceImplementation {
  return {
    NodePrepareResources(call: grpc.ServerUnaryCall<NodePrepareResourcesRequest, NodePrepareResourcesResponse>, cb: grpc.sendUnaryData<NodePrepareResourcesResponse>) {
      h.prepare(call.request, version).then((r) => cb(null, r), (err: unknown) => cb(callError(err)));
    },
    NodeUnprepareResources(call: grpc.ServerUnaryCall<NodeUnprepareResourcesRequest, NodeUnprepareResourcesResponse>, cb: grpc.sendUnaryData<NodeUnprepareResourcesResponse>) {
      h.unprepare(call.request).then((r) => cb(null, r), (err: unknown) => cb(callError(err)));
    },
  };
}
