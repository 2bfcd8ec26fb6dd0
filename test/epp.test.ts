// `tessera epp` over real gRPC: an ext_proc client built from protos/ acts as Envoy against the
// picker and mock vLLM replicas. Field numbers pinned; header-only, BUFFERED and
// FULL_DUPLEX_STREAMED requests, chat and completions; no endpoint (503), shedding (429), body
// limit (413); subset hints; cancelled streams; the served-endpoint read-back; prefix affinity;
// two uncoordinated pickers agreeing on cold prefixes; health; /metrics; the InferencePool source
// on every node; the CLI's flag checks.
import t from "tap";
import * as grpc from "@grpc/grpc-js";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "undici";
import { KubeConfig } from "@kubernetes/client-node";
import { startEpp, type EppOptions, type RunningEpp } from "../agent/epp/server.js";
import { createExtProcClient, loadEppProtos, fromStruct, headerText, type ExtProcClient, type ExtProcStream, type ProcessingRequest, type ProcessingResponse } from "../agent/epp/protos.js";
import { MAX_STREAMED_CHUNK } from "../agent/epp/stream.js";
import { startMockModelServer, type MockModelServer } from "../agent/proxy/index.js";
import { createInferencePoolSource } from "../agent/endpoints/inference-pool.js";
import { parseFlags, EPP_FLAGS } from "../agent/common/config.js";
import { eppOptionsFromArgs } from "../agent/cli/epp.js";
import { until } from "./support/until.js";
import { startFakeApiServer } from "./support/fake-apiserver.js";

interface Rig {
  mocks: MockModelServer[];
  epp: RunningEpp;
  client: ExtProcClient;
}

async function rig(t: { teardown(fn: () => Promise<void>): void }, n: number, opts: Partial<EppOptions> = {}): Promise<Rig> {
  const mocks = await Promise.all(Array.from({ length: n }, () => startMockModelServer({})));
  const epp = await startEpp({ listen: "127.0.0.1:0", endpoints: mocks.map((m) => m.url), ...opts });
  const client = createExtProcClient(epp.target);
  t.teardown(async () => {
    client.close();
    await epp.stop();
    await Promise.all(mocks.map((m) => m.close()));
  });
  return { mocks, epp, client };
}

const hv = (key: string, value: string) => ({ key, raw_value: Buffer.from(value) });
const headers = (method: string, path: string, eos = false, extra: Record<string, string> = {}): ProcessingRequest => ({
  request_headers: { headers: { headers: [hv(":method", method), hv(":path", path), hv(":authority", "gw"), hv("content-type", "application/json"), ...Object.entries(extra).map(([k, v]) => hv(k, v))] }, end_of_stream: eos },
});
const withMode = (m: ProcessingRequest, mode: "BUFFERED" | "FULL_DUPLEX_STREAMED" | "STREAMED"): ProcessingRequest => ({ ...m, protocol_config: { request_body_mode: mode, response_body_mode: "NONE" } });
const completion = (prompt: string) => JSON.stringify({ model: "m", prompt, max_tokens: 4 });
const chat = (system: string, user: string) => JSON.stringify({ model: "m", messages: [{ role: "system", content: system }, { role: "user", content: user }] });

/** The routing header of a headers (or buffered body) answer, and its envoy.lb metadata. */
function destination(r: ProcessingResponse | undefined): { header: string | undefined; metadata: unknown } {
  const common = r?.request_headers?.response ?? r?.request_body?.response;
  const set = common?.header_mutation?.set_headers ?? [];
  const h = set.find((o) => o.header.key === "x-gateway-destination-endpoint");
  const lb = r?.dynamic_metadata ? (fromStruct(r.dynamic_metadata)["envoy.lb"] as Record<string, unknown> | undefined) : undefined;
  return { header: h ? headerText(h.header) : undefined, metadata: lb?.["x-gateway-destination-endpoint"] };
}

