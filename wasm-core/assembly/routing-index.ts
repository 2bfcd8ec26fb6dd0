// The per-router prefix index in flat memory: per endpoint one open-addressing table (linear
// probing, backward-shift deletion, no tombstones) keyed by block hash, and an LRU list of the
// blocks it holds, with a capacity in blocks. One table per endpoint, not one keyed by (hash,
// endpoint) for the whole router: a decision's inserts and evictions all land in the chosen
// endpoint's table (1 MiB at 31,250 blocks) instead of a 128 MiB one, so they stay within the
// TLB's reach and, for the endpoints that hot prefixes go to, in cache (docs/performance.md). Regions come from heap.alloc (the
// stub runtime's bump allocator shared with the allocator module) and grow by doubling; a
// replaced region is not reused (no free in the stub runtime), so growth costs at most 2x.
import { mix64 } from "./routing-xxh64";

// @ts-ignore: decorator
@inline export const NIL: u32 = 0xFFFFFFFF;
// @ts-ignore: decorator
@inline const SLOT_BYTES: usize = 16; // hash u64 | used u32 (0 = empty) | node u32
// @ts-ignore: decorator
@inline const NODE_BYTES: usize = 16; // hash u64 | prev u32 | next u32
// @ts-ignore: decorator
@inline const MIN_TABLE: u32 = 1024;
// @ts-ignore: decorator
@inline const MIN_POOL: u32 = 256;

@unmanaged export class Endpoint {
  active: u32 = 0;
  capacity: u32 = 0; // blocks this endpoint may hold
  size: u32 = 0; // blocks held now
  head: u32 = 0; // most recently used node
  tail: u32 = 0; // least recently used node (evicted first)
  freeHead: u32 = 0; // nodes freed by a capacity shrink
  nextUnused: u32 = 0; // nodes [nextUnused, poolCap) never used yet
  poolCap: u32 = 0;
  nodes: usize = 0;
  key: u64 = 0; // rendezvous key: hash of the endpoint's id
  table: usize = 0; // this endpoint's hash table (0 until the slot is first used)
  tableMask: u32 = 0;
  tableCount: u32 = 0;
}

@unmanaged export class Router {
  blockSize: u32 = 0;
  maxBlocks: u32 = 0;
  maxEndpoints: u32 = 0;
  bytes: u32 = 0; // bytes of live index memory (current tables + node pools)
  eps: usize = 0; // maxEndpoints Endpoint records
  state: usize = 0; // maxEndpoints x STATE_STRIDE f64, written by the bridge per decision
  matched: usize = 0; // maxEndpoints u32 scratch: matched blocks per endpoint
  wPrefix: f64 = 0;
  wQueue: f64 = 0;
  wKv: f64 = 0;
  wInflight: f64 = 0;
  guardThreshold: f64 = 0;
  saturationQueue: f64 = 0;
  coldSlack: f64 = 0; // > 0: cold prefixes go by rendezvous hash among endpoints within this many waiting of the least
  pending: usize = 0; // maxBlocks u64: block hashes of the last decision's insert, not yet applied
  pendingSlot: u32 = 0; // its endpoint, NIL when nothing is pending
  pendingN: u32 = 0;
}

// @ts-ignore: decorator
@inline export function endpointAt(r: Router, i: u32): Endpoint {
  return changetype<Endpoint>(r.eps + <usize>i * offsetof<Endpoint>());
}

// @ts-ignore: decorator
@inline function home(hash: u64, mask: u32): u32 {
  return <u32>mix64(hash) & mask;
}

/** Allocates and zeroes `bytes` from the shared heap. */
export function allocZeroed(bytes: usize): usize {
  const p = heap.alloc(bytes);
  memory.fill(p, 0, bytes);
  return p;
}

/** Gives endpoint `ep` an empty table: a fresh one the first time, its old one (cleared) after. */
export function initTable(r: Router, e: Endpoint): void {
  if (e.table == 0) {
    e.table = allocZeroed(<usize>MIN_TABLE * SLOT_BYTES);
    e.tableMask = MIN_TABLE - 1;
    r.bytes += MIN_TABLE * <u32>SLOT_BYTES;
  } else if (e.tableCount != 0) {
    memory.fill(e.table, 0, <usize>(e.tableMask + 1) * SLOT_BYTES);
  }
  e.tableCount = 0;
}

