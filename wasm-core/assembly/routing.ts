// Prefix-hash routing (WASM core part 2). Placeholder until that issue lands.

/** Routing ABI version; 0 = not implemented yet. */
export function routingVersion(): u32 {
  return 0;
}
