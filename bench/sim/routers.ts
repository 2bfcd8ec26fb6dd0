// The routers compared by the simulator. All of them see what a proxy sees (stale metric
// snapshots + their own in-flight counts) except the oracle, which reads the servers' true caches
// and queues. Ties are broken by a seeded stream, so a run is reproducible.
import type { EndpointState, PrefixRouter } from "../../agent/routing/types.js";
import { createRng } from "./prng.js";
import type { EngineConfig, LiveRequest, SimServer } from "./server.js";
import { BLOCK_TOKENS } from "./kv-cache.js";
import { promptBytes, type RequestSpec } from "./workloads.js";
import { createAibrixRouter, createGieRouter } from "./peer-routers.js";

export type RouterName = "random" | "round-robin" | "least-request" | "load-only" | "gie-prefix" | "aibrix-prefix" | "tessera" | "tessera-x2" | "epp" | "epp-x2" | "epp-x4" | "oracle";
/** tessera-x2: two uncoordinated proxies; epp-xN: N uncoordinated `tessera epp` pickers (cold-prefix rendezvous);
 *  gie-prefix / aibrix-prefix: the Inference Extension's and AIBrix's prefix-cache routers (peer-routers.ts). */
export const ROUTER_NAMES: readonly RouterName[] = ["random", "round-robin", "least-request", "load-only", "gie-prefix", "aibrix-prefix", "tessera", "tessera-x2", "epp", "epp-x2", "epp-x4", "oracle"];
/** What `bench routing` runs without --routers (epp-x4 only when named: it keeps --quick short). */
export const DEFAULT_ROUTER_NAMES: readonly RouterName[] = ROUTER_NAMES.filter((r) => r !== "epp-x4");
/** `--quick` without --routers also leaves out aibrix-prefix: its 4-byte blocks hash and index
 *  every token (~25 s of CPU for W1's ladder), which would break the 60 s budget. */
export const QUICK_ROUTER_NAMES: readonly RouterName[] = DEFAULT_ROUTER_NAMES.filter((r) => r !== "aibrix-prefix");

export interface RouteContext {
  now: number;
  spec: RequestSpec;
  /** Which proxy replica handles the request (its snapshot view and in-flight counts). */
  replica: number;
  states: readonly EndpointState[];
  /** Ground truth, for the oracle only. */
  servers: readonly SimServer[];
  cfg: EngineConfig;
}

export interface SimRouter {
  name: RouterName;
  /** Proxy replicas in front of the servers (2 for the active-active case). */
  replicas: number;
  pick(ctx: RouteContext): number;
}

export interface RouterEnv {
  endpoints: readonly string[];
  capacityBlocks: number;
  seed: number;
  model: string;
  /** Builds one independent Tessera routing core (one per proxy or picker replica). */
  makePrefixRouter: (profile?: "proxy" | "picker") => PrefixRouter;
}

