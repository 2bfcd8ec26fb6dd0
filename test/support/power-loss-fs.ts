// An in-memory DurableFs that records every state-changing operation and can say what a power
// loss after any prefix of them may leave on disk. The rules (ext4, default data=ordered, taken
// adversarially, as POSIX allows):
//   - file data written since the file's last fsync may be lost: a file comes back with its
//     fsynced contents plus any prefix of the truncates/writes issued since;
//   - directory entries changed since the directory's last fsync (creates, renames, unlinks) may
//     be lost: a directory comes back with its fsynced entries plus any prefix of the changes
//     since. A rename within a directory is one atomic change, so a lost rename-over-existing
//     leaves the old name pointing at the old inode, with that inode's surviving data;
//   - an fsync of a file does not make its name durable, only fsync of the directory does;
//   - a directory whose entry in its parent is lost takes its whole subtree with it.
import * as path from "node:path";
import type { DurableFs, DurableHandle } from "../../agent/common/durable-fs.js";

type DataOp = { kind: "truncate" } | { kind: "write"; bytes: Buffer };
type DirOp = { kind: "link"; name: string; ino: number } | { kind: "unlink"; name: string } | { kind: "rename"; from: string; to: string; ino: number };
interface FileNode {
  kind: "file";
  live: Buffer;
  durable: Buffer;
  pending: DataOp[];
}
interface DirNode {
  kind: "dir";
  live: Map<string, number>;
  durable: Map<string, number>;
  pending: DirOp[];
}
type Node = FileNode | DirNode;

/** A frozen copy of all inodes right after one operation. */
export interface Snapshot {
  /** The operation that produced it, e.g. "rename /s/.checkpoint.json.tmp-1 -> /s/checkpoint.json". */
  op: string;
  nodes: ReadonlyMap<number, Node>;
}

/** How much of each dirty inode's unsynced changes survives: inode -> prefix length. */
export type LossChoice = { name: string; keep: ReadonlyMap<number, number> };

function errno(code: string, what: string): NodeJS.ErrnoException {
  const e = new Error(`${code}: ${what}`) as NodeJS.ErrnoException;
  e.code = code;
  return e;
}

function cloneNode(n: Node): Node {
  return n.kind === "file"
    ? { kind: "file", live: n.live, durable: n.durable, pending: [...n.pending] }
    : { kind: "dir", live: new Map(n.live), durable: new Map(n.durable), pending: [...n.pending] };
}

function applyDirOp(entries: Map<string, number>, op: DirOp): void {
  if (op.kind === "link") entries.set(op.name, op.ino);
  else if (op.kind === "unlink") entries.delete(op.name);
  else {
    entries.delete(op.from);
    entries.set(op.to, op.ino);
  }
}

function applyDataOp(data: Buffer, op: DataOp): Buffer {
  return op.kind === "truncate" ? Buffer.alloc(0) : Buffer.concat([data, op.bytes]);
}

export interface PowerLossFs extends DurableFs {
  /** One snapshot per state-changing operation, in order; snapshots[k] is the state after k+1 ops. */
  readonly snapshots: readonly Snapshot[];
  /** Number of state-changing operations so far (a crash point). */
  opCount(): number;
  /** Live contents of every file, by path (what a process crash without power loss leaves). */
  files(): Map<string, string>;
}

