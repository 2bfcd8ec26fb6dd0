// Claim allocator search (WASM core part 1). Placeholder until that issue lands.

/** Allocator ABI version; 0 = not implemented yet. */
export function allocatorVersion(): u32 {
  return 0;
}
