// The simulated nvidia-smi's per-GPU policies, one state machine for the fixture backend and the
// executable test/support/nvidia-smi-sim.mjs (both call createSimulatedNvidiaSmi, which calls these):
//   compute-policy -i <id> --set-timeslice <0-3> | -l     the time-slice policy
//   -i <id> -c <mode> (--compute-mode)                     the compute mode
//   --query-gpu=compute_mode (in nvsmi-sim-health.ts)      reads the compute mode back
// Where each text comes from:
//   - `Set compute mode to EXCLUSIVE_PROCESS for GPU 00000000:00:06.0.` then `All done.`: public
//     transcripts of the real tool (Microsoft's Azure Stack Edge MPS docs, "Start-HcsGpuMPS"; a
//     `nvidia-smi -i 0 --compute-mode 3` transcript; boostorg/compute issue 9 with one line per GPU).
//     DEFAULT and PROHIBITED are printed in the same form (an assumption: no capture seen).
//   - the MIG-mode refusal, four lines ending in `Treating as warning and moving on.` and `All done.`:
//     NVIDIA/DCGM issue 82 (the same text in NVIDIA/go-nvml issue 61). Its exit code is not shown
//     there; "treating as warning" suggests 0, which is what this simulation returns, so a caller
//     must read the mode back (`--query-gpu=compute_mode`) to know it was set.
//   - mode names and numbers (0 DEFAULT, 1 EXCLUSIVE_PROCESS, 2 PROHIBITED; 3, the old number of
//     EXCLUSIVE_PROCESS, still accepted): the transcripts above and fgci-org/ansible-role-cuda PR 31.
//   - `--query-gpu=compute_mode` values `Default`, `Exclusive_Process`, `Prohibited`: scripts that
//     compare the tool's output with these strings (and `nvidia-smi -q` printing Exclusive_Process).
//   - compute-policy: the syntax and the 0-3 numbering are the tool's own help text
//     (NVIDIA/k8s-device-plugin issue 354). Its success line, its refusals and every exit code of a
//     refusal here are modelled: no capture of them was found.
import type { XmlGpu } from "./nvsmi-xml.js";

export const COMPUTE_MODES = ["DEFAULT", "EXCLUSIVE_PROCESS", "PROHIBITED"] as const;
export type SimComputeMode = (typeof COMPUTE_MODES)[number];
/** As `--query-gpu=compute_mode` prints them. */
export const QUERY_COMPUTE_MODE: Readonly<Record<SimComputeMode, string>> = { DEFAULT: "Default", EXCLUSIVE_PROCESS: "Exclusive_Process", PROHIBITED: "Prohibited" };
const TIMESLICE_NAMES = ["DEFAULT", "SHORT", "MEDIUM", "LONG"];

/** What these commands keep in the simulator's state file, per GPU UUID. */
export interface SimPolicyState {
  /** `compute-policy --set-timeslice` (absent: 0, DEFAULT). */
  timeslice?: Record<string, number>;
  /** `-c` (absent: the fixture XML's <compute_mode>, else DEFAULT). */
  computeMode?: Record<string, SimComputeMode>;
}

export interface SimPolicyResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface SimPolicyDeps<S extends SimPolicyState> {
  /** The GPUs `-i` names (all without -i), or a refusal. */
  select(id: string | undefined): XmlGpu[] | { code: number; message: string };
  /** The state now, read only. */
  current(): S;
  /** Runs a change under the state file's lock; `save` writes it. */
  change(fn: (s: S, save: (s: S) => void) => SimPolicyResult): SimPolicyResult;
}

/** nvidia-smi prints bus ids with an 8-digit domain, upper case (00000000:53:00.0). */
const smiBusId = (g: XmlGpu): string => `0000${g.pciBusId}`.toUpperCase();

/** The compute mode a GPU reports: set by `-c`, else its fixture XML's. */
export function computeModeOf(s: SimPolicyState, g: XmlGpu, fromXml: string | undefined): SimComputeMode {
  const set = s.computeMode?.[g.uuid];
  if (set) return set;
  const x = (fromXml ?? "").toUpperCase().replace(/ /g, "_");
  return (COMPUTE_MODES as readonly string[]).includes(x) ? (x as SimComputeMode) : "DEFAULT";
}

