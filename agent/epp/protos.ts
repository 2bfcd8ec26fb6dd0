// Envoy's ext_proc v3 and gRPC health v1 as typed in protos/ (envoy/…, grpc/health/v1/…), loaded
// with @grpc/proto-loader (keepCase: envoy's snake_case names; oneofs: the name of the set member
// in `request` / `response`). The wire shapes the picker reads and writes, and a small client
// (tests, the bench and `diag`-style checks act as Envoy with it).
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protosDir } from "../plugin/protos.js";

export const EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor";
export const HEALTH_SERVICE = "grpc.health.v1.Health";
export const EXT_PROC_FILE = "envoy/service/ext_proc/v3/external_processor.proto";
export const HEALTH_FILE = "grpc/health/v1/health.proto";

// ---- wire shapes (snake_case as on the wire) ----------------------------------------------------

export interface WireHeaderValue {
  key: string;
  value?: string;
  raw_value?: Uint8Array;
}
export interface WireHeaderMap {
  headers?: WireHeaderValue[];
}
/** google.protobuf.Value / Struct, as proto-loader decodes and encodes them: protobufjs ships
 *  the well-known types with camelCase field names, whatever keepCase says. */
export interface WireValue {
  nullValue?: "NULL_VALUE" | 0;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  structValue?: WireStruct;
  listValue?: { values?: WireValue[] };
  kind?: string;
}
export interface WireStruct {
  fields?: Record<string, WireValue>;
}
export type BodySendMode = "NONE" | "STREAMED" | "BUFFERED" | "BUFFERED_PARTIAL" | "FULL_DUPLEX_STREAMED";
export interface WireHttpHeaders {
  headers?: WireHeaderMap;
  end_of_stream?: boolean;
}
export interface WireHttpBody {
  body?: Uint8Array;
  end_of_stream?: boolean;
}
export interface ProcessingRequest {
  request?: "request_headers" | "response_headers" | "request_body" | "response_body" | "request_trailers" | "response_trailers";
  request_headers?: WireHttpHeaders;
  response_headers?: WireHttpHeaders;
  request_body?: WireHttpBody;
  response_body?: WireHttpBody;
  request_trailers?: { trailers?: WireHeaderMap };
  response_trailers?: { trailers?: WireHeaderMap };
  metadata_context?: { filter_metadata?: Record<string, WireStruct> };
  observability_mode?: boolean;
  protocol_config?: { request_body_mode?: BodySendMode; response_body_mode?: BodySendMode; send_body_without_waiting_for_header_response?: boolean };
}
export interface WireHeaderValueOption {
  header: { key: string; raw_value: Uint8Array };
  append_action?: "APPEND_IF_EXISTS_OR_ADD" | "ADD_IF_ABSENT" | "OVERWRITE_IF_EXISTS_OR_ADD" | "OVERWRITE_IF_EXISTS";
}
export interface WireHeaderMutation {
  set_headers?: WireHeaderValueOption[];
  remove_headers?: string[];
}
export interface WireCommonResponse {
  status?: "CONTINUE" | "CONTINUE_AND_REPLACE";
  header_mutation?: WireHeaderMutation;
  body_mutation?: { body?: Uint8Array; clear_body?: boolean; streamed_response?: { body: Uint8Array; end_of_stream: boolean } };
  clear_route_cache?: boolean;
}
export interface ProcessingResponse {
  response?: string;
  request_headers?: { response?: WireCommonResponse };
  response_headers?: { response?: WireCommonResponse };
  request_body?: { response?: WireCommonResponse };
  response_body?: { response?: WireCommonResponse };
  request_trailers?: { header_mutation?: WireHeaderMutation };
  response_trailers?: { header_mutation?: WireHeaderMutation };
  immediate_response?: { status: { code: string | number }; headers?: WireHeaderMutation; body?: Uint8Array; details?: string };
  dynamic_metadata?: WireStruct;
}

// ---- loading --------------------------------------------------------------------------------------

export interface EppProtos {
  extProc: grpc.ServiceDefinition;
  health: grpc.ServiceDefinition;
  /** The raw package definitions (clients and the field-number test). */
  packages: { extProc: protoLoader.PackageDefinition; health: protoLoader.PackageDefinition };
}

let loaded: EppProtos | undefined;

