// Every fuzz surface, in one list: test/fuzz.test.ts runs each for a small budget, bench/fuzz.ts
// for a long one. A new surface plugs in with one line here.
import type { FuzzSurface } from "./fuzz.js";
import { httpSurface } from "./fuzz-http.js";
import { nvsmiSurface } from "./fuzz-nvsmi.js";
import { STATE_SURFACES } from "./fuzz-state.js";

export const SURFACES: FuzzSurface[] = [httpSurface, nvsmiSurface, ...STATE_SURFACES];
