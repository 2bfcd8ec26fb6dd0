// Pure merge of the parsed command outputs and sysfs facts into the normalized Inventory. No I/O:
// the real and the fixture backends both end here, so their results can only differ by input.
import type { DiscoveryCondition, Gpu, HostFacts, Inventory, MigDevice, NumaNode } from "./model.js";
import { enginesOf, gpuDeviceName, migDeviceName } from "./model.js";
import type { XmlReport } from "./nvsmi-xml.js";
import type { GpuInstanceRow, ListedGpu } from "./nvsmi-text.js";
import type { MigMinors, PciFacts } from "./sysfs.js";
import { migCapPaths } from "./sysfs.js";
import { computeCapability } from "./mig-profiles.js";

export interface AssembleInput {
  nodeName: string;
  xml: XmlReport;
  listed?: ListedGpu[]; // undefined when `nvidia-smi -L` failed
  instances?: GpuInstanceRow[]; // undefined when `nvidia-smi mig -lgi` failed
  pci: Map<string, PciFacts>; // by sysfs bus id
  numaNodes: NumaNode[];
  migMinors: MigMinors;
  host: HostFacts;
  conditions: DiscoveryCondition[];
}

export function assembleInventory(input: AssembleInput): Inventory {
  const conditions = [...input.conditions, ...input.xml.warnings.map((message) => ({ code: "TESSERA_PARSE", message }))];
  const gpus: Gpu[] = [];
  for (const x of input.xml.gpus) {
    const facts = input.pci.get(x.pciBusId) ?? {};
    const listed = input.listed?.find((l) => l.uuid === x.uuid) ?? input.listed?.find((l) => l.index === x.index);
    const migDevices: MigDevice[] = [];
    const perGi = new Map<number, number>();
    for (const m of x.migDevices) perGi.set(m.gpuInstanceId, (perGi.get(m.gpuInstanceId) ?? 0) + 1);
    for (const m of x.migDevices) {
      const row = input.instances?.find((r) => r.gpuIndex === x.index && r.gpuInstanceId === m.gpuInstanceId);
      if (!row) {
        // Without the profile id and placement the device has no stable name; do not guess.
        conditions.push({
          code: "TESSERA_DISCOVERY",
          message: `GPU ${x.minor} MIG GI ${m.gpuInstanceId}/CI ${m.computeInstanceId}: no \`nvidia-smi mig -lgi\` row (profile, placement); device not published`,
        });
        continue;
      }
      let name = migDeviceName(x.minor, row.profileId, row.placementStart, row.placementSize);
      if ((perGi.get(m.gpuInstanceId) ?? 0) > 1) name += `-ci${m.computeInstanceId}`; // GI split into several CIs
      const dev: MigDevice = {
        name,
        gpuInstanceId: m.gpuInstanceId,
        computeInstanceId: m.computeInstanceId,
        profileId: row.profileId,
        profileName: row.profileName,
        placementStart: row.placementStart,
        placementSize: row.placementSize,
        memoryBytes: m.memoryBytes,
        ...enginesOf(m),
        capDevicePaths: migCapPaths(input.migMinors, x.minor, m.gpuInstanceId, m.computeInstanceId),
      };
      const uuid = listed?.migs.find((l) => l.deviceIndex === m.index)?.uuid;
      if (uuid !== undefined) dev.uuid = uuid;
      else conditions.push({ code: "TESSERA_DISCOVERY", message: `GPU ${x.minor} MIG device ${name}: no UUID in \`nvidia-smi -L\`` });
      migDevices.push(dev);
    }
    migDevices.sort((a, b) => a.placementStart - b.placementStart || a.computeInstanceId - b.computeInstanceId);
    const gpu: Gpu = {
      name: gpuDeviceName(x.minor),
      minor: x.minor,
      index: x.index,
      uuid: x.uuid,
      productName: x.productName,
      brand: x.brand,
      architecture: x.architecture,
      pciBusId: x.pciBusId,
      memoryBytes: x.memoryBytes,
      migMode: x.migMode,
      migDevices,
    };
    const cc = computeCapability(x.architecture, x.productName);
    if (cc !== undefined) gpu.cudaComputeCapability = cc;
    if (facts.pcieRoot !== undefined) gpu.pcieRoot = facts.pcieRoot;
    if (facts.numaNode !== undefined) gpu.numaNode = facts.numaNode;
    if (x.pciDeviceId !== undefined) gpu.pciDeviceId = x.pciDeviceId;
    if (facts.localCpuList !== undefined) gpu.localCpuList = facts.localCpuList;
    gpus.push(gpu);
  }
  gpus.sort((a, b) => a.minor - b.minor || a.index - b.index);
  // Device names come from minors: a duplicate would publish two devices under one name. Keep the first.
  for (let i = gpus.length - 1; i > 0; i--) {
    const g = gpus[i] as Gpu;
    if (gpus[i - 1]?.minor === g.minor) {
      conditions.push({ code: "TESSERA_PARSE", message: `GPU ${g.pciBusId} reports minor ${g.minor} like another GPU; it is not published` });
      gpus.splice(i, 1);
    }
  }

  const inv: Inventory = {
    nodeName: input.nodeName,
    numaNodes: input.numaNodes,
    pcieRoots: [...new Set(gpus.map((g) => g.pcieRoot).filter((r): r is string => r !== undefined))].sort(),
    gpus,
    host: input.host,
  };
  if (input.xml.driverVersion !== undefined) inv.driverVersion = input.xml.driverVersion;
  if (input.xml.cudaVersion !== undefined) inv.cudaDriverVersion = input.xml.cudaVersion;
  if (conditions.length > 0) inv.conditions = conditions;
  return inv;
}
