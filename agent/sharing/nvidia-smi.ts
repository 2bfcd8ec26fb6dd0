// One nvidia-smi call about one GPU, for the sharing settings (time-slice policy, compute mode):
// through the discovery seam's ExecFn (the real executable or a fixture's simulated one). A call
// that cannot run, or exits non-zero, is a per-claim TESSERA_SHARING error that names the GPU, the
// command, what the tool said, and what to check.
import { TesseraError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import type { ExecFn, ExecOptions } from "../discovery/exec.js";
import { toolMessage } from "../mig/commands.js";

export interface NvidiaSmiDeps {
  exec: ExecFn;
  /** The nvidia-smi executable (--nvidia-smi). */
  bin: string;
  execOptions: ExecOptions;
  log: Logger;
}

/** Runs `bin args`; returns stdout. `what` completes "cannot …"; `hint` says what to check on a non-zero exit. */
export async function runForGpu(deps: NvidiaSmiDeps, gpuUUID: string, args: readonly string[], what: string, hint: string): Promise<string> {
  const cmd = `${deps.bin} ${args.join(" ")}`;
  const r = await deps.exec(deps.bin, [...args], deps.execOptions).catch((err: unknown) => {
    throw new TesseraError("TESSERA_SHARING", `GPU ${gpuUUID}: cannot ${what}: \`${cmd}\` could not run; check --nvidia-smi`, { cause: err });
  });
  if (r.code !== 0) throw new TesseraError("TESSERA_SHARING", `GPU ${gpuUUID}: cannot ${what} (\`${cmd}\` exited ${r.code}: ${toolMessage(r.stdout, r.stderr) || "no output"}); ${hint}`);
  return r.stdout;
}
