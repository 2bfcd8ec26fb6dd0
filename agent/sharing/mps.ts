// One CUDA MPS control daemon per prepared claim, run through an injected exec seam (the real
// nvidia-cuda-mps-control, or test/support/nvidia-cuda-mps-control-sim.mjs):
//   start:  CUDA_VISIBLE_DEVICES=<the claim's GPU/MIG UUIDs> CUDA_MPS_PIPE_DIRECTORY=<pipe>
//           CUDA_MPS_LOG_DIRECTORY=<log> nvidia-cuda-mps-control -d
//   limits: the same pipe directory, commands on stdin:
//           set_default_active_thread_percentage <1-100>
//           set_default_device_pinned_mem_limit <device index> <MiB>M   (each visible device)
//   stop:   `quit` on stdin
// Liveness is the daemon's own pid file (<pipe>/nvidia-cuda-mps-control.pid) and a signal-0 probe.
// A supervision round restarts a dead daemon, with exponential backoff while it keeps dying.
// Directories: <state-dir>/mps/<claim UID>/{pipe,log,shm}; the UID is validated and the control
// socket path must fit a unix socket. shm is the claim's shared memory: MPS server and clients
// exchange state through /dev/shm, so the CDI spec mounts it as the containers' /dev/shm and the
// image's nvidia-cuda-mps-control wrapper (Dockerfile) as the daemon's (TESSERA_MPS_SHM_DIRECTORY).
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "../common/atomic-file.js";
import { describeChain, TesseraError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import type { ExecFn, ExecOptions } from "../discovery/exec.js";
import { toolMessage } from "../mig/commands.js";

export const MPS_PID_FILE = "nvidia-cuda-mps-control.pid";
/** <state-dir>/mps/<uid>/status.json: the supervisor's view of the daemon, for `diag prepare`. */
export const MPS_STATUS_FILE = "status.json";
/** Where the CDI spec mounts the claim's pipe and log directories in the container. */
export const MPS_CONTAINER_PIPE_DIR = "/tmp/nvidia-mps";
export const MPS_CONTAINER_LOG_DIR = "/tmp/nvidia-mps-log";
export const MPS_CONTAINER_SHM_DIR = "/dev/shm";
const MAX_SOCKET_PATH = 107;
const BACKOFF_BASE_MS = 1000;
const BACKOFF_MAX_MS = 60_000;
/** A daemon alive this long after a restart counts as stable again (backoff reset). */
const STABLE_MS = 60_000;
/** How long a daemon may take to exit after `quit`. */
const QUIT_WAIT_MS = 5000;

export interface MpsDirs {
  pipeDir: string;
  logDir: string;
  shmDir: string;
}

export interface MpsDaemonSpec {
  uid: string;
  /** The devices the daemon manages, in CUDA_VISIBLE_DEVICES order (device index = position). */
  uuids: string[];
  activeThreadPercentage?: number;
  /** Per visible device, MiB; absent: no limit. */
  pinnedMemoryLimitMiB?: number;
}

export type MpsState = "running" | "backoff" | "failed";

export interface MpsStatus {
  uid: string;
  pipeDir: string;
  state: MpsState;
  pid?: number;
  restarts: number;
  lastError?: string;
}

export interface MpsControl {
  /** Starts the claim's daemon, or adopts the one already running there; then sets its limits. */
  ensure(spec: MpsDaemonSpec): Promise<"started" | "adopted">;
  /** Stops the claim's daemon (`quit`) and removes its directories; none running is success. */
  stop(uid: string): Promise<void>;
  /** One supervision round now: every dead daemon restarted unless its backoff is running. */
  check(): Promise<void>;
  status(): MpsStatus[];
  /** Stops supervising (the daemons keep running: a restarted agent adopts them). */
  close(): void;
}

export interface MpsControlDeps {
  exec: ExecFn;
  /** The nvidia-cuda-mps-control executable (--mps-control). */
  bin: string;
  stateDir: string;
  execOptions: ExecOptions;
  log: Logger;
  now?: () => number;
  /** Whether a process exists (default: signal 0). */
  alive?: (pid: number) => boolean;
  /** A restart after a crash (metrics). */
  onRestart?: () => void;
  /** Supervision period; 0: only check() calls. */
  intervalMs?: number;
}

/** `<state-dir>/mps/<uid>`: the claim's MPS directory (the UID must be one path segment). */
function mpsBase(stateDir: string, uid: string): string {
  // Callers pass kubelet-checked UIDs; this module still refuses anything that is not one path segment.
  if (!/^[0-9A-Za-z][0-9A-Za-z-]{0,63}$/.test(uid)) throw new TesseraError("TESSERA_CLAIM_INVALID_UID", `claim UID ${JSON.stringify(uid.slice(0, 80))} cannot name an MPS directory (hex digits and '-' only)`);
  return path.join(stateDir, "mps", uid);
}

/** The pipe and log directories of a claim's daemon; refuses a control socket path the kernel would truncate. */
export function mpsDirs(stateDir: string, uid: string): MpsDirs {
  const base = mpsBase(stateDir, uid);
  const dirs = { pipeDir: path.join(base, "pipe"), logDir: path.join(base, "log"), shmDir: path.join(base, "shm") };
  const socket = path.join(dirs.pipeDir, "control");
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
    throw new TesseraError("TESSERA_SOCKET_PATH_TOO_LONG", `the MPS control socket of claim ${uid} would be ${socket} (${Buffer.byteLength(socket)} bytes, over the ${MAX_SOCKET_PATH}-byte limit of unix sockets); use a shorter --state-dir`);
  }
  return dirs;
}

