// The simulated workloads: W1-W4 (the published matrix) and W5, the hot-prefix stress run only
// when named. Token IDs come first (the servers' KV cache hashes them); the text a router sees is
// rendered at 4 ASCII characters per token, so a router's 64-byte blocks cover exactly the
// server's 16-token blocks. All randomness comes from the seed.
import { chainedBlockHashes, createKeyInterner } from "./kv-cache.js";
import { createRng, createZipf, shuffle, subSeed, type Rng } from "./prng.js";

export interface RequestSpec {
  id: number;
  /** The prompt followed by the output the model will produce (outputs feed later turns). */
  tokens: Int32Array;
  promptTokens: number;
  outputTokens: number;
  /** Every full 16-token block of `tokens`, as its interned chained hash (see Workload.keySpace). */
  blocks: Int32Array;
  /** Follow-up turn: arrives `thinkTime` s after request `after` finishes; -1 for open-loop arrivals. */
  after: number;
  thinkTime: number;
}

export interface Workload {
  name: "W1" | "W2" | "W3" | "W4" | "W5";
  title: string;
  requests: RequestSpec[];
  /** Distinct block keys across the workload (size of the servers' hash tables). */
  keySpace: number;
  /** Ids of open-loop requests in arrival order (Poisson at the ladder rate). */
  openLoop: number[];
  servers: number;
  kvTokensPerServer: number;
  /** Offered rates, requests/s (W2: new conversations/s). */
  rates: number[];
  /** The rate at which the per-rate figures are reported. */
  referenceRate: number;
  rateUnit: "req/s" | "conv/s";
}

export type WorkloadName = Workload["name"];
/** The default set of a bench run (the published figures and the chart's four panels). */
export const WORKLOAD_NAMES: readonly WorkloadName[] = ["W1", "W2", "W3", "W4"];
/** Every workload `--workloads` accepts; W5 (hot prefix) only runs when named. */
export const ALL_WORKLOAD_NAMES: readonly WorkloadName[] = [...WORKLOAD_NAMES, "W5"];

const VOCAB = 100_000;
const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const ALPHA = Uint8Array.from(ALPHABET, (c) => c.charCodeAt(0));

function randomTokens(rng: Rng, n: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.int(VOCAB);
  return out;
}

function concat(parts: readonly Int32Array[]): Int32Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Int32Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const between = (rng: Rng, lo: number, hi: number): number => lo + rng.int(hi - lo + 1);

type Interner = ReturnType<typeof createKeyInterner>;

/** Appends one request; exported for tests that hand-build tiny workloads. */
export function addRequest(requests: RequestSpec[], keys: Interner, prompt: Int32Array, output: Int32Array, after = -1, thinkTime = 0): RequestSpec {
  const tokens = concat([prompt, output]);
  const s: RequestSpec = { id: requests.length, tokens, promptTokens: prompt.length, outputTokens: output.length, blocks: keys.intern(chainedBlockHashes(tokens)), after, thinkTime };
  requests.push(s);
  return s;
}

const rendered = new WeakMap<RequestSpec, Uint8Array>();

/** The prompt as a router sees it: 4 ASCII bytes per token (base-64 digits of the token ID). */
export function promptBytes(s: RequestSpec): Uint8Array {
  let out = rendered.get(s);
  if (out) return out;
  out = new Uint8Array(s.promptTokens * 4);
  for (let i = 0; i < s.promptTokens; i++) {
    const t = s.tokens[i] as number;
    out[4 * i] = ALPHA[(t >>> 18) & 63] as number;
    out[4 * i + 1] = ALPHA[(t >>> 12) & 63] as number;
    out[4 * i + 2] = ALPHA[(t >>> 6) & 63] as number;
    out[4 * i + 3] = ALPHA[t & 63] as number;
  }
  rendered.set(s, out);
  return out;
}

