// MIG GPU-instance profile facts per GPU family, for `--mig-mode dynamic` (every profile x placement
// as a partitionable device). Numbers are facts transcribed from shared/mig-profiles.json (NVIDIA MIG
// User Guide tables, real `nvidia-smi mig -lgip` captures, mig-parted); see docs/discovery.md.
// Memory per profile varies by driver: where no capture gives it, it is estimated as
// memorySlices/8 of the GPU's memory (see profileMemoryBytes). Also: CUDA compute capability by
// architecture, because the -q -x XML does not carry it.

import type { MigEngines } from "./model.js";

export interface MigProfile extends MigEngines {
  name: string; // "1g.10gb"
  profileId: number; // the ID column of `nvidia-smi mig -lgip`
  computeSlices: number;
  memorySlices: number;
  starts: readonly number[]; // placement starts, in memory-slice units on the 0..7 axis
  memoryMiB?: number; // observed in a real capture, else estimated
}

export interface MigFamily {
  key: string;
  pciDeviceIds: readonly string[]; // "0x233010DE"
  productNames: readonly string[];
  profiles: readonly MigProfile[];
}

const S1 = [0, 1, 2, 3, 4, 5, 6];
const S2 = [0, 2, 4, 6];
const S2c = [0, 2, 4];
const S4 = [0, 4];
const S0 = [0];

type Row = [name: string, id: number, cs: number, ms: number, starts: readonly number[], sm: number, ce: number, dec: number, enc: number, jpg: number, ofa: number, mib?: number];
const rows = (r: Row[]): MigProfile[] =>
  r.map(([name, profileId, computeSlices, memorySlices, starts, multiprocessors, copyEngines, decoders, encoders, jpegEngines, ofaEngines, memoryMiB]) => {
    const p: MigProfile = { name, profileId, computeSlices, memorySlices, starts, multiprocessors, copyEngines, decoders, encoders, jpegEngines, ofaEngines };
    if (memoryMiB !== undefined) p.memoryMiB = memoryMiB;
    return p;
  });

// A100 80GB engine counts are not in the sources; the die (GA100) and the 40GB counts are the same.
const A100_ENGINES: Record<number, [number, number, number, number, number]> = {
  19: [1, 0, 0, 0, 0], 20: [1, 1, 0, 1, 1], 15: [1, 1, 0, 0, 0], 14: [2, 1, 0, 0, 0], 9: [3, 2, 0, 0, 0], 5: [4, 2, 0, 0, 0], 0: [7, 5, 0, 1, 1],
};
const a100 = (names: [string, number, number, number, readonly number[], number, number?][]): MigProfile[] =>
  rows(names.map(([n, id, cs, ms, st, sm, mib]) => {
    const e = A100_ENGINES[id] ?? [0, 0, 0, 0, 0];
    return [n, id, cs, ms, st, sm, e[0], e[1], e[2], e[3], e[4], mib] as Row;
  }));

