// Prefix-hash routing (WASM core part 2): chained block hashes of a prompt, a per-endpoint prefix
// index (routing-index.ts), and the scoring that picks an endpoint. The bridge is
// agent/routing/wasm-router.ts; nothing else calls these. Exports, one line each
// (what · units · caller · how often):
//   routingVersion(): u32                       ABI of these exports · bridge, once at load
//   routeStage(bytes): usize                    staging buffer of >= bytes for seed+prompt · bridge, only when a prompt outgrows it
//   routeOut(): usize                           decision out-buffer (layout OUT_* below) · bridge, once
//   routeInit(maxEndpoints, blockSize, maxBlocks): usize   new router, returns its handle · bridge, once per router
//   routeConfigure(h, wPrefix, wQueue, wKv, wInflight, guardThreshold, saturationQueue)  weights, guard (requests), saturation (requests, 0 = off) · bridge, at setup
//   routeSetColdSlack(h, slack)                 cold-prefix rendezvous (waiting requests of slack, 0 = off) · bridge, at setup
//   routeStatePtr(h): usize                     f64[maxEndpoints*5] per-endpoint state (seq, waiting, running, kv 0..1, in-flight) · bridge, once
//   routeAddEndpoint(h, capacityBlocks, key): i32 slot for a new endpoint (-1 when full); key = id hash · bridge, per endpoint added
//   routeSetCapacity(h, slot, capacityBlocks)   resize one endpoint's LRU (evicts oldest) · bridge, when cache_config_info arrives
//   routeRemoveEndpoint(h, slot)                drop an endpoint and its blocks · bridge, per endpoint removed
//   routeDecide(h, seedLen, promptLen, seq, insert): i32   hash staged input, score, pick; slot, -1 none, -2 saturated; insert: the prompt's index update is left pending · bridge, per request
//   routeFlush(h): u32                          applies the pending index update now (blocks touched, 0 if none) · bridge, after the answer is on its way
//   routeMatch(h, slot, seedLen, promptLen): u32  blocks of the staged prompt held by one endpoint · tests/diagnostics
//   routeIndexSize(h, slot): u32                blocks indexed for one endpoint · metrics, per scrape
//   routeIndexBytes(h): u32                     bytes of live index memory (table + LRU pools; replaced regions not counted) · benches, rarely
//   routeHeapMark(): usize                      top of the shared bump heap (allocates 1 byte) · tests only
//   hashXxh64(ptr, len, seed): u64              xxHash64 of bytes in memory · tests/benches, bridge for endpoint keys
//   hashChain(ptr, len, seed, blockSize, maxBlocks, out): u32  chained block hashes to out (u64 each) · benches/tests
// The staged input is [seed bytes = model, 0x00, salt][prompt bytes], written once per request.
// A decision's index update (touch every block of the prompt on the chosen endpoint, evicting
// LRU tails) is about half its cost, so it is kept pending and applied by routeFlush, which the
// caller runs once its answer is on its way. The result never differs from updating at once: any
// export that reads or changes the index applies it first, and so does routeDecide whenever the
// pending endpoint is one of its candidates (no other endpoint's table is read by a decision).
import { xxh64, chainBlocks, mix64 } from "./routing-xxh64";
import {
  Router, Endpoint, NIL, endpointAt, allocZeroed, initTable, touch, setCapacity, clearEndpoint, matchPrefix, warmInsert, warmFind,
} from "./routing-index";

// @ts-ignore: decorator
@inline const STATE_STRIDE: usize = 5; // f64: seq, waiting, running, kv usage, in-flight
// @ts-ignore: decorator
@inline const OUT_BYTES: usize = 32; // u32 slot | u32 matched | u32 total | u32 reason | u64 tieKey | u32 bestPrefixSlot | u32 bestMatched
// @ts-ignore: decorator
@inline const EPS: f64 = 1e-9;

// reasons, mirrored by the bridge
// @ts-ignore: decorator
@inline const R_ONLY: u32 = 0;
// @ts-ignore: decorator
@inline const R_PREFIX: u32 = 1;
// @ts-ignore: decorator
@inline const R_LOAD: u32 = 2;
// @ts-ignore: decorator
@inline const R_GUARD: u32 = 3;
// @ts-ignore: decorator
@inline const R_TIE: u32 = 4;
// @ts-ignore: decorator
@inline const R_COLD: u32 = 5;

