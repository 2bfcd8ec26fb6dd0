// The sharing steps of prepare and unprepare, called by the state module under the claim's lock:
//   conflict: a GPU runs one strategy (and one time-slice interval) at a time; the later claim is refused
//   apply:    time-slice policy per whole GPU (nvidia-smi compute-policy), then the claim's MPS daemon
//   undo:     MPS daemon stopped; a GPU's policy back to Default once no other claim holds one there
//   restore:  after an agent restart, running daemons of prepared claims are adopted (dead ones
//             started); after a reboot, time-slice policies are set again
import { describeSharing, mpsPlanOf, sharingClash } from "../sharing/config.js";
import { clientEnv, type MpsControl, type MpsDirs } from "../sharing/mps.js";
import type { TimeSlicer } from "../sharing/timeslice.js";
import { TesseraError } from "../common/errors.js";
import { claimRef, type PreparedClaim, type PreparedDevice } from "./prepared.js";

export interface SharingDeps {
  timeSlicer: TimeSlicer;
  mps: MpsControl;
  /** The claim's MPS pipe and log directories (validated). */
  mpsDirs: (uid: string) => MpsDirs;
}

type Other = { uid: string; namespace: string; name: string; devices: readonly PreparedDevice[] };

/** Why this claim's sharing cannot hold beside the other prepared claims, or undefined. */
export function sharingConflict(claim: PreparedClaim, others: readonly Other[]): string | undefined {
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
  if (plan) await d.mps.ensure({ uid: claim.uid, ...plan });
}

/** Undoes what applySharing did for this claim; `others` are the claims that stay prepared. */
export async function undoSharing(deps: SharingDeps | undefined, claim: PreparedClaim, others: readonly Other[]): Promise<void> {
  const ts = timeSliced(claim.devices);
  const mps = claim.devices.some((x) => x.sharing?.strategy === "MPS");
  if (ts.length === 0 && !mps) return;
  const d = required(deps, claim);
  if (mps) await d.mps.stop(claim.uid);
  for (const { uuid } of ts) {
    const still = others.some((o) => o.uid !== claim.uid && timeSliced(o.devices).some((x) => x.uuid === uuid));
    if (!still) await d.timeSlicer.set(uuid, "Default");
  }
}

/** After an agent restart: adopt (or start) the claim's MPS daemon; after a reboot, set its policies again. */
export async function restoreSharing(deps: SharingDeps | undefined, claim: PreparedClaim, rebooted: boolean): Promise<void> {
  const plan = mpsPlanOf(claim.devices, claimRef(claim));
  const ts = rebooted ? timeSliced(claim.devices) : [];
  if (ts.length === 0 && !plan) return;
  const d = required(deps, claim);
  for (const { uuid, interval } of ts) await d.timeSlicer.set(uuid, interval);
  if (plan) await d.mps.ensure({ uid: claim.uid, ...plan });
}