/** One full-duplex request: headers, body in chunks, returns the answers up to the last body echo. */
async function duplex(client: ExtProcClient, path: string, body: string, chunk = MAX_STREAMED_CHUNK, meta?: ProcessingRequest["metadata_context"]): Promise<{ stream: ExtProcStream; first: ProcessingResponse; echoed: Buffer; chunks: number[] }> {
  const s = client.process();
  s.write({ ...withMode(headers("POST", path), "FULL_DUPLEX_STREAMED"), metadata_context: meta });
  const bytes = Buffer.from(body);
  for (let off = 0; off < bytes.length; off += chunk) s.write({ request_body: { body: bytes.subarray(off, off + chunk), end_of_stream: off + chunk >= bytes.length } });
  const first = await s.next();
  if (!first) throw new Error("stream ended without an answer");
  if (first.immediate_response) return { stream: s, first, echoed: Buffer.alloc(0), chunks: [] };
  const parts: Buffer[] = [];
  const sizes: number[] = [];
  for (;;) {
    const r = await s.next();
    const sr = r?.request_body?.response?.body_mutation?.streamed_response;
    if (!sr) throw new Error(`expected a streamed body answer, got ${JSON.stringify(r)?.slice(0, 200)}`);
    parts.push(Buffer.from(sr.body ?? []));
    sizes.push(sr.body?.length ?? 0);
    if (sr.end_of_stream) break;
  }
  return { stream: s, first, echoed: Buffer.concat(parts), chunks: sizes };
}


async function finish(s: ExtProcStream): Promise<number> {
  s.end();
  return (await s.status).code;
}

t.test("protos: ext_proc v3, base, http_status, processing_mode and health field numbers are envoy's", async (t) => {
  const { extProc, health } = loadEppProtos().packages;
  const fields = (pkg: Record<string, unknown>, msg: string): string[] => {
    const def = pkg[msg] as { type: { field: { name: string; number: number; label: string }[] } } | undefined;
    if (!def) return [`missing ${msg}`];
    return def.type.field.map((f) => `${f.name}=${f.number}${f.label === "LABEL_REPEATED" ? " repeated" : ""}`);
  };
  const ns = "envoy.service.ext_proc.v3";
  t.same(fields(extProc, `${ns}.ProcessingRequest`), ["request_headers=2", "response_headers=3", "request_body=4", "response_body=5", "request_trailers=6", "response_trailers=7", "metadata_context=8", "attributes=9 repeated", "observability_mode=10", "protocol_config=11"]);
  t.same(fields(extProc, `${ns}.ProcessingResponse`), ["request_headers=1", "response_headers=2", "request_body=3", "response_body=4", "request_trailers=5", "response_trailers=6", "immediate_response=7", "dynamic_metadata=8", "mode_override=9", "override_message_timeout=10"]);
  t.same(fields(extProc, `${ns}.ProtocolConfiguration`), ["request_body_mode=1", "response_body_mode=2", "send_body_without_waiting_for_header_response=3"]);
  t.same(fields(extProc, `${ns}.HttpHeaders`), ["headers=1", "attributes=2 repeated", "end_of_stream=3"]);
  t.same(fields(extProc, `${ns}.HttpBody`), ["body=1", "end_of_stream=2"]);
  t.same(fields(extProc, `${ns}.HttpTrailers`), ["trailers=1"]);
  t.same(fields(extProc, `${ns}.HeadersResponse`), ["response=1"]);
  t.same(fields(extProc, `${ns}.BodyResponse`), ["response=1"]);
  t.same(fields(extProc, `${ns}.TrailersResponse`), ["header_mutation=1"]);
  t.same(fields(extProc, `${ns}.CommonResponse`), ["status=1", "header_mutation=2", "body_mutation=3", "trailers=4", "clear_route_cache=5"]);
  t.same(fields(extProc, `${ns}.ImmediateResponse`), ["status=1", "headers=2", "body=3", "grpc_status=4", "details=5"]);
  t.same(fields(extProc, `${ns}.GrpcStatus`), ["status=1"]);
  t.same(fields(extProc, `${ns}.HeaderMutation`), ["set_headers=1 repeated", "remove_headers=2 repeated"]);
  t.same(fields(extProc, `${ns}.StreamedBodyResponse`), ["body=1", "end_of_stream=2"]);
  t.same(fields(extProc, `${ns}.BodyMutation`), ["body=1", "clear_body=2", "streamed_response=3"]);
  t.same(fields(extProc, "envoy.config.core.v3.HeaderValue"), ["key=1", "value=2", "raw_value=3"]);
  t.same(fields(extProc, "envoy.config.core.v3.HeaderValueOption"), ["header=1", "append=2", "append_action=3", "keep_empty_value=4"]);
  t.same(fields(extProc, "envoy.config.core.v3.HeaderMap"), ["headers=1 repeated"]);
  t.same(fields(extProc, "envoy.config.core.v3.Metadata"), ["filter_metadata=1 repeated", "typed_filter_metadata=2 repeated"]);
  t.same(fields(extProc, "envoy.type.v3.HttpStatus"), ["code=1"]);
  t.same(fields(extProc, "envoy.extensions.filters.http.ext_proc.v3.ProcessingMode"), ["request_header_mode=1", "response_header_mode=2", "request_body_mode=3", "response_body_mode=4", "request_trailer_mode=5", "response_trailer_mode=6"]);
  type EnumDesc = { name: string; value: { name: string; number: number }[] };
  // top-level enums are their own entries; nested ones live in their message's descriptor
  const enumValues = (pkg: Record<string, unknown>, name: string): Record<string, number> => {
    const top = pkg[name] as { type: EnumDesc } | undefined;
    const parent = name.slice(0, name.lastIndexOf("."));
    const nested = (pkg[parent] as { type: { enumType: EnumDesc[] } } | undefined)?.type.enumType.find((e) => e.name === name.slice(parent.length + 1));
    const def = top?.type ?? nested;
    return def ? Object.fromEntries(def.value.map((v) => [v.name, v.number])) : { missing: -1 };
  };
  t.same(enumValues(extProc, "envoy.extensions.filters.http.ext_proc.v3.ProcessingMode.BodySendMode"), { NONE: 0, STREAMED: 1, BUFFERED: 2, BUFFERED_PARTIAL: 3, FULL_DUPLEX_STREAMED: 4 });
  t.same(enumValues(extProc, "envoy.config.core.v3.HeaderValueOption.HeaderAppendAction"), { APPEND_IF_EXISTS_OR_ADD: 0, ADD_IF_ABSENT: 1, OVERWRITE_IF_EXISTS_OR_ADD: 2, OVERWRITE_IF_EXISTS: 3 });
  const codes = enumValues(extProc, "envoy.type.v3.StatusCode");
  t.same([codes.TooManyRequests, codes.ServiceUnavailable, codes.PayloadTooLarge, codes.BadRequest], [429, 503, 413, 400]);
  t.same(enumValues(extProc, `${ns}.CommonResponse.ResponseStatus`), { CONTINUE: 0, CONTINUE_AND_REPLACE: 1 });
  const svc = extProc[`${ns}.ExternalProcessor`] as Record<string, { path: string; requestStream: boolean; responseStream: boolean }>;
  t.same(Object.values(svc).map((m) => [m.path, m.requestStream, m.responseStream]), [[`/${ns}.ExternalProcessor/Process`, true, true]]);
  t.same(fields(health, "grpc.health.v1.HealthCheckRequest"), ["service=1"]);
  t.same(fields(health, "grpc.health.v1.HealthCheckResponse"), ["status=1"]);
  t.same(enumValues(health, "grpc.health.v1.HealthCheckResponse.ServingStatus"), { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 });
  const hs = health["grpc.health.v1.Health"] as Record<string, { path: string }>;
  t.same(Object.values(hs).map((m) => m.path), ["/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"]);
});

