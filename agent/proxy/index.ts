// The in-node proxy: startProxy (server.ts), endpoint sources, and the mock model server.
export { startProxy, type ProxyOptions, type RunningProxy, type EndpointSource } from "./server.js";
export { createInferencePoolSource, parsePoolRef, poolTarget } from "./inference-pool.js";
export { startMockModelServer, type MockModelServer, type MockModelServerOptions } from "./mock-model-server.js";
export { parseVllmMetrics, type ScrapedLoad } from "./scrape.js";