let stagePtr: usize = 0;
let stageCap: usize = 0;
let hashesPtr: usize = 0; // u64 scratch for one prompt's block hashes
let hashesCap: u32 = 0;
let outPtr: usize = 0;
let sink: u32 = 0; // keeps the warm-up loads of routeDecide alive

export function routingVersion(): u32 {
  return 2;
}

export function routeStage(bytes: usize): usize {
  if (bytes > stageCap) {
    let cap: usize = stageCap == 0 ? 65536 : stageCap;
    while (cap < bytes) cap <<= 1;
    stagePtr = heap.alloc(cap);
    stageCap = cap;
  }
  return stagePtr;
}

export function routeOut(): usize {
  if (outPtr == 0) outPtr = allocZeroed(OUT_BYTES);
  return outPtr;
}

export function routeInit(maxEndpoints: u32, blockSize: u32, maxBlocks: u32): usize {
  if (maxEndpoints == 0 || maxEndpoints > 4096 || blockSize == 0 || maxBlocks == 0 || maxBlocks > 65536) return 0;
  const r = changetype<Router>(allocZeroed(offsetof<Router>()));
  r.blockSize = blockSize;
  r.maxBlocks = maxBlocks;
  r.maxEndpoints = maxEndpoints;
  r.eps = allocZeroed(<usize>maxEndpoints * offsetof<Endpoint>());
  r.state = allocZeroed(<usize>maxEndpoints * STATE_STRIDE * 8);
  r.matched = allocZeroed(<usize>maxEndpoints * 4);
  r.wPrefix = 3;
  r.wQueue = 2;
  r.wKv = 2;
  r.wInflight = 1;
  r.guardThreshold = 16; // the profile default (agent/routing/config.ts); the bridge always sets it
  r.saturationQueue = 0;
  r.pending = heap.alloc(<usize>maxBlocks << 3);
  r.pendingSlot = NIL;
  if (maxBlocks > hashesCap) {
    hashesPtr = heap.alloc(<usize>maxBlocks << 3);
    hashesCap = maxBlocks;
  }
  routeOut();
  return changetype<usize>(r);
}

export function routeConfigure(h: usize, wPrefix: f64, wQueue: f64, wKv: f64, wInflight: f64, guardThreshold: f64, saturationQueue: f64): void {
  const r = changetype<Router>(h);
  r.wPrefix = wPrefix;
  r.wQueue = wQueue;
  r.wKv = wKv;
  r.wInflight = wInflight;
  r.guardThreshold = guardThreshold;
  r.saturationQueue = saturationQueue;
}

export function routeSetColdSlack(h: usize, slack: f64): void {
  changetype<Router>(h).coldSlack = slack;
}

export function routeStatePtr(h: usize): usize {
  return changetype<Router>(h).state;
}

/** Touches the pending prompt's blocks on its endpoint, newest first: the prompt's head is the
 *  most recent, its tail is evicted before its prefix, which keeps every endpoint's blocks
 *  prefix-closed (matchPrefix's binary search relies on it). */
function applyPending(r: Router): u32 {
  const slot = r.pendingSlot;
  if (slot == NIL) return 0;
  const n = r.pendingN;
  r.pendingSlot = NIL;
  sink ^= warmInsert(r, slot, r.pending, n);
  for (let k = <i32>n - 1; k >= 0; k--) touch(r, slot, load<u64>(r.pending + (<usize>k << 3)));
  return n;
}

export function routeFlush(h: usize): u32 {
  return applyPending(changetype<Router>(h));
}

export function routeAddEndpoint(h: usize, capacityBlocks: u32, key: u64): i32 {
  const r = changetype<Router>(h);
  applyPending(r);
  for (let i: u32 = 0; i < r.maxEndpoints; i++) {
    const e = endpointAt(r, i);
    if (e.active != 0) continue;
    e.active = 1;
    e.capacity = capacityBlocks;
    e.key = key;
    e.size = 0;
    e.head = NIL;
    e.tail = NIL;
    e.freeHead = NIL;
    e.nextUnused = 0;
    initTable(r, e);
    store<f64>(r.state + <usize>i * STATE_STRIDE * 8, -1); // never a valid seq
    return <i32>i;
  }
  return -1;
}