t.test("header-only request: decided on the headers, least busy endpoint, header and envoy.lb metadata agree", async (t) => {
  const { mocks, client } = await rig(t, 2);
  const s = client.process();
  s.write(headers("GET", "/v1/models", true));
  const r = await s.next();
  const d = destination(r);
  t.ok(mocks.some((m) => m.id === d.header), `a pool endpoint (${d.header})`);
  t.equal(d.metadata, d.header, "envoy.lb x-gateway-destination-endpoint carries the same ip:port");
  t.equal(r?.request_headers?.response?.clear_route_cache, true, "route cache cleared: the header changes the upstream");
  t.equal(await finish(s), grpc.status.OK);
});

t.test("BUFFERED: headers answered at once, the decision rides on the body answer", async (t) => {
  const { mocks, client } = await rig(t, 3);
  const s = client.process();
  s.write(withMode(headers("POST", "/v1/completions"), "BUFFERED"));
  const h = await s.next();
  t.same(Object.keys(h ?? {}).filter((k) => k !== "response"), ["request_headers"], "headers: CONTINUE");
  t.equal(destination(h).header, undefined, "no decision before the body");
  s.write({ request_body: { body: Buffer.from(completion("buffered prompt ".repeat(40))), end_of_stream: true } });
  const b = await s.next();
  const d = destination(b);
  t.ok(mocks.some((m) => m.id === d.header), "body answer names a pool endpoint");
  t.equal(d.metadata, d.header);
  t.equal(b?.request_body?.response?.body_mutation, undefined, "BUFFERED body is not replaced");
  t.equal(await finish(s), grpc.status.OK);
});

