// Inventory -> resource.k8s.io/v1 ResourceSlices for this node's pool. Pure and deterministic:
// the same inventory and options always give byte-identical slices, so the publisher can diff.
//   static MIG (default): whole GPUs without MIG, plus the MIG devices that exist
//   dynamic MIG: per MIG-capable GPU one counter set (memory slices, compute slices, memory,
//     media extensions) and, as devices consuming it, every profile x placement (KEP-4815
//     partitionable devices), only on GPUs whose MIG mode is already enabled (others: whole GPU);
//     counter sets go in their own slices (Kubernetes 1.35+ rule)
//   --gpu-sharing consumable: whole GPUs with allowMultipleAllocations and consumable capacity
// Devices are packed GPU by GPU (a GPU's devices stay together while they fit) into slices of at
// most 128 devices, 64 when a slice has devices that consume counters.
import type { Gpu, Inventory, MigDevice, MigEngines } from "../discovery/model.js";
import { enginesOf, gpuDeviceName, migDeviceName } from "../discovery/model.js";
import { migFamilyFor, placementsOf, profileMemoryBytes, type MigProfile } from "../discovery/mig-profiles.js";
import { TesseraError } from "../common/errors.js";
import type { CounterSet, Device, DeviceAttribute, DeviceCapacity, DeviceTaint, OwnerReference, ResourceSlice } from "../kube/types.js";
import type { HealthTarget } from "../health/types.js";
import { RESOURCE_API_VERSION } from "../kube/types.js";
import { bytesQuantity, decimalQuantity, semver } from "./quantity.js";
import { MAX_COUNTER_SETS_PER_SLICE, MAX_DEVICES_PER_SLICE, MAX_DEVICES_PER_SLICE_WITH_COUNTERS, checkSlice } from "./limits.js";

export interface BuildOptions {
  driverName: string;
  nodeName: string;
  migMode: "static" | "dynamic";
  /** `--gpu-sharing`; default none. */
  gpuSharing?: GpuSharing;
  /** Pool generation written into every slice (the publisher decides it); default 1. */
  generation?: number;
  ownerReference?: OwnerReference;
  /** Lower the per-slice device limits (tests of the splitting); never above the API limits. */
  maxDevicesPerSlice?: number;
  maxDevicesPerSliceWithCounters?: number;
  /** Device taints by device name (device health); devices not in it are published untainted. */
  taints?: ReadonlyMap<string, readonly DeviceTaint[]>;
}

export const STANDARD_PCI_BUS_ID = "resource.kubernetes.io/pciBusID";
export const STANDARD_PCIE_ROOT = "resource.kubernetes.io/pcieRoot";
export const MEMORY_SLICES = 8;
export const COMPUTE_SLICES = 7;

const str = (v: string): DeviceAttribute => ({ string: v.slice(0, 64) });
const cap = (v: string): DeviceCapacity => ({ value: v });

export function counterSetName(gpu: Gpu): string {
  return `${gpu.name}-counters`;
}

function commonAttributes(inv: Inventory, gpu: Gpu, type: "gpu" | "mig"): Record<string, DeviceAttribute> {
  const a: Record<string, DeviceAttribute> = { type: str(type) };
  if (type === "gpu") a.uuid = str(gpu.uuid);
  a.productName = str(gpu.productName);
  a.brand = str(gpu.brand);
  a.architecture = str(gpu.architecture);
  const cc = semver(gpu.cudaComputeCapability);
  if (cc) a.cudaComputeCapability = { version: cc };
  const dv = semver(inv.driverVersion);
  if (dv) a.driverVersion = { version: dv };
  const cv = semver(inv.cudaDriverVersion);
  if (cv) a.cudaDriverVersion = { version: cv };
  if (gpu.numaNode !== undefined) a.numaNode = { int: gpu.numaNode };
  if (type === "gpu") a[STANDARD_PCI_BUS_ID] = str(gpu.pciBusId);
  if (gpu.pcieRoot !== undefined) a[STANDARD_PCIE_ROOT] = str(gpu.pcieRoot);
  return a;
}

