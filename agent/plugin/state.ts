// The ordered steps of prepare and unprepare, one claim at a time per UID (claims in parallel).
//   prepare:   checkpoint hit? -> ensure CDI, answer | read claim -> same UID -> computePrepared
//              -> conflict check + PrepareStarted (one synchronous step) -> save -> CDI spec
//              -> PrepareCompleted -> save -> answer
//   unprepare: remove CDI spec -> drop entry -> save (unknown UIDs succeed)
// Only this module writes the checkpoint and CDI specs; they only write what they are given.
import { describeChain, TesseraError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import type { DeviceFacts } from "../discovery/model.js";
import type { CdiSpec, CdiWriter } from "./cdi.js";
import type { Checkpoint, ClaimEntry, LoadResult } from "./checkpoint.js";
import type { ClaimSource } from "./claim-source.js";
import { assertClaimUID, assertSameClaim, CDI_KIND, claimRef, computePrepared, exclusive, overlaps, type PreparedClaim, type PreparedDevice } from "./prepared.js";

export interface ClaimKey {
  namespace: string;
  name: string;
  uid: string;
}

export interface DeviceStateDeps {
  driverName: string;
  /** Pool name of this node's devices (the node name); used when rebuilding from CDI specs. */
  poolName: string;
  checkpoint: Checkpoint;
  cdi: CdiWriter;
  claims: ClaimSource;
  /** Current device facts; called per prepare so rediscovery is picked up. */
  devices: () => ReadonlyMap<string, DeviceFacts>;
  toolkitUUIDs: () => Promise<ReadonlySet<string>>;
  log: Logger;
}

export interface DeviceState {
  prepare(claim: ClaimKey): Promise<PreparedDevice[]>;
  unprepare(claim: ClaimKey): Promise<void>;
  /** Applies what loading the checkpoint found: reboot -> re-create specs; lost -> rebuild. */
  restore(load: LoadResult): Promise<void>;
}

/** One promise chain per key: work for the same claim runs strictly one after another. */
function createKeyedLock(): { run<T>(key: string, fn: () => Promise<T>): Promise<T> } {
  const tails = new Map<string, Promise<unknown>>();
  return {
    run(key, fn) {
      const prev = tails.get(key) ?? Promise.resolve();
      const next = prev.catch(() => undefined).then(fn);
      tails.set(key, next);
      const clear = (): void => {
        if (tails.get(key) === next) tails.delete(key);
      };
      next.then(clear, clear);
      return next;
    },
  };
}

function entryClaim(uid: string, e: ClaimEntry): PreparedClaim {
  return { uid, namespace: e.namespace, name: e.name, devices: e.devices };
}

export function createDeviceState(deps: DeviceStateDeps): DeviceState {
  const { checkpoint, cdi, log } = deps;
  const lock = createKeyedLock();

  function findConflict(claim: PreparedClaim): string | undefined {
    for (const d of claim.devices.filter(exclusive)) {
      for (const [uid, e] of checkpoint.entries()) {
        if (uid === claim.uid) continue;
        const other = e.devices.find((o) => overlaps(d, o) && exclusive(o));
        if (other) {
          const held = other.deviceName === d.deviceName ? d.deviceName : `${other.deviceName} (same GPU as ${d.deviceName})`;
          return `device ${d.poolName}/${held} is already prepared for ResourceClaim ${claimRef({ ...e, uid })}; cannot also prepare it for ResourceClaim ${claimRef(claim)} unless both are allocated as shared`;
        }
      }
    }
    return undefined;
  }

  async function rollback(uid: string): Promise<void> {
    await cdi.remove(uid);
    checkpoint.delete(uid);
    await checkpoint.save();
  }

  async function prepareLocked(key: ClaimKey): Promise<PreparedDevice[]> {
    const existing = checkpoint.get(key.uid);
    if (existing?.state === "PrepareCompleted" && !existing.rebuilt) {
      // Kubelet restart or node reboot: same answer, and the spec back if /var/run/cdi was emptied.
      if (await cdi.ensure(entryClaim(key.uid, existing))) log.info("re-created missing CDI spec", { claim: claimRef(key) });
      return existing.devices;
    }
    const object = await deps.claims.get(key.namespace, key.name);
    assertSameClaim(object, key);
    const prepared = computePrepared(object, deps.devices(), deps.driverName, { toolkitUUIDs: await deps.toolkitUUIDs() });
    // No await between the conflict check and recording PrepareStarted: two claims racing for
    // one device cannot both pass.
    const conflict = findConflict(prepared);
    if (conflict) throw new TesseraError("TESSERA_DEVICE_CONFLICT", conflict);
    checkpoint.set(key.uid, { state: "PrepareStarted", namespace: key.namespace, name: key.name, devices: prepared.devices });
    try {
      await checkpoint.save();
      await cdi.ensure(prepared);
      checkpoint.set(key.uid, { state: "PrepareCompleted", namespace: key.namespace, name: key.name, devices: prepared.devices });
      await checkpoint.save();
    } catch (err) {
      await rollback(key.uid).catch((e: unknown) => log.error("rollback after failed prepare failed", { claim: claimRef(key), err: describeChain(e) }));
      throw err;
    }
    log.info("prepared claim", { claim: claimRef(key), devices: prepared.devices.map((d) => d.deviceName) });
    return prepared.devices;
  }

  async function unprepareLocked(key: ClaimKey): Promise<void> {
    const existing = checkpoint.get(key.uid);
    // Spec first, then the entry: a crash in between leaves an entry whose unprepare is a no-op.
    await cdi.remove(key.uid);
    if (!existing) return;
    checkpoint.delete(key.uid);
    await checkpoint.save();
    log.info("unprepared claim", { claim: claimRef({ ...existing, uid: key.uid }), state: existing.state });
  }

  /** Best-effort reconstruction of one claim from its CDI spec (pool and device names, nodes, UUIDs). */
  function fromSpec(uid: string, spec: CdiSpec): PreparedDevice[] {
    const env = new Map((spec.containerEdits?.env ?? []).map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)] as const));
    const uuids = (env.get("NVIDIA_VISIBLE_DEVICES") ?? "").split(",");
    const facts = deps.devices();
    return (spec.devices ?? []).map((d, i) => {
      const deviceName = d.name.startsWith(`${uid}-`) ? d.name.slice(uid.length + 1) : d.name;
      const nodes = (d.containerEdits?.deviceNodes ?? []).map((n) => n.path);
      const minor = Number(/^\/dev\/nvidia(\d+)$/.exec(nodes[0] ?? "")?.[1] ?? -1);
      const f = facts.get(deviceName);
      return {
        requestNames: [],
        poolName: deps.poolName,
        deviceName,
        cdiDeviceIds: [`${CDI_KIND}=${d.name}`],
        kind: f?.kind ?? (deviceName.includes("-mig-") ? "mig" : "gpu"),
        uuid: f?.uuid ?? uuids[i] ?? "",
        gpuMinor: f?.gpuMinor ?? minor,
        deviceNodes: nodes,
      };
    });
  }

  return {
    prepare: (key) =>
      lock.run(key.uid, async () => {
        assertClaimUID(key.uid);
        return prepareLocked(key);
      }),
    unprepare: (key) =>
      lock.run(key.uid, async () => {
        assertClaimUID(key.uid);
        return unprepareLocked(key);
      }),
    async restore(load) {
      // Orphans (our CDI specs without a checkpoint entry) never survive a restore: with a
      // trusted checkpoint they are removed (a lost prepare answer is retried by the kubelet, a
      // lost unprepare removal must not come back); with no usable checkpoint they are adopted.
      const specs = await cdi.list();
      if (load.kind === "moved-aside" || (load.kind === "fresh" && specs.length > 0)) {
        let n = 0;
        for (const { uid, spec } of specs) {
          if (!spec) {
            await cdi.remove(uid); // unreadable: neither adoptable nor usable by the runtime
            continue;
          }
          // PrepareStarted: the devices stay reserved; the kubelet's next Prepare re-reads the
          // claim and completes it, its Unprepare removes the spec.
          checkpoint.set(uid, { state: "PrepareStarted", namespace: "", name: "", devices: fromSpec(uid, spec), rebuilt: true });
          n++;
        }
        await checkpoint.save();
        log.info("rebuilt checkpoint from CDI specs", { claims: n, cdiRoot: cdi.root });
        return;
      }
      if (load.kind !== "loaded") return;
      let orphans = 0;
      for (const { uid } of specs) {
        if (checkpoint.get(uid)) continue;
        await cdi.remove(uid);
        orphans++;
      }
      if (orphans > 0) log.info("removed CDI specs of claims the checkpoint does not hold", { count: orphans, cdiRoot: cdi.root });
      if (load.rebooted) log.info("node rebooted since the checkpoint was written; re-creating CDI specs", { previousBootId: load.previousBootId });
      let recreated = 0;
      for (const [uid, e] of checkpoint.entries()) {
        if (e.state !== "PrepareCompleted") continue;
        try {
          if (await cdi.ensure(entryClaim(uid, e))) recreated++;
        } catch (err) {
          log.error("cannot re-create CDI spec; the next Prepare retries", { claim: claimRef({ ...e, uid }), err: describeChain(err) });
        }
      }
      if (recreated > 0) log.info("re-created CDI specs", { count: recreated });
      await checkpoint.save(); // records the current boot id
    },
  };
}
