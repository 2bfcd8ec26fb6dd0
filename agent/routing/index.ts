// Public face of prefix routing: the contract (types.ts), the profile (config.ts), the request
// canonicalization (prompt.ts) and the WASM-backed router (wasm-router.ts).
export type { EndpointState, PrefixRouter, RouteDecision } from "./types.js";
export { DEFAULT_ROUTER_CONFIG, PICKER_COLD_SLACK, resolveRouterConfig, type RouterConfig, type RouterConfigInput, type RouterWeights } from "./config.js";
export { canonicalChat, completionPrompt, routedRequest, type RoutedRequest } from "./prompt.js";
export {
  createWasmPrefixRouter, routingExports, ROUTING_ABI_VERSION,
  type WasmPrefixRouter, type WasmPrefixRouterOptions, type DetailedRouteDecision,
} from "./wasm-router.js";