function gpuDevice(inv: Inventory, gpu: Gpu): Device {
  return { name: gpu.name, attributes: commonAttributes(inv, gpu, "gpu"), capacity: { memory: cap(bytesQuantity(gpu.memoryBytes)) } };
}

/** `--gpu-sharing`: `consumable` publishes whole GPUs that several claims may hold at once (KEP-5075). */
export type GpuSharing = "none" | "consumable";

/** Most claims that may share one GPU under `--gpu-sharing consumable` (the `shares` capacity). */
export const MAX_SHARES_PER_GPU = 16;
const GIB = 1024 * 1024 * 1024;

/**
 * A whole GPU several claims can be allocated at once: `memory` is consumed per claim (whole GiB,
 * default one share's worth) and `shares` caps the claims per GPU (default 1 each). The memory is
 * accounting for the scheduler, not isolation: time-shared GPUs do not partition memory.
 */
function sharedGpuDevice(inv: Inventory, gpu: Gpu): Device {
  const d = gpuDevice(inv, gpu);
  const perShareGiB = Math.max(1, Math.floor(gpu.memoryBytes / GIB / MAX_SHARES_PER_GPU));
  d.allowMultipleAllocations = true;
  d.capacity = {
    memory: { value: bytesQuantity(gpu.memoryBytes), requestPolicy: { default: `${perShareGiB}Gi`, validRange: { min: "1Gi", step: "1Gi" } } },
    shares: { value: String(MAX_SHARES_PER_GPU), requestPolicy: { default: "1", validRange: { min: "1", max: String(MAX_SHARES_PER_GPU), step: "1" } } },
  };
  return d;
}

interface MigShape extends MigEngines {
  profileId: number;
  profileName: string;
  start: number;
  size: number;
  computeSlices?: number;
  memoryBytes: number;
  uuid?: string;
  name: string;
}

function migDevice(inv: Inventory, gpu: Gpu, m: MigShape): Device {
  const attributes = commonAttributes(inv, gpu, "mig");
  // uuid right after type, as for whole GPUs; absent for a dynamic placement not created yet.
  const ordered: Record<string, DeviceAttribute> = { type: attributes.type as DeviceAttribute };
  if (m.uuid !== undefined) ordered.uuid = str(m.uuid);
  Object.assign(ordered, attributes, { profile: str(m.profileName), parentUUID: str(gpu.uuid) });
  return {
    name: m.name,
    attributes: ordered,
    capacity: {
      memory: cap(bytesQuantity(m.memoryBytes)),
      multiprocessors: cap(decimalQuantity(m.multiprocessors)),
      copyEngines: cap(decimalQuantity(m.copyEngines)),
      decoders: cap(decimalQuantity(m.decoders)),
      encoders: cap(decimalQuantity(m.encoders)),
      jpegEngines: cap(decimalQuantity(m.jpegEngines)),
      ofaEngines: cap(decimalQuantity(m.ofaEngines)),
    },
  };
}

function shapeOfExisting(m: MigDevice): MigShape {
  const s: MigShape = { ...m, start: m.placementStart, size: m.placementSize };
  if (m.uuid === undefined) delete s.uuid;
  return s;
}

/** A profile that holds the GPU's one media extension (OFA): the "+me" profiles and the full 7g. */
const holdsMediaExtension = (p: { name: string; ofaEngines: number }): boolean => p.name.endsWith("+me") || p.ofaEngines > 0;

function counterSet(gpu: Gpu): CounterSet {
  const counters: CounterSet["counters"] = {};
  for (let i = 0; i < MEMORY_SLICES; i++) counters[`memory-slice-${i}`] = { value: "1" };
  counters["compute-slices"] = { value: String(COMPUTE_SLICES) };
  counters["memory"] = { value: bytesQuantity(gpu.memoryBytes) };
  counters["media-extensions"] = { value: "1" };
  return { name: counterSetName(gpu), counters };
}

function consumption(gpu: Gpu, start: number, size: number, computeSlices: number, memoryBytes: number, media: boolean): Device["consumesCounters"] {
  const counters: CounterSet["counters"] = {};
  for (let i = start; i < start + size && i < MEMORY_SLICES; i++) counters[`memory-slice-${i}`] = { value: "1" };
  counters["compute-slices"] = { value: String(computeSlices) };
  counters["memory"] = { value: bytesQuantity(memoryBytes) };
  if (media) counters["media-extensions"] = { value: "1" };
  return [{ counterSet: counterSetName(gpu), counters }];
}

