// The ordered steps of prepare and unprepare, one claim at a time per UID (claims in parallel).
//   prepare:   checkpoint hit? -> ensure CDI (and its MIG instances), answer | read claim -> same
//              UID -> computePrepared (GpuConfig decoded per device) -> conflict check (devices,
//              sharing strategies) + PrepareStarted (one synchronous step) -> save (the intent:
//              which placements this claim will create, which sharing it sets) -> per dynamic MIG
//              placement: create the instance, read it back, save its GI/CI -> time-slice policy,
//              MPS daemon -> CDI spec (MPS mounts/env) -> PrepareCompleted -> save -> answer;
//              a claim with neither placements to create nor sharing: PrepareCompleted -> save ->
//              CDI spec -> answer (one checkpoint write)
//   unprepare: stop the MPS daemon, time-slice policy back to Default if no other claim holds one
//              on the GPU -> destroy the MIG instances this claim created (CI, then GI) -> remove
//              CDI spec -> drop entry -> save (unknown UIDs succeed)
//   restore:   re-create CDI specs after a reboot; a claim that crashed mid-prepare and no longer
//              exists has the instances it created destroyed; instances Tessera did not create
//              are never touched.
// Only this module writes the checkpoint and CDI specs; they only write what they are given.
import { describeChain, TesseraError } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import type { DeviceFacts } from "../discovery/model.js";
import { deviceEnvName, type CdiSpec, type CdiWriter } from "./cdi.js";
import type { Checkpoint, ClaimEntry, LoadResult } from "./checkpoint.js";
import type { ClaimSource } from "./claim-source.js";
import type { MigManager } from "../mig/manager.js";
import { applySharing, restoreSharing, sharingConflict, undoSharing, withMps, type SharingDeps } from "./sharing-steps.js";
import { assertClaimUID, assertRecordedFor, assertSameClaim, CDI_KIND, claimRef, computePrepared, exclusive, overlaps, type PreparedClaim, type PreparedDevice } from "./prepared.js";

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
  /** Dynamic MIG: creates and destroys instances (absent: this agent creates none). */
  mig?: MigManager;
  /** Rediscovers now (after a MIG change) and returns the new device facts. */
  refreshDevices?: () => Promise<ReadonlyMap<string, DeviceFacts>>;
  /** GPU sharing (time-slice policy, MPS daemons); absent: a claim asking for sharing fails. */
  sharing?: SharingDeps;
}

export interface DeviceState {
  prepare(claim: ClaimKey): Promise<PreparedDevice[]>;
  unprepare(claim: ClaimKey): Promise<void>;
  /** Applies what loading the checkpoint found: reboot -> re-create specs; lost -> rebuild. */
  restore(load: LoadResult): Promise<void>;
  /** Entries left PrepareStarted with no work in flight (a failed rollback, a crash); for diag and metrics. */
  stuck(): ClaimKey[];
}

