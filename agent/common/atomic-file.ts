// Crash-safe file writes: temp file in the same directory, fsync, rename over the target,
// fsync of the directory so the rename itself survives a power loss. All through the injected
// DurableFs (test/crash-consistency.test.ts checks every prefix of these steps under power loss).
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import { randomBytes } from "node:crypto";
import { nodeDurableFs, type DurableFs } from "./durable-fs.js";

/** A temp file written and fsynced beside its target, not yet renamed over it. */
export interface StagedFile {
  /** rename over the target, then fsync of the directory: durable when this resolves. */
  commit(): Promise<void>;
  /** Removes the temp file (the target is untouched). */
  abort(): Promise<void>;
}

/** The first half of writeFileAtomic: temp file, write, fsync. The target is unchanged until
 *  commit(), so the slow fsync can overlap other work that must be durable first. */
export async function stageFileAtomic(file: string, data: string | Uint8Array, mode = 0o644, fs: DurableFs = nodeDurableFs): Promise<StagedFile> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  const handle = await fs.open(tmp, mode);
  try {
    try {
      await handle.write(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (err) {
    // A failed write (ENOSPC, EIO) must not leave a temp file behind per retry.
    await fs.unlink(tmp);
    throw err;
  }
  return {
    async commit() {
      try {
        await fs.rename(tmp, file);
      } catch (err) {
        await fs.unlink(tmp);
        throw err;
      }
      await fs.fsyncDir(dir);
    },
    abort: () => fs.unlink(tmp),
  };
}

export async function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o644, fs: DurableFs = nodeDurableFs): Promise<void> {
  await (await stageFileAtomic(file, data, mode, fs)).commit();
}

/** Removes a file (missing is fine) and makes the removal durable before resolving. */
export async function removeFileDurable(file: string, fs: DurableFs = nodeDurableFs): Promise<void> {
  await fs.unlink(file);
  await fs.fsyncDir(path.dirname(file)).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "ENOENT") throw err;
  });
}

/** mkdir -p whose new directories survive a power loss: the parent of each one it created is
 *  fsynced. Costs nothing when the directory already exists. */
export async function ensureDirDurable(dir: string, mode: number | undefined, fs: DurableFs = nodeDurableFs): Promise<void> {
  const first = await fs.mkdir(dir, mode);
  if (first === undefined) return;
  // Created: first .. dir; each one's entry lives in its parent. Fsync top-down.
  const parents: string[] = [];
  for (let c = path.resolve(dir); ; c = path.dirname(c)) {
    parents.unshift(path.dirname(c));
    if (c === path.resolve(first) || path.dirname(c) === c) break;
  }
  for (const p of parents) await fs.fsyncDir(p);
}

/** Which file this is: an inode number alone is reused at once on tmpfs, its change time is not. */
export interface FileIdentity {
  ino: bigint;
  ctimeNs: bigint;
}

export async function identityOf(file: string): Promise<FileIdentity | undefined> {
  const st = await fsp.lstat(file, { bigint: true }).catch(() => undefined);
  return st ? { ino: st.ino, ctimeNs: st.ctimeNs } : undefined;
}

export const sameFile = (a: FileIdentity | undefined, b: FileIdentity | undefined): boolean => a !== undefined && b !== undefined && a.ino === b.ino && a.ctimeNs === b.ctimeNs;