function candidateShape(gpu: Gpu, p: MigProfile, start: number): MigShape {
  // A live instance of the same profile knows this driver's real memory size: the capacity a
  // claim sees prefers it to the table (counters do not, see gpuDevices).
  const live = gpu.migDevices.find((m) => m.profileId === p.profileId && m.memoryBytes > 0);
  return {
    name: migDeviceName(gpu.minor, p.profileId, start, p.memorySlices),
    profileId: p.profileId,
    profileName: p.name,
    start,
    size: p.memorySlices,
    computeSlices: p.computeSlices,
    memoryBytes: live?.memoryBytes ?? profileMemoryBytes(p, gpu.memoryBytes),
    ...enginesOf(p),
  };
}

/** The devices of one GPU, and its counter set when it is published as partitionable. */
export function gpuDevices(inv: Inventory, gpu: Gpu, migMode: "static" | "dynamic", sharing: GpuSharing = "none"): { devices: Device[]; counterSet?: CounterSet } {
  // Dynamic placements only where MIG mode is already on and the profile table is known: a GPU
  // with MIG off is published whole (Tessera never changes MIG mode), and a MIG-enabled GPU is
  // never published whole (a container given a MIG-enabled GPU without an instance sees no GPU).
  const placements = migMode === "dynamic" ? placementsOf(gpu) : [];
  const family = placements.length > 0 ? migFamilyFor(gpu.pciDeviceId, gpu.productName) : undefined;
  if (!family) {
    if (gpu.migMode === "enabled") return { devices: gpu.migDevices.map((m) => migDevice(inv, gpu, shapeOfExisting(m))) };
    return { devices: [sharing === "consumable" ? sharedGpuDevice(inv, gpu) : gpuDevice(inv, gpu)] };
  }
  const devices: Device[] = [];
  const existing = new Map(gpu.migDevices.map((m) => [m.name, m]));
  const byName = new Map<string, Device>();
  for (const { profile: p, start } of placements) {
    const shape = candidateShape(gpu, p, start);
    const live = existing.get(shape.name);
    if (live) {
      // A device that exists: its real facts (UUID, memory) win over the table's.
      Object.assign(shape, { ...shapeOfExisting(live), computeSlices: p.computeSlices });
      existing.delete(shape.name);
    }
    const d = migDevice(inv, gpu, shape);
    // Counters come from the profile table alone, never from a live instance: creating or
    // destroying an instance must not change what any placement of this GPU consumes.
    d.consumesCounters = consumption(gpu, shape.start, shape.size, p.computeSlices, profileMemoryBytes(p, gpu.memoryBytes), holdsMediaExtension(p));
    byName.set(d.name, d);
  }
  // Live devices the table does not know (e.g. a GI split into compute instances) still appear.
  for (const live of existing.values()) {
    const p = family.profiles.find((x) => x.profileId === live.profileId);
    const d = migDevice(inv, gpu, shapeOfExisting(live));
    d.consumesCounters = consumption(gpu, live.placementStart, live.placementSize, p?.computeSlices ?? 1, p ? profileMemoryBytes(p, gpu.memoryBytes) : live.memoryBytes, holdsMediaExtension(live));
    byName.set(d.name, d);
  }
  devices.push(...[...byName.values()].sort((a, b) => a.name.localeCompare(b.name, "en", { numeric: true })));
  return { devices, counterSet: counterSet(gpu) };
}

