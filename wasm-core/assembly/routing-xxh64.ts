// xxHash64 (the reference algorithm by Yann Collet, written from its published specification) and
// the chained block hashing the router keys its prefix index on. Pure functions over linear memory:
// no allocation, little-endian unaligned loads (WebAssembly is little-endian).

// @ts-ignore: decorator
@inline const P1: u64 = 0x9E3779B185EBCA87;
// @ts-ignore: decorator
@inline const P2: u64 = 0xC2B2AE3D27D4EB4F;
// @ts-ignore: decorator
@inline const P3: u64 = 0x165667B19E3779F9;
// @ts-ignore: decorator
@inline const P4: u64 = 0x85EBCA77C2B2AE63;
// @ts-ignore: decorator
@inline const P5: u64 = 0x27D4EB2F165667C5;

// @ts-ignore: decorator
@inline function round(acc: u64, input: u64): u64 {
  acc += input * P2;
  acc = rotl<u64>(acc, 31);
  return acc * P1;
}

// @ts-ignore: decorator
@inline function mergeRound(acc: u64, val: u64): u64 {
  acc ^= round(0, val);
  return acc * P1 + P4;
}

/** xxHash64 of `len` bytes at `ptr` with `seed`. */
export function xxh64(ptr: usize, len: usize, seed: u64): u64 {
  let p = ptr;
  const end = ptr + len;
  let h: u64;
  if (len >= 32) {
    let v1 = seed + P1 + P2;
    let v2 = seed + P2;
    let v3 = seed;
    let v4 = seed - P1;
    const limit = end - 32;
    do {
      v1 = round(v1, load<u64>(p));
      v2 = round(v2, load<u64>(p, 8));
      v3 = round(v3, load<u64>(p, 16));
      v4 = round(v4, load<u64>(p, 24));
      p += 32;
    } while (p <= limit);
    h = rotl<u64>(v1, 1) + rotl<u64>(v2, 7) + rotl<u64>(v3, 12) + rotl<u64>(v4, 18);
    h = mergeRound(h, v1);
    h = mergeRound(h, v2);
    h = mergeRound(h, v3);
    h = mergeRound(h, v4);
  } else {
    h = seed + P5;
  }
  h += <u64>len;
  while (p + 8 <= end) {
    h ^= round(0, load<u64>(p));
    h = rotl<u64>(h, 27) * P1 + P4;
    p += 8;
  }
  if (p + 4 <= end) {
    h ^= (<u64>load<u32>(p)) * P1;
    h = rotl<u64>(h, 23) * P2 + P3;
    p += 4;
  }
  while (p < end) {
    h ^= (<u64>load<u8>(p)) * P5;
    h = rotl<u64>(h, 11) * P1;
    p++;
  }
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

/**
 * Chained block hashes: block i's hash is xxHash64(block i bytes, seed = hash of block i-1), block
 * -1's hash being `seed`. Only full blocks count (a partial tail block is never cached whole by the
 * engine either). Writes at most `maxBlocks` u64 values to `out`; returns how many.
 */
export function chainBlocks(ptr: usize, len: usize, seed: u64, blockSize: u32, maxBlocks: u32, out: usize): u32 {
  let n = <u32>(len / <usize>blockSize);
  if (n > maxBlocks) n = maxBlocks;
  let prev = seed;
  for (let i: u32 = 0; i < n; i++) {
    prev = xxh64(ptr + <usize>i * <usize>blockSize, <usize>blockSize, prev);
    store<u64>(out + (<usize>i << 3), prev);
  }
  return n;
}

/** A cheap 64-bit finalizer (splitmix64) for rendezvous weights and table slots. */
// @ts-ignore: decorator
@inline export function mix64(x: u64): u64 {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9;
  x ^= x >> 27;
  x *= 0x94D049BB133111EB;
  x ^= x >> 31;
  return x;
}