export const MIG_FAMILIES: readonly MigFamily[] = [
  {
    key: "A100-40GB",
    pciDeviceIds: ["0x20B010DE", "0x20B110DE", "0x20F110DE", "0x20F610DE"],
    productNames: ["NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"],
    profiles: a100([["1g.5gb", 19, 1, 1, S1, 14], ["1g.5gb+me", 20, 1, 1, S1, 14], ["1g.10gb", 15, 1, 2, S2, 14], ["2g.10gb", 14, 2, 2, S2c, 28],
      ["3g.20gb", 9, 3, 4, S4, 42, 19968], ["4g.20gb", 5, 4, 4, S0, 56], ["7g.40gb", 0, 7, 8, S0, 98]]),
  },
  {
    key: "A100-80GB",
    pciDeviceIds: ["0x20B210DE", "0x20B510DE", "0x20F310DE", "0x20F510DE"],
    productNames: ["NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"],
    profiles: a100([["1g.10gb", 19, 1, 1, S1, 14], ["1g.10gb+me", 20, 1, 1, S1, 14], ["1g.20gb", 15, 1, 2, S2, 14, 19968], ["2g.20gb", 14, 2, 2, S2c, 28, 19968],
      ["3g.40gb", 9, 3, 4, S4, 42], ["4g.40gb", 5, 4, 4, S0, 56], ["7g.80gb", 0, 7, 8, S0, 98]]),
  },
  {
    key: "H100-80GB",
    pciDeviceIds: ["0x233010DE", "0x233110DE", "0x232210DE", "0x232410DE"],
    productNames: ["NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"],
    profiles: rows([["1g.10gb", 19, 1, 1, S1, 16, 1, 1, 0, 1, 0], ["1g.10gb+me", 20, 1, 1, S1, 16, 1, 1, 0, 1, 1], ["1g.20gb", 15, 1, 2, S2, 26, 1, 1, 0, 1, 0],
      ["2g.20gb", 14, 2, 2, S2c, 32, 2, 2, 0, 2, 0], ["3g.40gb", 9, 3, 4, S4, 60, 3, 3, 0, 3, 0, 40448], ["4g.40gb", 5, 4, 4, S0, 64, 4, 4, 0, 4, 0],
      ["7g.80gb", 0, 7, 8, S0, 132, 8, 7, 0, 7, 1]]),
  },
  {
    key: "H100-94GB-NVL",
    pciDeviceIds: ["0x232110DE", "0x233A10DE"],
    productNames: ["NVIDIA H100 NVL"],
    profiles: rows([["1g.12gb", 19, 1, 1, S1, 16, 1, 1, 0, 1, 0, 11008], ["1g.12gb+me", 20, 1, 1, S1, 16, 1, 1, 0, 1, 1, 11008], ["1g.24gb", 15, 1, 2, S2, 26, 1, 1, 0, 1, 0, 22144],
      ["2g.24gb", 14, 2, 2, S2c, 32, 2, 2, 0, 2, 0, 22144], ["3g.47gb", 9, 3, 4, S4, 60, 3, 3, 0, 3, 0, 47488], ["4g.47gb", 5, 4, 4, S0, 64, 4, 4, 0, 4, 0, 47488],
      ["7g.94gb", 0, 7, 8, S0, 132, 8, 7, 0, 7, 1, 95354]]),
  },
  {
    key: "H200-141GB",
    pciDeviceIds: ["0x233510DE", "0x233B10DE"],
    productNames: ["NVIDIA H200"],
    profiles: rows([["1g.18gb", 19, 1, 1, S1, 16, 1, 1, 0, 1, 0, 16384], ["1g.18gb+me", 20, 1, 1, S1, 16, 1, 1, 0, 1, 1, 16384], ["1g.35gb", 15, 1, 2, S2, 26, 1, 1, 0, 1, 0, 33024],
      ["2g.35gb", 14, 2, 2, S2c, 32, 2, 2, 0, 2, 0, 33024], ["3g.71gb", 9, 3, 4, S4, 60, 3, 3, 0, 3, 0, 71168], ["4g.71gb", 5, 4, 4, S0, 64, 4, 4, 0, 4, 0, 71168],
      ["7g.141gb", 0, 7, 8, S0, 132, 8, 7, 0, 7, 1]]),
  },
];

export function migFamilyFor(pciDeviceId: string | undefined, productName: string): MigFamily | undefined {
  const id = pciDeviceId?.toUpperCase().replace(/^0X/, "0x");
  return MIG_FAMILIES.find((f) => (id !== undefined && f.pciDeviceIds.includes(id)) || f.productNames.includes(productName));
}

/** Memory of one profile on a GPU: the captured value, else memorySlices/8 of the GPU (an estimate). */
export function profileMemoryBytes(p: MigProfile, gpuMemoryBytes: number): number {
  if (p.memoryMiB !== undefined) return Math.min(p.memoryMiB * 1024 * 1024, gpuMemoryBytes);
  const perSliceMiB = Math.floor(gpuMemoryBytes / (1024 * 1024) / 8);
  return perSliceMiB * p.memorySlices * 1024 * 1024;
}

/** CUDA compute capability ("major.minor") from the architecture and product name. */
export function computeCapability(architecture: string, productName: string): string | undefined {
  const p = productName.toUpperCase();
  switch (architecture) {
    case "Pascal":
      return /P100/.test(p) ? "6.0" : "6.1";
    case "Volta":
      return "7.0";
    case "Turing":
      return "7.5";
    case "Ampere":
      return /\bA(100|30|800)\b|A100-|A800-/.test(p) ? "8.0" : "8.6";
    case "Ada Lovelace":
      return "8.9";
    case "Hopper":
      return "9.0";
    case "Blackwell":
      if (/\bG?B300\b/.test(p)) return "10.3";
      if (/\bG?B(100|200)\b/.test(p)) return "10.0";
      return "12.0";
    default:
      return undefined;
  }
}

/** One dynamic-MIG placement of a GPU: a profile at one start, before any instance exists. */
export interface MigPlacementShape {
  profile: MigProfile;
  start: number;
}

/**
 * Every profile x placement start that `--mig-mode dynamic` publishes for a GPU: only when MIG mode
 * is already enabled (Tessera never changes it) and its profile table is known; [] otherwise.
 */
export function placementsOf(gpu: { migMode: string; pciDeviceId?: string; productName: string }): MigPlacementShape[] {
  if (gpu.migMode !== "enabled") return [];
  const family = migFamilyFor(gpu.pciDeviceId, gpu.productName);
  if (!family) return [];
  return family.profiles.flatMap((profile) => profile.starts.map((start) => ({ profile, start })));
}
