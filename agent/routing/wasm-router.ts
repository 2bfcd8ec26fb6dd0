// The TypeScript bridge over the WASM routing core (wasm-core/assembly/routing.ts). Each router
// is a handle into the one shared WASM instance from loadWasmCore(), so many independent routers
// (the simulator runs one per policy) live in one process. Per request: the seed (model, salt)
// and the prompt are written once into the staging buffer, the endpoint states into the router's
// state region, then one routeDecide() call; the answer is read from the out-buffer. The index
// update of a route() is left pending until flush() or the router's next call that could see it.
// The WASM heap never shrinks (stub runtime): a router lives as long as the process.
import { TesseraError } from "../common/errors.js";
import { loadWasmCore, type WasmCore } from "../wasm/core.js";
import { resolveRouterConfig, type RouterConfig, type RouterConfigInput } from "./config.js";
import type { EndpointState, PrefixRouter, RouteDecision } from "./types.js";

export const ROUTING_ABI_VERSION = 2;
const STATE_STRIDE = 5;
const REASONS: readonly RouteDecision["reason"][] = ["only", "prefix", "load", "guard", "tie", "cold"];

interface RoutingExports {
  routingVersion(): number;
  routeStage(bytes: number): number;
  routeOut(): number;
  routeInit(maxEndpoints: number, blockSize: number, maxBlocks: number): number;
  routeConfigure(h: number, wp: number, wq: number, wk: number, wf: number, guard: number, sat: number): void;
  routeSetColdSlack(h: number, slack: number): void;
  routeStatePtr(h: number): number;
  routeAddEndpoint(h: number, capacity: number, key: bigint): number;
  routeSetCapacity(h: number, slot: number, capacity: number): void;
  routeRemoveEndpoint(h: number, slot: number): void;
  routeDecide(h: number, seedLen: number, promptLen: number, seq: number, insert: number): number;
  routeFlush(h: number): number;
  routeMatch(h: number, slot: number, seedLen: number, promptLen: number): number;
  routeIndexSize(h: number, slot: number): number;
  routeIndexBytes(h: number): number;
  routeHeapMark(): number;
  hashXxh64(ptr: number, len: number, seed: bigint): bigint;
  hashChain(ptr: number, len: number, seed: bigint, blockSize: number, maxBlocks: number, out: number): number;
}

export interface WasmPrefixRouterOptions extends RouterConfigInput {
  /** The shared core; default loadWasmCore(). */
  core?: WasmCore;
}

/** A decision plus what the proxy's metrics want; extends the shared RouteDecision. */
export interface DetailedRouteDecision extends RouteDecision {
  /** Rendezvous key of this prompt (first block hash), as hex. */
  tieKey: bigint;
}

export interface WasmPrefixRouter extends PrefixRouter {
  readonly config: RouterConfig;
  route(prompt: string | Uint8Array, model: string, endpoints: readonly EndpointState[], salt?: string): DetailedRouteDecision;
  /**
   * Applies the last route()'s index update (the prompt's blocks on the chosen endpoint) now; returns
   * the blocks touched, 0 if none was pending. Optional for correctness: every other call of this
   * router applies it first where it could matter. Servers call it once their answer is on its way,
   * so the update is not part of the request's added latency.
   */
  flush(): number;
  /** Same scoring without indexing the prompt (dry run). */
  peek(prompt: string | Uint8Array, model: string, endpoints: readonly EndpointState[], salt?: string): DetailedRouteDecision;
  /** LRU capacity of one endpoint, e.g. derived from vllm:cache_config_info. */
  setCapacity(id: string, capacityBlocks: number): void;
  /** Blocks of this prompt the endpoint holds now (no insert). */
  matchedBlocks(prompt: string | Uint8Array, model: string, id: string, salt?: string): number;
  indexedBlocks(id: string): number;
  /** Bytes of WASM memory this router's index has taken (tables + LRU pools). */
  indexBytes(): number;
  endpoints(): string[];
}

export function routingExports(core: WasmCore): RoutingExports {
  const x = core.exports as unknown as Partial<RoutingExports>;
  if (typeof x.routingVersion !== "function" || x.routingVersion() !== ROUTING_ABI_VERSION) {
    throw new TesseraError("TESSERA_WASM", `the WebAssembly core has no routing ABI ${ROUTING_ABI_VERSION}; rebuild with \`npm run build\``);
  }
  return x as RoutingExports;
}

const encoder = new TextEncoder();

