// What the kubelet plugin can prepare on this node: the devices that exist (deviceFacts) plus, in
// `--mig-mode dynamic`, every MIG placement that is published but has no instance yet. The
// names are the ones the slices publish (migDeviceName), so an allocated placement resolves here.
import { placementsOf } from "./mig-profiles.js";
import { deviceFacts, migDeviceName, type DeviceFacts, type Inventory } from "./model.js";

export function preparableFacts(inv: Inventory, migMode: "static" | "dynamic"): Map<string, DeviceFacts> {
  const out = deviceFacts(inv);
  if (migMode !== "dynamic") return out;
  for (const g of inv.gpus) {
    for (const { profile, start } of placementsOf(g)) {
      const name = migDeviceName(g.minor, profile.profileId, start, profile.memorySlices);
      if (out.has(name)) continue; // a live instance at this placement: its facts win
      out.set(name, {
        name,
        kind: "mig",
        uuid: "",
        parentUUID: g.uuid,
        gpuMinor: g.minor,
        deviceNodes: [`/dev/nvidia${g.minor}`],
        mig: { gpuUUID: g.uuid, profileId: profile.profileId, profileName: profile.name, start, size: profile.memorySlices },
      });
    }
  }
  return out;
}
