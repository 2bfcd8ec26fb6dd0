// Temp files a killed process leaves behind: writeFileAtomic (atomic-file.ts) writes
// `.<target>.tmp-<pid>-<8 hex>` beside its target and renames it over the target; a SIGKILL or
// power loss between the two leaves the temp file. At start, before anything is written, every
// such file of a target we own is stale (a restarted container often has the same pid again).
// Files of other targets, or not of this shape, are never touched.
import { promises as fsp } from "node:fs";
import * as path from "node:path";

const TEMP_RE = /^\.(.+)\.tmp-\d+-[0-9a-f]{8}$/;

/** The target a writeFileAtomic temp file name belongs to, or undefined for any other name. */
export function tempFileTarget(name: string): string | undefined {
  return TEMP_RE.exec(name)?.[1];
}

/**
 * Removes the regular files in `dir` that are writeFileAtomic temp files of a target `owns`
 * accepts. Returns the names removed; a missing dir is nothing to clean. Other errors throw.
 */
export async function removeStaleTempFiles(dir: string, owns: (target: string) => boolean): Promise<string[]> {
  const names = await fsp.readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT" || err.code === "ENOTDIR") return [] as string[];
    throw err;
  });
  const removed: string[] = [];
  for (const name of names) {
    const target = tempFileTarget(name);
    if (target === undefined || !owns(target)) continue;
    const file = path.join(dir, name);
    const st = await fsp.lstat(file).catch(() => undefined);
    if (!st?.isFile()) continue;
    await fsp.rm(file, { force: true });
    removed.push(name);
  }
  return removed;
}