export function createRouter(name: RouterName, env: RouterEnv): SimRouter {
  const rng = createRng(env.seed);
  const n = env.endpoints.length;
  const argBest = (score: (i: number) => number): number => {
    // Highest score; ties broken uniformly at random (seeded).
    let best = -Infinity;
    let pick = 0;
    let ties = 0;
    for (let i = 0; i < n; i++) {
      const s = score(i);
      if (s > best) {
        best = s;
        pick = i;
        ties = 1;
      } else if (s === best && rng.int(++ties) === 0) pick = i;
    }
    return pick;
  };
  switch (name) {
    case "random":
      return { name, replicas: 1, pick: () => rng.int(n) };
    case "round-robin": {
      let next = 0;
      return { name, replicas: 1, pick: () => next++ % n };
    }
    case "least-request":
      return { name, replicas: 1, pick: (ctx) => argBest((i) => -(ctx.states[i] as EndpointState).inFlight) };
    case "load-only":
      // The Inference Extension's queue + KV-utilization scorers, equal weights, no prefix.
      return {
        name,
        replicas: 1,
        pick(ctx) {
          let maxQ = 0;
          for (const s of ctx.states) maxQ = Math.max(maxQ, s.waitingRequests);
          return argBest((i) => {
            const s = ctx.states[i] as EndpointState;
            return (maxQ === 0 ? 1 : 1 - s.waitingRequests / maxQ) + (1 - s.kvCacheUsage);
          });
        },
      };
    case "gie-prefix": {
      // AutoTune (GIE's default): the LRU per server holds as many blocks as the server's KV cache
      const gie = createGieRouter({ model: env.model, capacityPerServer: env.capacityBlocks, rng });
      return { name, replicas: 1, pick: (ctx) => gie.pick(promptBytes(ctx.spec), ctx.states) };
    }
    case "aibrix-prefix": {
      const aibrix = createAibrixRouter({ rng });
      return { name, replicas: 1, pick: (ctx) => aibrix.pick(promptBytes(ctx.spec), ctx.states) };
    }
    case "tessera":
    case "tessera-x2":
    case "epp":
    case "epp-x2":
    case "epp-x4": {
      const replicas = name.endsWith("-x4") ? 4 : name.endsWith("-x2") ? 2 : 1;
      const profile = name.startsWith("epp") ? "picker" : "proxy";
      const cores: PrefixRouter[] = [];
      for (let r = 0; r < replicas; r++) {
        const core = env.makePrefixRouter(profile);
        for (const id of env.endpoints) core.addEndpoint(id, env.capacityBlocks);
        cores.push(core);
      }
      const indexOf = new Map(env.endpoints.map((id, i) => [id, i]));
      return {
        name,
        replicas,
        pick(ctx) {
          const decision = (cores[ctx.replica] as PrefixRouter).route(promptBytes(ctx.spec), env.model, ctx.states);
          const i = indexOf.get(decision.endpoint);
          if (i === undefined) throw new Error(`router picked unknown endpoint ${decision.endpoint}`);
          return i;
        },
      };
    }
    case "oracle":
      return createOracle(argBest);
  }
}

/** Longest common block prefix of two hash arrays, capped. */
function commonPrefix(a: Int32Array, b: Int32Array, cap: number): number {
  const lim = Math.min(a.length, b.length, cap);
  let i = 0;
  while (i < lim && a[i] === b[i]) i++;
  return i;
}

/**
 * Upper bound: knows each server's true cache and queue. A block counts as available when it is
 * cached or will be by a request already on that server. Cost = pending prefill tokens on the
 * server + 2 x this request's uncached tokens (a miss costs its own wait and everyone's capacity).
 */
function createOracle(argBest: (score: (i: number) => number) => number): SimRouter {
  const uncachedOf = new Map<number, number>();
  const pending = (s: SimServer): number => {
    let tokens = 0;
    for (const r of s.running) if (r.computed < r.target) tokens += r.target - r.computed;
    for (const r of s.waiting) tokens += r.admissions > 0 ? r.target : (uncachedOf.get(r.spec.id) ?? r.target);
    return tokens;
  };
  const available = (s: SimServer, spec: RequestSpec, cap: number): number => {
    let best = s.kv.lookup(spec.blocks, cap);
    const scan = (rs: readonly LiveRequest[]): void => {
      for (const r of rs) if (r.spec.blocks[best] === spec.blocks[best]) best = Math.max(best, commonPrefix(r.spec.blocks, spec.blocks, Math.min(cap, Math.floor(r.spec.promptTokens / BLOCK_TOKENS))));
    };
    scan(s.running);
    scan(s.waiting);
    return best;
  };
  return {
    name: "oracle",
    replicas: 1,
    pick(ctx) {
      const cap = Math.floor((ctx.spec.promptTokens - 1) / BLOCK_TOKENS);
      const uncached = ctx.servers.map((s) => ctx.spec.promptTokens - available(s, ctx.spec, cap) * BLOCK_TOKENS);
      const i = argBest((k) => -(pending(ctx.servers[k] as SimServer) + 2 * (uncached[k] as number)));
      uncachedOf.set(ctx.spec.id, uncached[i] as number);
      return i;
    },
  };
}
