// Power-loss crash consistency of the kubelet plugin's durable state. The real device state
// (createDeviceState over the real checkpoint, CDI writer and standalone store) runs a workload
// on the power-loss model of test/support/power-loss-fs.ts; for EVERY prefix of the recorded
// operations and each loss choice that matters, the agent is restarted on what survives
// (loadCheckpoint + restore) and the invariants below must hold.
import t from "tap";
import { createMemoryLogger } from "../agent/common/log.js";
import { deviceFacts } from "../agent/discovery/model.js";
import { createStandaloneStore } from "../agent/kube/standalone-store.js";
import type { ResourceClaim } from "../agent/kube/types.js";
import { createCdiWriter, renderSpec, specPath } from "../agent/plugin/cdi.js";
import { decodeCheckpoint, loadCheckpoint } from "../agent/plugin/checkpoint.js";
import { createStoreClaimSource } from "../agent/plugin/claim-source.js";
import { CDI_VENDOR, exclusive, overlaps, type PreparedDevice } from "../agent/plugin/prepared.js";
import { createDeviceState, type DeviceState } from "../agent/plugin/state.js";
import type { Checkpoint } from "../agent/plugin/checkpoint.js";
import { claim, DRIVER, inventory, NODE, nodeConfig, ref, uid } from "./support/kubelet-env.js";
import { createPowerLossFs, lossChoices, stateKey, survivor, type PowerLossFs } from "./support/power-loss-fs.js";

const facts = deviceFacts(inventory(6));
const cfg = nodeConfig("/node");
const storeDir = "/node/store";
const SPEC_PREFIX = `${CDI_VENDOR}-claim_`;

interface Agent {
  state: DeviceState;
  checkpoint: Checkpoint;
}

async function boot(fs: PowerLossFs, bootId: string): Promise<Agent> {
  const log = createMemoryLogger();
  const { checkpoint, result } = await loadCheckpoint(cfg.checkpointFile, { bootId, log, fs, now: () => new Date(0) });
  const state = createDeviceState({
    driverName: DRIVER,
    poolName: NODE,
    checkpoint,
    cdi: createCdiWriter(cfg.cdiRoot, fs),
    claims: createStoreClaimSource(createStandaloneStore(storeDir, fs)),
    devices: () => facts,
    toolkitUUIDs: async () => new Set(),
    log,
  });
  await state.restore(result);
  return { state, checkpoint };
}

type Event = { kind: "prepare-start" | "prepared" | "unprepare-start" | "unprepared"; uid: string; devices?: PreparedDevice[]; at: number };

/** The workload: concurrent prepares, a re-prepare, a restart with a new boot id, an unprepare,
 *  a device reused by another claim after its unprepare, and a last unprepare. */
async function workload(fs: PowerLossFs): Promise<{ events: Event[]; claims: Map<string, ResourceClaim> }> {
  const A = claim({ name: "a", uid: uid(1), results: [{ device: "gpu-0" }] });
  const B = claim({ name: "b", uid: uid(2), results: [{ device: "gpu-1-mig-19-0-1" }] });
  const C = claim({ name: "c", uid: uid(3), results: [{ device: "gpu-2" }, { request: "gpu", device: "gpu-3" }] });
  const D = claim({ name: "d", uid: uid(4), results: [{ device: "gpu-1-mig-19-0-1" }] });
  const E = claim({ name: "e", uid: uid(5), results: [{ device: "gpu-4" }] });
  const claims = new Map([A, B, C, D, E].map((c) => [c.metadata.uid ?? "", c]));
  const store = createStandaloneStore(storeDir, fs);
  const events: Event[] = [];
  const prep = async (a: Agent, c: ResourceClaim): Promise<void> => {
    events.push({ kind: "prepare-start", uid: ref(c).uid, at: fs.opCount() });
    const devices = await a.state.prepare(ref(c));
    events.push({ kind: "prepared", uid: ref(c).uid, devices: structuredClone(devices), at: fs.opCount() });
  };
  const unprep = async (a: Agent, c: ResourceClaim): Promise<void> => {
    events.push({ kind: "unprepare-start", uid: ref(c).uid, at: fs.opCount() });
    await a.state.unprepare(ref(c));
    events.push({ kind: "unprepared", uid: ref(c).uid, at: fs.opCount() });
  };
  for (const c of [A, B, C, E]) await store.putClaim(c);
  let agent = await boot(fs, "boot-1");
  await Promise.all([prep(agent, A), prep(agent, B)]);
  await prep(agent, C);
  await prep(agent, A);
  agent = await boot(fs, "boot-2");
  await unprep(agent, B);
  await store.putClaim(D);
  await Promise.all([prep(agent, D), prep(agent, E)]);
  await unprep(agent, C);
  return { events, claims };
}

