// The JS side of the allocator's WASM border: lays a Problem out in the core's grow-only region
// (layout: wasm-core/assembly/alloc-layout.ts), runs allocSearch, reads the out-buffer. Uses the one
// loader, agent/wasm/core.ts. Only pointers and integers cross the border.
import { TesseraError } from "../common/errors.js";
import { loadWasmCore, type WasmCore } from "../wasm/core.js";
import type { Problem } from "./flatten.js";

export const ALLOCATOR_ABI = 1;
const HEADER_SLOTS = 48;
const STAGE_BITMAPS = 5;
export const STAGES = 5;
export const R = { OK: 0, UNSATISFIABLE: 1, CEL_ERROR: 2, TOO_MANY: 3, BUDGET: 4, ALL_CONSTRAINT: 5 } as const;

interface AllocExports {
  allocatorVersion(): number;
  allocReserve(bytes: number): number;
  allocSearch(): number;
  allocFailReq(): number;
  allocFailAlt(): number;
  allocFailStage(): number;
  allocPoisonDev(): number;
  allocResultCount(): number;
  allocSteps(): number;
}

export interface SearchOutcome {
  code: number;
  /** Result order: [alternative index, device index]. */
  results: [number, number][];
  /** [alt][stage] device counts. */
  stages: number[][];
  failReq: number;
  failAlt: number;
  failStage: number;
  poisonDev: number;
  steps: number;
}

let checked: WasmCore | undefined;
function core(): { c: WasmCore; x: AllocExports } {
  const c = loadWasmCore();
  const x = c.exports as unknown as AllocExports;
  if (checked !== c) {
    if (typeof x.allocSearch !== "function" || x.allocatorVersion() !== ALLOCATOR_ABI) {
      throw new TesseraError("TESSERA_WASM", `the WebAssembly core has allocator ABI ${typeof x.allocatorVersion === "function" ? x.allocatorVersion() : "none"}, expected ${ALLOCATOR_ABI}; run \`npm run build\``);
    }
    checked = c;
  }
  return { c, x };
}

/** Nano-unit quantities scaled to the coarsest exact unit so they fit i64 (saturating beyond 2^62). */
function scaler(p: Problem): (v: bigint) => bigint {
  const all: bigint[] = [];
  for (const e of p.capEntries) all.push(e.total, e.used);
  for (const row of p.capCons) all.push(...row);
  for (const c of p.counters) all.push(c.total, c.used);
  for (const row of p.devCnt) for (const e of row) all.push(e.amount);
  let div = 1n;
  if (all.every((v) => v % 1_000_000_000n === 0n)) div = 1_000_000_000n;
  else if (all.every((v) => v % 1_000_000n === 0n)) div = 1_000_000n;
  const cap = 1n << 62n;
  return (v) => {
    const s = v / div;
    return s > cap ? cap : s < 0n ? 0n : s;
  };
}