function chunk<T>(xs: T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

/** Packs per-GPU device groups into slices: whole groups while they fit, a group alone split in order. */
export function packDevices(groups: Device[][], limitPlain: number, limitCounters: number): Device[][] {
  const uses = (ds: Device[]): boolean => ds.some((d) => (d.consumesCounters?.length ?? 0) > 0 || (d.taints?.length ?? 0) > 0);
  const slices: Device[][] = [];
  let cur: Device[] = [];
  for (const g of groups) {
    if (g.length === 0) continue;
    const limitWith = (ds: Device[]): number => (uses(ds) ? limitCounters : limitPlain);
    if (cur.length > 0 && cur.length + g.length <= limitWith([...cur, ...g])) {
      cur.push(...g);
      continue;
    }
    if (cur.length > 0) slices.push(cur);
    cur = [];
    const lim = limitWith(g);
    if (g.length <= lim) cur = [...g];
    else {
      const parts = chunk(g, lim);
      cur = parts.pop() ?? [];
      slices.push(...parts);
    }
  }
  if (cur.length > 0) slices.push(cur);
  return slices;
}

export function sliceName(nodeName: string, driverName: string, kind: "devices" | "counters", i: number): string {
  return kind === "devices" ? `${nodeName}-${driverName}-${i}` : `${nodeName}-${driverName}-counters-${i}`;
}

export function buildResourceSlices(inv: Inventory, opts: BuildOptions): ResourceSlice[] {
  const limitPlain = Math.min(opts.maxDevicesPerSlice ?? MAX_DEVICES_PER_SLICE, MAX_DEVICES_PER_SLICE);
  const limitCounters = Math.min(opts.maxDevicesPerSliceWithCounters ?? MAX_DEVICES_PER_SLICE_WITH_COUNTERS, MAX_DEVICES_PER_SLICE_WITH_COUNTERS, limitPlain);
  const groups: Device[][] = [];
  const sets: CounterSet[] = [];
  for (const gpu of [...inv.gpus].sort((a, b) => a.minor - b.minor)) {
    const { devices, counterSet } = gpuDevices(inv, gpu, opts.migMode, opts.gpuSharing ?? "none");
    for (const d of devices) {
      const taints = opts.taints?.get(d.name);
      if (taints && taints.length > 0) d.taints = taints.map((x) => ({ ...x }));
    }
    groups.push(devices);
    if (counterSet) sets.push(counterSet);
  }
  const deviceSlices = packDevices(groups, limitPlain, limitCounters);
  const counterSlices = chunk(sets, MAX_COUNTER_SETS_PER_SLICE);
  const total = deviceSlices.length + counterSlices.length;
  const generation = opts.generation ?? 1;
  const make = (name: string, body: Pick<ResourceSlice["spec"], "devices" | "sharedCounters">): ResourceSlice => {
    const metadata: ResourceSlice["metadata"] = { name };
    if (opts.ownerReference) metadata.ownerReferences = [{ ...opts.ownerReference }];
    return {
      apiVersion: RESOURCE_API_VERSION,
      kind: "ResourceSlice",
      metadata,
      spec: { driver: opts.driverName, nodeName: opts.nodeName, pool: { name: opts.nodeName, generation, resourceSliceCount: total }, ...body },
    };
  };
  const slices = [
    ...counterSlices.map((sharedCounters, i) => make(sliceName(opts.nodeName, opts.driverName, "counters", i), { sharedCounters })),
    ...deviceSlices.map((devices, i) => make(sliceName(opts.nodeName, opts.driverName, "devices", i), { devices })),
  ];
  for (const s of slices) {
    const problems = checkSlice(s);
    if (problems.length > 0) throw new TesseraError("TESSERA_SLICE_LIMIT", `ResourceSlice ${s.metadata.name}: ${problems.slice(0, 3).join("; ")}`);
  }
  return slices;
}

/** Every device the slices of `inv` publish, with the GPU it lives on and, for a live MIG device,
 *  its GPU instance id: what device health reports on and what a GPU's taints cover. */
export function healthTargets(inv: Inventory, migMode: "static" | "dynamic", sharing: GpuSharing = "none"): HealthTarget[] {
  const out: HealthTarget[] = [];
  for (const gpu of [...inv.gpus].sort((a, b) => a.minor - b.minor)) {
    const gis = new Map(gpu.migDevices.map((m) => [m.name, m.gpuInstanceId]));
    for (const d of gpuDevices(inv, gpu, migMode, sharing).devices) {
      const gi = gis.get(d.name);
      out.push({ device: d.name, gpu: gpu.name, ...(gi !== undefined ? { gi } : {}) });
    }
  }
  return out;
}
