// The checkpoint (<state-dir>/checkpoint.json): which claims this node has prepared, with their
// devices and CDI IDs, so prepare is idempotent and unprepare works after the claim is gone.
// Versioned and checksummed; every write atomic (temp, fsync, rename, dir fsync) and writes
// are serialized with group commit so a slow fsync never lets an older snapshot win.
// A corrupt or unknown-version file is moved aside, never crash-looped on.
import { createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import { ensureDirDurable, writeFileAtomic } from "../common/atomic-file.js";
import { nodeDurableFs, type DurableFs } from "../common/durable-fs.js";
import { TesseraError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { checkpointDataProblem } from "./checkpoint-schema.js";
import type { PreparedDevice } from "./prepared.js";

export const CHECKPOINT_VERSION = 1;

export type ClaimState = "PrepareStarted" | "PrepareCompleted";

export interface ClaimEntry {
  state: ClaimState;
  namespace: string;
  name: string;
  devices: PreparedDevice[];
  /** Set when rebuilt from a CDI spec after checkpoint loss: devices are partial. */
  rebuilt?: boolean;
}

export interface CheckpointData {
  bootId: string;
  claims: Record<string, ClaimEntry>;
}

interface CheckpointFile {
  version: number;
  checksum: string;
  data: CheckpointData;
}

export function checksum(data: CheckpointData): string {
  return "sha256:" + createHash("sha256").update(JSON.stringify(data)).digest("hex");
}

export function encodeCheckpoint(data: CheckpointData): string {
  const file: CheckpointFile = { version: CHECKPOINT_VERSION, checksum: checksum(data), data };
  return JSON.stringify(file, null, 1) + "\n";
}

/** Parses and verifies; returns the reason when the file cannot be trusted. */
export function decodeCheckpoint(text: string): { ok: true; data: CheckpointData } | { ok: false; reason: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, reason: "not valid JSON (truncated or overwritten)" };
  }
  const f = parsed as Partial<CheckpointFile> | null;
  if (!f || typeof f !== "object") return { ok: false, reason: "not a JSON object" };
  if (f.version !== CHECKPOINT_VERSION) return { ok: false, reason: `unknown version ${JSON.stringify(f.version)} (this agent reads ${CHECKPOINT_VERSION})` };
  const d = f.data;
  if (!d || typeof d !== "object") return { ok: false, reason: "missing data" };
  if (f.checksum !== checksum(d)) return { ok: false, reason: "checksum mismatch" };
  // A valid checksum only says the bytes belong together; the shape is checked field by field.
  const problem = checkpointDataProblem(d);
  if (problem) return { ok: false, reason: `bad shape: ${problem}` };
  return { ok: true, data: d };
}

export type LoadResult =
  | { kind: "fresh"; data: CheckpointData }
  | { kind: "loaded"; data: CheckpointData; rebooted: boolean; previousBootId: string }
  | { kind: "moved-aside"; data: CheckpointData; reason: string; movedTo: string };

export interface Checkpoint {
  readonly file: string;
  readonly data: CheckpointData;
  get(uid: string): ClaimEntry | undefined;
  set(uid: string, entry: ClaimEntry): void;
  delete(uid: string): void;
  entries(): [string, ClaimEntry][];
  /** Persists the current in-memory state; resolves when a write that includes it is durable. */
  save(): Promise<void>;
  /** Waits for any write in flight (shutdown). */
  flush(): Promise<void>;
}

export interface CheckpointDeps {
  bootId: string;
  log: Logger;
  now?: () => Date;
  /** Told about every write (metrics). */
  onWrite?: (outcome: "ok" | "error") => void;
  /** How the file is written (default writeFileAtomic); tests inject EPERM/EROFS here. */
  write?: (file: string, text: string, mode: number) => Promise<void>;
  /** Every read and write of the checkpoint goes through this (default: node:fs). */
  fs?: DurableFs;
}

/**
 * A file-system error on the state dir as the one line an operator can act on: which path, what
 * the kernel said, and the usual causes of EPERM/EACCES/EROFS (an immutable flag, a read-only
 * mount, missing permissions).
 */