t.test("FULL_DUPLEX_STREAMED: a 220 KB chat body in 62,000-byte chunks, decided at its end, echoed unchanged", async (t) => {
  const { mocks, client } = await rig(t, 3);
  const body = chat("You are a careful assistant. ".repeat(200), "x".repeat(216_000));
  t.ok(body.length > 220_000);
  const { stream, first, echoed, chunks } = await duplex(client, "/v1/chat/completions", body);
  const d = destination(first);
  t.ok(first.request_headers, "the headers answer comes first");
  t.ok(mocks.some((m) => m.id === d.header), "names a pool endpoint");
  t.equal(d.metadata, d.header);
  t.equal(echoed.toString(), body, "body streamed back byte for byte");
  t.ok(chunks.every((n) => n <= MAX_STREAMED_CHUNK), `every echoed chunk <= 62,000 bytes (${chunks.join(", ")})`);
  t.equal(await finish(stream), grpc.status.OK);
});

t.test("FULL_DUPLEX_STREAMED: nothing is answered before the body ends; trailers end it too", async (t) => {
  const { client } = await rig(t, 2);
  const s = client.process();
  s.write(withMode(headers("POST", "/v1/completions"), "FULL_DUPLEX_STREAMED"));
  s.write({ request_body: { body: Buffer.from(completion("part one and ")), end_of_stream: false } });
  // a health call on the same channel answers while the stream is still waiting for its body
  t.equal(await client.check("liveness"), "SERVING");
  s.write({ request_trailers: { trailers: { headers: [] } } });
  const first = await s.next();
  t.ok(destination(first).header, "decided once the trailers arrive");
  const echo = await s.next();
  t.equal(echo?.request_body?.response?.body_mutation?.streamed_response?.end_of_stream, false, "the body echo leaves end_of_stream to the trailers");
  const tr = await s.next();
  t.ok(tr?.request_trailers, "then the trailers answer");
  t.equal(await finish(s), grpc.status.OK);
});

t.test("prefix affinity: the same long prefix goes to the same endpoint, chat and completions", async (t) => {
  const { client } = await rig(t, 4);
  const system = "Shared system prompt about the company handbook. ".repeat(30);
  const seen = new Set<string>();
  for (let i = 0; i < 6; i++) {
    const { stream, first } = await duplex(client, "/v1/chat/completions", chat(system, `question ${i}`));
    seen.add(destination(first).header ?? "none");
    await finish(stream);
  }
  t.equal(seen.size, 1, `one endpoint for one shared chat prefix (${[...seen].join(", ")})`);
  const prompts = new Set<string>();
  const doc = "A long shared document for completions. ".repeat(40);
  for (let i = 0; i < 6; i++) {
    const { stream, first } = await duplex(client, "/v1/completions", completion(doc + `suffix ${i}`));
    prompts.add(destination(first).header ?? "none");
    await finish(stream);
  }
  t.equal(prompts.size, 1, "one endpoint for one shared completions prefix");
});

t.test("--fallbacks: primary,fb1,fb2 in the header and envoy.lb metadata, distinct, next-best by the same scores", async (t) => {
  const { mocks, client, epp } = await rig(t, 4, { fallbacks: 2 });
  const ids = mocks.map((m) => m.id);
  const system = "A fallback-list system prompt about the travel policy. ".repeat(30);
  const { stream, first } = await duplex(client, "/v1/chat/completions", chat(system, "first question"));
  const d = destination(first);
  const list = (d.header ?? "").split(",");
  t.equal(list.length, 3, `three endpoints (${d.header})`);
  t.equal(new Set(list).size, 3, "distinct");
  t.ok(list.every((e) => ids.includes(e)), "all of the pool");
  t.equal(d.metadata, d.header, "the metadata carries the same list");
  const [primary, fb1, fb2] = list as [string, string, string];
  t.equal(epp.endpoints.byId.get(primary)?.state.inFlight, 1, "the primary holds the request in flight");
  t.same([fb1, fb2].map((e) => epp.endpoints.byId.get(e)?.state.inFlight), [0, 0], "the fallbacks do not");
  t.ok(epp.router.indexedBlocks(primary) > 0, "the prompt is indexed on the primary");
  t.same([fb1, fb2].map((e) => epp.router.indexedBlocks(e)), [0, 0], "and not on the fallbacks (scored, not routed)");
  await finish(stream);
  // next-best by the same scores: with the primary gone from the subset, the picker chooses fb1
  const without = ids.filter((e) => e !== primary);
  const hint = { filter_metadata: { "envoy.lb.subset_hint": { fields: { "x-gateway-destination-endpoint-subset": { stringValue: without.join(",") } } } } };
  const again = await duplex(client, "/v1/chat/completions", chat(system, "second question"), MAX_STREAMED_CHUNK, hint);
  t.equal(destination(again.first).header?.split(",")[0], fb1, "fb1 is the choice once the primary is not eligible");
  await finish(again.stream);
  // header-only requests list the least busy endpoints
  const s = client.process();
  s.write(headers("GET", "/v1/models", true));
  const h = destination(await s.next()).header?.split(",") ?? [];
  t.equal(new Set(h).size, 3, `header-only: three distinct (${h.join(",")})`);
  t.equal(await finish(s), grpc.status.OK);
});