function parseMode(text: string): SimComputeMode | undefined {
  const t = text.toUpperCase();
  if (t === "0" || t === "DEFAULT") return "DEFAULT";
  if (t === "1" || t === "3" || t === "EXCLUSIVE_PROCESS") return "EXCLUSIVE_PROCESS";
  if (t === "2" || t === "PROHIBITED") return "PROHIBITED";
  return undefined;
}

/** `[-i <id>] -c <mode>`: one line per GPU, then `All done.`; a GPU in MIG mode is refused as a warning. */
export function setComputeMode<S extends SimPolicyState>(deps: SimPolicyDeps<S>, id: string | undefined, modeText: string): SimPolicyResult {
  const mode = parseMode(modeText);
  if (!mode) return { stdout: "", stderr: `Invalid compute mode ${modeText}: valid values are 0/DEFAULT, 1/EXCLUSIVE_PROCESS, 2/PROHIBITED\n`, code: 2 }; // modelled
  const sel = deps.select(id);
  if (!Array.isArray(sel)) return { stdout: "", stderr: sel.message + "\n", code: sel.code };
  return deps.change((s, save) => {
    const out: string[] = [];
    for (const g of sel) {
      if (g.migMode === "enabled" && mode !== "DEFAULT") {
        out.push(`Setting compute mode to ${mode} is not supported on a MIG-enabled device.`, `Unable to set the compute mode for GPU ${smiBusId(g)}: Not Supported`, "Treating as warning and moving on.");
        continue;
      }
      (s.computeMode ??= {})[g.uuid] = mode;
      out.push(`Set compute mode to ${mode} for GPU ${smiBusId(g)}.`);
    }
    save(s);
    out.push("All done.");
    return { stdout: out.join("\n") + "\n", stderr: "", code: 0 };
  });
}

/** `compute-policy -i <id> --set-timeslice <0-3>` and `compute-policy [-i <id>] -l`. */
export function computePolicy<S extends SimPolicyState>(deps: SimPolicyDeps<S>, a: readonly string[], value: (...n: string[]) => string | undefined, has: (...n: string[]) => boolean, usage: () => SimPolicyResult): SimPolicyResult {
  const id = value("-i", "--id");
  if (id?.startsWith("MIG-")) return { stdout: "", stderr: `Setting the compute policy is not supported on MIG device ${id}: Not Supported\n`, code: 3 };
  const sel = deps.select(id);
  if (!Array.isArray(sel)) return { stdout: "", stderr: sel.message + "\n", code: sel.code };
  if (has("-l", "--list")) {
    const s = deps.current();
    const rows = sel.map((g) => `GPU ${g.index}: ${g.uuid}\n    Timeslice: ${TIMESLICE_NAMES[s.timeslice?.[g.uuid] ?? 0]}`);
    return { stdout: rows.join("\n") + "\n", stderr: "", code: 0 };
  }
  const text = a.find((x) => x.startsWith("--set-timeslice="))?.slice("--set-timeslice=".length) ?? value("--set-timeslice");
  if (text === undefined) return usage();
  if (!/^[0-3]$/.test(text)) return { stdout: "", stderr: `Invalid timeslice value ${text}: Invalid Argument\n`, code: 2 };
  return deps.change((s, save) => {
    for (const g of sel) {
      if (g.migMode === "enabled") return { stdout: "", stderr: `Setting timeslice failed for GPU ${g.pciBusId}: Not Supported\n`, code: 3 };
    }
    s.timeslice ??= {};
    const out: string[] = [];
    for (const g of sel) {
      s.timeslice[g.uuid] = Number(text);
      out.push(`Set timeslice to ${TIMESLICE_NAMES[Number(text)]} for GPU ${g.pciBusId}.`);
    }
    save(s);
    return { stdout: out.join("\n") + "\n", stderr: "", code: 0 };
  });
}
