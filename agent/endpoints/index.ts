// What the HTTP proxy and the endpoint picker share about their endpoints: the table (scraped
// load, in-flight counts), the sources (static list, InferencePool watch) and the metrics.
export { createEndpointTable, parseEndpointUrl, type Endpoint, type EndpointSource, type EndpointTable, type EndpointTableOptions } from "./table.js";
export { createInferencePoolSource, parsePoolRef, poolTarget, POOL_GROUP, POOL_VERSION } from "./inference-pool.js";
export { parseVllmMetrics, type ScrapedLoad } from "./scrape.js";
export { createRouterMetrics, recordPick, type MetricsPrefix, type RouterMetrics } from "./metrics.js";
