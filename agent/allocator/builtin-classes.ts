// The DeviceClasses Tessera ships (contracts.md): used for a class name the store/cluster lacks.
import { DEFAULT_DRIVER_NAME } from "../common/config.js";
import type { DeviceClass } from "../kube/types.js";

function builtin(name: string, type: "gpu" | "mig", driver: string): DeviceClass {
  return {
    apiVersion: "resource.k8s.io/v1",
    kind: "DeviceClass",
    metadata: { name, uid: `tessera-builtin-${type}` },
    spec: { selectors: [{ cel: { expression: `device.driver == "${driver}" && device.attributes["${driver}"].type == "${type}"` } }] },
  };
}

/** `gpu.tessera.dev` (whole GPUs) and `mig.tessera.dev` (MIG devices) for the given driver. */
export function builtinDeviceClasses(driver: string = DEFAULT_DRIVER_NAME): DeviceClass[] {
  return [builtin("gpu.tessera.dev", "gpu", driver), builtin("mig.tessera.dev", "mig", driver)];
}
