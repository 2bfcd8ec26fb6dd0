// The sharing steps of prepare and unprepare, called by the state module under the claim's lock:
//   conflict: a GPU runs one strategy (and one time-slice interval) at a time, and a whole GPU an
//             MPS claim holds (compute mode EXCLUSIVE_PROCESS: one CUDA context, its MPS server)
//             serves no other claim; the later claim is refused
//   apply:    time-slice policy per whole GPU (nvidia-smi compute-policy); for MPS, compute mode
//             EXCLUSIVE_PROCESS on its whole GPUs, then the claim's MPS daemon
//   undo:     MPS daemon stopped, its whole GPUs back to compute mode DEFAULT; a GPU's time-slice
//             policy back to Default once no other claim holds one there
//   restore:  after an agent restart, the compute mode of prepared MPS claims' GPUs is read and set
//             again where it differs, running daemons are adopted (dead ones started); after a
//             reboot, time-slice policies are set again
import { describeSharing, mpsPlanOf, sharingClash } from "../sharing/config.js";
import { clientEnv, type MpsControl, type MpsDirs } from "../sharing/mps.js";
import type { TimeSlicer } from "../sharing/timeslice.js";
import type { ComputeModes } from "../sharing/compute-mode.js";
import { TesseraError } from "../common/errors.js";
import { claimRef, type PreparedClaim, type PreparedDevice } from "./prepared.js";

export interface SharingDeps {
  timeSlicer: TimeSlicer;
  computeModes: ComputeModes;
  mps: MpsControl;
  /** The claim's MPS pipe and log directories (validated). */
  mpsDirs: (uid: string) => MpsDirs;
}

type Other = { uid: string; namespace: string; name: string; devices: readonly PreparedDevice[] };

/** Why this claim's sharing cannot hold beside the other prepared claims, or undefined. */
export function sharingConflict(claim: PreparedClaim, others: readonly Other[]): string | undefined {
  for (const d of claim.devices) {
    if (d.kind !== "gpu") continue;
    for (const o of others) {
      if (o.uid === claim.uid) continue;
      const x = o.devices.find((y) => y.kind === "gpu" && y.uuid === d.uuid && (isMps(d) || isMps(y)));
      if (x) {
        const [holder, asker] = isMps(x) ? [`ResourceClaim ${claimRef(o)} with MPS`, `ResourceClaim ${claimRef(claim)} cannot use it too`] : [`ResourceClaim ${claimRef(o)}`, `ResourceClaim ${claimRef(claim)} asks for MPS on it`];
        return `device ${d.poolName}/${d.deviceName} (${d.uuid}) is prepared for ${holder}; ${asker}: a GPU under MPS runs in compute mode EXCLUSIVE_PROCESS, where its one CUDA context belongs to the claim's MPS server: share one MPS claim between the pods (one ResourceClaim referenced by each), or delete and re-create the later claim so it is placed on another GPU`;
      }
    }
  }
  for (const d of claim.devices) {
    if (!d.sharing) continue;
    for (const o of others) {
      if (o.uid === claim.uid) continue;
      const held = o.devices.find((x) => x.uuid === d.uuid && sharingClash(d.sharing, x.sharing));
      if (held?.sharing) {
        return `device ${d.poolName}/${d.deviceName} (${d.uuid}) is prepared for ResourceClaim ${claimRef(o)} with ${describeSharing(held.sharing)}; ResourceClaim ${claimRef(claim)} asks for ${describeSharing(d.sharing)} on it, and one GPU runs one sharing setting at a time: give both claims the same GpuConfig sharing, or delete and re-create the later claim so it is placed on another GPU`;
      }
    }
  }
  return undefined;
}

