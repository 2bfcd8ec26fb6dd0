// The DRAPlugin gRPC service, v1 and v1beta1 sharing one implementation. Every requested UID gets
// an entry; failures go into that entry's `error` and never fail the whole call (the kubelet
// would then ignore every answer). An empty request answers an empty map: the kubelet's liveness
// probe.
import type * as grpc from "@grpc/grpc-js";
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

export function createDraHandlers(state: DeviceState, log: Logger): DraHandlers {
  return {
    async prepare(req, version) {
      const claims = req.claims ?? [];
      const entries = await Promise.all(
        claims.map(async (c) => {
          try {
            assertClaimRef(c);
            const devices = await state.prepare(c);
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
      const entries = await Promise.all(
        claims.map(async (c) => {
          try {
            await state.unprepare(c);
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

/** grpc-js handler objects for one API version. */
export function draServiceImpl(h: DraHandlers, version: ApiVersion): grpc.UntypedServiceImplementation {
  return {
    NodePrepareResources(call: grpc.ServerUnaryCall<NodePrepareResourcesRequest, NodePrepareResourcesResponse>, cb: grpc.sendUnaryData<NodePrepareResourcesResponse>) {
      h.prepare(call.request, version).then((r) => cb(null, r), (err: unknown) => cb(err as grpc.ServiceError));
    },
    NodeUnprepareResources(call: grpc.ServerUnaryCall<NodeUnprepareResourcesRequest, NodeUnprepareResourcesResponse>, cb: grpc.sendUnaryData<NodeUnprepareResourcesResponse>) {
      h.unprepare(call.request).then((r) => cb(null, r), (err: unknown) => cb(err as grpc.ServiceError));
    },
  };
}
