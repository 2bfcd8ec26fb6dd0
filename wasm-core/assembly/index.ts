// Tessera WebAssembly core: the one module that the agent (claim allocator) and the proxy
// (prefix-hash routing) both load from dist/wasm/tessera.wasm.
//
// Exported API (each export is documented in one line in its own file):
//   coreVersion()            — ABI version of this module; loaders refuse a mismatch.
//   allocator.ts             — claim allocation search (issue: WASM core part 1).
//   routing.ts               — prefix hashing, per-endpoint prefix index, scoring (WASM core part 2).
//
// Runtime is "stub": no GC; every hot path works in static, flat memory regions.

/** ABI version of the module; bump when an export's signature or memory layout changes. */
export function coreVersion(): u32 {
  return 1;
}

export * from "./allocator";
export * from "./routing";
