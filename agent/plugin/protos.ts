// The kubelet's wire contracts: typed service definitions for protos/*.proto (field names are
// the upstream snake_case ones), built from the codec tables in kubelet-messages.ts, which decode
// to exactly what @grpc/proto-loader gave. proto-loader itself (protobufjs: ~300 ms and ~10 MiB
// of the agent's start) is loaded only by loadKubeletPackages(), for the tests that read the
// .proto files. The one place that knows where the .proto files live and how they are decoded.
import { existsSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import type * as protoLoader from "@grpc/proto-loader";
import { kubeletServiceDefinitions } from "./kubelet-messages.js";

export const DRA_V1_SERVICE = "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin";
export const DRA_V1BETA1_SERVICE = "k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin";
export const REGISTRATION_SERVICE = "pluginregistration.Registration";
/** DRAResourceHealth services by API version; the names are also what registration advertises. */
export const HEALTH_SERVICES = { v1: "v1.DRAResourceHealth", v1alpha1: "v1alpha1.DRAResourceHealth" } as const;
export type HealthApiVersion = keyof typeof HEALTH_SERVICES;

// ---- wire message shapes (snake_case as on the wire) -------------------------------------------

export interface WireClaim {
  namespace: string;
  uid: string;
  name: string;
}
export interface WireDevice {
  request_names: string[];
  pool_name: string;
  device_name: string;
  cdi_device_ids: string[];
  /** v1 only; the key is absent when the allocation has no shareID. */
  share_id?: string;
}
export interface WirePrepareResponse {
  devices: WireDevice[];
  error: string;
}
export interface NodePrepareResourcesRequest {
  claims: WireClaim[];
}
export interface NodePrepareResourcesResponse {
  claims: Record<string, WirePrepareResponse>;
}
export interface NodeUnprepareResourcesRequest {
  claims: WireClaim[];
}
export interface NodeUnprepareResourcesResponse {
  claims: Record<string, { error: string }>;
}
export interface PluginInfo {
  type: string;
  name: string;
  endpoint: string;
  supported_versions: string[];
}
export interface RegistrationStatus {
  plugin_registered: boolean;
  error: string;
}

/** Finds <repo>/protos from dist/agent/plugin or agent/plugin alike. */
export function protosDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = path.join(dir, "protos");
    if (existsSync(path.join(candidate, "pluginregistration.proto"))) return candidate;
    dir = path.dirname(dir);
  }
  throw new Error("protos/ directory not found next to the installed package");
}

export const PROTO_FILES = {
  registration: "pluginregistration.proto",
  v1: "dra-v1.proto",
  v1beta1: "dra-v1beta1.proto",
  healthV1: "dra-health-v1.proto",
  healthV1alpha1: "dra-health-v1alpha1.proto",
} as const;

/**
 * The .proto files parsed by @grpc/proto-loader with the options the codec reproduces (keepCase,
 * longs String, enums String, arrays, no virtual oneof keys): the field-number test and the
 * differential test's oracle. Imported lazily so the agent never loads protobufjs.
 */
export async function loadProto(file: string, opts: { defaults?: boolean } = {}): Promise<protoLoader.PackageDefinition> {
  const loader = await import("@grpc/proto-loader");
  return loader.loadSync(path.join(protosDir(), file), {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: opts.defaults ?? true,
    arrays: true,
    oneofs: false, // no virtual "_share_id" keys in decoded messages
  });
}

export type KubeletPackages = Record<keyof typeof PROTO_FILES, protoLoader.PackageDefinition>;

/** All five .proto files through proto-loader (tests only). */
export async function loadKubeletPackages(opts: { defaults?: boolean } = {}): Promise<KubeletPackages> {
  return {
    registration: await loadProto(PROTO_FILES.registration, opts),
    v1: await loadProto(PROTO_FILES.v1, opts),
    v1beta1: await loadProto(PROTO_FILES.v1beta1, opts),
    healthV1: await loadProto(PROTO_FILES.healthV1, opts),
    healthV1alpha1: await loadProto(PROTO_FILES.healthV1alpha1, opts),
  };
}

/**
 * Server side decodes with defaults (missing repeated fields become [], missing strings "").
 * `defaults: false` is for clients that must see which keys were really on the wire (share_id
 * presence).
 */
export interface KubeletProtos {
  registration: grpc.ServiceDefinition;
  v1: grpc.ServiceDefinition;
  v1beta1: grpc.ServiceDefinition;
  health: Record<HealthApiVersion, grpc.ServiceDefinition>;
}