t.test("--fallbacks larger than the pool: every other ready endpoint once", async (t) => {
  const { mocks, client } = await rig(t, 2, { fallbacks: 5 });
  const { stream, first } = await duplex(client, "/v1/completions", completion("a small pool ".repeat(30)));
  t.same((destination(first).header ?? "").split(",").sort(), mocks.map((m) => m.id).sort());
  await finish(stream);
});

t.test("no ready endpoint: ImmediateResponse 503; readiness NOT_SERVING, liveness SERVING", async (t) => {
  const mock = await startMockModelServer({});
  mock.failMetrics = true;
  const epp = await startEpp({ listen: "127.0.0.1:0", endpoints: [mock.url] });
  const client = createExtProcClient(epp.target);
  t.teardown(async () => {
    client.close();
    await epp.stop();
    await mock.close();
  });
  const { stream, first } = await duplex(client, "/v1/completions", completion("hello"));
  t.equal(Number(first.immediate_response?.status.code === "ServiceUnavailable" ? 503 : first.immediate_response?.status.code), 503, "503");
  t.equal(first.immediate_response?.details, "TESSERA_NO_ENDPOINT");
  t.match(Buffer.from(first.immediate_response?.body ?? []).toString(), /"type":"TESSERA_NO_ENDPOINT"/);
  await finish(stream);
  t.equal(await client.check("liveness"), "SERVING");
  t.equal(await client.check("readiness"), "NOT_SERVING");
  t.equal(await client.check("envoy.service.ext_proc.v3.ExternalProcessor"), "NOT_SERVING");
  await t.rejects(client.check("nope"), { code: grpc.status.NOT_FOUND }, "unknown health service: NOT_FOUND");
});

const statusCode = (r: ProcessingResponse | undefined): number => {
  const c = r?.immediate_response?.status.code;
  const names: Record<string, number> = { ServiceUnavailable: 503, TooManyRequests: 429, PayloadTooLarge: 413, BadRequest: 400 };
  return typeof c === "string" ? (names[c] ?? Number(c)) : Number(c);
};

t.test("shedding: in-flight counted per open stream, 429 with retry-after at the saturation limit, released on stream end", async (t) => {
  const { epp, client } = await rig(t, 1, { router: { saturationQueue: 2 } });
  const a = await duplex(client, "/v1/completions", completion("first"));
  const b = await duplex(client, "/v1/completions", completion("second"));
  t.ok(destination(a.first).header && destination(b.first).header, "two requests in flight");
  t.equal(epp.endpoints.states()[0]?.inFlight, 2, "both counted in flight");
  const c = await duplex(client, "/v1/completions", completion("third"));
  t.equal(statusCode(c.first), 429, "the third is shed");
  t.ok(c.first.immediate_response?.headers?.set_headers?.some((h) => h.header.key === "retry-after"), "with retry-after");
  await finish(c.stream);
  await finish(a.stream);
  t.equal(epp.endpoints.states()[0]?.inFlight, 1, "a finished stream releases its endpoint");
  const d = await duplex(client, "/v1/completions", completion("fourth"));
  t.ok(destination(d.first).header, "room again");
  await finish(b.stream);
  await finish(d.stream);
  t.equal(epp.endpoints.states()[0]?.inFlight, 0);
});

