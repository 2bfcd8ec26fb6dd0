// The GPU time-slice policy through the nvidia-smi seam (the real executable, or the fixture's
// simulated one through the same ExecFn). GPUs are addressed by UUID, never by index:
//   nvidia-smi compute-policy -i <gpu uuid> --set-timeslice <0|1|2|3>   (DEFAULT, SHORT, MEDIUM, LONG)
// The policy is per whole GPU and is lost when the driver reloads (a reboot): the state module
// re-applies it for prepared claims after one, and sets DEFAULT again when the last claim that
// asked for a policy on a GPU is unprepared.
import { TIMESLICE_VALUE, type Interval } from "./config.js";
import { runForGpu, type NvidiaSmiDeps } from "./nvidia-smi.js";

export function setTimesliceArgs(gpuUUID: string, interval: Interval): string[] {
  return ["compute-policy", "-i", gpuUUID, "--set-timeslice", String(TIMESLICE_VALUE[interval])];
}

export interface TimeSlicer {
  set(gpuUUID: string, interval: Interval): Promise<void>;
}

export type TimeSlicerDeps = NvidiaSmiDeps;

export function createTimeSlicer(deps: TimeSlicerDeps): TimeSlicer {
  return {
    async set(gpuUUID, interval) {
      await runForGpu(deps, gpuUUID, setTimesliceArgs(gpuUUID, interval), `set time-slice interval ${interval}`, "check `nvidia-smi compute-policy -l` and that the driver supports compute policies");
      deps.log.info("set GPU time-slice policy", { gpu: gpuUUID, interval });
    },
  };
}
