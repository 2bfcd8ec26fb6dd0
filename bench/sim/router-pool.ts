// Tessera routing cores for the simulator: the real WASM router (createWasmPrefixRouter), pooled.
// The stub-runtime WASM heap never shrinks, so instead of a fresh router per run (hundreds per
// matrix, ~2-6 MB of index each) a run takes pooled routers and re-adds its endpoints, which is
// what a proxy does on endpoint churn: removeEndpoint clears the index, the node pool is reused.
import { createWasmPrefixRouter, PICKER_COLD_SLACK, type PrefixRouter, type WasmPrefixRouter, type WasmPrefixRouterOptions } from "../../agent/routing/index.js";

export interface RouterPool {
  /** Call before each run: the run's routers are handed out again from the first one. */
  reset(): void;
  /** A router with no endpoints and an empty index; "picker": `tessera epp`'s profile (cold-prefix rendezvous). */
  make(profile?: "proxy" | "picker"): PrefixRouter;
}

/** Profile overrides (e.g. the bench's --guard-threshold) apply to every router of the pool. */
export function createRouterPool(profile: Omit<WasmPrefixRouterOptions, "maxEndpoints"> = {}): RouterPool {
  const pools = { proxy: [] as WasmPrefixRouter[], picker: [] as WasmPrefixRouter[] };
  const used = { proxy: 0, picker: 0 };
  return {
    reset: () => {
      used.proxy = 0;
      used.picker = 0;
    },
    make(kind = "proxy") {
      const pool = pools[kind];
      let r = pool[used[kind]];
      if (!r) {
        r = createWasmPrefixRouter({ ...(kind === "picker" ? { coldSlack: PICKER_COLD_SLACK } : {}), ...profile, maxEndpoints: 16 });
        pool.push(r);
      } else for (const id of r.endpoints()) r.removeEndpoint(id);
      used[kind]++;
      return r;
    },
  };
}
