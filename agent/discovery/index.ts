// Discovery entry point (issue: node discovery). Placeholder with the final signature:
// `createDiscovery(config).discover()` returns the node's Inventory from nvidia-smi + sysfs or a fixture.
import type { NodeConfig } from "../common/config.js";
import { TesseraError } from "../common/errors.js";
import type { Inventory } from "./model.js";

export interface Discovery {
  discover(): Promise<Inventory>;
}

export function createDiscovery(config: NodeConfig): Discovery {
  return {
    async discover(): Promise<Inventory> {
      throw new TesseraError("TESSERA_DISCOVERY", `discovery ${config.discovery} is not implemented yet`);
    },
  };
}
