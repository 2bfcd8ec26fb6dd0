// health.json in the state dir: the taint records and evidence, so taints survive an agent
// restart and `tessera diag health` (another process) can show them. Written atomically and
// durably (temp + fsync + rename + directory fsync) through the DurableFs seam; writes are
// serialized and coalesced (a write asked for during one happens once, after it, with the latest).
import * as path from "node:path";
import { writeFileAtomic } from "../common/atomic-file.js";
import { nodeDurableFs, type DurableFs } from "../common/durable-fs.js";
import type { HealthFile, TaintRecord } from "./keeper.js";

export const HEALTH_FILE = "health.json";

const EFFECTS = new Set(["NoExecute", "NoSchedule", "None"]);

function validRecord(r: unknown): r is TaintRecord {
  const x = r as Partial<TaintRecord> | null;
  return (
    typeof x === "object" && x !== null &&
    typeof x.scope === "string" && /^gpu-\d+(\/gi\d+)?$/.test(x.scope) &&
    typeof x.reason === "string" && /^[a-z0-9-]{1,40}$/.test(x.reason) &&
    typeof x.effect === "string" && EFFECTS.has(x.effect) &&
    typeof x.value === "string" && typeof x.message === "string" &&
    typeof x.timeAdded === "string" && !Number.isNaN(Date.parse(x.timeAdded)) &&
    typeof x.lastSeen === "string" && !Number.isNaN(Date.parse(x.lastSeen)) &&
    typeof x.active === "boolean"
  );
}

/** The records file, or undefined when missing; a damaged file gives what is valid in it and says so. */
export async function readHealthFile(stateDir: string, fs: DurableFs = nodeDurableFs): Promise<{ file?: HealthFile; problem?: string }> {
  let text: string;
  try {
    text = await fs.readFile(path.join(stateDir, HEALTH_FILE));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
    return { problem: `cannot read ${HEALTH_FILE}: ${(err as Error).message}` };
  }
  let parsed: Partial<HealthFile>;
  try {
    parsed = JSON.parse(text) as Partial<HealthFile>;
  } catch (err) {
    return { problem: `${HEALTH_FILE} is not JSON (${(err as Error).message}); taints start empty` };
  }
  if (parsed.version !== 1 || !Array.isArray(parsed.taints)) return { problem: `${HEALTH_FILE} has an unknown format; taints start empty` };
  const taints = parsed.taints.filter(validRecord);
  const file: HealthFile = { version: 1, taints, evidence: typeof parsed.evidence === "object" && parsed.evidence !== null ? parsed.evidence : {} };
  if (typeof parsed.bootId === "string") file.bootId = parsed.bootId;
  if (typeof parsed.kmsgSeq === "number" && Number.isSafeInteger(parsed.kmsgSeq)) file.kmsgSeq = parsed.kmsgSeq;
  return taints.length === parsed.taints.length ? { file } : { file, problem: `${HEALTH_FILE}: ${parsed.taints.length - taints.length} invalid taint record(s) dropped` };
}

export interface HealthWriter {
  /** Asks for the latest state to be written; resolves once a write that includes it is durable. */
  write(file: HealthFile): Promise<void>;
  idle(): Promise<void>;
}

export function createHealthWriter(stateDir: string, fs: DurableFs = nodeDurableFs): HealthWriter {
  let latest: HealthFile | undefined;
  let chain: Promise<void> = Promise.resolve();
  let queued: Promise<void> | undefined;
  const target = path.join(stateDir, HEALTH_FILE);
  return {
    write(file) {
      latest = file;
      queued ??= chain = chain.catch(() => undefined).then(async () => {
        queued = undefined;
        const f = latest as HealthFile;
        await writeFileAtomic(target, JSON.stringify(f, null, 1) + "\n", 0o644, fs);
      });
      return queued ?? chain;
    },
    idle: () => chain.catch(() => undefined),
  };
}
