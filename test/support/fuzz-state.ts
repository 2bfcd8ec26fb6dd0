// Fuzz surfaces of the kubelet plugin and its damaged state, for test/support/fuzz.ts:
//   grpc        decoded Prepare/Unprepare requests with hostile claims, through a real grpc-js
//               client on the real DRA socket of a running agent (standalone store)
//   grpc-raw    raw bytes on the DRA socket: HTTP/2 prefaces, random frames, garbage
//   checkpoint  mutated checkpoint files (raw bytes, or JSON edits with the checksum recomputed),
//               loaded as at start, then a Prepare through the loaded state
//   store       mutated ResourceClaim JSON read by `claims apply`
// Invariants: nothing crashes; every call answers per claim or is refused with a gRPC status (or
// the connection closes); an empty Prepare still answers; a damaged file is moved aside or reported
// with a TesseraError, never TESSERA_INTERNAL.
import { connect } from "node:net";
import { promises as fsp, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Rng } from "../../bench/sim/prng.js";
import { captureIO } from "../../agent/cli/io.js";
import { main } from "../../agent/cli/main.js";
import { isTesseraError } from "../../agent/common/errors.js";
import { createMemoryLogger } from "../../agent/common/log.js";
import { deviceFacts } from "../../agent/discovery/model.js";
import { createCdiWriter } from "../../agent/plugin/cdi.js";
import { encodeCheckpoint, loadCheckpoint, type CheckpointData } from "../../agent/plugin/checkpoint.js";
import { createStoreClaimSource } from "../../agent/plugin/claim-source.js";
import { createDeviceState } from "../../agent/plugin/state.js";
import { type DraClient } from "../../agent/plugin/protos.js";
import { claim, DRIVER, inventory, NODE, nodeConfig, ref, startEnv, tempDir, uid } from "./kubelet-env.js";
import type { FuzzSurface } from "./fuzz.js";

const enc = new TextEncoder();
const dec = new TextDecoder();
const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.int(xs.length)] as T;

/** A hostile string: empty, valid-looking, path tricks, control and non-ASCII characters, or long. */
function hostile(rng: Rng, valid: string): string {
  switch (rng.int(9)) {
    case 0:
      return "";
    case 1:
      return valid;
    case 2:
      return pick(rng, ["..", "../../etc/passwd", "a/b", "x\u0000y", "-", "A", "\u202e", "ü", "a\nb", " "]);
    case 3:
      return "a".repeat(1 + rng.int(rng.next() < 0.1 ? 120_000 : 300));
    case 4:
      return valid + pick(rng, ["/", ".", "-", "\u0000", "Z"]);
    default: {
      const n = rng.int(40);
      let s = "";
      for (let i = 0; i < n; i++) s += String.fromCharCode(rng.next() < 0.8 ? 32 + rng.int(95) : rng.int(0x2fff));
      return s;
    }
  }
}

interface WireOp {
  op: "prepare" | "unprepare";
  claims: { namespace: string; name: string; uid: string }[];
}

async function emptyPrepareAnswers(c: DraClient): Promise<void> {
  await c.prepare({ claims: [] }, 2000);
}

function assertEntryError(error: string | undefined, where: string): void {
  if (error && (!/^TESSERA_[A-Z_]+: /.test(error) || error.startsWith("TESSERA_INTERNAL"))) throw new Error(`${where}: ${error.slice(0, 200)}`);
}

