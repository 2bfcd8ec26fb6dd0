// One writer per state dir. The lock is a unix socket, <state-dir>/agent.lock, that the holder
// listens on:
//  - taking it is bind(2), which fails with EADDRINUSE when the file exists: atomic, like O_EXCL;
//  - liveness is connect(2): a live holder accepts (and says who it is), the socket file left by a
//    SIGKILLed holder refuses (the kernel closed it). This works across the PID namespaces of two
//    pods, where a pid + start time in a file would name a process the other pod cannot see;
//  - a stale lock is broken under a second, O_EXCL-created file (<lock>.break), and only if the
//    file is still the inode that refused, so two starters cannot delete each other's fresh lock.
// The holder answers each connection with one JSON line (its LockRecord). With rolling updates
// (two pods of the DaemonSet on one node) a newcomer may ask for a handover instead of failing:
// `{"op":"handover","draSocket":...}`; the holder stops writing, releases the lock and answers
// `{"op":"released"}` (see agent/plugin/handover.ts for what each side does around it).
import * as net from "node:net";
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import { identityOf, sameFile, type FileIdentity } from "../common/atomic-file.js";
import { assertSocketPath } from "../common/config.js";
import { TesseraError } from "../common/errors.js";

export const LOCK_FILE = "agent.lock";
const BREAK_STALE_MS = 5_000; // a .break file older than this was left by a breaker that died

export interface LockRecord {
  pid: number;
  /** ISO time the holder started. */
  startedAt: string;
  bootId: string;
  /** Set when the holder runs with --rolling-update-uid: it accepts a handover. */
  podUid?: string;
  /** The holder's DRA socket (a handover forwards to the newcomer's). */
  draSocket: string;
}

export interface HandoverRequest {
  op: "handover";
  podUid: string;
  draSocket: string;
}

export interface StateLock {
  readonly file: string;
  readonly record: LockRecord;
  /** Accept handover requests from newer pods; without a handler they are refused. */
  onHandover(fn: (req: HandoverRequest) => Promise<void>): void;
  /** Resolves once a handover released the lock (never when it was not handed over). */
  readonly handedOver: Promise<HandoverRequest>;
  /** Stops listening and removes the lock file if it is still ours. Idempotent. */
  release(): Promise<void>;
}

export interface AcquireOptions {
  /** Ask a live rolling-update holder to hand over (our own pod UID and DRA socket). */
  handover?: { podUid: string; draSocket: string; timeoutMs: number };
  /** How long a connect/answer to a holder may take before it counts as hung; default 2000. */
  probeTimeoutMs?: number;
}

type Probe = { kind: "none" } | { kind: "stale"; id: FileIdentity } | { kind: "live"; record?: LockRecord };

function lockedError(file: string, record: LockRecord | undefined, why = ""): TesseraError {
  const who = record ? `pid ${record.pid}${record.podUid ? ` (pod ${record.podUid})` : ""}, started ${record.startedAt}` : "a live process that does not answer";
  return new TesseraError(
    "TESSERA_STATE_LOCKED",
    `state dir ${path.dirname(file)} is held by ${who}${why}; stop that agent first, or give this one another --state-dir and --kubelet-root`,
  );
}

/** One JSON line from `sock`, or undefined on timeout/close. */
function readLine(sock: net.Socket, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve) => {
    let buf = "";
    const done = (v: unknown): void => {
      clearTimeout(timer);
      sock.off("data", onData);
      sock.off("close", onClose);
      resolve(v);
    };
    const onData = (b: Buffer): void => {
      buf += b.toString("utf8");
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      try {
        done(JSON.parse(buf.slice(0, nl)));
      } catch {
        done(undefined);
      }
    };
    const onClose = (): void => done(undefined);
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.on("data", onData);
    sock.on("close", onClose);
  });
}

function connect(file: string, timeoutMs: number): Promise<net.Socket | NodeJS.ErrnoException> {
  return new Promise((resolve) => {
    const sock = net.connect(file);
    const timer = setTimeout(() => {
      // Connected-but-silent is handled by the caller; a connect that never completes is a hung holder.
      sock.destroy();
      resolve(Object.assign(new Error("connect timed out"), { code: "ETIMEDOUT" }));
    }, timeoutMs);
    sock.once("connect", () => {
      clearTimeout(timer);
      resolve(sock);
    });
    sock.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err);
    });
  });
}

function isRecord(x: unknown): x is LockRecord {
  return typeof x === "object" && x !== null && typeof (x as LockRecord).pid === "number" && typeof (x as LockRecord).startedAt === "string";
}