/** The daemon's environment: its devices, its own pipe and log directories, its /dev/shm (for the image's wrapper). */
export function daemonEnv(spec: MpsDaemonSpec, dirs: MpsDirs): Record<string, string> {
  return { CUDA_VISIBLE_DEVICES: spec.uuids.join(","), CUDA_MPS_PIPE_DIRECTORY: dirs.pipeDir, CUDA_MPS_LOG_DIRECTORY: dirs.logDir, TESSERA_MPS_SHM_DIRECTORY: dirs.shmDir };
}

/** The control commands that set the claim's limits (stdin of nvidia-cuda-mps-control). */
export function limitCommands(spec: MpsDaemonSpec): string[] {
  const out: string[] = [];
  if (spec.activeThreadPercentage !== undefined) out.push(`set_default_active_thread_percentage ${spec.activeThreadPercentage}`);
  if (spec.pinnedMemoryLimitMiB !== undefined) spec.uuids.forEach((_, i) => out.push(`set_default_device_pinned_mem_limit ${i} ${spec.pinnedMemoryLimitMiB}M`));
  return out;
}

/** The client side of the limits, for the container (CDI env): MPS clients honour these too. */
export function clientEnv(spec: MpsDaemonSpec): string[] {
  const env = [`CUDA_MPS_PIPE_DIRECTORY=${MPS_CONTAINER_PIPE_DIR}`, `CUDA_MPS_LOG_DIRECTORY=${MPS_CONTAINER_LOG_DIR}`];
  if (spec.activeThreadPercentage !== undefined) env.push(`CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=${spec.activeThreadPercentage}`);
  if (spec.pinnedMemoryLimitMiB !== undefined) env.push(`CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=${spec.uuids.map((_, i) => `${i}=${spec.pinnedMemoryLimitMiB}M`).join(",")}`);
  return env;
}

/** The supervisor's last recorded status of a claim's daemon (written by the agent), if any. */
export async function readMpsStatus(stateDir: string, uid: string): Promise<MpsStatus | undefined> {
  // Only reads: a claim without MPS (or a state dir too long for a daemon's socket) simply has no status.
  const text = await fsp.readFile(path.join(mpsBase(stateDir, uid), MPS_STATUS_FILE), "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    const s = JSON.parse(text) as MpsStatus;
    return typeof s === "object" && s !== null && typeof s.state === "string" ? s : undefined;
  } catch {
    return undefined; // torn or foreign: no status to show
  }
}

const defaultAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
};

