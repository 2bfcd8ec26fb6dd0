// The agent's Prometheus metrics (served on --http-listen /metrics), in a Registry of its own
// (no module singleton, so tests and the demo can run several agents in one process).
// Modules get the plain `AgentMetrics` hooks; only this file knows the registry. Every metric is
// listed, with its labels, in docs/operations.md (a test compares the two).
import { Registry } from "./prom-text.js";

export type Outcome = "ok" | "error";

export interface AgentMetrics {
  /** One kubelet gRPC call (NodePrepareResources, NodeUnprepareResources, GetInfo, NotifyRegistrationStatus). */
  request(method: string, outcome: Outcome, seconds: number): void;
  /** A claim in a prepare answer carried an error with this TESSERA_* code. */
  prepareError(code: string): void;
  /** One ResourceSlice sync (list + writes). */
  slicePublish(outcome: Outcome, seconds: number): void;
  /** One discovery run; `code` on failure. */
  discovery(seconds: number, code?: string): void;
  checkpointWrite(outcome: Outcome): void;
  /** A checkpoint recovery at start: moved_aside (unusable file, rebuilt from CDI specs) or rebooted (specs re-created). */
  checkpointRecovery(kind: "moved_aside" | "rebooted"): void;
  /** Kubernetes Events: emitted, suppressed by the rate limit, failed (API error), or logged (standalone). */
  event(reason: string, outcome: "emitted" | "suppressed" | "failed" | "logged"): void;
  /** Per-device health hook (health checks are a later issue): 1 healthy, 0 unhealthy. */
  setDeviceHealth(device: string, healthy: boolean): void;
  /** Read at scrape time: claims and devices in the checkpoint. */
  preparedSource(fn: () => { claims: number; devices: number }): void;
  /** An MPS control daemon that died was restarted. */
  mpsRestart(): void;
  /** Read at scrape time: MPS control daemons by state (running, backoff, failed). */
  mpsSource(fn: () => Record<string, number>): void;
}

export interface AgentMetricsRegistry extends AgentMetrics {
  registry: Registry;
  text(): string;
  contentType: string;
}

const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export function createAgentMetrics(): AgentMetricsRegistry {
  const registry = new Registry();
  const requests = registry.counter({ name: "tessera_kubelet_requests_total", help: "kubelet gRPC calls answered, by method and outcome", labelNames: ["method", "outcome"] });
  const requestSeconds = registry.histogram({ name: "tessera_kubelet_request_duration_seconds", help: "Time to answer a kubelet gRPC call, by method and outcome", labelNames: ["method", "outcome"], buckets: DURATION_BUCKETS });
  const prepareErrors = registry.counter({ name: "tessera_prepare_errors_total", help: "Claims whose NodePrepareResources answer carried an error, by TESSERA_* code", labelNames: ["code"] });
  const publishes = registry.counter({ name: "tessera_slice_publish_total", help: "ResourceSlice syncs, by outcome", labelNames: ["outcome"] });
  const publishSeconds = registry.histogram({ name: "tessera_slice_publish_duration_seconds", help: "Time of one ResourceSlice sync (list, create, update, delete)", labelNames: ["outcome"], buckets: DURATION_BUCKETS });
  const discoverySeconds = registry.histogram({ name: "tessera_discovery_duration_seconds", help: "Time of one GPU discovery run (nvidia-smi + sysfs)", buckets: DURATION_BUCKETS });
  const discoveryErrors = registry.counter({ name: "tessera_discovery_errors_total", help: "Failed discovery runs, by TESSERA_* code", labelNames: ["code"] });
  const checkpointWrites = registry.counter({ name: "tessera_checkpoint_writes_total", help: "Checkpoint writes (fsynced), by outcome", labelNames: ["outcome"] });
  const recoveries = registry.counter({ name: "tessera_checkpoint_recoveries_total", help: "Checkpoint recoveries at start, by kind (moved_aside, rebooted)", labelNames: ["kind"] });
  const events = registry.counter({ name: "tessera_events_total", help: "Kubernetes Events, by reason and outcome (emitted, suppressed, failed, logged)", labelNames: ["reason", "outcome"] });
  const health = registry.gauge({ name: "tessera_device_health", help: "Per-device health: 1 healthy, 0 unhealthy (set by the health checker)", labelNames: ["device"] });
  let prepared: () => { claims: number; devices: number } = () => ({ claims: 0, devices: 0 });
  registry.gauge({ name: "tessera_prepared_claims", help: "Claims in the checkpoint (prepared or being prepared)", collect: (g) => g.set(prepared().claims) });
  registry.gauge({ name: "tessera_prepared_devices", help: "Devices held by claims in the checkpoint", collect: (g) => g.set(prepared().devices) });
  const mpsRestarts = registry.counter({ name: "tessera_mps_daemon_restarts_total", help: "MPS control daemons restarted after they died" });
  let mps: () => Record<string, number> = () => ({});
  registry.gauge({ name: "tessera_mps_daemons", help: "MPS control daemons of prepared claims, by state (running, backoff, failed)", labelNames: ["state"], collect(g) {
    const now = mps();
    for (const state of ["running", "backoff", "failed"]) g.labels(state).set(now[state] ?? 0);
  } });
  return {
    registry,
    contentType: registry.contentType,
    text: () => registry.text(),
    request(method, outcome, seconds) {
      requests.labels(method, outcome).inc();
      requestSeconds.labels(method, outcome).observe(seconds);
    },
    prepareError: (code) => prepareErrors.labels(code).inc(),
    slicePublish(outcome, seconds) {
      publishes.labels(outcome).inc();
      publishSeconds.labels(outcome).observe(seconds);
    },
    discovery(seconds, code) {
      discoverySeconds.observe(seconds);
      if (code) discoveryErrors.labels(code).inc();
    },
    checkpointWrite: (outcome) => checkpointWrites.labels(outcome).inc(),
    checkpointRecovery: (kind) => recoveries.labels(kind).inc(),
    event: (reason, outcome) => events.labels(reason, outcome).inc(),
    setDeviceHealth: (device, healthy) => health.labels(device).set(healthy ? 1 : 0),
    preparedSource: (fn) => void (prepared = fn),
    mpsRestart: () => mpsRestarts.inc(),
    mpsSource: (fn) => void (mps = fn),
  };
}

/** For modules started without metrics (tests, diag). */
export const noMetrics: AgentMetrics = {
  request() {},
  prepareError() {},
  slicePublish() {},
  discovery() {},
  checkpointWrite() {},
  checkpointRecovery() {},
  event() {},
  setDeviceHealth() {},
  preparedSource() {},
  mpsRestart() {},
  mpsSource() {},
};
