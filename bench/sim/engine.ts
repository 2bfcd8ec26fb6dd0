// The discrete-event loop: arrivals -> router -> server queues -> engine steps -> completions,
// in virtual time. Routers see metric snapshots taken every `scrapeInterval` s and delivered
// `staleness` s late, plus their own in-flight counts. Returns one run's figures.
import type { EndpointState, PrefixRouter } from "../../agent/routing/types.js";
import { createRng, subSeed } from "./prng.js";
import { createRouter, type RouterName } from "./routers.js";
import { createServer, DEFAULT_ENGINE, type EngineConfig, type LiveRequest, type SimServer } from "./server.js";
import { BLOCK_TOKENS } from "./kv-cache.js";
import { arrivalTimes, type Workload } from "./workloads.js";

export interface SimOptions {
  seed: number;
  engine?: EngineConfig;
  /** Metric scrape period, s (vLLM /metrics polled by the proxy). */
  scrapeInterval?: number;
  /** Extra delay before a snapshot is visible to routers, s. */
  staleness?: number;
  makePrefixRouter: (profile?: "proxy" | "picker") => PrefixRouter;
  model?: string;
}

export interface RunFigures {
  workload: string;
  router: RouterName;
  rate: number;
  completed: number;
  rejected: number;
  /** Token-weighted prefix-cache hit rate of prompts at admission. */
  hitRate: number;
  ttftP50: number;
  ttftP90: number;
  ttftP99: number;
  /** Token-weighted mean inter-token latency, s. */
  itl: number;
  /** Output tokens per second over the run. */
  throughput: number;
  /** max/mean prefill tokens computed per server. */
  imbalance: number;
  preemptions: number;
  duration: number;
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

interface Event {
  t: number;
  seq: number;
  kind: 0 | 1; // 0 arrival (arg = request id), 1 step end (arg = server)
  arg: number;
}

function heapPush(h: Event[], e: Event): void {
  h.push(e);
  let i = h.length - 1;
  while (i > 0) {
    const p = (i - 1) >> 1;
    const a = h[p] as Event;
    if (a.t < e.t || (a.t === e.t && a.seq < e.seq)) break;
    h[i] = a;
    i = p;
  }
  h[i] = e;
}

function heapPop(h: Event[]): Event | undefined {
  const top = h[0];
  const last = h.pop();
  if (!top || !last || h.length === 0) return top;
  let i = 0;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= h.length) break;
    const r = l + 1;
    let c = l;
    const lc = h[l] as Event;
    const rc = h[r];
    if (rc && (rc.t < lc.t || (rc.t === lc.t && rc.seq < lc.seq))) c = r;
    const ce = h[c] as Event;
    if (last.t < ce.t || (last.t === ce.t && last.seq < ce.seq)) break;
    h[i] = ce;
    i = c;
  }
  h[i] = last;
  return top;
}

