// The in-node proxy: startProxy (server.ts) and the mock model server; the endpoint table,
// scraping and sources it shares with the endpoint picker live in agent/endpoints/.
export { startProxy, type ProxyOptions, type RunningProxy, type EndpointSource } from "./server.js";
export { createInferencePoolSource, parsePoolRef, poolTarget } from "../endpoints/inference-pool.js";
export { startMockModelServer, type MockModelServer, type MockModelServerOptions } from "./mock-model-server.js";
export { parseVllmMetrics, type ScrapedLoad } from "../endpoints/scrape.js";
