// The normalized node inventory: what discovery produces (real nvidia-smi + sysfs, or a fixture)
// and what everything else consumes (ResourceSlices, the kubelet plugin's device facts, diag).
// Plain data, JSON-serialisable, stable field order for golden tests.

export interface HostFacts {
  cpuModel?: string;
  cpuCores?: number;
  memoryBytes?: number;
  os?: string;
  kernel?: string;
}

export interface NumaNode {
  id: number;
  cpuList: string; // kernel cpulist syntax, e.g. "0-31,64-95"
}

/** Engine counts of a MIG profile or instance (nvidia-smi `-q -x` / `mig -lgip`). */
export interface MigEngines {
  multiprocessors: number;
  copyEngines: number;
  decoders: number;
  encoders: number;
  jpegEngines: number;
  ofaEngines: number;
}

/** The engine counts of anything that has them (a profile, a parsed instance), as their own object. */
export function enginesOf(e: MigEngines): MigEngines {
  return { multiprocessors: e.multiprocessors, copyEngines: e.copyEngines, decoders: e.decoders, encoders: e.encoders, jpegEngines: e.jpegEngines, ofaEngines: e.ofaEngines };
}

export interface MigDevice extends MigEngines {
  /** Stable DRA device name, see migDeviceName(). */
  name: string;
  gpuInstanceId: number;
  computeInstanceId: number;
  uuid?: string; // MIG-xxxxxxxx..., from `nvidia-smi -L`
  profileId: number; // GPU instance profile id (from `nvidia-smi mig -lgi`)
  profileName: string; // e.g. "1g.10gb"
  placementStart: number;
  placementSize: number;
  memoryBytes: number;
  /** Device nodes of the GI and CI access capabilities, e.g. /dev/nvidia-caps/nvidia-cap30. */
  capDevicePaths: string[];
}

export interface Gpu {
  /** Stable DRA device name, see gpuDeviceName(). */
  name: string;
  minor: number; // /dev/nvidia<minor>; stable across reboots, unlike the nvidia-smi index
  index: number; // nvidia-smi enumeration index (informational only)
  uuid: string;
  productName: string;
  brand: string;
  architecture: string;
  cudaComputeCapability?: string; // "9.0"
  pciBusId: string; // sysfs form, lower case, 4-digit domain: "0000:53:00.0"
  pcieRoot?: string; // "pci0000:00"
  numaNode?: number; // absent when unknown (sysfs -1)
  memoryBytes: number;
  migMode: "enabled" | "disabled" | "unsupported";
  migDevices: MigDevice[];
  pciDeviceId?: string; // "0x233010DE" (added by discovery: selects the MIG profile table)
  localCpuList?: string; // sysfs local_cpulist of the GPU's PCI device
}

/** A degraded or failed discovery step, shown by diag and logged (e.g. `nvidia-smi -L` failed). */
export interface DiscoveryCondition {
  code: string; // a TESSERA_ error code
  message: string;
}

export interface Inventory {
  nodeName: string;
  driverVersion?: string;
  cudaDriverVersion?: string;
  numaNodes: NumaNode[];
  pcieRoots: string[];
  gpus: Gpu[];
  host: HostFacts;
  /** Steps that failed or were partial; empty/absent when discovery was clean. */
  conditions?: DiscoveryCondition[];
}

export function gpuDeviceName(minor: number): string {
  return `gpu-${minor}`;
}

export function migDeviceName(gpuMinor: number, profileId: number, start: number, size: number): string {
  return `gpu-${gpuMinor}-mig-${profileId}-${start}-${size}`;
}

/** Facts the kubelet plugin needs to turn an allocated device name into container edits. */
export interface DeviceFacts {
  name: string;
  kind: "gpu" | "mig";
  uuid: string;
  parentUUID?: string;
  gpuMinor: number;
  /** Device nodes the container needs besides the control nodes (/dev/nvidiactl, uvm...). */
  deviceNodes: string[];
  /** MIG devices: where the device sits on its GPU; gi/ci are absent for a dynamic placement
   *  without an instance yet (prepare creates it). */
  mig?: MigLocation;
}

export interface MigLocation {
  gpuUUID: string;
  profileId: number;
  profileName: string;
  /** Memory-slice placement on the GPU's 0..7 axis. */
  start: number;
  size: number;
  gi?: number;
  ci?: number;
}

export function deviceFacts(inv: Inventory): Map<string, DeviceFacts> {
  const out = new Map<string, DeviceFacts>();
  for (const g of inv.gpus) {
    out.set(g.name, { name: g.name, kind: "gpu", uuid: g.uuid, gpuMinor: g.minor, deviceNodes: [`/dev/nvidia${g.minor}`] });
    for (const m of g.migDevices) {
      out.set(m.name, {
        name: m.name,
        kind: "mig",
        uuid: m.uuid ?? `${g.uuid}/gi${m.gpuInstanceId}/ci${m.computeInstanceId}`,
        parentUUID: g.uuid,
        gpuMinor: g.minor,
        deviceNodes: [`/dev/nvidia${g.minor}`, ...m.capDevicePaths],
        mig: { gpuUUID: g.uuid, profileId: m.profileId, profileName: m.profileName, start: m.placementStart, size: m.placementSize, gi: m.gpuInstanceId, ci: m.computeInstanceId },
      });
    }
  }
  return out;
}