/** The claim with its MPS edits for the CDI spec (pipe/log mounts, env), when it asks for MPS. */
export function withMps(deps: SharingDeps | undefined, claim: PreparedClaim): PreparedClaim {
  const plan = mpsPlanOf(claim.devices, claimRef(claim));
  if (!plan) return claim;
  if (!deps) throw new TesseraError("TESSERA_SHARING", `ResourceClaim ${claimRef(claim)} asks for MPS, but this agent runs no MPS control daemons`);
  const dirs = deps.mpsDirs(claim.uid);
  return { ...claim, mps: { ...dirs, env: clientEnv({ uid: claim.uid, ...plan }) } };
}

const isMps = (d: PreparedDevice): boolean => d.sharing?.strategy === "MPS";

/** The whole GPUs of the claim's MPS devices: their compute mode is set (MIG devices have none of their own). */
function mpsGpus(devices: readonly PreparedDevice[]): string[] {
  return [...new Set(devices.filter((d) => isMps(d) && d.kind === "gpu").map((d) => d.uuid))];
}

function timeSliced(devices: readonly PreparedDevice[]): { uuid: string; interval: "Default" | "Short" | "Medium" | "Long" }[] {
  const out = new Map<string, "Default" | "Short" | "Medium" | "Long">();
  for (const d of devices) if (d.sharing?.strategy === "TimeSlicing" && d.kind === "gpu") out.set(d.uuid, d.sharing.interval);
  return [...out].map(([uuid, interval]) => ({ uuid, interval }));
}

function required(deps: SharingDeps | undefined, claim: PreparedClaim): SharingDeps {
  if (!deps) throw new TesseraError("TESSERA_SHARING", `ResourceClaim ${claimRef(claim)} asks for GPU sharing, but this agent applies none`);
  return deps;
}

/** Applies the claim's time-slice policies and starts (or adopts) its MPS daemon. */
export async function applySharing(deps: SharingDeps | undefined, claim: PreparedClaim): Promise<void> {
  const ts = timeSliced(claim.devices);
  const plan = mpsPlanOf(claim.devices, claimRef(claim));
  if (ts.length === 0 && !plan) return;
  const d = required(deps, claim);
  for (const { uuid, interval } of ts) await d.timeSlicer.set(uuid, interval);
  for (const uuid of mpsGpus(claim.devices)) await d.computeModes.ensure(uuid, "EXCLUSIVE_PROCESS");
  if (plan) await d.mps.ensure({ uid: claim.uid, ...plan });
}

/** Undoes what applySharing did for this claim; `others` are the claims that stay prepared. */
export async function undoSharing(deps: SharingDeps | undefined, claim: PreparedClaim, others: readonly Other[]): Promise<void> {
  const ts = timeSliced(claim.devices);
  const mps = claim.devices.some((x) => x.sharing?.strategy === "MPS");
  if (ts.length === 0 && !mps) return;
  const d = required(deps, claim);
  if (mps) await d.mps.stop(claim.uid);
  for (const uuid of mpsGpus(claim.devices)) {
    const still = others.some((o) => o.uid !== claim.uid && mpsGpus(o.devices).includes(uuid));
    if (!still) await d.computeModes.ensure(uuid, "DEFAULT");
  }
  for (const { uuid } of ts) {
    const still = others.some((o) => o.uid !== claim.uid && timeSliced(o.devices).some((x) => x.uuid === uuid));
    if (!still) await d.timeSlicer.set(uuid, "Default");
  }
}

/** After an agent restart: the compute mode of its MPS GPUs checked (set again where it differs), its MPS
 *  daemon adopted (or started); after a reboot, its time-slice policies set again. */
export async function restoreSharing(deps: SharingDeps | undefined, claim: PreparedClaim, rebooted: boolean): Promise<void> {
  const plan = mpsPlanOf(claim.devices, claimRef(claim));
  const ts = rebooted ? timeSliced(claim.devices) : [];
  if (ts.length === 0 && !plan) return;
  const d = required(deps, claim);
  for (const { uuid, interval } of ts) await d.timeSlicer.set(uuid, interval);
  for (const uuid of mpsGpus(claim.devices)) await d.computeModes.ensure(uuid, "EXCLUSIVE_PROCESS");
  if (plan) await d.mps.ensure({ uid: claim.uid, ...plan });
}