// Built once per decoding mode: `diag ping` (the liveness probe) builds two clients per run.
const loaded = new Map<boolean, KubeletProtos>();

export function loadKubeletProtos(opts: { defaults?: boolean } = {}): KubeletProtos {
  const key = opts.defaults ?? true;
  let protos = loaded.get(key);
  if (!protos) loaded.set(key, (protos = kubeletServiceDefinitions(key)));
  return protos;
}

// ---- a minimal client, used by `diag`, the bench and the tests (acting as the kubelet) ----------

type Unary<Req, Res> = (req: Req, deadlineMs?: number) => Promise<Res>;

export interface DraClient {
  prepare: Unary<NodePrepareResourcesRequest, NodePrepareResourcesResponse>;
  unprepare: Unary<NodeUnprepareResourcesRequest, NodeUnprepareResourcesResponse>;
  close(): void;
}
export interface RegistrationClient {
  getInfo: Unary<Record<string, never>, PluginInfo>;
  notify: Unary<RegistrationStatus, Record<string, never>>;
  close(): void;
}

function unary<Req, Res>(client: grpc.Client, method: string, defaultDeadlineMs: number, waitForReady = false): Unary<Req, Res> {
  type Call = (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: Res) => void) => void;
  const fn = (client as unknown as Record<string, Call | undefined>)[method];
  if (typeof fn !== "function") throw new Error(`gRPC method ${method} missing`);
  return (req, deadlineMs = defaultDeadlineMs) =>
    new Promise<Res>((resolve, reject) => {
      // grpc-js takes wait-for-ready as a Metadata option, not a call option.
      fn.call(client, req, new grpc.Metadata({ waitForReady }), { deadline: Date.now() + deadlineMs }, (err, res) => (err ? reject(err) : resolve(res)));
    });
}

/** `waitForReady`: a call waits (up to its deadline) for the socket to appear and answer. */
export function createDraClient(socket: string, version: "v1" | "v1beta1" = "v1", opts: { defaults?: boolean; deadlineMs?: number; waitForReady?: boolean } = {}): DraClient {
  const def = loadKubeletProtos(opts)[version];
  const Ctor = grpc.makeGenericClientConstructor(def, `DRAPlugin${version}`);
  const client = new Ctor(`unix:${socket}`, grpc.credentials.createInsecure());
  const d = opts.deadlineMs ?? 10_000;
  return {
    prepare: unary(client, "NodePrepareResources", d, opts.waitForReady),
    unprepare: unary(client, "NodeUnprepareResources", d, opts.waitForReady),
    close: () => client.close(),
  };
}

export function createRegistrationClient(socket: string, opts: { deadlineMs?: number } = {}): RegistrationClient {
  const def = loadKubeletProtos().registration;
  const Ctor = grpc.makeGenericClientConstructor(def, "Registration");
  const client = new Ctor(`unix:${socket}`, grpc.credentials.createInsecure());
  const d = opts.deadlineMs ?? 10_000;
  return { getInfo: unary(client, "GetInfo", d), notify: unary(client, "NotifyRegistrationStatus", d), close: () => client.close() };
}

export interface HealthMessage {
  devices: { device: { pool_name: string; device_name: string }; health: string; last_updated_time: string; health_check_timeout_seconds: string; message: string }[];
}

export interface HealthWatch {
  /** Every message of the stream, in order (decoded with defaults: enums as their names). */
  messages: AsyncIterable<HealthMessage>;
  /** Cancels the stream, as the kubelet does when it drops a plugin. */
  cancel(): void;
  close(): void;
}

/** NodeWatchResources as the kubelet calls it (tests, diag). */
export function watchHealth(socket: string, version: HealthApiVersion = "v1"): HealthWatch {
  const def = loadKubeletProtos().health[version];
  const Ctor = grpc.makeGenericClientConstructor(def, `DRAResourceHealth${version}`);
  const client = new Ctor(`unix:${socket}`, grpc.credentials.createInsecure());
  const fn = (client as unknown as Record<string, (req: unknown) => grpc.ClientReadableStream<never>>).NodeWatchResources as (req: unknown) => grpc.ClientReadableStream<never>;
  const call = fn.call(client, {});
  call.on("error", () => undefined); // a cancel ends the iteration; the status is not an error to the reader
  return { messages: call, cancel: () => call.cancel(), close: () => client.close() };
}