const grpcSurface: FuzzSurface = {
  name: "grpc",
  concurrency: 4, // calls at once, as a kubelet with several pods starting makes them
  async open() {
    const env = await startEnv();
    const known = [claim({ name: "a", uid: uid(1), results: [{ device: "gpu-2" }] }), claim({ name: "b", uid: uid(2), results: [{ device: "gpu-2" }] })];
    for (const c of known) await env.store.putClaim(c);
    return {
      gen(rng) {
        const n = rng.next() < 0.02 ? 400 + rng.int(300) : rng.int(6);
        const claims = Array.from({ length: n }, () => {
          const base = ref(pick(rng, known));
          const dup = rng.next() < 0.3;
          return dup ? base : { namespace: hostile(rng, base.namespace), name: hostile(rng, base.name), uid: rng.next() < 0.5 ? hostile(rng, base.uid) : uid(rng.int(1000)) };
        });
        return enc.encode(JSON.stringify({ op: rng.next() < 0.6 ? "prepare" : "unprepare", claims } satisfies WireOp));
      },
      async exec(input) {
        const req = JSON.parse(dec.decode(input)) as WireOp;
        try {
          const res = req.op === "prepare" ? await env.v1.prepare({ claims: req.claims }, 5000) : await env.v1.unprepare({ claims: req.claims }, 5000);
          const got = (res.claims ?? {}) as Record<string, { error?: string }>;
          for (const c of req.claims) {
            if (!(c.uid in got)) throw new Error(`no entry for uid ${c.uid.slice(0, 40)}`);
            assertEntryError(got[c.uid]?.error, "entry");
          }
        } catch (err) {
          const code = (err as { code?: number }).code;
          if (code !== 8) throw err; // only RESOURCE_EXHAUSTED (count or size bound) may refuse a whole call
        }
        await emptyPrepareAnswers(env.v1);
      },
      close: () => env.close(),
    };
  },
};

const PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const grpcRawSurface: FuzzSurface = {
  name: "grpc-raw",
  concurrency: 16, // independent connections; most cases wait out the 100 ms bound
  async open() {
    const env = await startEnv();
    return {
      gen(rng) {
        const parts: number[] = [];
        if (rng.next() < 0.7) parts.push(...enc.encode(PREFACE));
        const frames = rng.int(6);
        for (let f = 0; f < frames; f++) {
          const len = rng.next() < 0.1 ? 16_000 + rng.int(60_000) : rng.int(64);
          parts.push((len >> 16) & 0xff, (len >> 8) & 0xff, len & 0xff, rng.int(12), rng.int(256), rng.int(256) & 0x7f, rng.int(256), rng.int(256), rng.int(256));
          const body = Math.min(len, rng.int(len + 1));
          for (let i = 0; i < body; i++) parts.push(rng.int(256));
        }
        if (rng.next() < 0.2) for (let i = rng.int(200); i > 0; i--) parts.push(rng.int(256));
        return Uint8Array.from(parts);
      },
      async exec(input) {
        await new Promise<void>((resolve, reject) => {
          const sock = connect(env.agent.draSocket);
          // Bounded: the agent closes the connection or we give up waiting after 100 ms.
          const timer = setTimeout(() => sock.destroy(), 100);
          sock.on("error", () => undefined);
          sock.on("close", () => {
            clearTimeout(timer);
            resolve();
          });
          sock.on("connect", () => sock.write(input));
          sock.setTimeout(5000, () => reject(new Error("socket hung")));
        });
        await emptyPrepareAnswers(env.v1);
      },
      close: () => env.close(),
    };
  },
};

/** Sets a random leaf (or subtree) of a JSON value to a random value. */
function mutateJson(rng: Rng, v: unknown): unknown {
  const junk = (): unknown => pick(rng, [null, 0, -1, 1.5, "", "x", "PrepareStarted", true, [], {}, [null], { a: 1 }, "a".repeat(300)]);
  if (v === null || typeof v !== "object" || rng.next() < 0.15) return junk();
  if (Array.isArray(v)) {
    if (v.length === 0 || rng.next() < 0.2) return [...v, junk()];
    const i = rng.int(v.length);
    return v.map((x, j) => (j === i ? mutateJson(rng, x) : x));
  }
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length === 0 || rng.next() < 0.1) return { ...o, [pick(rng, ["extra", "../x", uid(9), ""])]: junk() };
  const k = pick(rng, keys);
  if (rng.next() < 0.15) {
    const { [k]: _, ...rest } = o;
    return rest;
  }
  return { ...o, [k]: mutateJson(rng, o[k]) };
}

function mutateBytes(rng: Rng, good: Uint8Array): Uint8Array {
  const b = Uint8Array.from(good);
  switch (rng.int(3)) {
    case 0:
      return b.subarray(0, rng.int(b.length));
    case 1:
      for (let i = 1 + rng.int(4); i > 0; i--) b[rng.int(b.length)] = rng.int(256);
      return b;
    default:
      return enc.encode(pick(rng, ["", "{}", "null", "[]", '{"version":1}', "\u0000"]));
  }
}

