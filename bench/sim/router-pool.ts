// Tessera routing cores for the simulator: the real WASM router (createWasmPrefixRouter), pooled.
// The stub-runtime WASM heap never shrinks, so instead of a fresh router per run (hundreds per
// matrix, ~2-6 MB of index each) a run takes pooled routers and re-adds its endpoints, which is
// what a proxy does on endpoint churn: removeEndpoint clears the index, the node pool is reused.
import { createWasmPrefixRouter, type PrefixRouter, type WasmPrefixRouter, type WasmPrefixRouterOptions } from "../../agent/routing/index.js";

export interface RouterPool {
  /** Call before each run: the run's routers are handed out again from the first one. */
  reset(): void;
  /** A router with no endpoints and an empty index. */
  make(): PrefixRouter;
}

/** Profile overrides (e.g. the bench's --guard-threshold) apply to every router of the pool. */
export function createRouterPool(profile: Omit<WasmPrefixRouterOptions, "maxEndpoints"> = {}): RouterPool {
  const pool: WasmPrefixRouter[] = [];
  let used = 0;
  return {
    reset: () => {
      used = 0;
    },
    make() {
      let r = pool[used];
      if (!r) {
        r = createWasmPrefixRouter({ ...profile, maxEndpoints: 16 });
        pool.push(r);
      } else for (const id of r.endpoints()) r.removeEndpoint(id);
      used++;
      return r;
    },
  };
}
