// The KV cache of one simulated vLLM replica, with vLLM's prefix-caching semantics:
// - memory is a pool of fixed blocks of BLOCK_TOKENS tokens;
// - a block is cached under the chained hash of all tokens up to its end, and only once it is full
//   and computed (hashes are interned per workload into dense integer keys, so the cache's hash
//   table is a flat array: same semantics, several times faster than a Map of 53-bit doubles);
// - blocks held by running requests (refCount > 0) are never evicted;
// - blocks with refCount 0 sit in a free queue in LRU order: a request's blocks are freed tail
//   first, so a shared prefix outlives the private suffix behind it; allocation takes the head
//   (least recently used) and drops whatever hash that block carried.

export const BLOCK_TOKENS = 16;

export interface KvCache {
  readonly capacity: number;
  /** Blocks not held by any request (cached-but-idle blocks count as free, as vLLM reports). */
  freeCount(): number;
  /** Number of leading blocks of `keys` present in the cache, at most maxBlocks. Read-only. */
  lookup(keys: Int32Array, maxBlocks: number): number;
  /** Whether `hitBlocks` cached blocks can be pinned and `newBlocks` fresh ones allocated now. */
  canAcquire(keys: Int32Array, hitBlocks: number, newBlocks: number): boolean;
  /** Pins the hits and allocates the rest; returns the block table. Caller checked canAcquire. */
  acquire(keys: Int32Array, hitBlocks: number, newBlocks: number): number[];
  /** Appends one fresh block to a table (decode growth); false when every block is held. */
  grow(table: number[]): boolean;
  /** Marks table[index] full and computed under block `key`, making it a prefix-cache entry. */
  commit(table: number[], index: number, key: number): void;
  /** Drops a request's hold on its blocks, tail first. */
  release(table: number[]): void;
}

/** `keySpace`: block keys are integers in [0, keySpace). */
export function createKvCache(capacity: number, keySpace: number): KvCache {
  const ref = new Int32Array(capacity);
  const keyOf = new Int32Array(capacity).fill(-1);
  const blockOf = new Int32Array(keySpace).fill(-1);
  const prev = new Int32Array(capacity);
  const next = new Int32Array(capacity);
  const inFree = new Uint8Array(capacity);
  let head = -1;
  let tail = -1;
  let free = 0;

  const unlink = (b: number): void => {
    const p = prev[b] as number;
    const n = next[b] as number;
    if (p >= 0) next[p] = n;
    else head = n;
    if (n >= 0) prev[n] = p;
    else tail = p;
    inFree[b] = 0;
    free--;
  };
  const pushTail = (b: number): void => {
    prev[b] = tail;
    next[b] = -1;
    if (tail >= 0) next[tail] = b;
    else head = b;
    tail = b;
    inFree[b] = 1;
    free++;
  };
  const pushHead = (b: number): void => {
    prev[b] = -1;
    next[b] = head;
    if (head >= 0) prev[head] = b;
    else tail = b;
    head = b;
    inFree[b] = 1;
    free++;
  };
  for (let b = 0; b < capacity; b++) pushTail(b);

  const takeFresh = (): number => {
    const b = head;
    unlink(b);
    const k = keyOf[b] as number;
    if (k >= 0) {
      blockOf[k] = -1;
      keyOf[b] = -1;
    }
    ref[b] = 1;
    return b;
  };

  return {
    capacity,
    freeCount: () => free,
    lookup(keys, maxBlocks) {
      const limit = Math.min(maxBlocks, keys.length);
      let i = 0;
      while (i < limit && (blockOf[keys[i] as number] as number) >= 0) i++;
      return i;
    },
    canAcquire(keys, hitBlocks, newBlocks) {
      let idleHits = 0;
      for (let i = 0; i < hitBlocks; i++) if (inFree[blockOf[keys[i] as number] as number]) idleHits++;
      return free - idleHits >= newBlocks;
    },
    acquire(keys, hitBlocks, newBlocks) {
      const table: number[] = [];
      for (let i = 0; i < hitBlocks; i++) {
        const b = blockOf[keys[i] as number] as number;
        if (inFree[b]) unlink(b);
        ref[b] = (ref[b] as number) + 1;
        table.push(b);
      }
      for (let i = 0; i < newBlocks; i++) table.push(takeFresh());
      return table;
    },
    grow(table) {
      if (free === 0) return false;
      table.push(takeFresh());
      return true;
    },
    commit(table, index, key) {
      const b = table[index] as number;
      if ((keyOf[b] as number) >= 0 || (blockOf[key] as number) >= 0) return; // already cached, or a twin holds it
      keyOf[b] = key;
      blockOf[key] = b;
    },
    release(table) {
      for (let i = table.length - 1; i >= 0; i--) {
        const b = table[i] as number;
        const r = (ref[b] as number) - 1;
        ref[b] = r;
        if (r > 0) continue;
        // An uncached block is worthless: reuse it before any cached one.
        if ((keyOf[b] as number) < 0) pushHead(b);
        else pushTail(b);
      }
      table.length = 0;
    },
  };
}

/** Chained block hashes of a token sequence: hash i covers tokens [0, 16(i+1)). Only full blocks. */
export function chainedBlockHashes(tokens: Int32Array): Float64Array {
  const blocks = Math.floor(tokens.length / BLOCK_TOKENS);
  const out = new Float64Array(blocks);
  let h1 = 0x243f6a88;
  let h2 = 0x85a308d3;
  for (let b = 0; b < blocks; b++) {
    // Two independent 32-bit lanes folded into a 53-bit double: collisions are negligible at our scale.
    let a = h1 ^ Math.imul(b + 1, 0x9e3779b1);
    let c = h2 ^ Math.imul(b + 1, 0x7feb352d);
    for (let k = b * BLOCK_TOKENS, end = k + BLOCK_TOKENS; k < end; k++) {
      const tok = tokens[k] as number;
      a = Math.imul(a ^ tok, 0x01000193);
      a ^= a >>> 15;
      c = Math.imul(c + tok, 0x85ebca6b);
      c ^= c >>> 13;
    }
    a = Math.imul(a ^ (a >>> 16), 0x7feb352d);
    c = Math.imul(c ^ (c >>> 16), 0x846ca68b);
    h1 = (a ^ (a >>> 15)) >>> 0;
    h2 = (c ^ (c >>> 16)) & 0x1fffff;
    out[b] = h1 * 2097152 + h2;
  }
  return out;
}

/** Interns chained block hashes into dense keys [0, size): one table per workload. */
export function createKeyInterner(): { intern(hashes: Float64Array): Int32Array; size(): number } {
  const ids = new Map<number, number>();
  return {
    intern(hashes) {
      const out = new Int32Array(hashes.length);
      for (let i = 0; i < hashes.length; i++) {
        const h = hashes[i] as number;
        let id = ids.get(h);
        if (id === undefined) {
          id = ids.size;
          ids.set(h, id);
        }
        out[i] = id;
      }
      return out;
    },
    size: () => ids.size,
  };
}