/** Slot index of `hash` in endpoint `e`'s table, or -1. */
export function find(e: Endpoint, hash: u64): i32 {
  const mask = e.tableMask;
  const t = e.table;
  let i = home(hash, mask);
  while (true) {
    const s = t + <usize>i * SLOT_BYTES;
    if (load<u32>(s, 8) == 0) return -1;
    if (load<u64>(s) == hash) return <i32>i;
    i = (i + 1) & mask;
  }
}

function place(t: usize, mask: u32, hash: u64, node: u32): void {
  let i = home(hash, mask);
  while (load<u32>(t + <usize>i * SLOT_BYTES, 8) != 0) i = (i + 1) & mask;
  const s = t + <usize>i * SLOT_BYTES;
  store<u64>(s, hash);
  store<u32>(s, 1, 8);
  store<u32>(s, node, 12);
}

/** Doubles the table when it would pass half full (linear probing: misses stay short); amortized. */
function growIfNeeded(r: Router, e: Endpoint): void {
  const cap = e.tableMask + 1;
  if ((e.tableCount + 1) * 2 <= cap) return;
  const ncap = cap << 1;
  const nt = allocZeroed(<usize>ncap * SLOT_BYTES);
  r.bytes += (ncap - cap) * <u32>SLOT_BYTES;
  const nmask = ncap - 1;
  const t = e.table;
  for (let i: u32 = 0; i < cap; i++) {
    const s = t + <usize>i * SLOT_BYTES;
    if (load<u32>(s, 8) != 0) place(nt, nmask, load<u64>(s), load<u32>(s, 12));
  }
  e.table = nt;
  e.tableMask = nmask;
}

/** Backward-shift deletion: keeps every probe chain unbroken without tombstones. */
function removeSlot(e: Endpoint, at: u32): void {
  const t = e.table;
  const mask = e.tableMask;
  let i = at;
  let j = at;
  while (true) {
    j = (j + 1) & mask;
    const sj = t + <usize>j * SLOT_BYTES;
    if (load<u32>(sj, 8) == 0) break;
    const k = home(load<u64>(sj), mask);
    // entry j may move back to i only if its home is not cyclically within (i, j]
    const inRange = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (inRange) continue;
    memory.copy(t + <usize>i * SLOT_BYTES, sj, SLOT_BYTES);
    i = j;
  }
  store<u32>(t + <usize>i * SLOT_BYTES, 0, 8);
  e.tableCount--;
}

// @ts-ignore: decorator
@inline function nodePtr(e: Endpoint, n: u32): usize {
  return e.nodes + <usize>n * NODE_BYTES;
}

function unlink(e: Endpoint, n: u32): void {
  const p = nodePtr(e, n);
  const prev = load<u32>(p, 8);
  const next = load<u32>(p, 12);
  if (prev != NIL) store<u32>(nodePtr(e, prev), next, 12);
  else e.head = next;
  if (next != NIL) store<u32>(nodePtr(e, next), prev, 8);
  else e.tail = prev;
}

function pushFront(e: Endpoint, n: u32): void {
  const p = nodePtr(e, n);
  store<u32>(p, NIL, 8);
  store<u32>(p, e.head, 12);
  if (e.head != NIL) store<u32>(nodePtr(e, e.head), n, 8);
  e.head = n;
  if (e.tail == NIL) e.tail = n;
}

/** Drops the least recently used block of endpoint `ep`; returns its node (now unlinked). */
function evictTail(e: Endpoint): u32 {
  const n = e.tail;
  const at = find(e, load<u64>(nodePtr(e, n)));
  if (at >= 0) removeSlot(e, <u32>at);
  unlink(e, n);
  e.size--;
  return n;
}

function takeNode(r: Router, e: Endpoint): u32 {
  if (e.freeHead != NIL) {
    const n = e.freeHead;
    e.freeHead = load<u32>(nodePtr(e, n), 12);
    return n;
  }
  if (e.nextUnused == e.poolCap) {
    // grow the pool by doubling up to the capacity; indices stay valid because we copy
    let ncap = e.poolCap == 0 ? MIN_POOL : e.poolCap << 1;
    if (ncap > e.capacity) ncap = e.capacity;
    const np = heap.alloc(<usize>ncap * NODE_BYTES);
    if (e.poolCap > 0) memory.copy(np, e.nodes, <usize>e.poolCap * NODE_BYTES);
    r.bytes += (ncap - e.poolCap) * <u32>NODE_BYTES;
    e.nodes = np;
    e.poolCap = ncap;
  }
  return e.nextUnused++;
}