export function simulate(w: Workload, routerName: RouterName, rate: number, opts: SimOptions): RunFigures {
  const cfg = opts.engine ?? DEFAULT_ENGINE;
  const scrape = opts.scrapeInterval ?? 0.05;
  const staleness = opts.staleness ?? 0;
  const n = w.servers;
  const endpoints = Array.from({ length: n }, (_, i) => `10.0.0.${i + 1}:8000`);
  const servers: SimServer[] = endpoints.map((_, i) => createServer(i, w.kvTokensPerServer, w.keySpace, cfg));
  const router = createRouter(routerName, {
    endpoints,
    capacityBlocks: Math.floor(w.kvTokensPerServer / BLOCK_TOKENS),
    seed: subSeed(opts.seed, `router:${routerName}@${rate}`),
    model: opts.model ?? "sim-32b",
    makePrefixRouter: opts.makePrefixRouter,
  });
  const replicaRng = createRng(subSeed(opts.seed, `replica@${rate}`));
  const inFlight = Array.from({ length: router.replicas }, () => new Int32Array(n));
  const child = new Int32Array(w.requests.length).fill(-1);
  for (const s of w.requests) if (s.after >= 0) child[s.after] = s.id;

  const heap: Event[] = [];
  let seq = 0;
  const times = arrivalTimes(w.openLoop.length, rate, opts.seed);
  w.openLoop.forEach((id, k) => heapPush(heap, { t: times[k] as number, seq: seq++, kind: 0, arg: id }));

  // Snapshots: 3 numbers per server per tick (waiting, running, KV usage).
  const snaps: number[] = [];
  let nextTick = 0;
  const takeSnapshotsUntil = (t: number): void => {
    while (nextTick <= t) {
      for (const s of servers) snaps.push(s.waiting.length, s.running.length, 1 - s.kv.freeCount() / s.kv.capacity);
      nextTick = (snaps.length / (3 * n)) * scrape;
    }
  };
  const statesFor = (now: number, replica: number): EndpointState[] => {
    const tick = Math.floor((now - staleness) / scrape + 1e-9);
    const base = tick >= 0 && (tick + 1) * 3 * n <= snaps.length ? tick * 3 * n : -1;
    const flights = inFlight[replica] as Int32Array;
    return endpoints.map((id, i) => ({
      id,
      ready: true,
      waitingRequests: base < 0 ? 0 : (snaps[base + 3 * i] as number),
      runningRequests: base < 0 ? 0 : (snaps[base + 3 * i + 1] as number),
      kvCacheUsage: base < 0 ? 0 : (snaps[base + 3 * i + 2] as number),
      inFlight: flights[i] as number,
    }));
  };

  const done: LiveRequest[] = [];
  const kick = (s: SimServer, now: number): void => {
    if (s.busy()) return;
    const dt = s.startStep(now);
    if (dt >= 0) heapPush(heap, { t: now + dt, seq: seq++, kind: 1, arg: s.index });
  };
  let events = 0;
  const maxEvents = 50_000_000;
  for (let e = heapPop(heap); e; e = heapPop(heap)) {
    if (++events > maxEvents) throw new Error(`simulation of ${w.name}/${routerName}@${rate} did not converge`);
    takeSnapshotsUntil(e.t);
    if (e.kind === 0) {
      const spec = w.requests[e.arg];
      if (!spec) continue;
      const replica = router.replicas > 1 ? replicaRng.int(router.replicas) : 0;
      const target = router.pick({ now: e.t, spec, replica, states: statesFor(e.t, replica), servers, cfg });
      const flights = inFlight[replica] as Int32Array;
      flights[target] = (flights[target] as number) + 1;
      const live: LiveRequest = { spec, server: target, replica, arrivedAt: e.t, admittedAt: Number.NaN, firstTokenAt: Number.NaN, finishedAt: Number.NaN, hitTokens: 0, computed: 0, target: 0, generated: 0, committed: 0, table: [], admissions: 0 };
      const server = servers[target] as SimServer;
      server.enqueue(live);
      kick(server, e.t);
    } else {
      const server = servers[e.arg] as SimServer;
      for (const r of server.finishStep(e.t)) {
        const flights = inFlight[r.replica] as Int32Array;
        flights[r.server] = (flights[r.server] as number) - 1;
        done.push(r);
        const next = child[r.spec.id] as number;
        if (next >= 0) heapPush(heap, { t: e.t + (w.requests[next]?.thinkTime ?? 0), seq: seq++, kind: 0, arg: next });
      }
      kick(server, e.t);
    }
  }
  return figures(w, routerName, rate, done, servers);
}

function figures(w: Workload, router: RouterName, rate: number, done: LiveRequest[], servers: SimServer[]): RunFigures {
  let hit = 0;
  let prompt = 0;
  let itlTime = 0;
  let itlTokens = 0;
  let out = 0;
  let first = Infinity;
  let last = 0;
  const ttft: number[] = [];
  for (const r of done) {
    hit += r.hitTokens;
    prompt += r.spec.promptTokens;
    ttft.push(r.firstTokenAt - r.arrivedAt);
    if (r.spec.outputTokens > 1) {
      itlTime += r.finishedAt - r.firstTokenAt;
      itlTokens += r.spec.outputTokens - 1;
    }
    out += r.spec.outputTokens;
    first = Math.min(first, r.arrivedAt);
    last = Math.max(last, r.finishedAt);
  }
  ttft.sort((a, b) => a - b);
  const prefill = servers.map((s) => s.counters.prefillTokens);
  const mean = prefill.reduce((a, b) => a + b, 0) / prefill.length;
  return {
    workload: w.name,
    router,
    rate,
    completed: done.length,
    rejected: servers.reduce((a, s) => a + s.rejected.length, 0),
    hitRate: prompt > 0 ? hit / prompt : 0,
    ttftP50: percentile(ttft, 50),
    ttftP90: percentile(ttft, 90),
    ttftP99: percentile(ttft, 99),
    itl: itlTokens > 0 ? itlTime / itlTokens : 0,
    throughput: last > first ? out / (last - first) : 0,
    imbalance: mean > 0 ? Math.max(...prefill) / mean : 1,
    preemptions: servers.reduce((a, s) => a + s.counters.preemptions, 0),
    duration: last,
  };
}

/** Rate at which TTFT p90 first exceeds `limit` s, linearly interpolated on the ladder; Infinity if never. */
export function knee(points: readonly { rate: number; ttftP90: number }[], limit = 2): number {
  const sorted = [...points].sort((a, b) => a.rate - b.rate);
  for (let i = 0; i < sorted.length; i++) {
    const p = sorted[i] as { rate: number; ttftP90: number };
    if (p.ttftP90 <= limit) continue;
    const q = sorted[i - 1];
    if (!q) return p.rate;
    return q.rate + ((limit - q.ttftP90) / (p.ttftP90 - q.ttftP90)) * (p.rate - q.rate);
  }
  return Infinity;
}
