// Search state of the allocator: counters, shared capacity, constraint bindings, the chosen-device
// stack, and the best-fit device order. Module-private (not exported from the WASM module); no
// allocation: every table lives in the problem region.
import {
  O_ALT_ADMIN, O_ALT_CAPCONS, O_MULTI, O_DEV_CAP_START, O_DEV_CAP_COUNT, O_CAP_TOTAL, O_DEV_CNT_START, O_DEV_CNT_COUNT,
  O_CNT_SLOT, O_CNT_AMT, O_CNT_TOTAL, O_CON_KIND, O_CON_APPLIES, O_CON_VALS, O_DEV_NUMA, O_DEV_ROOT, O_OUT_DEV, O_OUT_RALT,
  O_S_CNT, O_S_CAP, O_S_TAKEN, O_S_MATCH, O_S_MATCHN, O_S_ORDER, O_S_KEY, O_ALT_COUNT, O_IN_USE, H_NCAPE, B_SELECT, O_MULTI_USED, O_S_SHARES,
} from "./alloc-layout";
import { B, nDev, nCon, WA, nChosen, geti, seti, getl, setl, bit, altBit, off, pushChosen, popChosen } from "./alloc-mem";

function nCapE(): i32 {
  return load<i32>(B + (<usize>H_NCAPE << 2));
}

/** A multi-allocatable device already shared pays its counters once: later shares skip them (as upstream). */
@inline function countersPaid(d: i32): bool {
  return bit(O_MULTI, 0, d) && (bit(O_MULTI_USED, 0, d) || geti(O_S_SHARES, d) > 0);
}

/** Every shared counter the device consumes still fits. */
export function cntFits(d: i32): bool {
  if (countersPaid(d)) return true;
  const s = geti(O_DEV_CNT_START, d);
  const n = geti(O_DEV_CNT_COUNT, d);
  for (let i = s; i < s + n; i++) {
    const slot = geti(O_CNT_SLOT, i);
    if (getl(O_S_CNT, slot) + getl(O_CNT_AMT, i) > getl(O_CNT_TOTAL, slot)) return false;
  }
  return true;
}

/** For a multi-allocatable device: what alternative a consumes still fits each capacity. */
export function capFits(a: i32, d: i32): bool {
  if (!bit(O_MULTI, 0, d)) return true;
  const s = geti(O_DEV_CAP_START, d);
  const n = geti(O_DEV_CAP_COUNT, d);
  const base = a * nCapE();
  for (let e = s; e < s + n; e++) {
    if (getl(O_S_CAP, e) + getl(O_ALT_CAPCONS, base + e) > getl(O_CAP_TOTAL, e)) return false;
  }
  return true;
}

@inline function applies(c: i32, a: i32): bool {
  return bit(O_CON_APPLIES, c * WA, a);
}

/** matchAttribute / distinctAttribute allow device d for alternative a given the devices chosen so far. */
export function constraintsAllow(a: i32, d: i32): bool {
  for (let c = 0; c < nCon; c++) {
    if (!applies(c, a)) continue;
    const v = geti(O_CON_VALS, c * nDev + d);
    if (v == 0) return false; // the device lacks the attribute
    if (geti(O_CON_KIND, c) == 0) {
      const m = geti(O_S_MATCH, c);
      if (m != 0 && m != v) return false;
    } else {
      for (let i = 0; i < nChosen; i++) {
        if (applies(c, geti(O_OUT_RALT, i)) && geti(O_CON_VALS, c * nDev + geti(O_OUT_DEV, i)) == v) return false;
      }
    }
  }
  return true;
}

// Admin access books like any other request inside the claim (upstream does too); it only
// ignores what other claims hold.
function account(a: i32, d: i32, sign: i64): void {
  const multi = bit(O_MULTI, 0, d);
  if (!multi) {
    const p = off(O_S_TAKEN) + (<usize>(d >> 5) << 2);
    const m: u32 = <u32>1 << (d & 31);
    store<u32>(p, sign > 0 ? load<u32>(p) | m : load<u32>(p) & ~m);
  }
  // counters: charged by the first share of a multi-allocatable device, released by the last
  if (multi && sign < 0) seti(O_S_SHARES, d, geti(O_S_SHARES, d) - 1);
  if (!countersPaid(d)) {
    const s = geti(O_DEV_CNT_START, d);
    const n = geti(O_DEV_CNT_COUNT, d);
    for (let i = s; i < s + n; i++) {
      const slot = geti(O_CNT_SLOT, i);
      setl(O_S_CNT, slot, getl(O_S_CNT, slot) + sign * getl(O_CNT_AMT, i));
    }
  }
  if (multi && sign > 0) seti(O_S_SHARES, d, geti(O_S_SHARES, d) + 1);
  if (multi) {
    const cs = geti(O_DEV_CAP_START, d);
    const cn = geti(O_DEV_CAP_COUNT, d);
    const base = a * nCapE();
    for (let e = cs; e < cs + cn; e++) setl(O_S_CAP, e, getl(O_S_CAP, e) + sign * getl(O_ALT_CAPCONS, base + e));
  }
}