/** Marks block `hash` as most recently used on endpoint `ep`, inserting (and evicting) as needed. */
export function touch(r: Router, ep: u32, hash: u64): void {
  const e = endpointAt(r, ep);
  if (e.capacity == 0) return;
  const at = find(e, hash);
  if (at >= 0) {
    const n = load<u32>(e.table + <usize>at * SLOT_BYTES, 12);
    if (e.head != n) {
      unlink(e, n);
      pushFront(e, n);
    }
    return;
  }
  let n: u32;
  if (e.size >= e.capacity) n = evictTail(e);
  else n = takeNode(r, e);
  store<u64>(nodePtr(e, n), hash);
  pushFront(e, n);
  e.size++;
  growIfNeeded(r, e);
  place(e.table, e.tableMask, hash, n);
  e.tableCount++;
}

/** Evicts down to `capacity`, freed nodes go to the endpoint's free list. */
export function setCapacity(r: Router, ep: u32, capacity: u32): void {
  const e = endpointAt(r, ep);
  while (e.size > capacity) {
    const n = evictTail(e);
    store<u32>(nodePtr(e, n), e.freeHead, 12);
    e.freeHead = n;
  }
  e.capacity = capacity;
}

/** Forgets every block of endpoint `ep`; its node pool stays for the next endpoint in this slot. */
export function clearEndpoint(r: Router, ep: u32): void {
  const e = endpointAt(r, ep);
  initTable(r, e);
  e.size = 0;
  e.head = NIL;
  e.tail = NIL;
  e.freeHead = NIL;
  e.nextUnused = 0;
}

/**
 * Leading blocks of `hashes[0..n)` that endpoint `ep` holds, by binary search: ~log2(n) probes
 * instead of one per matched block (at 100 endpoints sharing system prompts the linear walk made
 * ~2,400 probes into uncached tables per decision, docs/performance.md). Exact because an
 * endpoint's blocks are prefix-closed: a chained hash names its whole prefix, touch() runs over a
 * prompt from its last block to its first, so every block is touched after all its descendants,
 * and LRU eviction (inserts, setCapacity) drops least recently touched first; a held block's
 * ancestors are therefore all held, and "block k held" is monotone in k.
 */
export function matchPrefix(r: Router, ep: u32, hashes: usize, n: u32): u32 {
  const e = endpointAt(r, ep);
  if (n == 0 || find(e, load<u64>(hashes)) < 0) return 0;
  let lo: u32 = 1;
  let hi: u32 = n;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (find(e, load<u64>(hashes + (<usize>(mid - 1) << 3))) >= 0) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * Loads, without using them, the table slots a coming insert of `hashes[0..n)` into endpoint `ep`
 * will probe: the home slot of every new block and of every LRU tail block it will evict. These
 * loads are independent of each other, so the CPU overlaps their cache misses; the dependent walks
 * of touch() then find the lines in cache. Returns a value the caller keeps, so the loads stay.
 */
export function warmInsert(r: Router, ep: u32, hashes: usize, n: u32): u32 {
  const e = endpointAt(r, ep);
  const t = e.table;
  const mask = e.tableMask;
  let acc: u32 = 0;
  for (let k: u32 = 0; k < n; k++) acc ^= load<u32>(t + <usize>home(load<u64>(hashes + (<usize>k << 3)), mask) * SLOT_BYTES, 8);
  let victims: u32 = e.size + n > e.capacity ? e.size + n - e.capacity : 0;
  let v = e.tail;
  while (victims > 0 && v != NIL) {
    const p = nodePtr(e, v);
    acc ^= load<u32>(t + <usize>home(load<u64>(p), mask) * SLOT_BYTES, 8);
    v = load<u32>(p, 8);
    victims--;
  }
  return acc;
}

/** The home slot of `hash` in endpoint `ep`'s table, loaded and returned (see warmInsert). */
export function warmFind(r: Router, ep: u32, hash: u64): u32 {
  const e = endpointAt(r, ep);
  return load<u32>(e.table + <usize>home(hash, e.tableMask) * SLOT_BYTES, 8);
}
