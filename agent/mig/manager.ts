// Creates and destroys MIG instances through the nvidia-smi seam (the real executable, or the
// fixture's simulated one through the same ExecFn). One operation at a time on the node: the
// driver reconfigures a GPU's partitions as a whole, and concurrent create/destroy calls on one
// GPU are what operators are told to avoid. Never changes MIG mode.
import { TesseraError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import type { ExecFn, ExecOptions } from "../discovery/exec.js";
import { createArgs, destroyCiArgs, destroyGiArgs, isNotFound, parseCreated, toolMessage } from "./commands.js";

export interface MigPlacement {
  gpuUUID: string;
  profileId: number;
  start: number;
}

export interface MigManager {
  /** Creates the GPU instance at exactly this placement and its default compute instance. */
  create(p: MigPlacement): Promise<{ gi: number; ci: number }>;
  /** Destroys the compute instance, then its GPU instance; an instance already gone is success. */
  destroy(gpuUUID: string, gi: number, ci: number): Promise<void>;
}

export interface MigManagerDeps {
  exec: ExecFn;
  /** The nvidia-smi executable (--nvidia-smi). */
  bin: string;
  execOptions: ExecOptions;
  log: Logger;
}

export function createMigManager(deps: MigManagerDeps): MigManager {
  let tail: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = tail.catch(() => undefined).then(fn);
    tail = next;
    return next;
  };
  const run = async (args: string[]) => {
    try {
      return await deps.exec(deps.bin, args, deps.execOptions);
    } catch (err) {
      throw new TesseraError("TESSERA_MIG", `${deps.bin} ${args.join(" ")} could not run`, { cause: err });
    }
  };
  return {
    create: (p) =>
      serial(async () => {
        const args = createArgs(p.gpuUUID, p.profileId, p.start);
        const r = await run(args);
        const ids = r.code === 0 ? parseCreated(r.stdout) : undefined;
        if (!ids) {
          throw new TesseraError(
            "TESSERA_MIG",
            `GPU ${p.gpuUUID}: cannot create MIG profile ${p.profileId} at placement ${p.start} (\`${deps.bin} ${args.join(" ")}\` exited ${r.code}: ${toolMessage(r.stdout, r.stderr) || "no output"}); check \`nvidia-smi mig -lgi\` for instances created outside Tessera`,
          );
        }
        deps.log.info("created MIG instance", { gpu: p.gpuUUID, profileId: p.profileId, start: p.start, gi: ids.gi, ci: ids.ci });
        return ids;
      }),
    destroy: (gpuUUID, gi, ci) =>
      serial(async () => {
        for (const args of [destroyCiArgs(gpuUUID, gi, ci), destroyGiArgs(gpuUUID, gi)]) {
          const r = await run(args);
          if (r.code !== 0 && !isNotFound(r.stdout + r.stderr)) {
            throw new TesseraError(
              "TESSERA_MIG",
              `GPU ${gpuUUID}: cannot destroy MIG GI ${gi} / CI ${ci} (\`${deps.bin} ${args.join(" ")}\` exited ${r.code}: ${toolMessage(r.stdout, r.stderr) || "no output"}); a process may still use it`,
            );
          }
        }
        deps.log.info("destroyed MIG instance", { gpu: gpuUUID, gi, ci });
      }),
  };
}