async function probe(file: string, timeoutMs: number): Promise<Probe & { sock?: net.Socket }> {
  const st = await fsp.lstat(file, { bigint: true }).catch(() => undefined);
  if (!st) return { kind: "none" };
  if (!st.isSocket()) throw new TesseraError("TESSERA_SOCKET", `${file} exists and is not a socket; remove it (it is the state-dir lock's name)`);
  const r = await connect(file, timeoutMs);
  if (!(r instanceof net.Socket)) {
    if (r.code === "ENOENT") return { kind: "none" };
    if (r.code === "ECONNREFUSED") return { kind: "stale", id: { ino: st.ino, ctimeNs: st.ctimeNs } };
    return { kind: "live" }; // ETIMEDOUT, EAGAIN (backlog full): someone is there
  }
  const line = await readLine(r, timeoutMs);
  return isRecord(line) ? { kind: "live", record: line, sock: r } : { kind: "live", sock: r };
}

/** Removes a stale lock if it is still the file that refused us; the caller then retries bind. */
export async function breakStale(file: string, stale: FileIdentity): Promise<void> {
  const guard = `${file}.break`;
  let h;
  try {
    h = await fsp.open(guard, "wx", 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    const g = await fsp.stat(guard).catch(() => undefined);
    if (g && Date.now() - g.mtimeMs > BREAK_STALE_MS) await fsp.rm(guard, { force: true });
    else await new Promise((r) => setTimeout(r, 20));
    return;
  }
  try {
    if (sameFile(await identityOf(file), stale)) await fsp.rm(file);
  } finally {
    await h.close();
    await fsp.rm(guard, { force: true });
  }
}

function listen(server: net.Server, file: string): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    const onError = (err: NodeJS.ErrnoException): void => resolve(err);
    server.once("error", onError);
    server.listen(file, () => {
      server.off("error", onError);
      resolve(undefined);
    });
  });
}

async function askHandover(sock: net.Socket, req: HandoverRequest, timeoutMs: number): Promise<boolean> {
  sock.write(JSON.stringify(req) + "\n");
  const answer = await readLine(sock, timeoutMs);
  sock.destroy();
  return typeof answer === "object" && answer !== null && (answer as { op?: string }).op === "released";
}

export async function acquireStateLock(stateDir: string, record: LockRecord, opts: AcquireOptions = {}): Promise<StateLock> {
  const file = path.join(stateDir, LOCK_FILE);
  assertSocketPath(file);
  const probeTimeoutMs = opts.probeTimeoutMs ?? 2000;
  const server = net.createServer();
  const deadline = Date.now() + (opts.handover?.timeoutMs ?? 0) + 10_000;
  for (;;) {
    const err = await listen(server, file);
    if (!err) break;
    if (err.code !== "EADDRINUSE") throw new TesseraError("TESSERA_SOCKET", `cannot create the state-dir lock ${file} (${err.code ?? err.message}); check --state-dir`, { cause: err });
    if (Date.now() > deadline) throw lockedError(file, undefined, " (the lock kept changing hands)");
    const p = await probe(file, probeTimeoutMs);
    if (p.kind === "stale") await breakStale(file, p.id);
    else if (p.kind === "live") {
      const h = opts.handover;
      if (!h || !p.record?.podUid || !p.sock) {
        p.sock?.destroy();
        throw lockedError(file, p.record, h && p.record && !p.record.podUid ? " without --rolling-update-uid (it cannot hand over)" : "");
      }
      const released = await askHandover(p.sock, { op: "handover", podUid: h.podUid, draSocket: h.draSocket }, h.timeoutMs);
      if (!released) throw lockedError(file, p.record, ` and did not hand over within ${h.timeoutMs} ms`);
    }
  }
  await fsp.chmod(file, 0o600);
  const own = await identityOf(file);
  let handler: ((req: HandoverRequest) => Promise<void>) | undefined;
  let resolveHanded: (r: HandoverRequest) => void = () => undefined;
  const handedOver = new Promise<HandoverRequest>((r) => (resolveHanded = r));
  let released: Promise<void> | undefined;

  const release = (): Promise<void> =>
    (released ??= (async () => {
      // Closing a listening unix socket unlinks its path (libuv): do it only while the path is ours.
      // close() stops listening (and unlinks) at once; connections still open (a handover being
      // answered) do not hold it up.
      if (sameFile(await identityOf(file), own)) server.close();
      else server.unref();
    })());

  server.on("connection", (sock) => {
    sock.on("error", () => undefined);
    sock.write(JSON.stringify(record) + "\n");
    void readLine(sock, 24 * 3600_000).then(async (msg) => {
      const req = msg as Partial<HandoverRequest> | undefined;
      if (req?.op !== "handover" || typeof req.draSocket !== "string" || typeof req.podUid !== "string") return;
      if (!handler || !record.podUid || released) {
        sock.end(JSON.stringify({ op: "refused" }) + "\n");
        return;
      }
      const accepted: HandoverRequest = { op: "handover", podUid: req.podUid, draSocket: req.draSocket };
      try {
        await handler(accepted);
      } catch {
        sock.end(JSON.stringify({ op: "refused" }) + "\n");
        return;
      }
      await release();
      resolveHanded(accepted);
      sock.end(JSON.stringify({ op: "released" }) + "\n");
    });
  });

  return {
    file,
    record,
    onHandover: (fn) => void (handler = fn),
    handedOver,
    release,
  };
}
