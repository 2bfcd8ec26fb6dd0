// Host facts for diag (CPU model and cores, memory, OS, kernel) via systeminformation's cpu(),
// mem() and osInfo(). Never graphics(): it runs nvidia-smi synchronously with no timeout and
// would freeze the agent when a GPU hangs. Failures or slowness give partial facts, not errors.
import type { HostFacts } from "./model.js";

export type HostFactsFn = () => Promise<HostFacts>;

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    timer.unref();
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      () => {
        clearTimeout(timer);
        resolve(undefined);
      },
    );
  });
}

export function systeminformationHostFacts(timeoutMs = 5000): HostFactsFn {
  return async () => {
    const si = (await import("systeminformation")).default;
    const [cpu, mem, os] = await Promise.all([withTimeout(si.cpu(), timeoutMs), withTimeout(si.mem(), timeoutMs), withTimeout(si.osInfo(), timeoutMs)]);
    const facts: HostFacts = {};
    if (cpu) {
      const model = `${cpu.manufacturer} ${cpu.brand}`.trim();
      if (model) facts.cpuModel = model;
      if (cpu.cores > 0) facts.cpuCores = cpu.cores;
    }
    if (mem && mem.total > 0) facts.memoryBytes = mem.total;
    if (os) {
      const name = `${os.distro} ${os.release}`.trim();
      if (name) facts.os = name;
      if (os.kernel) facts.kernel = os.kernel;
    }
    return facts;
  };
}
