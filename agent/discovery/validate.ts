// The one check between what nvidia-smi and sysfs report and what the agent publishes. Every field
// that becomes a device attribute, an environment value (NVIDIA_VISIBLE_DEVICES), a device path
// (/dev/nvidia<minor>, /dev/nvidia-caps/nvidia-cap<N>) or a device name is checked here. A device
// with a bad identity (UUID, minor, bus id, size) is dropped with a condition; an optional fact that
// is bad (NUMA node, local CPU list, driver version) is dropped alone; text is cut to attribute
// limits. Pure: the same input always gives the same output and conditions.
import type { DiscoveryCondition, Gpu, MigDevice } from "./model.js";

/** The condition code of a dropped device or fact (errors.ts). */
export const VALUE_CODE = "TESSERA_DISCOVERY_VALUE";

const HEX_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
/** `GPU-<8-4-4-4-12 hex>`, as nvidia-smi prints every GPU UUID. */
export const GPU_UUID = new RegExp(`^GPU-${HEX_UUID}$`);
/** `MIG-<8-4-4-4-12 hex>` (R470 and later). The R450 form `MIG-GPU-<uuid>/<gi>/<ci>` is in no capture here and is refused. */
export const MIG_UUID = new RegExp(`^MIG-${HEX_UUID}$`);
/** sysfs form after normalizeBusId: domain:bus:device.function. */
export const PCI_BUS_ID = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;
/** GI profile names of `nvidia-smi mig -lgi`: "1g.10gb", "1g.10gb+me", "1g.24gb+gfx". */
export const MIG_PROFILE_NAME = /^[1-8]g\.[0-9]{1,4}gb(\+[a-z]{1,8})?$/;
/** Kernel cpulist syntax ("0-31,64-95"). */
const CPU_LIST = /^[0-9]{1,5}(-[0-9]{1,5})?(,[0-9]{1,5}(-[0-9]{1,5})?)*$/;
/** Dotted numeric driver / CUDA versions ("580.105.08", "13.0"). */
const VERSION = /^[0-9]{1,6}(\.[0-9]{1,6}){0,3}$/;

/** /dev/nvidia<minor>: the driver numbers GPUs 0..254; 255 is /dev/nvidiactl. */
export const MAX_GPU_MINOR = 254;
/** Largest device minor the kernel can give (/dev/nvidia-caps/nvidia-cap<N>): 20 bits. */
export const MAX_DEVICE_MINOR = 2 ** 20 - 1;
/** 1 PiB: far above any GPU, a safe integer, and a Quantity the API server stores exactly. */
export const MAX_MEMORY_BYTES = 2 ** 50;
/** NUMA node ids the kernel can have (MAX_NUMNODES at most 1024). */
export const MAX_NUMA_NODE = 1023;
/** String attributes hold at most 64 characters (resource.k8s.io/v1). */
export const MAX_ATTRIBUTE_CHARS = 64;
const MAX_COUNT = 65_535; // SMs, engines: generous, and safe anywhere they are summed
const MIG_SLICES = 8;

const intIn = (v: number, min: number, max: number): boolean => Number.isSafeInteger(v) && v >= min && v <= max;

/** Text for an attribute: control characters and lone surrogates removed, cut to 64 UTF-16 units on a character boundary. */
export function attributeText(v: string): string {
  const clean = v.replace(/[\p{Cc}\p{Cs}]/gu, "").trim();
  let out = "";
  for (const ch of clean) {
    if (out.length + ch.length > MAX_ATTRIBUTE_CHARS) break;
    out += ch;
  }
  return out === "" ? "unknown" : out;
}

/** What is wrong with one MIG device ([] = publishable). */
export function migProblems(m: MigDevice): string[] {
  const p: string[] = [];
  if (m.uuid !== undefined && !MIG_UUID.test(m.uuid)) p.push(`UUID ${show(m.uuid)} is not MIG-<8-4-4-4-12 hex>`);
  if (!intIn(m.gpuInstanceId, 0, 255) || !intIn(m.computeInstanceId, 0, 255)) p.push(`GI/CI ids ${m.gpuInstanceId}/${m.computeInstanceId} outside 0..255`);
  if (!intIn(m.profileId, 0, 255)) p.push(`profile id ${m.profileId} outside 0..255`);
  if (!MIG_PROFILE_NAME.test(m.profileName)) p.push(`profile name ${show(m.profileName)} is not like 1g.10gb`);
  if (!intIn(m.placementStart, 0, MIG_SLICES - 1) || !intIn(m.placementSize, 1, MIG_SLICES) || m.placementStart + m.placementSize > MIG_SLICES) {
    p.push(`placement ${m.placementStart}:${m.placementSize} outside the GPU's ${MIG_SLICES} memory slices`);
  }
  if (!intIn(m.memoryBytes, 0, MAX_MEMORY_BYTES)) p.push(`memory ${m.memoryBytes} bytes outside 0..${MAX_MEMORY_BYTES}`);
  for (const k of ["multiprocessors", "copyEngines", "decoders", "encoders", "jpegEngines", "ofaEngines"] as const) {
    if (!intIn(m[k], 0, MAX_COUNT)) p.push(`${k} ${m[k]} outside 0..${MAX_COUNT}`);
  }
  for (const path of m.capDevicePaths) {
    const n = /^\/dev\/nvidia-caps\/nvidia-cap([0-9]{1,7})$/.exec(path);
    if (!n || !intIn(Number(n[1]), 0, MAX_DEVICE_MINOR)) p.push(`capability device ${show(path)} is not /dev/nvidia-caps/nvidia-cap<0..${MAX_DEVICE_MINOR}>`);
  }
  return p;
}

