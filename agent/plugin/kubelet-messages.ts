// The five kubelet protos (protos/pluginregistration.proto, dra-v1, dra-v1beta1, dra-health-v1,
// dra-health-v1alpha1) as field tables and gRPC service definitions, written ahead of time so the
// agent does not parse .proto files at start. The .proto files stay the wire contract: the test
// "protos: ... pinned to upstream" reads them with proto-loader, and a differential test holds
// these tables to the same bytes and decoded objects.
import type * as grpc from "@grpc/grpc-js";
import { decodeMessage, encodeMessage, type EnumSpec, type FieldSpec, type MessageSpec } from "./wire.js";

const msg = (fullName: string, fields: FieldSpec[]): MessageSpec => ({ fullName, fields });
const str = (name: string, no: number): FieldSpec => ({ name, no, kind: "string" });
const strs = (name: string, no: number): FieldSpec => ({ name, no, kind: "string", repeated: true });

// ---- pluginregistration ----------------------------------------------------------------------

const REG = "pluginregistration";
export const registrationMessages = {
  PluginInfo: msg(`${REG}.PluginInfo`, [str("type", 1), str("name", 2), str("endpoint", 3), strs("supported_versions", 4)]),
  RegistrationStatus: msg(`${REG}.RegistrationStatus`, [{ name: "plugin_registered", no: 1, kind: "bool" }, str("error", 2)]),
  RegistrationStatusResponse: msg(`${REG}.RegistrationStatusResponse`, []),
  InfoRequest: msg(`${REG}.InfoRequest`, []),
};

// ---- DRAPlugin v1 / v1beta1 (v1 Device adds the optional share_id) ---------------------------

function draMessages(version: "v1" | "v1beta1"): Record<string, MessageSpec> {
  const ns = `k8s.io.kubelet.pkg.apis.dra.${version}`;
  const Claim = msg(`${ns}.Claim`, [str("namespace", 1), str("uid", 2), str("name", 3)]);
  const Device = msg(`${ns}.Device`, [
    strs("request_names", 1), str("pool_name", 2), str("device_name", 3), strs("cdi_device_ids", 4),
    ...(version === "v1" ? [{ name: "share_id", no: 5, kind: "string", presence: true } satisfies FieldSpec] : []),
  ]);
  const NodePrepareResourceResponse = msg(`${ns}.NodePrepareResourceResponse`, [{ name: "devices", no: 1, kind: "message", repeated: true, message: Device }, str("error", 2)]);
  const NodeUnprepareResourceResponse = msg(`${ns}.NodeUnprepareResourceResponse`, [str("error", 1)]);
  return {
    Claim,
    Device,
    NodePrepareResourceResponse,
    NodeUnprepareResourceResponse,
    NodePrepareResourcesRequest: msg(`${ns}.NodePrepareResourcesRequest`, [{ name: "claims", no: 1, kind: "message", repeated: true, message: Claim }]),
    NodePrepareResourcesResponse: msg(`${ns}.NodePrepareResourcesResponse`, [{ name: "claims", no: 1, kind: "map", message: NodePrepareResourceResponse }]),
    NodeUnprepareResourcesRequest: msg(`${ns}.NodeUnprepareResourcesRequest`, [{ name: "claims", no: 1, kind: "message", repeated: true, message: Claim }]),
    NodeUnprepareResourcesResponse: msg(`${ns}.NodeUnprepareResourcesResponse`, [{ name: "claims", no: 1, kind: "map", message: NodeUnprepareResourceResponse }]),
  };
}
export const draV1Messages = draMessages("v1");
export const draV1beta1Messages = draMessages("v1beta1");

// ---- DRAResourceHealth v1 / v1alpha1 (same messages, package differs) ------------------------

export const HEALTH_STATUS: EnumSpec = { names: ["UNKNOWN", "HEALTHY", "UNHEALTHY"] };

