// Claim allocation search (WASM core part 1): backtracking over requests and devices in the
// kube-scheduler's order (requests in claim order, alternatives in firstAvailable order, devices
// in pool/slice order), on a problem the agent flattened into one region (see alloc-layout.ts).
//
// Exports (caller: agent/allocator/wasm-bridge.ts, once per allocateClaim call unless noted):
//   allocatorVersion(): u32            — allocator ABI/layout version; checked once at load.
//   allocReserve(bytes: i32): usize    — pointer to a grow-only problem region of >= bytes; once per call.
//   allocSearch(): i32                 — runs the search on the region; R_* code; once per call.
//   allocFailReq(): i32                — main request index that could not be satisfied (-1 if none).
//   allocFailAlt(): i32                — alternative of that request whose stages emptied it (-1 if none).
//   allocFailStage(): i32              — S_* stage that emptied it (-1 if none).
//   allocPoisonDev(): i32              — device whose selector raised a CEL error (R_CEL_ERROR).
//   allocResultCount(): i32            — number of results written to O_OUT_DEV / O_OUT_RALT.
//   allocSteps(): i32                  — search nodes visited in the last call (for the bench).
import {
  HEADER_SLOTS, H_NDEV, H_NREQ, H_NALT, H_NCON, H_NCNT, H_NCAPE, H_W, H_STRATEGY, H_MAXSTEPS, H_MAXRESULTS, H_WA,
  O_REQ_ALT_START, O_REQ_ALT_COUNT, O_ALT_MODE, O_ALT_COUNT, O_ALT_ADMIN, O_ALT_BITS, O_ALT_CAPCONS, O_IN_USE, O_MULTI,
  O_DEV_CAP_START, O_DEV_CAP_COUNT, O_CAP_TOTAL, O_CAP_USED, O_DEV_CNT_START, O_DEV_CNT_COUNT, O_CNT_SLOT, O_CNT_AMT,
  O_CNT_TOTAL, O_CNT_USED, O_CON_KIND, O_CON_APPLIES, O_CON_VALS, O_DEV_NUMA, O_DEV_ROOT, O_OUT_ALT, O_OUT_DEV,
  O_OUT_RALT, O_OUT_STAGES, O_S_CNT, O_S_CAP, O_S_TAKEN, O_S_MATCH, O_S_MATCHN, O_S_ORDER, O_S_KEY,
  B_CLASS, B_SELECT, B_CAPFIT, B_TOLERATED, B_POISON, STAGE_BITMAPS,
  S_CLASS, S_SELECT, S_AVAILABLE, S_TAINTS, S_CONSTRAINTS, STAGES,
  R_OK, R_UNSATISFIABLE, R_CEL_ERROR, R_TOO_MANY, R_BUDGET, R_ALL_CONSTRAINT, O_S_SHARES,
} from "./alloc-layout";
import { cntFits, capFits, take, untake, constraintsAllow, bestFitOrder } from "./alloc-state";
import { B, nDev, nReq, nAlt, nCon, W, nChosen, loadHeader, resetChosen, geti, seti, getl, setl, bit, altBit, off } from "./alloc-mem";

/** Allocator ABI/layout version; the bridge refuses a mismatch. Called once at load. */
export function allocatorVersion(): u32 {
  return 1;
}

let region: usize = 0;
let regionSize: i32 = 0;

/** Pointer to a region of at least `bytes` bytes (grow-only; the stub runtime never frees). Once per call. */
export function allocReserve(bytes: i32): usize {
  if (bytes > regionSize) {
    let size = regionSize < 65536 ? 65536 : regionSize;
    while (size < bytes) size <<= 1;
    region = heap.alloc(<usize>size);
    regionSize = size;
  }
  memory.fill(region, 0, <usize>bytes);
  return region;
}

// ---- search state ------------------------------------------------------------------------
let strategy: i32 = 0;
let maxSteps: i32 = 0;
let maxResults: i32 = 0;
let steps: i32 = 0;
let failReq: i32 = -1;
let failAlt: i32 = -1;
let failStage: i32 = -1;
let poisonDev: i32 = -1;
let abortCode: i32 = R_OK;
let deepestReq: i32 = -1;
let hitMax: bool = false;