/** One promise chain per key: work for the same claim runs strictly one after another. */
function createKeyedLock(): { run<T>(key: string, fn: () => Promise<T>): Promise<T>; busy(key: string): boolean } {
  const tails = new Map<string, Promise<unknown>>();
  return {
    busy: (key) => tails.has(key),
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

function stuckEntries(checkpoint: Checkpoint, busy: (uid: string) => boolean): ClaimKey[] {
  return checkpoint
    .entries()
    .filter(([uid, e]) => e.state === "PrepareStarted" && !e.rebuilt && !busy(uid))
    .map(([uid, e]) => ({ uid, namespace: e.namespace, name: e.name }));
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
    return sharingConflict(claim, others());
  }

  const others = (): { uid: string; namespace: string; name: string; devices: PreparedDevice[] }[] => checkpoint.entries().map(([uid, e]) => ({ uid, namespace: e.namespace, name: e.name, devices: e.devices }));

  const owned = (devices: readonly PreparedDevice[]): PreparedDevice[] => devices.filter((d) => d.mig?.owned === true);

  async function refreshed(): Promise<ReadonlyMap<string, DeviceFacts>> {
    if (!deps.refreshDevices) throw new TesseraError("TESSERA_MIG", "this agent cannot read back MIG instances (no rediscovery); run the agent with --mig-mode dynamic");
    return deps.refreshDevices();
  }

  /** The live instance at a device's placement, as discovery sees it now (GI/CI known), if any. */
  function liveAt(facts: ReadonlyMap<string, DeviceFacts>, d: PreparedDevice): DeviceFacts | undefined {
    const live = facts.get(d.deviceName);
    return live?.mig?.gi !== undefined && live.mig.ci !== undefined ? live : undefined;
  }

  function adopt(d: PreparedDevice, live: DeviceFacts, ours: boolean): void {
    d.uuid = live.uuid;
    d.deviceNodes = [...live.deviceNodes];
    d.mig = ours ? { ...(live.mig as NonNullable<DeviceFacts["mig"]>), owned: true } : { ...(live.mig as NonNullable<DeviceFacts["mig"]>) };
  }

  /**
   * Makes every dynamic placement of the claim exist: creates the instance at exactly the
   * allocated placement, reads back its GI/CI, UUID and capability device nodes, and saves them
   * before going on. `ours` names the placements an earlier attempt of this claim recorded as
   * intent: an instance found there was created by that attempt and is adopted (never created
   * twice); an instance found anywhere else was made by someone else and is used, never destroyed.
   */
  async function materialize(key: ClaimKey, state: ClaimEntry["state"], devices: PreparedDevice[], ours: ReadonlySet<string>): Promise<void> {
    for (const d of owned(devices)) {
      if (d.mig?.gi !== undefined && liveAt(deps.devices(), d)?.mig?.gi === d.mig.gi) continue;
      const mig = d.mig as NonNullable<PreparedDevice["mig"]>;
      // A first attempt trusts the facts it allocated against (an instance made there since makes
      // the create fail, and the kubelet's retry sees it); a retry looks again for its own.
      let facts = ours.has(d.deviceName) || mig.gi !== undefined ? await refreshed() : deps.devices();
      let live = liveAt(facts, d);
      if (live && !ours.has(d.deviceName) && mig.gi === undefined) {
        adopt(d, live, false);
        log.info("MIG placement already has an instance not created by Tessera; using it as is", { claim: claimRef(key), device: d.deviceName });
        checkpoint.set(key.uid, { state, namespace: key.namespace, name: key.name, devices });
        await checkpoint.save();
        continue;
      }
      if (!live) {
        if (!facts.has(d.deviceName)) {
          throw new TesseraError("TESSERA_MIG_DISABLED", `ResourceClaim ${claimRef(key)}: MIG placement ${d.deviceName} of GPU ${mig.gpuUUID} cannot be created now (MIG mode off, or the GPU is gone); Tessera never changes MIG mode`);
        }
        if (!deps.mig) throw new TesseraError("TESSERA_MIG", `ResourceClaim ${claimRef(key)}: ${d.deviceName} is a dynamic MIG placement but this agent creates no MIG instances; run it with --mig-mode dynamic`);
        await deps.mig.create({ gpuUUID: mig.gpuUUID, profileId: mig.profileId, start: mig.start });
        facts = await refreshed();
        live = liveAt(facts, d);
        if (!live) throw new TesseraError("TESSERA_MIG", `ResourceClaim ${claimRef(key)}: created MIG profile ${mig.profileId} at ${mig.start} on GPU ${mig.gpuUUID}, but discovery does not show ${d.deviceName}; check \`nvidia-smi mig -lgi\``);
      }
      adopt(d, live, true);
      checkpoint.set(key.uid, { state, namespace: key.namespace, name: key.name, devices });
      await checkpoint.save();
    }
  }

  /** Destroys the instances a claim created: by the recorded GI/CI, or (intent recorded, crash
   *  before the ids were) the instance discovery shows at the placement. */
  async function destroyOwned(key: ClaimKey, devices: readonly PreparedDevice[]): Promise<void> {
    const mine = owned(devices);
    if (mine.length === 0) return;
    let facts: ReadonlyMap<string, DeviceFacts> | undefined;
    for (const d of mine) {
      const mig = d.mig as NonNullable<PreparedDevice["mig"]>;
      let gi = mig.gi;
      let ci = mig.ci;
      if (gi === undefined || ci === undefined) {
        facts ??= await refreshed();
        const live = liveAt(facts, d);
        if (!live) continue; // never created
        gi = live.mig?.gi as number;
        ci = live.mig?.ci as number;
      }
      if (!deps.mig) throw new TesseraError("TESSERA_MIG", `ResourceClaim ${claimRef(key)}: cannot destroy MIG instance ${d.deviceName} (GI ${gi}): this agent manages no MIG instances; run it with --mig-mode dynamic`);
      await deps.mig.destroy(mig.gpuUUID, gi, ci);
    }
    if (deps.refreshDevices) await deps.refreshDevices();
  }

  async function rollback(key: ClaimKey, devices: readonly PreparedDevice[]): Promise<void> {
    // Sharing and instances first: if undoing fails, the entry (and its intent) stays for the
    // next Prepare or Unprepare, so nothing this claim set up is forgotten.
    await undoSharing(deps.sharing, { ...key, devices: [...devices] }, others());
    await destroyOwned(key, devices);
    // The entry goes even when the spec cannot be removed: a failed prepare must not keep its
    // devices reserved (a leftover spec is rewritten by the kubelet's retry).
    await cdi.remove(key.uid).catch((e: unknown) => log.error("cannot remove the CDI spec of a failed prepare", { uid: key.uid, err: describeChain(e) }));
    checkpoint.delete(key.uid);
    await checkpoint.save();
  }

  async function prepareLocked(key: ClaimKey): Promise<PreparedDevice[]> {
    const existing = checkpoint.get(key.uid);
    if (existing) assertRecordedFor(existing, key);
    if (existing?.state === "PrepareCompleted" && !existing.rebuilt) {
      // Kubelet restart or node reboot: same answer, the spec back if /var/run/cdi was emptied,
      // and the claim's MIG instances back if a reboot removed them (same placements).
      const mine = owned(existing.devices);
      if (mine.some((d) => liveAt(deps.devices(), d)?.mig?.gi !== d.mig?.gi)) {
        await materialize(key, "PrepareCompleted", existing.devices, new Set(mine.map((d) => d.deviceName)));
      }
      if (await cdi.ensure(withMps(deps.sharing, entryClaim(key.uid, existing)))) log.info("re-created missing CDI spec", { claim: claimRef(key) });
      return existing.devices;
    }
    const object = await deps.claims.get(key.namespace, key.name);
    assertSameClaim(object, key);
    const prepared = computePrepared(object, deps.devices(), deps.driverName, { toolkitUUIDs: await deps.toolkitUUIDs() });
    // A retry after a failed or crashed attempt: its recorded instances are this claim's.
    const ours = new Set<string>();
    if (existing?.state === "PrepareStarted") {
      for (const d of prepared.devices) {
        const before = existing.devices.find((e) => e.deviceName === d.deviceName && e.mig?.owned);
        if (before?.mig && d.mig) {
          ours.add(d.deviceName);
          d.mig = { ...before.mig };
        }
      }
    }
    const forCdi = withMps(deps.sharing, prepared); // an MPS claim's shape is checked before anything is done
    // No await between the conflict check and recording PrepareStarted: two claims racing for
    // one device cannot both pass.
    const conflict = findConflict(prepared);
    if (conflict) throw new TesseraError("TESSERA_DEVICE_CONFLICT", conflict);
    // A claim whose prepare changes nothing on the node but its CDI spec (no MIG instance to
    // create, no sharing setting) has no intent to record: its one checkpoint write is the outcome,
    // PrepareCompleted, still ahead of the spec. A power loss before the spec is durable leaves an
    // entry whose spec every restore and every repeated Prepare re-creates (cdi.ensure), as after a
    // reboot; the kubelet had no answer yet. Two fsync'd writes (4 fsyncs) instead of three (6),
    // the spec's file fsync overlapping the checkpoint write: 3 fsyncs on the critical path.
    const intent = owned(prepared.devices).length > 0 || prepared.devices.some((d) => d.sharing !== undefined);
    checkpoint.set(key.uid, { state: intent ? "PrepareStarted" : "PrepareCompleted", namespace: key.namespace, name: key.name, devices: prepared.devices });
    try {
      if (intent) {
        await checkpoint.save();
        await materialize(key, "PrepareStarted", prepared.devices, ours);
        await applySharing(deps.sharing, prepared);
        await cdi.ensure(forCdi);
      } else {
        // The spec's temp file is written and fsynced while the checkpoint write is in flight;
        // it is renamed into place only once the checkpoint is durable (still written ahead).
        const [saved, staged] = await Promise.allSettled([checkpoint.save(), cdi.stage(forCdi)]);
        if (saved.status === "rejected") {
          if (staged.status === "fulfilled") await staged.value.abort().catch(() => undefined);
          throw saved.reason;
        }
        if (staged.status === "rejected") throw staged.reason;
        await staged.value.commit();
      }
      if (intent) {
        checkpoint.set(key.uid, { state: "PrepareCompleted", namespace: key.namespace, name: key.name, devices: prepared.devices });
        await checkpoint.save();
      }
    } catch (err) {
      await rollback(key, prepared.devices).catch((e: unknown) => log.error("rollback after failed prepare failed; the entry stays for the next Prepare or Unprepare", { claim: claimRef(key), err: describeChain(e) }));
      throw err;
    }
    log.info("prepared claim", { claim: claimRef(key), devices: prepared.devices.map((d) => d.deviceName) });
    return prepared.devices;
  }

  async function unprepareLocked(key: ClaimKey): Promise<void> {
    const existing = checkpoint.get(key.uid);
    // Instances, then the spec, then the entry: a crash in between leaves an entry whose
    // unprepare is retried (destroying what is already gone succeeds). A --cdi-root that is not a
    // directory holds no spec: no obstacle to dropping the entry.
    if (existing) {
      const k = { ...key, namespace: existing.namespace, name: existing.name };
      await undoSharing(deps.sharing, { ...k, devices: existing.devices }, others());
      await destroyOwned(k, existing.devices);
    }
    if ((await cdi.remove(key.uid)) === "root-not-a-directory") log.warn("--cdi-root is not a directory; no CDI spec to remove", { cdiRoot: cdi.root, uid: key.uid });
    if (!existing) return;
    checkpoint.delete(key.uid);
    await checkpoint.save();
    log.info("unprepared claim", { claim: claimRef({ ...existing, uid: key.uid }), state: existing.state });
  }

  /** After a restart: a claim that crashed mid-prepare and is gone from the API has its instances destroyed. */
  async function reconcileOrphans(): Promise<void> {
    for (const [uid, e] of checkpoint.entries()) {
      if (e.state !== "PrepareStarted" || (owned(e.devices).length === 0 && !e.devices.some((d) => d.sharing)) || !e.name) continue;
      const key = { uid, namespace: e.namespace, name: e.name };
      const gone = await deps.claims.get(e.namespace, e.name).then(
        (c) => c.metadata.uid !== uid,
        (err: unknown) => (err instanceof TesseraError && err.code === "TESSERA_NOT_FOUND" ? true : undefined),
      );
      if (gone !== true) continue; // still there (the kubelet retries) or unknown (API down): keep
      try {
        await rollback(key, e.devices);
        log.info("undid the MIG instances and sharing of a claim that no longer exists", { claim: claimRef(key) });
      } catch (err) {
        log.error("cannot undo the MIG instances or sharing of a deleted claim; retried at the next start", { claim: claimRef(key), err: describeChain(err) });
      }
    }
  }

  /** Best-effort reconstruction of one claim from its CDI spec (pool and device names, nodes, UUIDs). */
  function fromSpec(uid: string, spec: CdiSpec): PreparedDevice[] {
    const facts = deps.devices();
    return (spec.devices ?? []).map((d) => {
      const deviceName = d.name.startsWith(`${uid}-`) ? d.name.slice(uid.length + 1) : d.name;
      const ownEnv = (d.containerEdits?.env ?? []).find((e) => e.startsWith(`${deviceEnvName(uid, deviceName)}=`));
      const nodes = (d.containerEdits?.deviceNodes ?? []).map((n) => n.path);
      const minor = Number(/^\/dev\/nvidia(\d+)$/.exec(nodes[0] ?? "")?.[1] ?? -1);
      const f = facts.get(deviceName);
      return {
        requestNames: [],
        poolName: deps.poolName,
        deviceName,
        cdiDeviceIds: [`${CDI_KIND}=${d.name}`],
        kind: f?.kind ?? (deviceName.includes("-mig-") ? "mig" : "gpu"),
        uuid: f?.uuid || (ownEnv?.slice(ownEnv.indexOf("=") + 1) ?? ""),
        gpuMinor: f?.gpuMinor ?? minor,
        deviceNodes: nodes,
      };
    });
  }

  return {
    stuck: () => stuckEntries(checkpoint, lock.busy),
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
      await reconcileOrphans();
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
          await restoreSharing(deps.sharing, entryClaim(uid, e), load.rebooted === true);
        } catch (err) {
          log.error("cannot restore the sharing of a prepared claim (MPS daemon, time-slice policy)", { claim: claimRef({ ...e, uid }), err: describeChain(err) });
        }
        try {
          if (await cdi.ensure(withMps(deps.sharing, entryClaim(uid, e)))) recreated++;
        } catch (err) {
          log.error("cannot re-create CDI spec; the next Prepare retries", { claim: claimRef({ ...e, uid }), err: describeChain(err) });
        }
      }
      if (recreated > 0) log.info("re-created CDI specs", { count: recreated });
      await checkpoint.save(); // records the current boot id
    },
  };
}