/** What the kubelet was told by op k: uid -> the devices answered, or "unprepared". */
function answered(events: readonly Event[], k: number): Map<string, PreparedDevice[] | "unprepared"> {
  const out = new Map<string, PreparedDevice[] | "unprepared">();
  for (const e of events) {
    if (e.at > k) continue;
    if (e.kind === "prepared" && e.devices) out.set(e.uid, e.devices);
    else if (e.kind === "unprepared") out.set(e.uid, "unprepared");
    else out.delete(e.uid); // a prepare or unprepare in flight: either outcome is allowed
  }
  return out;
}

async function specUIDs(fs: PowerLossFs): Promise<string[]> {
  const names = await fs.readdir(cfg.cdiRoot).catch(() => [] as string[]);
  return names.filter((n) => n.startsWith(SPEC_PREFIX) && n.endsWith(".json")).map((n) => n.slice(SPEC_PREFIX.length, -".json".length));
}

const INVARIANTS = [
  "the checkpoint is written ahead of the CDI spec: every surviving spec has a checkpoint entry before any restore",
  "the agent starts on what survives (loadCheckpoint + restore do not throw)",
  "a claim answered as prepared is still PrepareCompleted with the same devices and its CDI spec bytes",
  "a claim answered as unprepared has no checkpoint entry and no CDI spec",
  "no device belongs to two live claims",
  "no CDI spec without a checkpoint entry survives a restore",
  "Prepare of an answered claim after the restart gives the same devices",
] as const;
type Invariant = (typeof INVARIANTS)[number];

t.test("power loss after every prefix of prepare/unprepare/restore: invariants hold on what survives", async (t) => {
  const fs = createPowerLossFs();
  const { events } = await workload(fs);
  const failures = new Map<Invariant, string[]>(INVARIANTS.map((i) => [i, []]));
  const fail = (i: Invariant, where: string): void => void failures.get(i)?.push(where);
  const seen = new Set<string>();
  let restarts = 0;
  let checked = 0;
  for (let k = 1; k <= fs.snapshots.length; k++) {
    const snap = fs.snapshots[k - 1];
    if (!snap) continue;
    const expect = answered(events, k);
    for (const choice of lossChoices(snap)) {
      checked++;
      const disk = survivor(snap, choice);
      const key = `${JSON.stringify([...expect])}|${stateKey(disk)}`;
      if (seen.has(key)) continue;
      seen.add(key);
      restarts++;
      const where = `after op ${k} (${snap.op}), ${choice.name}`;

      const text = await disk.readFile(cfg.checkpointFile).catch(() => undefined);
      const decoded = text === undefined ? undefined : decodeCheckpoint(text);
      const before = decoded?.ok ? decoded.data.claims : {};
      for (const u of await specUIDs(disk)) if (!before[u]) fail(INVARIANTS[0], `${where}: spec ${u}${decoded && !decoded.ok ? ` (checkpoint ${decoded.reason})` : ""}`);

      let agent: Agent;
      try {
        agent = await boot(disk, "boot-after-power-loss");
      } catch (err) {
        fail(INVARIANTS[1], `${where}: ${(err as Error).message}`);
        continue;
      }
      const specs = new Set(await specUIDs(disk));
      for (const [u, want] of expect) {
        const entry = agent.checkpoint.get(u);
        if (want === "unprepared") {
          if (entry || specs.has(u)) fail(INVARIANTS[3], `${where}: ${u} entry=${entry?.state ?? "none"} spec=${specs.has(u)}`);
          continue;
        }
        const ok =
          entry?.state === "PrepareCompleted" &&
          !entry.rebuilt &&
          JSON.stringify(entry.devices) === JSON.stringify(want) &&
          (await disk.readFile(specPath(cfg.cdiRoot, u)).catch(() => undefined)) === renderSpec({ uid: u, namespace: entry.namespace, name: entry.name, devices: want });
        if (!ok) fail(INVARIANTS[2], `${where}: ${u} entry=${entry?.state ?? "none"}${entry?.rebuilt ? " (rebuilt)" : ""}`);
      }
      const live = agent.checkpoint.entries();
      for (const [i, [ua, ea]] of live.entries()) {
        for (const [ub, eb] of live.slice(i + 1)) {
          if (ea.devices.some((d) => exclusive(d) && eb.devices.some((o) => exclusive(o) && overlaps(d, o)))) fail(INVARIANTS[4], `${where}: ${ua} and ${ub}`);
        }
      }
      for (const u of specs) if (!agent.checkpoint.get(u)) fail(INVARIANTS[5], `${where}: spec ${u}`);
      for (const [u, want] of expect) {
        if (want === "unprepared") continue;
        const e = agent.checkpoint.get(u);
        const again = await agent.state.prepare({ uid: u, namespace: e?.namespace ?? "", name: e?.name ?? "" }).catch((err: Error) => err.message);
        if (JSON.stringify(again) !== JSON.stringify(want)) fail(INVARIANTS[6], `${where}: ${u} got ${typeof again === "string" ? again : "other devices"}`);
      }
    }
  }
  t.ok(fs.snapshots.length > 60, `the workload records its operations (${fs.snapshots.length})`);
  t.ok(checked > 2 * fs.snapshots.length, `loss choices per prefix (${checked} checked, ${restarts} distinct states restarted)`);
  for (const [inv, list] of failures) t.same(list.slice(0, 3), [], `${inv} (${list.length} violations)`);
});