export function runSearch(p: Problem, strategy: 0 | 1, maxSteps: number, maxResults: number): SearchOutcome {
  const { c, x } = core();
  const nDev = p.devices.length;
  const nReq = p.requests.length;
  const nAlt = p.alts.length;
  const nCon = p.constraints.length;
  const nCnt = p.counters.length;
  const nCapE = p.capEntries.length;
  const W = Math.max(1, Math.ceil(nDev / 32));
  const WA = Math.max(1, Math.ceil(nAlt / 32));
  const cntEntries = p.devCnt.reduce((s, r) => s + r.length, 0);

  // offsets: slot -> [bytes, align]
  const sizes: [number, number, number][] = [
    [11, nReq * 4, 4], [12, nReq * 4, 4], [13, nAlt * 4, 4], [14, nAlt * 4, 4], [15, nAlt * 4, 4],
    [16, nAlt * STAGE_BITMAPS * W * 4, 4], [17, nAlt * nCapE * 8, 8], [18, W * 4, 4], [19, W * 4, 4],
    [20, nDev * 4, 4], [21, nDev * 4, 4], [22, nCapE * 8, 8], [23, nCapE * 8, 8], [24, nDev * 4, 4], [25, nDev * 4, 4],
    [26, cntEntries * 4, 4], [27, cntEntries * 8, 8], [28, nCnt * 8, 8], [29, nCnt * 8, 8], [30, nCon * 4, 4],
    [31, nCon * WA * 4, 4], [32, nCon * nDev * 4, 4], [33, nDev * 4, 4], [34, nDev * 4, 4],
    [35, nReq * 4, 4], [36, maxResults * 4, 4], [37, maxResults * 4, 4], [38, nAlt * STAGES * 4, 4],
    [39, nCnt * 8, 8], [40, nCapE * 8, 8], [41, W * 4, 4], [42, nCon * 4, 4], [43, nCon * 4, 4],
    [44, nReq * nDev * 4, 4], [45, nDev * 8, 8], [46, W * 4, 4], [47, nDev * 4, 4],
  ];
  const off = new Array<number>(HEADER_SLOTS).fill(0);
  let pos = HEADER_SLOTS * 4;
  for (const [slot, bytes] of sizes) {
    pos = (pos + 7) & ~7;
    off[slot] = pos;
    pos += Math.max(bytes, 8);
  }
  const base = x.allocReserve(pos); // zero-filled
  const i32 = c.i32();
  const u32 = c.u32();
  const u64 = c.u64();
  const I = (slot: number, i: number, v: number): void => void (i32[(base + (off[slot] as number)) / 4 + i] = v);
  const L = (slot: number, i: number, v: bigint): void => void (u64[(base + (off[slot] as number)) / 8 + i] = BigInt.asUintN(64, v));
  const setBit = (slot: number, word: number, d: number): void => {
    const idx = (base + (off[slot] as number)) / 4 + word + (d >> 5);
    u32[idx] = ((u32[idx] as number) | (1 << (d & 31))) >>> 0;
  };
  const h = base / 4;
  const header = [nDev, nReq, nAlt, nCon, nCnt, nCapE, W, strategy, maxSteps, maxResults, WA];
  header.forEach((v, i) => void (i32[h + i] = v));
  for (let s = 11; s < HEADER_SLOTS; s++) i32[h + s] = off[s] as number;

  const scale = scaler(p);
  p.requests.forEach((r, i) => {
    I(11, i, p.reqAltStart[i] as number);
    I(12, i, r.alternatives.length);
  });
  p.alts.forEach((a, i) => {
    I(13, i, a.mode === "All" ? 1 : 0);
    I(14, i, a.count);
    I(15, i, a.adminAccess ? 1 : 0);
    const bits = p.bits[i] as Uint8Array[];
    for (let b = 0; b < STAGE_BITMAPS; b++) {
      const row = bits[b] as Uint8Array;
      for (let d = 0; d < nDev; d++) if (row[d]) setBit(16, (i * STAGE_BITMAPS + b) * W, d);
    }
    const cons = p.capCons[i] as bigint[];
    for (let e = 0; e < nCapE; e++) L(17, i * nCapE + e, scale(cons[e] as bigint));
  });
  let ce = 0;
  for (let d = 0; d < nDev; d++) {
    if (p.inUse[d]) setBit(18, 0, d);
    if (p.multi[d]) setBit(19, 0, d);
    if (p.multiUsed[d]) setBit(46, 0, d);
    I(20, d, p.devCapStart[d] as number);
    I(21, d, p.devCapCount[d] as number);
    const row = p.devCnt[d] ?? [];
    I(24, d, ce);
    I(25, d, row.length);
    for (const e of row) {
      I(26, ce, e.slot);
      L(27, ce, scale(e.amount));
      ce++;
    }
    I(33, d, p.devNuma[d] as number);
    I(34, d, p.devRoot[d] as number);
  }
  p.capEntries.forEach((e, i) => {
    L(22, i, scale(e.total));
    L(23, i, scale(e.used));
  });
  p.counters.forEach((cn, i) => {
    L(28, i, scale(cn.total));
    L(29, i, scale(cn.used));
  });
  p.constraints.forEach((cn, i) => {
    I(30, i, cn.kind);
    cn.applies.forEach((ap, a) => void (ap && setBit(31, i * WA, a)));
    for (let d = 0; d < nDev; d++) I(32, i * nDev + d, cn.values[d] as number);
  });

  const code = x.allocSearch();
  const out = c.i32(); // the search does not grow memory, but re-read the view anyway
  const at = (slot: number, i: number): number => out[(base + (off[slot] as number)) / 4 + i] as number;
  const results: [number, number][] = [];
  if (code === R.OK) for (let i = 0; i < x.allocResultCount(); i++) results.push([at(37, i), at(36, i)]);
  const stages = p.alts.map((_, a) => Array.from({ length: STAGES }, (_, s) => at(38, a * STAGES + s)));
  return { code, results, stages, failReq: x.allocFailReq(), failAlt: x.allocFailAlt(), failStage: x.allocFailStage(), poisonDev: x.allocPoisonDev(), steps: x.allocSteps() };
}