/** Root "/" exists and is durable; `initial` (path -> contents) is created durably. */
export function createPowerLossFs(initial: ReadonlyMap<number, Node> | undefined = undefined): PowerLossFs {
  const nodes = new Map<number, Node>();
  let nextIno = 1;
  if (initial) {
    for (const [ino, n] of initial) nodes.set(ino, cloneNode(n));
    nextIno = Math.max(0, ...initial.keys()) + 1;
  } else {
    nodes.set(0, { kind: "dir", live: new Map(), durable: new Map(), pending: [] });
  }
  const snapshots: Snapshot[] = [];
  const record = (op: string): void => {
    const frozen = new Map<number, Node>();
    for (const [ino, n] of nodes) frozen.set(ino, cloneNode(n));
    snapshots.push({ op, nodes: frozen });
  };

  function lookup(p: string): number | undefined {
    let ino = 0;
    for (const part of path.resolve(p).split("/").filter(Boolean)) {
      const n = nodes.get(ino);
      if (n?.kind !== "dir") return undefined;
      const next = n.live.get(part);
      if (next === undefined) return undefined;
      ino = next;
    }
    return ino;
  }
  function dirOf(p: string): DirNode {
    const ino = lookup(path.dirname(path.resolve(p)));
    const n = ino === undefined ? undefined : nodes.get(ino);
    if (n?.kind !== "dir") throw errno("ENOENT", `no directory ${path.dirname(p)}`);
    return n;
  }
  function dirOp(dir: DirNode, op: DirOp): void {
    applyDirOp(dir.live, op);
    dir.pending.push(op);
  }
  function dataOp(f: FileNode, op: DataOp): void {
    f.live = applyDataOp(f.live, op);
    f.pending.push(op);
  }
  function fileAt(p: string): FileNode {
    const ino = lookup(p);
    const n = ino === undefined ? undefined : nodes.get(ino);
    if (!n) throw errno("ENOENT", `no file ${p}`);
    if (n.kind !== "file") throw errno("EISDIR", p);
    return n;
  }
  function dirAt(p: string): DirNode {
    const ino = lookup(p);
    const n = ino === undefined ? undefined : nodes.get(ino);
    if (!n) throw errno("ENOENT", p);
    if (n.kind !== "dir") throw errno("ENOTDIR", p);
    return n;
  }
  const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

  return {
    snapshots,
    opCount: () => snapshots.length,
    files() {
      const out = new Map<string, string>();
      const walk = (ino: number, at: string): void => {
        const n = nodes.get(ino);
        if (n?.kind === "file") out.set(at, n.live.toString("utf8"));
        else if (n) for (const [name, child] of n.live) walk(child, path.join(at, name));
      };
      walk(0, "/");
      return out;
    },
    async open(file, _mode): Promise<DurableHandle> {
      await tick();
      const dir = dirOf(file);
      const name = path.basename(file);
      let ino = dir.live.get(name);
      if (ino === undefined) {
        ino = nextIno++;
        nodes.set(ino, { kind: "file", live: Buffer.alloc(0), durable: Buffer.alloc(0), pending: [] });
        dirOp(dir, { kind: "link", name, ino });
        record(`create ${file}`);
      } else {
        const n = nodes.get(ino);
        if (n?.kind !== "file") throw errno("EISDIR", file);
        dataOp(n, { kind: "truncate" });
        record(`truncate ${file}`);
      }
      const f = nodes.get(ino) as FileNode;
      let closed = false;
      const open = (): void => {
        if (closed) throw errno("EBADF", file);
      };
      return {
        async write(data) {
          await tick();
          open();
          dataOp(f, { kind: "write", bytes: Buffer.from(data) });
          record(`write ${file}`);
        },
        async sync() {
          await tick();
          open();
          f.durable = f.live;
          f.pending = [];
          record(`fsync ${file}`);
        },
        async close() {
          open();
          closed = true;
        },
      };
    },
    async rename(from, to) {
      await tick();
      const dir = dirOf(from);
      if (dirOf(to) !== dir) throw errno("EXDEV", `model renames within one directory only: ${from} -> ${to}`);
      const ino = dir.live.get(path.basename(from));
      if (ino === undefined) throw errno("ENOENT", from);
      dirOp(dir, { kind: "rename", from: path.basename(from), to: path.basename(to), ino });
      record(`rename ${from} -> ${to}`);
    },
    async unlink(file) {
      await tick();
      const dir = dirOf(file);
      if (!dir.live.has(path.basename(file))) return;
      dirOp(dir, { kind: "unlink", name: path.basename(file) });
      record(`unlink ${file}`);
    },
    async mkdir(dir) {
      await tick();
      let first: string | undefined;
      let at = "/";
      for (const part of path.resolve(dir).split("/").filter(Boolean)) {
        const parent = nodes.get(lookup(at) ?? -1);
        at = path.join(at, part);
        if (parent?.kind !== "dir") throw errno("ENOTDIR", at);
        const existing = parent.live.get(part);
        if (existing !== undefined) {
          if (nodes.get(existing)?.kind !== "dir") throw errno("EEXIST", at);
          continue;
        }
        const ino = nextIno++;
        nodes.set(ino, { kind: "dir", live: new Map(), durable: new Map(), pending: [] });
        dirOp(parent, { kind: "link", name: part, ino });
        record(`mkdir ${at}`);
        first ??= at;
      }
      return first;
    },
    async readdir(dir) {
      await tick();
      return [...dirAt(dir).live.keys()].sort();
    },
    async readFile(file) {
      await tick();
      return fileAt(file).live.toString("utf8");
    },
    async fsyncDir(dir) {
      await tick();
      const n = dirAt(dir);
      n.durable = new Map(n.live);
      n.pending = [];
      record(`fsync-dir ${dir}`);
    },
  };
}

