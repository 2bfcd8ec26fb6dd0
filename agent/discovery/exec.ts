// Runs discovery commands (nvidia-smi) safely: no shell, a hard timeout (a GPU that fell off the
// bus makes nvidia-smi hang in the kernel), a cap on output size, and never blocking the event
// loop. A timed-out child is killed with SIGKILL: SIGTERM is not enough for a process stuck in a
// driver call.
import { spawn } from "node:child_process";
import { TesseraError } from "../common/errors.js";

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface ExecOptions {
  timeoutMs: number;
  maxBytes: number;
  /** Aborting kills the child at once (SIGTERM of the agent during a hung nvidia-smi). */
  signal?: AbortSignal;
  /** Variables added to the child's environment (the MPS control daemon's pipe and log directories). */
  env?: Readonly<Record<string, string>>;
  /** Written to the child's stdin, which is then closed (commands to nvidia-cuda-mps-control). */
  input?: string;
}

/** Injected into discovery; tests pass fakes or tiny scripts. */
export type ExecFn = (file: string, args: readonly string[], opts: ExecOptions) => Promise<ExecResult>;

export const DEFAULT_EXEC_OPTIONS: ExecOptions = { timeoutMs: 20_000, maxBytes: 16 * 1024 * 1024 };

function commandLine(file: string, args: readonly string[]): string {
  return [file, ...args].join(" ");
}

/** Resolves with stdout/stderr/exit code; rejects with TESSERA_DISCOVERY_TIMEOUT, _OUTPUT_TOO_LARGE or TESSERA_DISCOVERY. */
export const execFile: ExecFn = (file, args, opts) =>
  new Promise<ExecResult>((resolve, reject) => {
    const cmd = commandLine(file, args);
    const stopped = (): TesseraError => new TesseraError("TESSERA_STOPPED", `${cmd} was killed: the agent is stopping`);
    if (opts.signal?.aborted) {
      reject(stopped());
      return;
    }
    let child;
    try {
      child = spawn(file, [...args], { shell: false, stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"], env: { ...process.env, LC_ALL: "C", ...opts.env } });
    } catch (err) {
      reject(new TesseraError("TESSERA_DISCOVERY", `cannot start ${cmd}`, { cause: err }));
      return;
    }
    const out: Buffer[] = [];
    const errOut: Buffer[] = [];
    let bytes = 0;
    let settled = false;
    const finish = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      fn();
    };
    const kill = (): void => {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    };
    const onAbort = (): void => {
      kill();
      finish(() => reject(stopped()));
    };
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    const timer = setTimeout(() => {
      kill();
      finish(() =>
        reject(
          new TesseraError(
            "TESSERA_DISCOVERY_TIMEOUT",
            `${cmd} did not finish within ${opts.timeoutMs} ms and was killed; a GPU may have fallen off the bus (check dmesg for Xid errors); the last good inventory is kept`,
          ),
        ),
      );
    }, opts.timeoutMs);
    const onData = (sink: Buffer[]) => (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > opts.maxBytes) {
        kill();
        finish(() =>
          reject(new TesseraError("TESSERA_DISCOVERY_OUTPUT_TOO_LARGE", `${cmd} printed more than ${opts.maxBytes} bytes and was stopped`)),
        );
        return;
      }
      sink.push(chunk);
    };
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on("error", () => undefined); // a child that exits without reading: its answer is the exit code
      child.stdin.end(opts.input);
    }
    child.stdout?.on("data", onData(out));
    child.stderr?.on("data", onData(errOut));
    child.on("error", (err: NodeJS.ErrnoException) => {
      const hint = err.code === "ENOENT" ? `${file} not found on PATH; is the NVIDIA driver installed, or did you mean --discovery fixture:<name>?` : `cannot run ${cmd}`;
      finish(() => reject(new TesseraError("TESSERA_DISCOVERY", hint, { cause: err })));
    });
    child.on("close", (code, signal) => {
      finish(() =>
        resolve({
          stdout: Buffer.concat(out).toString("utf8"),
          stderr: Buffer.concat(errOut).toString("utf8"),
          code: code ?? (signal ? 128 : 1),
        }),
      );
    });
  });

/** Runs a command and requires exit 0; the error names the command and the first stderr line. */
export async function execChecked(exec: ExecFn, file: string, args: readonly string[], opts: ExecOptions): Promise<string> {
  const r = await exec(file, args, opts);
  if (r.code !== 0) {
    const first = (r.stderr.trim() || r.stdout.trim()).split("\n")[0] ?? "";
    throw new TesseraError("TESSERA_DISCOVERY", `${commandLine(file, args)} exited with ${r.code}${first ? `: ${first.slice(0, 200)}` : ""}`);
  }
  return r.stdout;
}
