// A fixture node's nvidia-smi outputs served through the real backend's exec seam (no binary, no
// shell), optionally edited: what the discovery tests and the `nvsmi` fuzz surface feed to the
// same parse -> assemble -> validate path the agent runs on a real machine.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { NodeConfig } from "../../agent/common/config.js";
import { createDiscovery, defaultFixturesDir } from "../../agent/discovery/index.js";
import type { DiscoveryDeps } from "../../agent/discovery/index.js";
import type { ExecFn } from "../../agent/discovery/exec.js";
import type { Inventory } from "../../agent/discovery/model.js";
import type { Logger } from "../../agent/common/log.js";

export interface NvsmiOutputs {
  xml: string; // nvidia-smi -q -x
  list?: string; // nvidia-smi -L (undefined: the command fails)
  lgi?: string; // nvidia-smi mig -lgi (undefined: the command fails)
}

/** The captured outputs of fixtures/nodes/<name>. */
export function fixtureOutputs(name: string): NvsmiOutputs {
  const dir = join(defaultFixturesDir(), name);
  return {
    xml: readFileSync(join(dir, "nvidia-smi-q-x.xml"), "utf8"),
    list: readFileSync(join(dir, "nvidia-smi-L.txt"), "utf8"),
    lgi: readFileSync(join(dir, "nvidia-smi-mig-lgi.txt"), "utf8"),
  };
}

/** Discovery of fixture `name`'s sysfs/procfs with these nvidia-smi outputs, through the real backend. */
export function discoverOutputs(name: string, out: NvsmiOutputs, logger?: Logger): Promise<Inventory> {
  const dir = join(defaultFixturesDir(), name);
  const exec: ExecFn = async (_file, args) => {
    const key = args.join(" ");
    const text = key === "-q -x" ? out.xml : key === "-L" ? out.list : key === "mig -lgi" ? out.lgi : undefined;
    return text === undefined ? { stdout: "", stderr: "Failed to initialize NVML: Unknown Error\n", code: 255 } : { stdout: text, stderr: "", code: 0 };
  };
  const cfg: NodeConfig = {
    driverName: "gpu.tessera.dev", nodeName: "fuzz-node", kubeletRoot: "/k", stateDir: "/k/s", cdiRoot: "/cdi", sysfsRoot: join(dir, "sys"), discovery: "nvidia-smi",
    kube: "auto", migMode: "static", gpuSharing: "none", nvidiaSmi: "nvidia-smi", mpsControl: "nvidia-cuda-mps-control", procRoot: join(dir, "proc"), logLevel: "info", registrationSocket: "/k/r.sock", draSocket: "/k/d.sock", checkpointFile: "/k/c.json",
  };
  const deps: DiscoveryDeps = { exec, procRoot: join(dir, "proc"), hostFacts: async () => ({}) };
  if (logger) deps.logger = logger;
  return createDiscovery(cfg, deps).discover();
}