/** What is wrong with a GPU's identity ([] = publishable). */
export function gpuProblems(g: Gpu): string[] {
  const p: string[] = [];
  if (!GPU_UUID.test(g.uuid)) p.push(`UUID ${show(g.uuid)} is not GPU-<8-4-4-4-12 hex>`);
  if (!intIn(g.minor, 0, MAX_GPU_MINOR)) p.push(`minor ${g.minor} outside 0..${MAX_GPU_MINOR} (/dev/nvidia<minor>)`);
  if (!PCI_BUS_ID.test(g.pciBusId)) p.push(`PCI bus id ${show(g.pciBusId)} is not DDDD:BB:DD.F`);
  if (!intIn(g.memoryBytes, 0, MAX_MEMORY_BYTES)) p.push(`memory ${g.memoryBytes} bytes outside 0..${MAX_MEMORY_BYTES}`);
  return p;
}

/**
 * The GPUs that may be published: bad ones dropped, bad MIG devices and bad optional facts dropped
 * from good GPUs, text cut to attribute limits, duplicate UUIDs kept once. Conditions say what and why.
 */
export function validateGpus(gpus: readonly Gpu[]): { gpus: Gpu[]; conditions: DiscoveryCondition[] } {
  const conditions: DiscoveryCondition[] = [];
  const drop = (message: string): void => void conditions.push({ code: VALUE_CODE, message });
  const out: Gpu[] = [];
  const uuids = new Set<string>();
  for (const g of gpus) {
    const where = `GPU ${g.pciBusId.slice(0, 16)} (nvidia-smi index ${g.index})`;
    const bad = gpuProblems(g);
    if (bad.length > 0) {
      drop(`${where}: ${bad.join("; ")}; GPU not published`);
      continue;
    }
    if (uuids.has(g.uuid)) {
      drop(`${where}: UUID ${g.uuid} is reported by another GPU too; GPU not published`);
      continue;
    }
    uuids.add(g.uuid);
    const gpu: Gpu = { ...g, productName: attributeText(g.productName), brand: attributeText(g.brand), architecture: attributeText(g.architecture), migDevices: [] };
    if (gpu.numaNode !== undefined && !intIn(gpu.numaNode, 0, MAX_NUMA_NODE)) {
      drop(`${where}: NUMA node ${gpu.numaNode} outside 0..${MAX_NUMA_NODE}; published without numaNode`);
      delete gpu.numaNode;
    }
    if (gpu.localCpuList !== undefined && !CPU_LIST.test(gpu.localCpuList)) {
      drop(`${where}: local_cpulist ${show(gpu.localCpuList)} is not a kernel cpulist; ignored`);
      delete gpu.localCpuList;
    }
    for (const m of g.migDevices) {
      const mp = migProblems(m);
      if (mp.length === 0 && m.uuid !== undefined && uuids.has(m.uuid)) mp.push(`UUID ${m.uuid} is reported by another device too`);
      if (mp.length > 0) {
        drop(`${where} MIG GI ${m.gpuInstanceId}/CI ${m.computeInstanceId}: ${mp.join("; ")}; device not published`);
        continue;
      }
      if (m.uuid !== undefined) uuids.add(m.uuid);
      gpu.migDevices.push(m);
    }
    out.push(gpu);
  }
  return { gpus: out, conditions };
}

/** A driver or CUDA version that can become a `version` attribute, else undefined with a condition. */
export function validVersion(v: string | undefined, what: string, conditions: DiscoveryCondition[]): string | undefined {
  if (v === undefined || VERSION.test(v)) return v;
  conditions.push({ code: VALUE_CODE, message: `${what} ${show(v)} is not a dotted number; not published` });
  return undefined;
}

/** A value quoted for a message, bounded (it may be hostile and huge). */
function show(v: string): string {
  return JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v);
}