t.test("served read-back: x-gateway-destination-endpoint-served moves the in-flight count (header or envoy.lb metadata)", async (t) => {
  const { mocks, epp, client } = await rig(t, 2);
  const inflight = (id: string) => epp.endpoints.byId.get(id)?.state.inFlight;
  for (const via of ["header", "metadata"] as const) {
    const { stream, first } = await duplex(client, "/v1/completions", completion(`served ${via}`));
    const picked = destination(first).header as string;
    const other = mocks.map((m) => m.id).find((id) => id !== picked) as string;
    t.equal(inflight(picked), 1, `${via}: counted on the picked endpoint`);
    const resp: ProcessingRequest = via === "header"
      ? { response_headers: { headers: { headers: [hv(":status", "200"), hv("x-gateway-destination-endpoint-served", other)] } } }
      : { response_headers: { headers: { headers: [hv(":status", "200")] } }, metadata_context: { filter_metadata: { "envoy.lb": { fields: { "x-gateway-destination-endpoint-served": { stringValue: other } } } } } };
    stream.write(resp);
    const r = await stream.next();
    t.ok(r?.response_headers, `${via}: response headers answered (CONTINUE)`);
    t.equal(inflight(picked), 0, `${via}: moved off the picked endpoint`);
    t.equal(inflight(other), 1, `${via}: onto the one that served (a gateway fallback)`);
    await finish(stream);
    t.equal(inflight(other), 0, `${via}: released at the end of the exchange`);
  }
});

t.test("subset hint: only the endpoints in envoy.lb.subset_hint are eligible; none of them ready is a 503", async (t) => {
  const { mocks, client } = await rig(t, 4);
  const only = [mocks[1]?.id as string, mocks[3]?.id as string];
  const asList = { filter_metadata: { "envoy.lb.subset_hint": { fields: { "x-gateway-destination-endpoint-subset": { listValue: { values: only.map((s) => ({ stringValue: s })) } } } } } };
  const asText = { filter_metadata: { "envoy.lb.subset_hint": { fields: { "x-gateway-destination-endpoint-subset": { stringValue: only.join(",") } } } } };
  for (let i = 0; i < 8; i++) {
    const { stream, first } = await duplex(client, "/v1/completions", completion(`subset ${i} `.repeat(20)), MAX_STREAMED_CHUNK, i % 2 ? asList : asText);
    t.ok(only.includes(destination(first).header as string), `request ${i} stays in the subset (${destination(first).header})`);
    await finish(stream);
  }
  const none = { filter_metadata: { "envoy.lb.subset_hint": { fields: { "x-gateway-destination-endpoint-subset": { stringValue: "10.9.9.9:8000" } } } } };
  const { stream, first } = await duplex(client, "/v1/completions", completion("x"), MAX_STREAMED_CHUNK, none);
  t.equal(statusCode(first), 503, "a subset with no ready endpoint of ours: 503");
  await finish(stream);
});

t.test("cancelled streams: mid-body and after the decision; the picker stays up and counts are released", async (t) => {
  const { epp, client } = await rig(t, 2);
  const s = client.process();
  s.write(withMode(headers("POST", "/v1/completions"), "FULL_DUPLEX_STREAMED"));
  s.write({ request_body: { body: Buffer.from('{"model":"m","prompt":"half'), end_of_stream: false } });
  t.ok(await until(() => epp.streams() === 1), "the picker holds the undecided stream");
  s.cancel();
  t.equal((await s.status).code, grpc.status.CANCELLED);
  const decided = await duplex(client, "/v1/completions", completion("to be cancelled"));
  t.equal(epp.endpoints.states().reduce((n, e) => n + e.inFlight, 0), 1, "one decided stream in flight");
  decided.stream.cancel();
  await decided.stream.status;
  t.ok(await until(() => epp.endpoints.states().reduce((n, e) => n + e.inFlight, 0) === 0 && epp.streams() === 0), "a cancelled stream releases its endpoint");
  const after = await duplex(client, "/v1/completions", completion("still serving"));
  t.ok(destination(after.first).header, "the next stream is served");
  await finish(after.stream);
  const text = epp.metrics.registry.text();
  t.match(text, /tessera_epp_client_aborts_total 1\b/, "the undecided cancel is counted as an abort");
});

