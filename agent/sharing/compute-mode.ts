// The GPU compute mode through the nvidia-smi seam, for MPS: NVIDIA's MPS documentation and its
// DRA driver set a GPU to EXCLUSIVE_PROCESS before its MPS daemon starts (only the MPS server
// then holds a CUDA context on it; a process that bypasses MPS is refused instead of sharing the
// GPU behind the daemon's back), and Tessera sets DEFAULT again when the GPU's MPS claim goes.
//   set:   nvidia-smi -i <gpu uuid> -c EXCLUSIVE_PROCESS|DEFAULT
//   read:  nvidia-smi -i <gpu uuid> --query-gpu=compute_mode --format=csv,noheader,nounits
// Every set is read back: the real tool answers a refusal on a GPU in MIG mode with "Treating as
// warning and moving on. All done." (NVIDIA/DCGM issue 82), so its exit code alone proves nothing.
// Whole GPUs only (the mode is per GPU and a GPU in MIG mode refuses it). Lost when the driver
// reloads (a reboot): the state module sets it again for prepared MPS claims.
import { TesseraError } from "../common/errors.js";
import { runForGpu, type NvidiaSmiDeps } from "./nvidia-smi.js";

export type ComputeMode = "DEFAULT" | "EXCLUSIVE_PROCESS";
/** As `--query-gpu=compute_mode` prints each mode. */
const QUERY_NAME: Readonly<Record<ComputeMode, string>> = { DEFAULT: "Default", EXCLUSIVE_PROCESS: "Exclusive_Process" };

export function setComputeModeArgs(gpuUUID: string, mode: ComputeMode): string[] {
  return ["-i", gpuUUID, "-c", mode];
}

export function queryComputeModeArgs(gpuUUID: string): string[] {
  return ["-i", gpuUUID, "--query-gpu=compute_mode", "--format=csv,noheader,nounits"];
}

export interface ComputeModes {
  /** The mode the GPU reports (Default, Exclusive_Process, Prohibited, ...), as printed. */
  get(gpuUUID: string): Promise<string>;
  /** Sets the mode unless the GPU already reports it; reads it back. */
  ensure(gpuUUID: string, mode: ComputeMode): Promise<"set" | "unchanged">;
}

export type ComputeModeDeps = NvidiaSmiDeps;

export function createComputeModes(deps: ComputeModeDeps): ComputeModes {
  const run = (gpuUUID: string, args: string[], what: string): Promise<string> =>
    runForGpu(deps, gpuUUID, args, what, "check `nvidia-smi -q -d COMPUTE` and that no other tool manages this GPU's compute mode");
  async function get(gpuUUID: string): Promise<string> {
    const out = (await run(gpuUUID, queryComputeModeArgs(gpuUUID), "read the compute mode")).trim();
    if (out === "" || out.includes("\n")) throw new TesseraError("TESSERA_SHARING", `GPU ${gpuUUID}: \`${deps.bin} ${queryComputeModeArgs(gpuUUID).join(" ")}\` answered ${JSON.stringify(out.slice(0, 200))}, not one compute mode; check --nvidia-smi`);
    return out;
  }
  return {
    get,
    async ensure(gpuUUID, mode) {
      if ((await get(gpuUUID)) === QUERY_NAME[mode]) return "unchanged";
      const out = await run(gpuUUID, setComputeModeArgs(gpuUUID, mode), `set compute mode ${mode}`);
      const now = await get(gpuUUID);
      if (now !== QUERY_NAME[mode]) {
        const said = out.split("\n").map((l) => l.trim()).filter((l) => l && l !== "All done.").join(" ");
        throw new TesseraError("TESSERA_SHARING", `GPU ${gpuUUID}: compute mode is still ${now} after \`${deps.bin} ${setComputeModeArgs(gpuUUID, mode).join(" ")}\` (it said: ${said.slice(0, 300) || "nothing"}); MPS needs a whole GPU whose compute mode can be set (not in MIG mode); ask for a MIG device with kind: MigDeviceConfig instead`);
      }
      deps.log.info("set GPU compute mode", { gpu: gpuUUID, mode });
      return "set";
    },
  };
}
