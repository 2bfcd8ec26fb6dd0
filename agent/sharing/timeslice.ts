// The GPU time-slice policy through the nvidia-smi seam (the real executable, or the fixture's
// simulated one through the same ExecFn). GPUs are addressed by UUID, never by index:
//   nvidia-smi compute-policy -i <gpu uuid> --set-timeslice <0|1|2|3>   (DEFAULT, SHORT, MEDIUM, LONG)
// The policy is per whole GPU and is lost when the driver reloads (a reboot): the state module
// re-applies it for prepared claims after one, and sets DEFAULT again when the last claim that
// asked for a policy on a GPU is unprepared.
import { TesseraError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import type { ExecFn, ExecOptions } from "../discovery/exec.js";
import { toolMessage } from "../mig/commands.js";
import { TIMESLICE_VALUE, type Interval } from "./config.js";

export function setTimesliceArgs(gpuUUID: string, interval: Interval): string[] {
  return ["compute-policy", "-i", gpuUUID, "--set-timeslice", String(TIMESLICE_VALUE[interval])];
}

export interface TimeSlicer {
  set(gpuUUID: string, interval: Interval): Promise<void>;
}

export interface TimeSlicerDeps {
  exec: ExecFn;
  /** The nvidia-smi executable (--nvidia-smi). */
  bin: string;
  execOptions: ExecOptions;
  log: Logger;
}

export function createTimeSlicer(deps: TimeSlicerDeps): TimeSlicer {
  return {
    async set(gpuUUID, interval) {
      const args = setTimesliceArgs(gpuUUID, interval);
      const cmd = `${deps.bin} ${args.join(" ")}`;
      const r = await deps.exec(deps.bin, args, deps.execOptions).catch((err: unknown) => {
        throw new TesseraError("TESSERA_SHARING", `GPU ${gpuUUID}: \`${cmd}\` could not run; check --nvidia-smi`, { cause: err });
      });
      if (r.code !== 0) {
        throw new TesseraError("TESSERA_SHARING", `GPU ${gpuUUID}: cannot set time-slice interval ${interval} (\`${cmd}\` exited ${r.code}: ${toolMessage(r.stdout, r.stderr) || "no output"}); check \`nvidia-smi compute-policy -l\` and that the driver supports compute policies`);
      }
      deps.log.info("set GPU time-slice policy", { gpu: gpuUUID, interval });
    },
  };
}