export function loadEppProtos(): EppProtos {
  if (loaded) return loaded;
  const options: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: false, arrays: true, oneofs: true, includeDirs: [protosDir()] };
  const extProc = protoLoader.loadSync(path.join(protosDir(), EXT_PROC_FILE), options);
  const health = protoLoader.loadSync(path.join(protosDir(), HEALTH_FILE), options);
  const ep = extProc[EXT_PROC_SERVICE];
  const hs = health[HEALTH_SERVICE];
  if (!ep || !("Process" in ep) || !hs || !("Check" in hs)) throw new Error("ext_proc or health service missing from protos");
  loaded = { extProc: ep as grpc.ServiceDefinition, health: hs as grpc.ServiceDefinition, packages: { extProc, health } };
  return loaded;
}

// ---- helpers --------------------------------------------------------------------------------------

/** Header value as text: ext_proc puts it in raw_value (bytes); older senders in value. */
export function headerText(h: WireHeaderValue): string {
  if (h.raw_value && h.raw_value.length > 0) return Buffer.from(h.raw_value).toString("latin1");
  return h.value ?? "";
}

/** google.protobuf.Value -> plain JS (strings, numbers, bools, lists, objects). */
export function fromValue(v: WireValue | undefined): unknown {
  if (!v) return undefined;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.numberValue !== undefined) return v.numberValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.listValue !== undefined) return (v.listValue.values ?? []).map(fromValue);
  if (v.structValue !== undefined) return fromStruct(v.structValue);
  return null;
}

export function fromStruct(s: WireStruct | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s?.fields ?? {})) out[k] = fromValue(v);
  return out;
}

/** Plain strings / nested records -> google.protobuf.Struct. */
export function toStruct(obj: Record<string, string | Record<string, string>>): WireStruct {
  const fields: Record<string, WireValue> = {};
  for (const [k, v] of Object.entries(obj)) fields[k] = typeof v === "string" ? { stringValue: v } : { structValue: toStruct(v) };
  return { fields };
}

export function setHeader(key: string, value: string): WireHeaderValueOption {
  return { header: { key, raw_value: Buffer.from(value, "latin1") }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" };
}

// ---- a client acting as Envoy ---------------------------------------------------------------------

export interface ExtProcStream {
  write(msg: ProcessingRequest): void;
  /** The next response, or undefined when the server ended the stream. Rejects on a gRPC error. */
  next(): Promise<ProcessingResponse | undefined>;
  end(): void;
  cancel(): void;
  /** Resolves with the status once the call is over (OK or the error). */
  status: Promise<grpc.StatusObject>;
}

export interface ExtProcClient {
  process(): ExtProcStream;
  check(service: string): Promise<string>;
  close(): void;
}

export function createExtProcClient(target: string): ExtProcClient {
  const protos = loadEppProtos();
  const Proc = grpc.makeGenericClientConstructor(protos.extProc, "ExternalProcessor");
  const Health = grpc.makeGenericClientConstructor(protos.health, "Health");
  const proc = new Proc(target, grpc.credentials.createInsecure());
  const health = new Health(target, grpc.credentials.createInsecure(), { channelOverride: proc.getChannel() as grpc.Channel });
  type Duplex = grpc.ClientDuplexStream<ProcessingRequest, ProcessingResponse>;
  return {
    process() {
      const call = (proc as unknown as { Process(): Duplex }).Process();
      const queue: ProcessingResponse[] = [];
      const waiters: { resolve(v: ProcessingResponse | undefined): void; reject(e: unknown): void }[] = [];
      let ended = false;
      let failure: unknown;
      call.on("data", (m: ProcessingResponse) => {
        const w = waiters.shift();
        if (w) w.resolve(m);
        else queue.push(m);
      });
      const finish = (): void => {
        ended = true;
        for (const w of waiters.splice(0)) failure ? w.reject(failure) : w.resolve(undefined);
      };
      call.on("end", finish);
      call.on("error", (err) => {
        failure = err;
        finish();
      });
      const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
      return {
        write: (msg) => void call.write(msg),
        next: () => {
          const m = queue.shift();
          if (m) return Promise.resolve(m);
          if (ended) return failure ? Promise.reject(failure) : Promise.resolve(undefined);
          return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
        },
        end: () => call.end(),
        cancel: () => call.cancel(),
        status,
      };
    },
    check(service) {
      return new Promise((resolve, reject) => {
        (health as unknown as { Check(req: { service: string }, cb: (err: grpc.ServiceError | null, res: { status: string }) => void): void }).Check({ service }, (err, res) => (err ? reject(err) : resolve(res.status ?? "UNKNOWN")));
      });
    },
    close() {
      proc.close();
    },
  };
}