/** Runs the search on the region filled by the bridge; returns an R_* code. Once per allocateClaim. */
export function allocSearch(): i32 {
  loadHeader(region);
  strategy = load<i32>(B + (<usize>H_STRATEGY << 2));
  maxSteps = load<i32>(B + (<usize>H_MAXSTEPS << 2));
  maxResults = load<i32>(B + (<usize>H_MAXRESULTS << 2));
  const nCnt = load<i32>(B + (<usize>H_NCNT << 2));
  const nCapE = load<i32>(B + (<usize>H_NCAPE << 2));
  steps = 0;
  failReq = -1;
  failAlt = -1;
  failStage = -1;
  poisonDev = -1;
  abortCode = R_OK;
  deepestReq = -1;
  for (let c = 0; c < nCnt; c++) setl(O_S_CNT, c, getl(O_CNT_USED, c));
  for (let e = 0; e < nCapE; e++) setl(O_S_CAP, e, getl(O_CAP_USED, e));
  for (let w = 0; w < W; w++) store<u32>(off(O_S_TAKEN) + (<usize>w << 2), 0);
  for (let d = 0; d < nDev; d++) seti(O_S_SHARES, d, 0);
  hitMax = false;
  for (let c = 0; c < nCon; c++) {
    seti(O_S_MATCH, c, 0);
    seti(O_S_MATCHN, c, 0);
  }
  countStaticStages();
  // The scheduler evaluates every device of an All-mode request up front: a CEL error there fails at once.
  for (let a = 0; a < nAlt; a++) {
    if (geti(O_ALT_MODE, a) != 1) continue;
    for (let d = 0; d < nDev; d++) {
      if (altBit(a, B_POISON, d)) {
        poisonDev = d;
        failAlt = a;
        failReq = reqOfAlt(a);
        return R_CEL_ERROR;
      }
    }
  }
  if (solve(0)) return R_OK;
  if (abortCode != R_OK) return abortCode;
  explainFailure();
  return hitMax && failStage == S_CONSTRAINTS ? R_TOO_MANY : R_UNSATISFIABLE;
}

export function allocFailReq(): i32 { return failReq; }
export function allocFailAlt(): i32 { return failAlt; }
export function allocFailStage(): i32 { return failStage; }
export function allocPoisonDev(): i32 { return poisonDev; }
export function allocResultCount(): i32 { return nChosen; }
export function allocSteps(): i32 { return steps; }

function reqOfAlt(a: i32): i32 {
  for (let r = 0; r < nReq; r++) {
    const s = geti(O_REQ_ALT_START, r);
    if (a >= s && a < s + geti(O_REQ_ALT_COUNT, r)) return r;
  }
  return -1;
}

/** How many devices an alternative needs: its count, or for All every selectable device. */
function needOf(a: i32): i32 {
  return geti(O_ALT_MODE, a) == 1 ? geti(O_OUT_STAGES, a * STAGES + S_SELECT) : geti(O_ALT_COUNT, a);
}

function countStaticStages(): void {
  for (let a = 0; a < nAlt; a++) {
    const admin = geti(O_ALT_ADMIN, a) != 0;
    let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
    for (let d = 0; d < nDev; d++) {
      if (!altBit(a, B_CLASS, d)) continue;
      c0++;
      if (!altBit(a, B_SELECT, d)) continue;
      c1++;
      if (!altBit(a, B_CAPFIT, d) || !cntFits(d) || !capFits(a, d)) continue;
      if (!admin && bit(O_IN_USE, 0, d)) continue;
      c2++;
      if (!altBit(a, B_TOLERATED, d)) continue;
      c3++;
    }
    const base = a * STAGES;
    seti(O_OUT_STAGES, base + S_CLASS, c0);
    seti(O_OUT_STAGES, base + S_SELECT, c1);
    seti(O_OUT_STAGES, base + S_AVAILABLE, c2);
    seti(O_OUT_STAGES, base + S_TAINTS, c3);
    seti(O_OUT_STAGES, base + S_CONSTRAINTS, 0);
  }
}

/** Names the request and stage to blame: the first request no alternative of which passes the
 *  per-device stages; otherwise the deepest request the search could not complete (constraints
 *  or devices contended between requests of this claim). */
function explainFailure(): void {
  for (let r = 0; r < nReq; r++) {
    const s = geti(O_REQ_ALT_START, r);
    const n = geti(O_REQ_ALT_COUNT, r);
    let ok = false;
    for (let a = s; a < s + n; a++) {
      const need = needOf(a);
      const base = a * STAGES;
      if (need > 0 && geti(O_OUT_STAGES, base + S_TAINTS) >= need) ok = true;
    }
    if (ok) continue;
    failReq = r;
    failAlt = s;
    const need = needOf(s);
    const base = s * STAGES;
    failStage = S_TAINTS;
    for (let st = S_CLASS; st <= S_TAINTS; st++) {
      const cnt = geti(O_OUT_STAGES, base + st);
      if (cnt < need || cnt == 0) {
        failStage = st;
        break;
      }
    }
    return;
  }
  failReq = deepestReq < 0 ? 0 : deepestReq;
  failAlt = geti(O_REQ_ALT_START, failReq);
  failStage = S_CONSTRAINTS;
}