t.test("refusals: bad JSON 400, body over the limit 413, STREAMED mode is an INVALID_ARGUMENT stream error", async (t) => {
  const { client } = await rig(t, 1, { maxBodyBytes: 1000 });
  const bad = await duplex(client, "/v1/chat/completions", "{not json");
  t.equal(statusCode(bad.first), 400);
  t.equal(bad.first.immediate_response?.details, "TESSERA_BAD_REQUEST");
  await finish(bad.stream);
  const big = await duplex(client, "/v1/completions", completion("y".repeat(5000)), 600);
  t.equal(statusCode(big.first), 413);
  await finish(big.stream);
  const s = client.process();
  s.write(withMode(headers("POST", "/v1/completions"), "STREAMED"));
  await t.rejects(s.next(), { code: grpc.status.INVALID_ARGUMENT }, "STREAMED cannot carry a routing header: the stream fails, the picker stays up");
  t.equal(await client.check("liveness"), "SERVING");
});

t.test("active-active: two uncoordinated pickers send each cold prefix to the same endpoint", async (t) => {
  const mocks = await Promise.all(Array.from({ length: 4 }, () => startMockModelServer({})));
  const a = await startEpp({ listen: "127.0.0.1:0", endpoints: mocks.map((m) => m.url) });
  const b = await startEpp({ listen: "127.0.0.1:0", endpoints: mocks.map((m) => m.url) });
  const ca = createExtProcClient(a.target);
  const cb = createExtProcClient(b.target);
  t.teardown(async () => {
    ca.close();
    cb.close();
    await a.stop();
    await b.stop();
    await Promise.all(mocks.map((m) => m.close()));
  });
  // picker A carries traffic of its own (open streams): its in-flight view differs from B's
  const held: ExtProcStream[] = [];
  for (let i = 0; i < 6; i++) held.push((await duplex(ca, "/v1/completions", completion(`background ${i} `.repeat(30)))).stream);
  t.not(JSON.stringify(a.endpoints.states().map((s) => s.inFlight)), JSON.stringify(b.endpoints.states().map((s) => s.inFlight)), "the two pickers' in-flight views differ");
  let agree = 0;
  const n = 24;
  for (let i = 0; i < n; i++) {
    const body = chat(`tenant ${i} system prompt, distinct per tenant. `.repeat(8), "hi");
    const ra = await duplex(ca, "/v1/chat/completions", body);
    const rb = await duplex(cb, "/v1/chat/completions", body);
    if (destination(ra.first).header === destination(rb.first).header) agree++;
    await finish(ra.stream);
    await finish(rb.stream);
  }
  t.equal(agree, n, `${agree}/${n} cold prefixes picked alike by both pickers`);
  for (const s of held) await finish(s);
});

t.test("/metrics: tessera_epp_* series over HTTP", async (t) => {
  const { epp, client } = await rig(t, 2, { metricsListen: "127.0.0.1:0" });
  const { stream } = await duplex(client, "/v1/completions", completion("metrics"));
  await finish(stream);
  const res = await request(`${epp.metricsUrl}/metrics`);
  const text = await res.body.text();
  t.equal(res.statusCode, 200);
  t.match(text, /tessera_epp_requests_total\{path="\/v1\/completions",code="200"\} 1/);
  t.match(text, /tessera_epp_decisions_total\{reason="[a-z]+"\} 1/);
  t.match(text, /tessera_epp_added_latency_seconds_count 1/);
  t.match(text, /tessera_epp_endpoint_ready\{endpoint="127\.0\.0\.1:\d+"\} 1/);
});

t.test("InferencePool source without a node: ready pods of the pool on every node", async (t) => {
  const api = await startFakeApiServer();
  const dir = mkdtempSync(join(tmpdir(), "tessera-epp-"));
  await api.writeKubeconfig(join(dir, "kubeconfig"));
  const kc = new KubeConfig();
  kc.loadFromFile(join(dir, "kubeconfig"));
  const pod = (name: string, node: string, ip: string, ready: boolean) => ({
    apiVersion: "v1", kind: "Pod", metadata: { name, namespace: "ai", labels: { app: "llm" } },
    spec: { nodeName: node, containers: [] }, status: { phase: "Running", podIP: ip, conditions: [{ type: "Ready", status: ready ? "True" : "False" }] },
  });
  api.seed("inference.networking.k8s.io", "v1", "inferencepools", { apiVersion: "inference.networking.k8s.io/v1", kind: "InferencePool", metadata: { name: "pool", namespace: "ai" }, spec: { selector: { matchLabels: { app: "llm" } }, targetPorts: [{ number: 8000 }], endpointPickerRef: { name: "tessera-epp", port: { number: 9002 } } } });
  api.seed("", "v1", "pods", pod("a", "node-1", "10.0.0.1", true));
  api.seed("", "v1", "pods", pod("b", "node-2", "10.0.0.2", true));
  api.seed("", "v1", "pods", pod("c", "node-3", "10.0.0.3", false));
  const src = createInferencePoolSource({ kube: kc, pool: "ai/pool", nodeName: undefined, restartDelayMs: 50 });
  const seen: string[][] = [];
  await src.start((urls) => void seen.push(urls));
  t.teardown(async () => {
    await src.stop();
    await api.close();
  });
  t.same(seen.at(-1), ["http://10.0.0.1:8000", "http://10.0.0.2:8000"], "ready pods on node-1 and node-2");
});

