// Crash-safe file writes: temp file in the same directory, fsync, rename over the target,
// fsync of the directory so the rename itself survives a power loss.
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import { randomBytes } from "node:crypto";

export async function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  const handle = await fsp.open(tmp, "w", mode);
  try {
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(tmp, file);
  } catch (err) {
    // A failed write (ENOSPC, EIO) must not leave a temp file behind per retry.
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dir);
}

export async function fsyncDir(dir: string): Promise<void> {
  const d = await fsp.open(dir, "r");
  try {
    await d.sync();
  } finally {
    await d.close();
  }
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