interface Supervised {
  spec: MpsDaemonSpec;
  dirs: MpsDirs;
  state: MpsState;
  pid?: number;
  restarts: number;
  /** Crashes since the daemon was last stable: the backoff exponent. */
  crashes: number;
  startedAt: number;
  nextAttemptAt: number;
  lastError?: string;
}

export function createMpsControl(deps: MpsControlDeps): MpsControl {
  const now = deps.now ?? Date.now;
  const alive = deps.alive ?? defaultAlive;
  const daemons = new Map<string, Supervised>();
  let tail: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = tail.catch(() => undefined).then(fn);
    tail = next;
    return next;
  };

  async function pidOf(dirs: MpsDirs): Promise<number | undefined> {
    const text = await fsp.readFile(path.join(dirs.pipeDir, MPS_PID_FILE), "utf8").catch(() => "");
    const pid = Number(text.trim());
    return Number.isSafeInteger(pid) && pid > 0 && alive(pid) ? pid : undefined;
  }

  async function gone(pid: number): Promise<boolean> {
    const until = now() + QUIT_WAIT_MS;
    while (alive(pid)) {
      if (now() >= until) return false;
      await new Promise((res) => setTimeout(res, 10));
    }
    return true;
  }

  async function run(spec: MpsDaemonSpec, dirs: MpsDirs, args: string[], input: string | undefined, what: string): Promise<void> {
    const cmd = [deps.bin, ...args].join(" ");
    const r = await deps.exec(deps.bin, args, { ...deps.execOptions, env: daemonEnv(spec, dirs), ...(input !== undefined ? { input } : {}) }).catch((err: unknown) => {
      throw new TesseraError("TESSERA_SHARING", `claim ${spec.uid}: cannot ${what}: \`${cmd}\` could not run; check --mps-control`, { cause: err });
    });
    if (r.code !== 0) {
      throw new TesseraError("TESSERA_SHARING", `claim ${spec.uid}: cannot ${what} (\`${cmd}\` with CUDA_MPS_PIPE_DIRECTORY=${dirs.pipeDir} exited ${r.code}: ${toolMessage(r.stdout, r.stderr) || "no output"}); see ${dirs.logDir}/control.log`);
    }
  }

  /** Starts the daemon unless one runs in its pipe directory; sets the limits either way. */
  async function startOrAdopt(spec: MpsDaemonSpec, dirs: MpsDirs): Promise<{ how: "started" | "adopted"; pid: number | undefined }> {
    let pid = await pidOf(dirs);
    const how = pid === undefined ? "started" : "adopted";
    if (pid === undefined) {
      await fsp.mkdir(dirs.pipeDir, { recursive: true, mode: 0o755 });
      await fsp.mkdir(dirs.logDir, { recursive: true, mode: 0o755 });
      // World-writable and sticky like /dev/shm: the containers' processes may run as any user.
      await fsp.mkdir(dirs.shmDir, { recursive: true });
      await fsp.chmod(dirs.shmDir, 0o1777);
      await run(spec, dirs, ["-d"], undefined, "start the MPS control daemon");
      pid = await pidOf(dirs);
    }
    const commands = limitCommands(spec);
    if (commands.length > 0) await run(spec, dirs, [], commands.join("\n") + "\n", "set the MPS limits");
    return { how, pid };
  }

  const written = new Map<string, string>();
  const statusOf = (d: Supervised): MpsStatus => ({ uid: d.spec.uid, pipeDir: d.dirs.pipeDir, state: d.state, restarts: d.restarts, ...(d.pid !== undefined ? { pid: d.pid } : {}), ...(d.lastError ? { lastError: d.lastError } : {}) });
  /** Records the daemon's status for diag when it changed; a failure to write is only logged. */
  async function publish(d: Supervised): Promise<void> {
    const text = JSON.stringify(statusOf(d)) + "\n";
    if (written.get(d.spec.uid) === text) return;
    try {
      await writeFileAtomic(path.join(path.dirname(d.dirs.pipeDir), MPS_STATUS_FILE), text, 0o644);
      written.set(d.spec.uid, text);
    } catch (err) {
      deps.log.warn("cannot record the MPS daemon status for diag", { claim: d.spec.uid, err: describeChain(err) });
    }
  }

  async function checkOne(d: Supervised): Promise<void> {
    await checkState(d);
    if (daemons.get(d.spec.uid) === d) await publish(d);
  }

  async function checkState(d: Supervised): Promise<void> {
    const pid = await pidOf(d.dirs);
    if (pid !== undefined) {
      d.pid = pid;
      d.state = "running";
      if (now() - d.startedAt >= STABLE_MS) d.crashes = 0;
      return;
    }
    if (d.state === "running") {
      d.crashes++;
      d.nextAttemptAt = d.crashes <= 1 ? now() : now() + Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (d.crashes - 2));
      deps.log.warn("MPS control daemon is gone; restarting it", { claim: d.spec.uid, pid: d.pid, crashes: d.crashes, inMs: d.nextAttemptAt - now() });
    }
    if (now() < d.nextAttemptAt) {
      d.state = "backoff";
      return;
    }
    try {
      const r = await startOrAdopt(d.spec, d.dirs);
      if (r.pid !== undefined) d.pid = r.pid;
      d.state = "running";
      d.startedAt = now();
      d.restarts++;
      delete d.lastError;
      deps.onRestart?.();
      deps.log.info("restarted MPS control daemon", { claim: d.spec.uid, pid: d.pid, restarts: d.restarts });
    } catch (err) {
      d.crashes++;
      d.state = "failed";
      d.lastError = describeChain(err);
      d.nextAttemptAt = now() + Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (d.crashes - 2));
      deps.log.error("cannot restart MPS control daemon; retrying with backoff", { claim: d.spec.uid, err: d.lastError, inMs: d.nextAttemptAt - now() });
    }
  }

  const timer = deps.intervalMs ? setInterval(() => void serial(async () => {
    for (const d of daemons.values()) await checkOne(d);
  }), deps.intervalMs) : undefined;
  timer?.unref();

  return {
    ensure: (spec) =>
      serial(async () => {
        const dirs = mpsDirs(deps.stateDir, spec.uid);
        const r = await startOrAdopt(spec, dirs);
        const prev = daemons.get(spec.uid);
        const d: Supervised = { spec, dirs, state: "running", restarts: prev?.restarts ?? 0, crashes: 0, startedAt: now(), nextAttemptAt: 0, ...(r.pid !== undefined ? { pid: r.pid } : {}) };
        daemons.set(spec.uid, d);
        await publish(d);
        deps.log.info(r.how === "started" ? "started MPS control daemon" : "adopted running MPS control daemon", { claim: spec.uid, pid: r.pid, devices: spec.uuids });
        return r.how;
      }),
    stop: (uid) =>
      serial(async () => {
        const dirs = mpsDirs(deps.stateDir, uid);
        const known = daemons.get(uid);
        daemons.delete(uid);
        written.delete(uid);
        const spec = known?.spec ?? { uid, uuids: [] };
        const pid = await pidOf(dirs);
        if (pid !== undefined) {
          const keep = (err: unknown): never => {
            if (known) daemons.set(uid, known); // still running: keep supervising, the next unprepare retries
            throw err;
          };
          await run(spec, dirs, [], "quit\n", "stop the MPS control daemon").catch(async (err: unknown) => {
            if ((await pidOf(dirs)) !== undefined) keep(err);
          });
          // `quit` is answered before the daemon is gone: its directories go only after it.
          if (!(await gone(pid))) keep(new TesseraError("TESSERA_SHARING", `claim ${uid}: the MPS control daemon (pid ${pid}) did not exit within ${QUIT_WAIT_MS} ms of \`quit\`; MPS clients may still hold it (see ${dirs.logDir}/control.log); the kubelet retries the unprepare`));
          deps.log.info("stopped MPS control daemon", { claim: uid, pid });
        }
        await fsp.rm(path.dirname(dirs.pipeDir), { recursive: true, force: true });
      }),
    check: () =>
      serial(async () => {
        for (const d of daemons.values()) await checkOne(d);
      }),
    status: () => [...daemons.values()].map(statusOf),
    close() {
      if (timer) clearInterval(timer);
    },
  };
}
