// Globals and accessors over the problem region (layout: alloc-layout.ts). Module-private to the
// allocator: nothing here is exported from the WASM module.
import { H_NDEV, H_NREQ, H_NALT, H_NCON, H_W, H_WA, O_ALT_BITS, STAGE_BITMAPS } from "./alloc-layout";

export let B: usize = 0; // region base
export let nDev: i32 = 0;
export let nReq: i32 = 0;
export let nAlt: i32 = 0;
export let nCon: i32 = 0;
export let W: i32 = 0;
export let WA: i32 = 0;

@inline export function off(slot: i32): usize {
  return B + <usize>load<i32>(B + (<usize>slot << 2));
}
@inline export function geti(slot: i32, i: i32): i32 {
  return load<i32>(off(slot) + (<usize>i << 2));
}
@inline export function seti(slot: i32, i: i32, v: i32): void {
  store<i32>(off(slot) + (<usize>i << 2), v);
}
@inline export function getl(slot: i32, i: i32): i64 {
  return load<i64>(off(slot) + (<usize>i << 3));
}
@inline export function setl(slot: i32, i: i32, v: i64): void {
  store<i64>(off(slot) + (<usize>i << 3), v);
}
@inline export function bit(slot: i32, wordBase: i32, d: i32): bool {
  return ((load<u32>(off(slot) + (<usize>(wordBase + (d >> 5)) << 2)) >>> (d & 31)) & 1) != 0;
}
@inline export function altBit(a: i32, which: i32, d: i32): bool {
  return bit(O_ALT_BITS, (a * STAGE_BITMAPS + which) * W, d);
}

export let nChosen: i32 = 0;

/** Reads the counts of the problem at `base` into the globals above. */
export function loadHeader(base: usize): void {
  B = base;
  nDev = load<i32>(B + (<usize>H_NDEV << 2));
  nReq = load<i32>(B + (<usize>H_NREQ << 2));
  nAlt = load<i32>(B + (<usize>H_NALT << 2));
  nCon = load<i32>(B + (<usize>H_NCON << 2));
  W = load<i32>(B + (<usize>H_W << 2));
  WA = load<i32>(B + (<usize>H_WA << 2));
  nChosen = 0;
}

export function resetChosen(): void {
  nChosen = 0;
}
export function pushChosen(): i32 {
  return nChosen++;
}
export function popChosen(): i32 {
  return --nChosen;
}