/** Creates one router: its own index, endpoints and weights, in the shared WASM instance. */
export function createWasmPrefixRouter(options: WasmPrefixRouterOptions = {}): WasmPrefixRouter {
  const { core: given, ...rest } = options;
  const config = resolveRouterConfig(rest);
  const core = given ?? loadWasmCore();
  const x = routingExports(core);
  const h = x.routeInit(config.maxEndpoints, config.blockSize, config.maxBlocks);
  if (h === 0) throw new TesseraError("TESSERA_CONFIG", "the WASM core refused the router config");
  const w = config.weights;
  x.routeConfigure(h, w.prefix, w.queue, w.kv, w.inflight, config.guardThreshold, config.saturationQueue);
  x.routeSetColdSlack(h, config.coldSlack);
  const statePtr = x.routeStatePtr(h);
  const outPtr = x.routeOut();
  const slots = new Map<string, number>();
  const ids: string[] = [];
  let seq = 0;
  // The staging buffer is shared by every router in the instance and moves when one outgrows
  // it, so its address is asked for on every use (one cheap call), never cached.
  let stagePtr = 0;
  let stageCap = 0;
  const stage = (bytes: number): void => {
    stagePtr = x.routeStage(bytes);
    stageCap = bytes;
  };

  /** Writes seed + prompt into staging; returns [seedLen, promptLen]. */
  // Only the first maxBlocks x blockSize bytes are ever hashed; every char is >= 1 UTF-8 byte, so
  // that many chars (+1 so a surrogate pair at the edge stays whole) always cover them.
  const hashedBytes = config.maxBlocks * config.blockSize;
  const stageInput = (whole: string | Uint8Array, model: string, salt: string | undefined): [number, number] => {
    const prompt = whole.length <= hashedBytes ? whole : typeof whole === "string" ? whole.slice(0, hashedBytes + 1) : whole.subarray(0, hashedBytes);
    // The seed [model, 0x00, salt] is encoded straight into WASM memory like the prompt: no
    // per-request key string, and nothing keyed by client-chosen strings is kept (a cache of them
    // let a client pin ~1,000 bodies' worth of memory with long model names).
    const seedWorst = (model.length + (salt === undefined ? 0 : salt.length + 1)) * 3;
    stage(seedWorst + (typeof prompt === "string" ? prompt.length * 3 : prompt.length));
    const u8 = core.u8();
    const end = stagePtr + stageCap;
    let seedLen = encoder.encodeInto(model, u8.subarray(stagePtr, end)).written;
    if (salt !== undefined) {
      u8[stagePtr + seedLen] = 0;
      seedLen += 1 + encoder.encodeInto(salt, u8.subarray(stagePtr + seedLen + 1, end)).written;
    }
    let len: number;
    if (typeof prompt === "string") {
      len = encoder.encodeInto(prompt, u8.subarray(stagePtr + seedLen, end)).written;
    } else {
      u8.set(prompt, stagePtr + seedLen);
      len = prompt.length;
    }
    return [seedLen, len];
  };

  const add = (id: string, capacityBlocks?: number): number => {
    const have = slots.get(id);
    if (have !== undefined) return have;
    const cap = capacityBlocks ?? config.capacityBlocks;
    if (!Number.isInteger(cap) || cap < 0) throw new TesseraError("TESSERA_CONFIG", `endpoint ${id}: capacity ${cap} blocks is not a whole number >= 0`);
    const bytes = encoder.encode(id);
    stage(bytes.length);
    core.u8().set(bytes, stagePtr);
    const key = x.hashXxh64(stagePtr, bytes.length, 0n);
    const slot = x.routeAddEndpoint(h, cap, key);
    if (slot < 0) throw new TesseraError("TESSERA_CONFIG", `router is full: ${config.maxEndpoints} endpoints; raise maxEndpoints`);
    slots.set(id, slot);
    ids[slot] = id;
    return slot;
  };

  const decide = (prompt: string | Uint8Array, model: string, endpoints: readonly EndpointState[], salt: string | undefined, insert: boolean): DetailedRouteDecision => {
    seq = seq >= 2 ** 52 ? 1 : seq + 1;
    // unknown endpoints first: adding one stages its id, which would overwrite the prompt
    for (const ep of endpoints) if (ep.ready && !slots.has(ep.id)) add(ep.id);
    const [seedLen, promptLen] = stageInput(prompt, model, salt);
    // endpoint states after staging: staging may grow memory and replace the views
    const f64 = core.f64();
    for (const ep of endpoints) {
      if (!ep.ready) continue;
      const slot = slots.get(ep.id) as number;
      const o = (statePtr >>> 3) + slot * STATE_STRIDE;
      f64[o] = seq;
      f64[o + 1] = ep.waitingRequests;
      f64[o + 2] = ep.runningRequests;
      f64[o + 3] = ep.kvCacheUsage;
      f64[o + 4] = ep.inFlight;
    }
    const slot = x.routeDecide(h, seedLen, promptLen, seq, insert ? 1 : 0);
    if (slot === -1) throw new TesseraError("TESSERA_NO_ENDPOINT");
    if (slot === -2) throw new TesseraError("TESSERA_SATURATED");
    const u32 = core.u32();
    const o = outPtr >>> 2;
    return {
      endpoint: ids[slot] as string,
      matchedBlocks: u32[o + 1] as number,
      totalBlocks: u32[o + 2] as number,
      reason: REASONS[u32[o + 3] as number] ?? "load",
      tieKey: core.u64()[(outPtr + 16) >>> 3] as bigint,
    };
  };

  return {
    config,
    addEndpoint: (id, capacityBlocks) => void add(id, capacityBlocks),
    removeEndpoint(id) {
      const slot = slots.get(id);
      if (slot === undefined) return;
      x.routeRemoveEndpoint(h, slot);
      slots.delete(id);
      delete ids[slot];
    },
    setCapacity(id, capacityBlocks) {
      if (!Number.isInteger(capacityBlocks) || capacityBlocks < 0) throw new TesseraError("TESSERA_CONFIG", `endpoint ${id}: capacity ${capacityBlocks} is not a whole number >= 0`);
      const slot = slots.get(id) ?? add(id, capacityBlocks);
      x.routeSetCapacity(h, slot, capacityBlocks);
    },
    route: (prompt, model, endpoints, salt) => decide(prompt, model, endpoints, salt, true),
    flush: () => x.routeFlush(h),
    peek: (prompt, model, endpoints, salt) => decide(prompt, model, endpoints, salt, false),
    matchedBlocks(prompt, model, id, salt) {
      const slot = slots.get(id);
      if (slot === undefined) return 0;
      const [seedLen, promptLen] = stageInput(prompt, model, salt);
      return x.routeMatch(h, slot, seedLen, promptLen);
    },
    indexedBlocks: (id) => {
      const slot = slots.get(id);
      return slot === undefined ? 0 : x.routeIndexSize(h, slot);
    },
    indexBytes: () => x.routeIndexBytes(h),
    endpoints: () => [...slots.keys()],
  };
}