export function stateWriteError(what: string, target: string, err: unknown): TesseraError {
  const code = (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err));
  const fix =
    code === "EPERM" || code === "EACCES" || code === "EROFS"
      ? `the state dir is read-only or immutable: check \`lsattr -d ${path.dirname(target)}\` and \`lsattr ${target}\` (remove +i with chattr -i), that the volume is mounted read-write, and that the agent may write there; or choose another --state-dir`
      : `check --state-dir (${path.dirname(target)}) and the agent's permissions`;
  return new TesseraError("TESSERA_CHECKPOINT", `cannot ${what} ${target} (${code}); ${fix}`, { cause: err });
}

/** Reads the checkpoint, moving a bad one aside. Never throws for file content problems. */
export async function loadCheckpoint(file: string, deps: CheckpointDeps): Promise<{ checkpoint: Checkpoint; result: LoadResult }> {
  const fs = deps.fs ?? nodeDurableFs;
  await ensureDirDurable(path.dirname(file), 0o750, fs).catch((err: unknown) => {
    throw stateWriteError("create the state dir of", file, err);
  });
  const text = await fs.readFile(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw new TesseraError("TESSERA_CHECKPOINT", `cannot read ${file} (${err.code ?? err.message}); check --state-dir and the agent's permissions`, { cause: err });
  });
  let result: LoadResult;
  if (text === undefined) {
    result = { kind: "fresh", data: { bootId: deps.bootId, claims: {} } };
  } else {
    const decoded = decodeCheckpoint(text);
    if (decoded.ok) {
      const previousBootId = decoded.data.bootId;
      result = { kind: "loaded", data: { bootId: deps.bootId, claims: decoded.data.claims }, rebooted: previousBootId !== deps.bootId, previousBootId };
    } else {
      const stamp = (deps.now ?? (() => new Date()))().toISOString().replace(/[:.]/g, "-");
      const movedTo = `${file}.bad-${stamp}`;
      await fs.rename(file, movedTo).catch((err: unknown) => {
        throw stateWriteError(`move the unusable checkpoint (${decoded.reason}) aside from`, file, err);
      });
      deps.log.error("checkpoint unusable, moved aside; rebuilding from CDI specs", { file, movedTo, reason: decoded.reason });
      result = { kind: "moved-aside", data: { bootId: deps.bootId, claims: {} }, reason: decoded.reason, movedTo };
    }
  }
  const checkpoint = createCheckpoint(file, result.data, deps.write ?? ((f, text, mode) => writeFileAtomic(f, text, mode, fs)), deps.onWrite);
  // A fresh state dir is written at once: one that cannot be written fails the start with a clear
  // error instead of failing every later Prepare.
  if (result.kind === "fresh") await checkpoint.save();
  return { checkpoint, result };
}

function createCheckpoint(file: string, data: CheckpointData, writeFile: NonNullable<CheckpointDeps["write"]>, onWrite?: (outcome: "ok" | "error") => void): Checkpoint {
  let inFlight: Promise<void> = Promise.resolve();
  let queued: Promise<void> | undefined;
  const write = (): Promise<void> =>
    writeFile(file, encodeCheckpoint(data), 0o600).then(
      () => onWrite?.("ok"),
      (err: unknown) => {
        onWrite?.("error");
        throw stateWriteError("write the checkpoint", file, err);
      },
    );
  return {
    file,
    data,
    get: (uid) => data.claims[uid],
    set: (uid, entry) => void (data.claims[uid] = entry),
    delete: (uid) => void delete data.claims[uid],
    entries: () => Object.entries(data.claims),
    save() {
      // Group commit: callers arriving while a write is in flight share the next write, whose
      // snapshot is taken when it starts and so contains all their changes.
      if (queued) return queued;
      const next = inFlight.catch(() => undefined).then(() => {
        queued = undefined;
        return write();
      });
      queued = next;
      inFlight = next;
      return next;
    },
    flush: () => inFlight.catch(() => undefined),
  };
}

/** The kernel's boot id; a change means the node rebooted (and /var/run/cdi was emptied). */
export async function readBootId(file = "/proc/sys/kernel/random/boot_id"): Promise<string> {
  return (await fsp.readFile(file, "utf8").catch(() => "unknown")).trim();
}
