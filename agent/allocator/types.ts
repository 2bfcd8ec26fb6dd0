// Public shapes of the allocator: what allocateClaim takes and returns.
import type { AllocationResult, DeviceClass, DeviceToleration, ResourceClaim, ResourceSlice } from "../kube/types.js";

export type Strategy = "first-fit" | "best-fit";

export interface AllocateInput {
  /** All ResourceSlices visible; only those for `nodeName` (or allNodes) are used. */
  slices: readonly ResourceSlice[];
  /** DeviceClasses of the store/cluster; the built-in Tessera classes fill in missing names. */
  deviceClasses: readonly DeviceClass[];
  /** Claims that already have status.allocation; their devices, counters and capacity are taken. */
  allocatedClaims: readonly ResourceClaim[];
  claim: ResourceClaim;
  strategy?: Strategy;
  /** When set, only slices of this driver are considered. */
  driverName?: string;
  nodeName: string;
  /** Search node budget (default 2,000,000); exhausting it is reported, never silently wrong. */
  maxSteps?: number;
}

/** Devices that passed each stage, for one request or firstAvailable subrequest. */
export interface StageCounts {
  classSelectors: number;
  requestSelectors: number;
  available: number; // not in use, capacity and counters fit
  taints: number;
  /** Most devices the search could choose together for it (constraints, contention in the claim). */
  constraints: number;
}

export interface AlternativeReport {
  /** Result name: `<request>` or `<request>/<subrequest>`. */
  name: string;
  deviceClassName: string;
  /** Devices needed: the count, or for All mode every selectable device. */
  need: number;
  stages: StageCounts;
}

export interface RequestReport {
  name: string;
  alternatives: AlternativeReport[];
}

export type FailureStage = "classSelectors" | "requestSelectors" | "available" | "taints" | "constraints";
export type FailureReason = "unsatisfiable" | "cel-error" | "too-many-results" | "search-budget" | "constraint-error" | "incomplete-pool";

export interface Explanation {
  reason: FailureReason;
  /** Request (main name) that failed, and the alternative whose stages are blamed. */
  request?: string;
  alternative?: string;
  stage?: FailureStage;
  /** One sentence a user understands. */
  message: string;
  requests: RequestReport[];
}

export interface ChosenDevice {
  request: string;
  driver: string;
  pool: string;
  device: string;
}

export interface Timing {
  prepareMs: number; // parsing, validation, CEL, flattening
  searchMs: number; // WASM search
  steps: number; // search nodes visited
}

export type AllocateOutput =
  | { ok: true; allocation: AllocationResult; devices: ChosenDevice[]; requests: RequestReport[]; timing: Timing }
  | { ok: false; explanation: Explanation; timing: Timing };

export interface NormAlternative {
  /** `<request>` or `<request>/<subrequest>`. */
  resultName: string;
  requestIndex: number;
  deviceClassName: string;
  selectors: { expression: string; path: string }[];
  mode: "ExactCount" | "All";
  count: number;
  adminAccess: boolean;
  tolerations: DeviceToleration[];
  capacityRequests: Record<string, string>;
  path: string;
}

export interface NormRequest {
  name: string;
  alternatives: NormAlternative[];
}
