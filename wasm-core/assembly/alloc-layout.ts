// Memory layout of one allocation problem, shared with agent/allocator/wasm-bridge.ts.
// The problem lives in one grow-only region (allocReserve); its first HEADER_SLOTS i32 words
// are this header: counts, then byte offsets (from the region start) of each table.
// Bitmaps are u32 words, bit d of word d>>5 = device d. i64 tables are 8-byte aligned.

export const HEADER_SLOTS: i32 = 48;

// counts
export const H_NDEV: i32 = 0; // devices, in scheduler order (pool, slice, device)
export const H_NREQ: i32 = 1; // main requests, claim order
export const H_NALT: i32 = 2; // alternatives (exactly = 1 per request, firstAvailable = its subrequests)
export const H_NCON: i32 = 3; // constraints
export const H_NCNT: i32 = 4; // counter slots (pool, counter set, counter)
export const H_NCAPE: i32 = 5; // capacity entries of multi-allocatable devices
export const H_W: i32 = 6; // u32 words per device bitmap
export const H_STRATEGY: i32 = 7; // 0 first-fit, 1 best-fit
export const H_MAXSTEPS: i32 = 8; // search node budget, 0 = unlimited
export const H_MAXRESULTS: i32 = 9; // results cap (API limit 32)
export const H_WA: i32 = 10; // u32 words per alternative bitmap
// offsets (bytes from region start)
export const O_REQ_ALT_START: i32 = 11; // i32[nReq]
export const O_REQ_ALT_COUNT: i32 = 12; // i32[nReq]
export const O_ALT_MODE: i32 = 13; // i32[nAlt]: 0 ExactCount, 1 All
export const O_ALT_COUNT: i32 = 14; // i32[nAlt]
export const O_ALT_ADMIN: i32 = 15; // i32[nAlt]: 1 = adminAccess
export const O_ALT_BITS: i32 = 16; // u32[nAlt][STAGE_BITMAPS][W]
export const O_ALT_CAPCONS: i32 = 17; // i64[nAlt][nCapE]: what one allocation consumes
export const O_IN_USE: i32 = 18; // u32[W]: allocated to another claim (exclusive devices)
export const O_MULTI: i32 = 19; // u32[W]: allowMultipleAllocations
export const O_DEV_CAP_START: i32 = 20; // i32[nDev]
export const O_DEV_CAP_COUNT: i32 = 21; // i32[nDev]
export const O_CAP_TOTAL: i32 = 22; // i64[nCapE]
export const O_CAP_USED: i32 = 23; // i64[nCapE]: consumed by other claims
export const O_DEV_CNT_START: i32 = 24; // i32[nDev]
export const O_DEV_CNT_COUNT: i32 = 25; // i32[nDev]
export const O_CNT_SLOT: i32 = 26; // i32[entries]
export const O_CNT_AMT: i32 = 27; // i64[entries]
export const O_CNT_TOTAL: i32 = 28; // i64[nCnt]
export const O_CNT_USED: i32 = 29; // i64[nCnt]: consumed by other claims
export const O_CON_KIND: i32 = 30; // i32[nCon]: 0 matchAttribute, 1 distinctAttribute
export const O_CON_APPLIES: i32 = 31; // u32[nCon][WA]: which alternatives it binds
export const O_CON_VALS: i32 = 32; // i32[nCon][nDev]: interned attribute value, 0 = missing
export const O_DEV_NUMA: i32 = 33; // i32[nDev]: -1 unknown
export const O_DEV_ROOT: i32 = 34; // i32[nDev]: interned PCIe root, -1 unknown
// outputs
export const O_OUT_ALT: i32 = 35; // i32[nReq]: chosen alternative
export const O_OUT_DEV: i32 = 36; // i32[maxResults]: chosen devices, in result order
export const O_OUT_RALT: i32 = 37; // i32[maxResults]: alternative of each result
export const O_OUT_STAGES: i32 = 38; // i32[nAlt][STAGES]: devices passing each stage
// scratch (search state)
export const O_S_CNT: i32 = 39; // i64[nCnt]
export const O_S_CAP: i32 = 40; // i64[nCapE]
export const O_S_TAKEN: i32 = 41; // u32[W]: exclusive devices taken by this claim
export const O_S_MATCH: i32 = 42; // i32[nCon]: value fixed by matchAttribute, 0 = none yet
export const O_S_MATCHN: i32 = 43; // i32[nCon]: devices bound by the constraint so far
export const O_S_ORDER: i32 = 44; // i32[nReq][nDev]: best-fit device order per request
export const O_S_KEY: i32 = 45; // i64[nDev]: best-fit sort keys
export const O_MULTI_USED: i32 = 46; // u32[W]: multi-allocatable device already shared by another claim
export const O_S_SHARES: i32 = 47; // i32[nDev]: shares of a multi-allocatable device taken by this claim

// Stage bitmaps per alternative (O_ALT_BITS)
export const B_CLASS: i32 = 0; // DeviceClass selectors matched
export const B_SELECT: i32 = 1; // class and request selectors matched
export const B_CAPFIT: i32 = 2; // requested capacity fits the device (static)
export const B_TOLERATED: i32 = 3; // every NoSchedule/NoExecute taint tolerated
export const B_POISON: i32 = 4; // a selector raised a CEL runtime error on this device
export const STAGE_BITMAPS: i32 = 5;

// Stage counts (O_OUT_STAGES), in the order `diag explain` prints them
export const S_CLASS: i32 = 0;
export const S_SELECT: i32 = 1;
export const S_AVAILABLE: i32 = 2; // not in use, capacity and counters fit
export const S_TAINTS: i32 = 3;
export const S_CONSTRAINTS: i32 = 4; // most devices chosen together for it during the search
export const STAGES: i32 = 5;

// Result codes of allocSearch
export const R_OK: i32 = 0;
export const R_UNSATISFIABLE: i32 = 1;
export const R_CEL_ERROR: i32 = 2; // a poisoned device was reached, as the scheduler would
export const R_TOO_MANY: i32 = 3; // more results than maxResults
export const R_BUDGET: i32 = 4; // search node budget exhausted
export const R_ALL_CONSTRAINT: i32 = 5; // an All-mode request hit a constraint: an error upstream too
