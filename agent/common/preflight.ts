// Start-up checks of every directory the agent writes, before it discovers, locks, publishes or
// serves anything: each must be a directory (or creatable as one), on a real filesystem (not
// procfs, sysfs and their kin, where mkdir either fails oddly or blocks), and writable (a probe
// file is created and removed). A failure names the flag, the path, the errno and the fix.
import { constants as fsc, promises as fsp } from "node:fs";
import * as path from "node:path";
import { TesseraError } from "./errors.js";

export interface DirCheck {
  /** The flag the path comes from, e.g. "--state-dir". */
  flag: string;
  dir: string;
}

/** statfs f_type of kernel pseudo filesystems no agent state belongs on. */
export const PSEUDO_FS: ReadonlyMap<number, string> = new Map([
  [0x9fa0, "procfs"],
  [0x62656572, "sysfs"],
  [0x27e0eb, "cgroup"],
  [0x63677270, "cgroup2"],
  [0x64626720, "debugfs"],
  [0x74726163, "tracefs"],
  [0x73636673, "securityfs"],
  [0xcafe4a11, "bpf"],
  [0x1cd1, "devpts"],
]);
const PSEUDO_PREFIXES = ["/proc", "/sys"];

export interface PreflightFs {
  statfsType(p: string): Promise<number>;
}

export const realPreflightFs: PreflightFs = {
  statfsType: async (p) => (await fsp.statfs(p)).type,
};

function pathError(c: DirCheck, what: string, fix: string, cause?: unknown): TesseraError {
  return new TesseraError("TESSERA_PATH", `${c.flag} ${c.dir}: ${what}; ${fix}`, cause === undefined ? undefined : { cause });
}

const errno = (err: unknown): string => (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err));

async function nearestExisting(dir: string): Promise<string> {
  let cur = dir;
  for (;;) {
    if (await fsp.lstat(cur).then(() => true, () => false)) return cur;
    const up = path.dirname(cur);
    if (up === cur) return cur;
    cur = up;
  }
}

export async function checkDir(c: DirCheck, fs: PreflightFs = realPreflightFs): Promise<void> {
  const dir = path.resolve(c.dir);
  const prefix = PSEUDO_PREFIXES.find((p) => dir === p || dir.startsWith(`${p}/`));
  if (prefix) throw pathError(c, `lies under ${prefix}, a kernel pseudo filesystem`, `choose a directory on a real filesystem (defaults: contracts.md)`);
  const existing = await nearestExisting(dir);
  const type = await fs.statfsType(existing).catch(() => undefined);
  const pseudo = type === undefined ? undefined : PSEUDO_FS.get(type);
  if (pseudo) throw pathError(c, `lies on ${pseudo} (${existing})`, "choose a directory on a real filesystem");
  const st = await fsp.stat(dir).catch((err: NodeJS.ErrnoException) => (err.code === "ENOENT" ? undefined : err));
  if (st instanceof Error) throw pathError(c, `cannot be read (${errno(st)})`, "check the path and the agent's permissions", st);
  if (st && !st.isDirectory()) throw pathError(c, "is not a directory", "remove that file or point the flag at a directory");
  if (!st) {
    await fsp.mkdir(dir, { recursive: true, mode: 0o750 }).catch((err: unknown) => {
      throw pathError(c, `does not exist and cannot be created (${errno(err)})`, "create it, mount it writable, or choose another path", err);
    });
  }
  const probe = path.join(dir, `.tessera-probe-${process.pid}`);
  try {
    const h = await fsp.open(probe, fsc.O_CREAT | fsc.O_EXCL | fsc.O_WRONLY, 0o600);
    await h.close();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw pathError(c, `is not writable (${errno(err)})`, "mount it read-write and run the agent as a user that may write there", err);
  }
  await fsp.rm(probe, { force: true });
}

/** Checks in order; the first failure throws. */
export async function checkDirs(checks: readonly DirCheck[], fs: PreflightFs = realPreflightFs): Promise<void> {
  for (const c of checks) await checkDir(c, fs);
}
