// The one file-system seam of every durable write (checkpoint, CDI specs, standalone store):
// exactly the operations those writers use, so a test can swap in a model that records them and
// simulates power loss (test/support/power-loss-fs.ts). The real implementation is a thin pass
// through to node:fs: the same syscalls as calling node:fs directly, nothing added.
import { promises as fsp } from "node:fs";

export interface DurableHandle {
  /** Writes all of `data` at the current position. */
  write(data: string | Uint8Array): Promise<void>;
  /** fsync(2): the file's data and size are durable when this resolves. */
  sync(): Promise<void>;
  close(): Promise<void>;
}

export interface DurableFs {
  /** Creates the file, or truncates an existing one (open flags "w"). */
  open(file: string, mode: number): Promise<DurableHandle>;
  /** rename(2) within one directory; the new name is durable only after fsyncDir of it. */
  rename(from: string, to: string): Promise<void>;
  /** Removes a file; a missing file is not an error. Durable only after fsyncDir. */
  unlink(file: string): Promise<void>;
  /** mkdir -p; resolves to the first directory it created (undefined when all existed). New
   *  entries are durable only after fsyncDir of their parents (ensureDirDurable does that). */
  mkdir(dir: string, mode?: number): Promise<string | undefined>;
  /** Entry names; rejects with code ENOENT when the directory is missing. */
  readdir(dir: string): Promise<string[]>;
  /** UTF-8 contents; rejects with code ENOENT when the file is missing. */
  readFile(file: string): Promise<string>;
  /** fsync(2) of a directory: its creates, renames and unlinks are durable when this resolves. */
  fsyncDir(dir: string): Promise<void>;
}

export const nodeDurableFs: DurableFs = {
  async open(file, mode) {
    const h = await fsp.open(file, "w", mode);
    return { write: (data) => h.writeFile(data), sync: () => h.sync(), close: () => h.close() };
  },
  rename: (from, to) => fsp.rename(from, to),
  async unlink(file) {
    await fsp.unlink(file).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "ENOENT") throw err;
    });
  },
  mkdir: (dir, mode) => fsp.mkdir(dir, { recursive: true, ...(mode === undefined ? {} : { mode }) }),
  readdir: (dir) => fsp.readdir(dir),
  readFile: (file) => fsp.readFile(file, "utf8"),
  async fsyncDir(dir) {
    const d = await fsp.open(dir, "r");
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  },
};