t.test("CLI flags: one endpoint source, body mode, cold slack; errors are TESSERA_ codes", async (t) => {
  const parse = (argv: string[]) => eppOptionsFromArgs(parseFlags(argv, EPP_FLAGS, {}));
  const o = parse(["--endpoints", "http://10.0.0.1:8000"]);
  t.equal(o.listen, "0.0.0.0:9002");
  t.equal(o.metricsListen, "0.0.0.0:9090");
  t.equal(o.bodyMode, "full-duplex");
  t.equal(o.router?.coldSlack, 4);
  t.equal(o.fallbacks, 0, "no fallback list by default");
  t.equal(parse(["--endpoints", "http://a:1", "--fallbacks", "2"]).fallbacks, 2);
  t.equal(eppOptionsFromArgs(parseFlags([], EPP_FLAGS, { EPP_ENDPOINTS: "http://a:1", EPP_FALLBACKS: "3" })).fallbacks, 3, "EPP_FALLBACKS");
  t.throws(() => parse(["--endpoints", "http://a:1", "--fallbacks", "-1"]), { code: "TESSERA_CONFIG" });
  t.throws(() => parse(["--endpoints", "http://a:1", "--fallbacks", "17"]), { code: "TESSERA_CONFIG" });
  t.throws(() => parse([]), { code: "TESSERA_USAGE" });
  t.throws(() => parse(["--endpoints", "http://a:1", "--inference-pool", "ns/p"]), { code: "TESSERA_USAGE" });
  t.throws(() => parse(["--endpoints", "http://a:1", "--body-mode", "streamed"]), { code: "TESSERA_CONFIG" });
  t.throws(() => parse(["--endpoints", "http://a:1", "--cold-slack", "x"]), { code: "TESSERA_CONFIG" });
  t.equal(eppOptionsFromArgs(parseFlags([], EPP_FLAGS, { EPP_ENDPOINTS: "http://a:1", EPP_BODY_MODE: "buffered" })).bodyMode, "buffered", "env mirrors");
  await t.rejects(startEpp({ listen: "nohost", endpoints: [] }), { code: "TESSERA_CONFIG" });
});

t.test("endpoints: a scrape cut short by close() is not logged as the endpoint failing", async (t) => {
  const { createServer } = await import("node:http");
  const { createEndpointTable } = await import("../agent/endpoints/table.js");
  const { createMemoryLogger } = await import("../agent/common/log.js");
  let arrived!: () => void;
  const got = new Promise<void>((r) => (arrived = r));
  const server = createServer(() => arrived()); // never answers /metrics
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as { port: number }).port;
  const log = createMemoryLogger();
  const table = createEndpointTable({
    scrapeIntervalMs: 60_000, scrapeTimeoutMs: 30_000, connections: 1, keepAliveMs: 1000, upstreamHeadersTimeoutMs: 30_000,
    upstreamBodyTimeoutMs: 30_000, connectTimeoutMs: 1000, blockSizeBytes: 64, log, onAdded: () => {}, onRemoved: () => {}, onCapacity: () => {},
  });
  table.setEndpoints([`http://127.0.0.1:${port}`]);
  const ep = table.byId.get(`127.0.0.1:${port}`);
  if (ep) ep.state.ready = true; // as after an earlier good scrape
  const scrape = table.scrapeAll();
  await got;
  await table.close();
  await scrape;
  server.closeAllConnections();
  t.same(log.records.filter((r) => r.msg === "endpoint not ready: scrape failed"), [], "no warning for a scrape the shutdown destroyed");
});