const checkpointSurface: FuzzSurface = {
  name: "checkpoint",
  concurrency: 8, // each case has its own state directory; the time is fsync waits
  async open() {
    const facts = deviceFacts(inventory(4));
    const root = tempDir("tessera-fz-");
    const cfg = nodeConfig(root);
    const dev = (n: number): Record<string, unknown> => ({ requestNames: ["gpu"], poolName: NODE, deviceName: `gpu-${n}`, cdiDeviceIds: [`k8s.gpu.tessera.dev/claim=${uid(n)}-gpu-${n}`], kind: "gpu", uuid: `GPU-${n}`, gpuMinor: n, deviceNodes: [`/dev/nvidia${n}`] });
    const good: CheckpointData = { bootId: "boot-1", claims: { [uid(2)]: { state: "PrepareCompleted", namespace: "default", name: "a", devices: [dev(2)] }, [uid(3)]: { state: "PrepareStarted", namespace: "default", name: "b", devices: [dev(3)] } } } as unknown as CheckpointData;
    const goodText = enc.encode(encodeCheckpoint(good));
    const { createStandaloneStore } = await import("../../agent/kube/standalone-store.js");
    const store = createStandaloneStore(join(root, "store"));
    const other = claim({ name: "other", uid: uid(9), results: [{ device: "gpu-1" }] });
    await store.putClaim(other);
    let n = 0;
    return {
      gen(rng) {
        if (rng.next() < 0.3) return mutateBytes(rng, goodText);
        return enc.encode(encodeCheckpoint(mutateJson(rng, structuredClone(good)) as CheckpointData));
      },
      async exec(input) {
        const dir = join(cfg.stateDir, `case-${n++}`);
        await fsp.mkdir(dir, { recursive: true });
        const file = join(dir, "checkpoint.json");
        await fsp.writeFile(file, input);
        try {
          const log = createMemoryLogger();
          const { checkpoint, result } = await loadCheckpoint(file, { bootId: "boot-1", log });
          const state = createDeviceState({ driverName: DRIVER, poolName: NODE, checkpoint, cdi: createCdiWriter(join(dir, "cdi")), claims: createStoreClaimSource(store), devices: () => facts, toolkitUUIDs: async () => new Set(), log });
          await state.restore(result);
          // What broke every later Prepare: another claim must get a clear answer.
          await state.prepare(ref(other)).catch((err: unknown) => {
            if (!isTesseraError(err) || err.code === "TESSERA_INTERNAL") throw err;
          });
          await checkpoint.flush();
        } catch (err) {
          if (!isTesseraError(err) || err.code === "TESSERA_INTERNAL") throw err;
        } finally {
          await fsp.rm(dir, { recursive: true, force: true });
        }
      },
      close: () => fsp.rm(root, { recursive: true, force: true }),
    };
  },
};

const storeSurface: FuzzSurface = {
  name: "store",
  async open() {
    const root = tempDir("tessera-fz-");
    const good = readFileSync(new URL("../../../deploy/examples/one-gpu.yaml", import.meta.url), "utf8");
    const { parseAllDocuments } = await import("yaml");
    const base = parseAllDocuments(good)[0]?.toJS() as unknown;
    const file = join(root, "claim.json");
    const argv = ["claims", "apply", "-f", file, "--discovery", "fixture:l40s-1x", "--kube", `standalone:${join(root, "store")}`, "--node-name", NODE, "--kubelet-root", join(root, "k")];
    return {
      gen(rng) {
        if (rng.next() < 0.2) return mutateBytes(rng, enc.encode(JSON.stringify(base)));
        return enc.encode(JSON.stringify(mutateJson(rng, structuredClone(base))));
      },
      async exec(input) {
        await fsp.writeFile(file, input);
        const io = captureIO();
        const code = await main(argv, io);
        const lines = io.err.join("").trimEnd().split("\n").filter((l) => l.startsWith("TESSERA_"));
        if (code !== 0 && (lines.length !== 1 || lines[0]?.startsWith("TESSERA_INTERNAL"))) throw new Error(`exit ${code}: ${io.err.join("").slice(0, 300)}`);
      },
      close: () => fsp.rm(root, { recursive: true, force: true }),
    };
  },
};

export const STATE_SURFACES: FuzzSurface[] = [grpcSurface, grpcRawSurface, checkpointSurface, storeSurface];