export function routeSetCapacity(h: usize, slot: u32, capacityBlocks: u32): void {
  const r = changetype<Router>(h);
  applyPending(r);
  if (slot >= r.maxEndpoints || endpointAt(r, slot).active == 0) return;
  setCapacity(r, slot, capacityBlocks);
}

export function routeRemoveEndpoint(h: usize, slot: u32): void {
  const r = changetype<Router>(h);
  applyPending(r);
  if (slot >= r.maxEndpoints) return;
  const e = endpointAt(r, slot);
  if (e.active == 0) return;
  clearEndpoint(r, slot);
  e.active = 0;
}

export function routeIndexSize(h: usize, slot: u32): u32 {
  const r = changetype<Router>(h);
  applyPending(r);
  if (slot >= r.maxEndpoints) return 0;
  return endpointAt(r, slot).size;
}

export function routeIndexBytes(h: usize): u32 {
  const r = changetype<Router>(h);
  applyPending(r);
  return r.bytes;
}

export function routeHeapMark(): usize {
  return heap.alloc(1);
}

export function hashXxh64(ptr: usize, len: usize, seed: u64): u64 {
  return xxh64(ptr, len, seed);
}

export function hashChain(ptr: usize, len: usize, seed: u64, blockSize: u32, maxBlocks: u32, out: usize): u32 {
  if (blockSize == 0) return 0;
  return chainBlocks(ptr, len, seed, blockSize, maxBlocks, out);
}

/** Hashes the staged prompt into the scratch; returns the block count. */
function hashStaged(r: Router, seedLen: usize, promptLen: usize): u32 {
  const seed = xxh64(stagePtr, seedLen, 0);
  return chainBlocks(stagePtr + seedLen, promptLen, seed, r.blockSize, r.maxBlocks, hashesPtr);
}

export function routeMatch(h: usize, slot: u32, seedLen: usize, promptLen: usize): u32 {
  const r = changetype<Router>(h);
  if (slot >= r.maxEndpoints || seedLen + promptLen > stageCap) return 0;
  applyPending(r);
  const n = hashStaged(r, seedLen, promptLen);
  return matchPrefix(r, slot, hashesPtr, n);
}

// @ts-ignore: decorator
@inline function st(r: Router, i: u32, field: usize): f64 {
  return load<f64>(r.state + (<usize>i * STATE_STRIDE + field) * 8);
}