t.test("restore: orphan CDI specs are removed with a trusted checkpoint, adopted without one", async (t) => {
  const orphan = claim({ name: "o", uid: uid(9), results: [{ device: "gpu-5" }] });
  const seedFs = createPowerLossFs();
  await createStandaloneStore(storeDir, seedFs).putClaim(orphan);
  const seed = await boot(seedFs, "b");
  await seed.state.prepare(ref(orphan));
  const spec = await seedFs.readFile(specPath(cfg.cdiRoot, uid(9)));

  // A trusted checkpoint without the claim (an unprepare whose removal was lost): removed.
  const trusted = survivor(seedFs.snapshots.at(-1) ?? { op: "", nodes: new Map() }, { name: "all", keep: new Map() });
  const a = await boot(trusted, "b");
  await a.state.unprepare(ref(orphan));
  const h = await trusted.open(specPath(cfg.cdiRoot, uid(9)), 0o644);
  await h.write(spec);
  await h.close();
  await boot(trusted, "b");
  t.same(await specUIDs(trusted), [], "orphan removed at restore");

  // No checkpoint at all, specs present: adopted as PrepareStarted (devices stay reserved).
  const bare = createPowerLossFs();
  await bare.mkdir(cfg.cdiRoot);
  const h2 = await bare.open(specPath(cfg.cdiRoot, uid(9)), 0o644);
  await h2.write(spec);
  await h2.close();
  const b = await boot(bare, "b");
  t.match(b.checkpoint.get(uid(9)), { state: "PrepareStarted", rebuilt: true }, "orphan adopted");
  t.same(await specUIDs(bare), [uid(9)], "adopted spec kept");
});

t.test("fsyncs per prepare: a plain 1-GPU claim costs 4 (one checkpoint write, one CDI spec), a repeat 0", async (t) => {
  const fs = createPowerLossFs();
  const c = claim({ name: "f", uid: uid(7), results: [{ device: "gpu-0" }] });
  await createStandaloneStore(storeDir, fs).putClaim(c);
  const a = await boot(fs, "b");
  await a.state.prepare(ref(c)); // first prepare also creates the CDI root
  await a.state.unprepare(ref(c));
  const ops = (from: number): string[] => fs.snapshots.slice(from).map((s) => s.op).filter((op) => op.startsWith("fsync"));
  const before = fs.opCount();
  await a.state.prepare(ref(c));
  const synced = ops(before);
  t.equal(synced.length, 4, `fsyncs: ${synced.join(", ")}`);
  t.equal(a.checkpoint.get(uid(7))?.state, "PrepareCompleted", "recorded as completed by its one write");
  const again = fs.opCount();
  await a.state.prepare(ref(c));
  t.same(ops(again), [], "a repeated prepare (checkpoint hit, spec present) writes nothing");
});
