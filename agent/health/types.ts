// The plain data of device health, shared by the health sources, the taint keeper and its
// consumers (the ResourceSlice publisher, the kubelet's health stream, diag). No I/O here.

/** DRA device taint effects (resource.k8s.io/v1 DeviceTaintEffect). */
export type TaintEffect = "NoExecute" | "NoSchedule" | "None";

/** Where a piece of evidence came from. */
export type HealthSource = "kmsg" | "nvidia-smi" | "discovery";

/** The kubelet's DRAResourceHealth states. */
export type DeviceHealthState = "HEALTHY" | "UNHEALTHY" | "UNKNOWN";

/** A published device, and the GPU (and MIG GPU instance, when it is one) it lives on. */
export interface HealthTarget {
  /** DRA device name, e.g. gpu-3 or gpu-1-mig-19-0-1. */
  device: string;
  /** The whole GPU's device name (gpu-<minor>); equal to `device` for a whole GPU. */
  gpu: string;
  /** MIG GPU instance id of a live MIG device; absent for whole GPUs and placements without an instance. */
  gi?: number;
}

/** One device's health as the kubelet's stream and the metrics see it. */
export interface DeviceHealthEntry {
  device: string;
  health: DeviceHealthState;
  /** Unix seconds of the last determination. */
  lastUpdated: number;
  /** Human-readable reason (taints and their evidence), or "" when healthy. */
  message: string;
}

/** What the kubelet plugin's health stream reads: the full list now, and change notifications. */
export interface HealthFeed {
  list(): DeviceHealthEntry[];
  /** `fn` runs after every change of any device's health; returns the unsubscribe. */
  subscribe(fn: () => void): () => void;
}

/** Effect order, most severe first (a device's worst taint decides its health). */
export const EFFECT_SEVERITY: Record<TaintEffect, number> = { NoExecute: 2, NoSchedule: 1, None: 0 };