function solve(r: i32): bool {
  if (r == nReq) return true;
  if (r > deepestReq) deepestReq = r;
  const s = geti(O_REQ_ALT_START, r);
  const n = geti(O_REQ_ALT_COUNT, r);
  for (let a = s; a < s + n; a++) {
    seti(O_OUT_ALT, r, a);
    if (geti(O_ALT_MODE, a) == 1) {
      if (fillAll(r, a)) return true;
    } else {
      if (strategy == 1) bestFitOrder(r, a);
      if (fillExact(r, a, 0, 0, geti(O_ALT_COUNT, a))) return true;
    }
    if (abortCode != R_OK) return false;
  }
  return false;
}

/** Device d is usable for alternative a now (in-use, selectors, capacity, counters, taints, constraints). */
let lastWasConstraint: bool = false;
function feasible(a: i32, d: i32): bool {
  lastWasConstraint = false;
  const multi = bit(O_MULTI, 0, d);
  if (!multi && bit(O_S_TAKEN, 0, d)) return false; // taken by this claim, admin access or not
  if (geti(O_ALT_ADMIN, a) == 0 && bit(O_IN_USE, 0, d)) return false;
  if (altBit(a, B_POISON, d)) {
    poisonDev = d;
    abortCode = R_CEL_ERROR;
    return false;
  }
  if (!altBit(a, B_SELECT, d)) return false;
  if (!altBit(a, B_CAPFIT, d)) return false;
  if (!altBit(a, B_TOLERATED, d)) return false;
  if (!cntFits(d) || !capFits(a, d)) return false;
  if (!constraintsAllow(a, d)) {
    lastWasConstraint = true;
    return false;
  }
  return true;
}

function noteFilled(a: i32, k: i32): void {
  const i = a * STAGES + S_CONSTRAINTS;
  if (geti(O_OUT_STAGES, i) < k) seti(O_OUT_STAGES, i, k);
}

/** Chooses devices k..count-1 of ExactCount alternative a, in increasing order position >= from. */
function fillExact(r: i32, a: i32, k: i32, from: i32, count: i32): bool {
  if (k == count) return solve(r + 1);
  if (k == 0 && nChosen + count > maxResults) {
    hitMax = true; // the scheduler treats this as "does not fit" and tries the next subrequest
    return false;
  }
  for (let p = from; p < nDev; p++) {
    const d = strategy == 1 ? geti(O_S_ORDER, r * nDev + p) : p;
    if (maxSteps > 0 && ++steps > maxSteps) {
      abortCode = R_BUDGET;
      return false;
    } else if (maxSteps == 0) steps++;
    if (!feasible(a, d)) {
      if (abortCode != R_OK) {
        failReq = r;
        failAlt = a;
        return false;
      }
      continue;
    }
    take(a, d);
    noteFilled(a, k + 1);
    if (fillExact(r, a, k + 1, p + 1, count)) return true;
    untake(a, d);
    if (abortCode != R_OK) return false;
  }
  return false;
}

/** All mode: every selectable device must be allocatable, or the alternative fails as a whole. */
function fillAll(r: i32, a: i32): bool {
  const start = nChosen;
  let any = false;
  let need = 0;
  for (let d = 0; d < nDev; d++) if (altBit(a, B_SELECT, d) && altBit(a, B_CAPFIT, d)) need++;
  if (nChosen + need > maxResults) {
    hitMax = true;
    return false;
  }
  for (let d = 0; d < nDev; d++) {
    // every selectable device whose static capacity fits; anything else unavailable fails the request
    if (!altBit(a, B_SELECT, d) || !altBit(a, B_CAPFIT, d)) continue;
    any = true;
    steps++;
    if (!feasible(a, d)) {
      if (abortCode == R_OK && lastWasConstraint) abortCode = R_ALL_CONSTRAINT;
      if (abortCode != R_OK) {
        failReq = r;
        failAlt = a;
      }
      any = false;
      break;
    }
    take(a, d);
    noteFilled(a, nChosen - start);
  }
  if (any && solve(r + 1)) return true;
  while (nChosen > start) untake(geti(O_OUT_RALT, nChosen - 1), geti(O_OUT_DEV, nChosen - 1));
  return false;
}