function healthMessages(pkg: "v1" | "v1alpha1"): Record<string, MessageSpec> {
  const DeviceIdentifier = msg(`${pkg}.DeviceIdentifier`, [str("pool_name", 1), str("device_name", 2)]);
  const DeviceHealth = msg(`${pkg}.DeviceHealth`, [
    { name: "device", no: 1, kind: "message", message: DeviceIdentifier },
    { name: "health", no: 2, kind: "enum", enumType: HEALTH_STATUS },
    { name: "last_updated_time", no: 3, kind: "int64" },
    { name: "health_check_timeout_seconds", no: 4, kind: "int64" },
    str("message", 5),
  ]);
  return {
    NodeWatchResourcesRequest: msg(`${pkg}.NodeWatchResourcesRequest`, []),
    DeviceIdentifier,
    DeviceHealth,
    NodeWatchResourcesResponse: msg(`${pkg}.NodeWatchResourcesResponse`, [{ name: "devices", no: 1, kind: "message", repeated: true, message: DeviceHealth }]),
  };
}
export const healthV1Messages = healthMessages("v1");
export const healthV1alpha1Messages = healthMessages("v1alpha1");

/** Every message table by proto file key (as protos.ts's PROTO_FILES), for the differential test. */
export const KUBELET_MESSAGES = {
  registration: registrationMessages,
  v1: draV1Messages,
  v1beta1: draV1beta1Messages,
  healthV1: healthV1Messages,
  healthV1alpha1: healthV1alpha1Messages,
} as const;

// ---- service definitions ---------------------------------------------------------------------

interface MethodSpec {
  readonly name: string;
  readonly request: MessageSpec;
  readonly response: MessageSpec;
  readonly responseStream?: boolean;
}

function need(table: Record<string, MessageSpec>, name: string): MessageSpec {
  const m = table[name];
  if (!m) throw new Error(`kubelet message ${name} missing from its table`);
  return m;
}

/** The shape proto-loader gave grpc-js: path, streaming flags, (de)serializers, originalName. */
function serviceDefinition(service: string, methods: MethodSpec[], defaults: boolean): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const m of methods) {
    def[m.name] = {
      path: `/${service}/${m.name}`,
      requestStream: false,
      responseStream: m.responseStream ?? false,
      requestSerialize: (o: unknown) => encodeMessage(m.request, o),
      requestDeserialize: (b: Buffer) => decodeMessage(m.request, b, defaults),
      responseSerialize: (o: unknown) => encodeMessage(m.response, o),
      responseDeserialize: (b: Buffer) => decodeMessage(m.response, b, defaults),
      originalName: m.name.charAt(0).toLowerCase() + m.name.slice(1),
    };
  }
  return def as grpc.ServiceDefinition;
}

export interface KubeletServiceDefinitions {
  registration: grpc.ServiceDefinition;
  v1: grpc.ServiceDefinition;
  v1beta1: grpc.ServiceDefinition;
  health: { v1: grpc.ServiceDefinition; v1alpha1: grpc.ServiceDefinition };
}

export function kubeletServiceDefinitions(defaults: boolean): KubeletServiceDefinitions {
  const dra = (version: "v1" | "v1beta1", t: Record<string, MessageSpec>): grpc.ServiceDefinition =>
    serviceDefinition(`k8s.io.kubelet.pkg.apis.dra.${version}.DRAPlugin`, [
      { name: "NodePrepareResources", request: need(t, "NodePrepareResourcesRequest"), response: need(t, "NodePrepareResourcesResponse") },
      { name: "NodeUnprepareResources", request: need(t, "NodeUnprepareResourcesRequest"), response: need(t, "NodeUnprepareResourcesResponse") },
    ], defaults);
  const health = (pkg: "v1" | "v1alpha1", t: Record<string, MessageSpec>): grpc.ServiceDefinition =>
    serviceDefinition(`${pkg}.DRAResourceHealth`, [
      { name: "NodeWatchResources", request: need(t, "NodeWatchResourcesRequest"), response: need(t, "NodeWatchResourcesResponse"), responseStream: true },
    ], defaults);
  return {
    registration: serviceDefinition("pluginregistration.Registration", [
      { name: "GetInfo", request: registrationMessages.InfoRequest, response: registrationMessages.PluginInfo },
      { name: "NotifyRegistrationStatus", request: registrationMessages.RegistrationStatus, response: registrationMessages.RegistrationStatusResponse },
    ], defaults),
    v1: dra("v1", draV1Messages),
    v1beta1: dra("v1beta1", draV1beta1Messages),
    health: { v1: health("v1", healthV1Messages), v1alpha1: health("v1alpha1", healthV1alpha1Messages) },
  };
}