/** Scale < 1 shrinks request counts (tests); the shape of each workload is unchanged. */
export function buildWorkload(name: WorkloadName, seed: number, scale = 1): Workload {
  const rng = createRng(subSeed(seed, name));
  const requests: RequestSpec[] = [];
  const keys = createKeyInterner();
  const spec = (prompt: Int32Array, output: Int32Array, after = -1, thinkTime = 0): RequestSpec => addRequest(requests, keys, prompt, output, after, thinkTime);
  const base = { servers: 8, kvTokensPerServer: 307_328, get keySpace(): number { return keys.size(); } };
  switch (name) {
    case "W1": {
      // Shared system prompts, the published reference: groups x 5 prompts, 6,000-token group
      // prefix, 1,200-token question, 1,000 output tokens, shuffled.
      const groups = Math.max(2, Math.round(150 * scale));
      for (let g = 0; g < groups; g++) {
        const prefix = randomTokens(rng, 6000);
        for (let p = 0; p < 5; p++) spec(concat([prefix, randomTokens(rng, 1200)]), randomTokens(rng, 1000));
      }
      const openLoop = shuffle(requests.map((r) => r.id), rng);
      return { name, title: "shared system prompts", requests, openLoop, ...base, rates: [3, 6, 10, 14, 17, 20, 22, 25, 28, 30, 35, 40, 50, 60], referenceRate: 30, rateUnit: "req/s" };
    }
    case "W2": {
      // Multi-turn chat: one app-wide system prompt; each turn's prompt is the previous turn's
      // prompt + answer + a new user message; the next turn follows the answer after think time.
      const system = randomTokens(rng, 512);
      const conversations = Math.max(2, Math.round(800 * scale));
      const openLoop: number[] = [];
      for (let c = 0; c < conversations; c++) {
        const turns = between(rng, 3, 8);
        let history = system;
        let prev = -1;
        for (let k = 0; k < turns; k++) {
          const prompt = concat([history, randomTokens(rng, between(rng, 200, 1500))]);
          const output = randomTokens(rng, between(rng, 100, 400));
          const s = spec(prompt, output, prev, prev < 0 ? 0 : rng.exp(2));
          if (prev < 0) openLoop.push(s.id);
          history = s.tokens;
          prev = s.id;
        }
      }
      return { name, title: "multi-turn chat", requests, openLoop, ...base, rates: [5, 10, 20, 30, 40, 60, 80], referenceRate: 30, rateUnit: "conv/s" };
    }
    case "W3": {
      // RAG: a system prompt, then k=4 documents drawn from a Zipf(1.1) corpus of 1,000, then a question.
      const system = randomTokens(rng, 800);
      const corpus: Int32Array[] = [];
      for (let d = 0; d < 1000; d++) corpus.push(randomTokens(rng, between(rng, 300, 1200)));
      const zipf = createZipf(corpus.length, 1.1);
      const n = Math.max(4, Math.round(800 * scale));
      for (let i = 0; i < n; i++) {
        const picked: number[] = [];
        while (picked.length < 4) {
          const d = zipf(rng);
          if (!picked.includes(d)) picked.push(d);
        }
        const docs = picked.map((d) => corpus[d] as Int32Array);
        spec(concat([system, ...docs, randomTokens(rng, between(rng, 50, 150))]), randomTokens(rng, between(rng, 150, 400)));
      }
      return { name, title: "RAG, Zipf corpus", requests, openLoop: requests.map((r) => r.id), ...base, rates: [10, 30, 50, 60, 70, 80, 100], referenceRate: 60, rateUnit: "req/s" };
    }
    case "W4": {
      // Control: nothing shared.
      const n = Math.max(4, Math.round(800 * scale));
      for (let i = 0; i < n; i++) spec(randomTokens(rng, between(rng, 1000, 4000)), randomTokens(rng, between(rng, 200, 600)));
      return { name, title: "no sharing (control)", requests, openLoop: requests.map((r) => r.id), ...base, rates: [10, 30, 50, 60, 70, 80, 100], referenceRate: 60, rateUnit: "req/s" };
    }
    case "W5": {
      // Hot prefix, the saturation guard's case: every request shares one 6,000-token prefix, then
      // a 1,200-token question of its own and 1,000 output tokens (as W1). Pure prefix routing
      // would pile everything onto the replica that cached the prefix first.
      const prefix = randomTokens(rng, 6000);
      const n = Math.max(4, Math.round(800 * scale));
      for (let i = 0; i < n; i++) spec(concat([prefix, randomTokens(rng, 1200)]), randomTokens(rng, 1000));
      return { name, title: "hot prefix (guard stress)", requests, openLoop: requests.map((r) => r.id), ...base, rates: [10, 20, 30, 40, 50, 60, 70, 80, 100, 120], referenceRate: 40, rateUnit: "req/s" };
    }
  }
}

/** Poisson arrival times (s) for the open-loop requests at `rate`, seeded independently of the router. */
export function arrivalTimes(count: number, rate: number, seed: number): Float64Array {
  const rng = createRng(subSeed(seed, `arrivals@${rate}`));
  const out = new Float64Array(count);
  let t = 0;
  for (let i = 0; i < count; i++) {
    t += rng.exp(1 / rate);
    out[i] = t;
  }
  return out;
}