/** Inodes with unsynced changes reachable in the live tree, with how many changes are pending. */
function dirty(nodes: ReadonlyMap<number, Node>): [number, number][] {
  const out: [number, number][] = [];
  for (const [ino, n] of nodes) if (n.pending.length > 0) out.push([ino, n.pending.length]);
  return out;
}

/**
 * The loss choices worth checking after a snapshot, bounded: keep everything (a process crash),
 * lose everything unsynced, each dirty inode alone lost or alone kept, and each intermediate
 * prefix of one inode's changes with the rest kept or lost.
 */
export function lossChoices(snap: Snapshot, max = 48): LossChoice[] {
  const d = dirty(snap.nodes);
  const all = (k: (ino: number, n: number) => number): Map<number, number> => new Map(d.map(([ino, n]) => [ino, k(ino, n)]));
  const out: LossChoice[] = [{ name: "keep-all", keep: all((_, n) => n) }];
  if (d.length === 0) return out;
  out.push({ name: "drop-all-unsynced", keep: all(() => 0) });
  for (const [target, count] of d) {
    if (d.length > 1) {
      out.push({ name: `lose only inode ${target}`, keep: all((ino, n) => (ino === target ? 0 : n)) });
      out.push({ name: `keep only inode ${target}`, keep: all((ino, n) => (ino === target ? n : 0)) });
    }
    for (let p = 1; p < count; p++) {
      out.push({ name: `inode ${target}: ${p}/${count} changes, rest kept`, keep: all((ino, n) => (ino === target ? p : n)) });
      out.push({ name: `inode ${target}: ${p}/${count} changes, rest lost`, keep: all((ino) => (ino === target ? p : 0)) });
    }
  }
  return out.slice(0, max);
}

/** What survives `snap` under `choice`, as a fresh fs whose every inode is durable. */
export function survivor(snap: Snapshot, choice: LossChoice): PowerLossFs {
  const out = new Map<number, Node>();
  for (const [ino, n] of snap.nodes) {
    const keep = choice.keep.get(ino) ?? n.pending.length;
    if (n.kind === "file") {
      let data = n.durable;
      for (const op of n.pending.slice(0, keep)) data = applyDataOp(data, op);
      out.set(ino, { kind: "file", live: data, durable: data, pending: [] });
    } else {
      const entries = new Map(n.durable);
      for (const op of n.pending.slice(0, keep)) applyDirOp(entries, op);
      out.set(ino, { kind: "dir", live: entries, durable: new Map(entries), pending: [] });
    }
  }
  // Drop what the surviving tree no longer reaches.
  const reach = new Set<number>();
  const walk = (ino: number): void => {
    if (reach.has(ino)) return;
    reach.add(ino);
    const n = out.get(ino);
    if (n?.kind === "dir") for (const c of n.live.values()) walk(c);
  };
  walk(0);
  for (const ino of [...out.keys()]) if (!reach.has(ino)) out.delete(ino);
  return createPowerLossFs(out);
}

/** A stable key of what a survivor holds (to skip identical states). */
export function stateKey(fs: PowerLossFs): string {
  return JSON.stringify([...fs.files()].sort(([a], [b]) => (a < b ? -1 : 1)));
}