export function routeDecide(h: usize, seedLen: usize, promptLen: usize, seq: f64, insert: bool): i32 {
  const r = changetype<Router>(h);
  if (seedLen + promptLen > stageCap) return -1;
  const ps = r.pendingSlot;
  if (ps != NIL && endpointAt(r, ps).active != 0 && st(r, ps, 0) == seq) applyPending(r);
  const n = hashStaged(r, seedLen, promptLen);
  // ties spread by the prompt's first block (the whole prompt when it has no full block)
  const tieKey = n > 0 ? load<u64>(hashesPtr) : xxh64(stagePtr + seedLen, promptLen, xxh64(stagePtr, seedLen, 0));
  const maxEp = r.maxEndpoints;
  const sat = r.saturationQueue;
  let candidates: u32 = 0;
  let open: u32 = 0;
  let minW = Infinity, maxW = -Infinity, minF = Infinity, maxF = -Infinity, minLoad = Infinity;
  let bestP: i32 = -1;
  let bestPM: u32 = 0;
  let bestPW: u64 = 0;
  // every candidate's first probe, loaded up front: independent misses overlap (see warmInsert)
  if (n > 0) {
    const h0 = load<u64>(hashesPtr);
    for (let i: u32 = 0; i < maxEp; i++) if (endpointAt(r, i).active != 0 && st(r, i, 0) == seq) sink ^= warmFind(r, i, h0);
  }
  for (let i: u32 = 0; i < maxEp; i++) {
    const m = r.matched + (<usize>i << 2);
    store<u32>(m, NIL);
    if (endpointAt(r, i).active == 0 || st(r, i, 0) != seq) continue;
    candidates++;
    const w = st(r, i, 1);
    const f = st(r, i, 4);
    if (sat > 0 && w + f >= sat) continue; // saturated: filtered out
    open++;
    const mb = matchPrefix(r, i, hashesPtr, n);
    store<u32>(m, mb);
    minW = min(minW, w); maxW = max(maxW, w);
    minF = min(minF, f); maxF = max(maxF, f);
    minLoad = min(minLoad, w + f);
    const rw = mix64(tieKey ^ endpointAt(r, i).key);
    if (bestP < 0 || mb > bestPM || (mb == bestPM && rw > bestPW)) {
      bestP = <i32>i; bestPM = mb; bestPW = rw;
    }
  }
  if (candidates == 0) return -1;
  if (open == 0) return -2;
  const guard = bestPM > 0 && (st(r, <u32>bestP, 1) + st(r, <u32>bestP, 4)) - minLoad > r.guardThreshold;
  const wp = guard ? 0.0 : r.wPrefix;
  let best: i32 = -1;
  let bestS: f64 = -Infinity;
  let bestW: u64 = 0;
  let tied: u32 = 0;
  // Cold prefix (no endpoint holds a block of it): the highest rendezvous weight among endpoints
  // whose waiting queue is within coldSlack of the shortest. Waiting is scraped, so every picker
  // of a pool sees about the same; in-flight is each picker's own and is left out, so several
  // uncoordinated pickers send a new prefix to the same endpoint.
  const cold = r.coldSlack > 0 && bestPM == 0 && open > 1;
  for (let i: u32 = 0; cold && i < maxEp; i++) {
    if (load<u32>(r.matched + (<usize>i << 2)) == NIL || st(r, i, 1) > minW + r.coldSlack) continue;
    const rw = mix64(tieKey ^ endpointAt(r, i).key);
    if (best < 0 || rw > bestW) { best = <i32>i; bestW = rw; }
  }
  for (let i: u32 = 0; !cold && i < maxEp; i++) {
    const mb = load<u32>(r.matched + (<usize>i << 2));
    if (mb == NIL) continue;
    const w = st(r, i, 1);
    const f = st(r, i, 4);
    let kv = st(r, i, 3);
    kv = kv < 0 ? 0 : kv > 1 ? 1 : kv;
    const ps: f64 = n > 0 ? <f64>mb / <f64>n : 0;
    const qs: f64 = maxW > minW ? (maxW - w) / (maxW - minW) : 1;
    const fs: f64 = maxF > minF ? (maxF - f) / (maxF - minF) : 1;
    const s = wp * ps + r.wQueue * qs + r.wKv * (1 - kv) + r.wInflight * fs;
    const rw = mix64(tieKey ^ endpointAt(r, i).key);
    if (best < 0 || s > bestS + EPS) {
      best = <i32>i; bestS = s; bestW = rw; tied = 1;
    } else if (s >= bestS - EPS) {
      tied++;
      if (rw > bestW) { best = <i32>i; bestW = rw; }
    }
  }
  const bm = load<u32>(r.matched + (<usize>best << 2));
  let reason = R_LOAD;
  if (open == 1) reason = R_ONLY;
  else if (cold) reason = R_COLD;
  else if (guard) reason = R_GUARD;
  else if (tied > 1) reason = R_TIE;
  else if (bm > 0 && bm == bestPM) reason = R_PREFIX;
  if (insert) {
    applyPending(r); // one pending update at a time; another endpoint's, so order does not matter
    memory.copy(r.pending, hashesPtr, <usize>n << 3);
    r.pendingSlot = <u32>best;
    r.pendingN = n;
  }
  store<u32>(outPtr, <u32>best);
  store<u32>(outPtr, bm, 4);
  store<u32>(outPtr, n, 8);
  store<u32>(outPtr, reason, 12);
  store<u64>(outPtr, tieKey, 16);
  store<u32>(outPtr, <u32>bestP, 24);
  store<u32>(outPtr, bestPM, 28);
  return best;
}