/** Pushes device d for alternative a onto the chosen stack and books what it consumes. */
export function take(a: i32, d: i32): void {
  const i = pushChosen();
  seti(O_OUT_DEV, i, d);
  seti(O_OUT_RALT, i, a);
  account(a, d, 1);
  for (let c = 0; c < nCon; c++) {
    if (!applies(c, a)) continue;
    if (geti(O_S_MATCHN, c) == 0) seti(O_S_MATCH, c, geti(O_CON_VALS, c * nDev + d));
    seti(O_S_MATCHN, c, geti(O_S_MATCHN, c) + 1);
  }
}

/** Pops the last chosen device (must be d for a) and releases what it consumed. */
export function untake(a: i32, d: i32): void {
  popChosen();
  account(a, d, -1);
  for (let c = 0; c < nCon; c++) {
    if (!applies(c, a)) continue;
    const n = geti(O_S_MATCHN, c) - 1;
    seti(O_S_MATCHN, c, n);
    if (n == 0) seti(O_S_MATCH, c, 0);
  }
}

/** Best-fit device order for request r, alternative a, written to O_S_ORDER[r]: devices near those
 *  already chosen first (same PCIe root, then NUMA node), then groups that can hold the whole
 *  request, kept together, then devices whose counter set is already most used (packs MIG slices
 *  onto busy GPUs so whole GPUs stay free), then scheduler order. */
export function bestFitOrder(r: i32, a: i32): void {
  const count = geti(O_ALT_COUNT, a);
  const base = r * nDev;
  for (let d = 0; d < nDev; d++) {
    seti(O_S_ORDER, base + d, d);
    if (!altBit(a, B_SELECT, d)) {
      setl(O_S_KEY, d, -1);
      continue;
    }
    const root = geti(O_DEV_ROOT, d);
    const numa = geti(O_DEV_NUMA, d);
    let aff: i64 = 0;
    for (let i = 0; i < nChosen; i++) {
      const o = geti(O_OUT_DEV, i);
      if (root >= 0 && geti(O_DEV_ROOT, o) == root) aff |= 2;
      if (numa >= 0 && geti(O_DEV_NUMA, o) == numa) aff |= 1;
    }
    let group: i64 = 0;
    let rootKey: i64 = 0;
    if (count >= 2) {
      let sameRoot = 0, sameNuma = 0;
      for (let o = 0; o < nDev; o++) {
        if (!altBit(a, B_SELECT, o) || bit(O_IN_USE, 0, o) || bit(O_S_TAKEN, 0, o)) continue;
        if (root >= 0 && geti(O_DEV_ROOT, o) == root) sameRoot++;
        if (numa >= 0 && geti(O_DEV_NUMA, o) == numa) sameNuma++;
      }
      if (sameRoot >= count) group |= 2;
      if (sameNuma >= count) group |= 1;
      rootKey = 1023 - <i64>(root < 0 ? 1023 : (root > 1023 ? 1023 : root));
    }
    let tight: i64 = 0;
    if (geti(O_DEV_CNT_COUNT, d) > 0) {
      const slot = geti(O_CNT_SLOT, geti(O_DEV_CNT_START, d));
      const total = getl(O_CNT_TOTAL, slot);
      if (total > 0) tight = (getl(O_S_CNT, slot) * 1000) / total;
      if (tight > 1000) tight = 1000;
      if (tight < 0) tight = 0;
    }
    const key: i64 = ((aff * 4 + group) << 50) | (rootKey << 38) | (tight << 26) | <i64>(nDev - d);
    setl(O_S_KEY, d, key);
  }
  // insertion sort, descending key (stable enough: the key embeds the device index)
  for (let i = 1; i < nDev; i++) {
    const di = geti(O_S_ORDER, base + i);
    const ki = getl(O_S_KEY, di);
    let j = i - 1;
    while (j >= 0 && getl(O_S_KEY, geti(O_S_ORDER, base + j)) < ki) {
      seti(O_S_ORDER, base + j + 1, geti(O_S_ORDER, base + j));
      j--;
    }
    seti(O_S_ORDER, base + j + 1, di);
  }
}
