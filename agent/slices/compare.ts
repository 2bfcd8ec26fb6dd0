// What is published next to what would be: device by device and counter set by counter set,
// and the writes the publisher would make (planSync). Pure; `tessera diag slices --kube` prints it.
import type { ResourceSlice } from "../kube/types.js";
import { covers, planSync } from "./publisher.js";

export interface SliceDiff {
  inSync: boolean;
  published: { slices: number; devices: number; generation: number };
  wanted: { slices: number; devices: number };
  devices: { added: string[]; removed: string[]; changed: string[] };
  counterSets: { added: string[]; removed: string[]; changed: string[] };
  /** What the agent's next sync would write. */
  plan: { generation: number; create: string[]; update: string[]; delete: string[] };
}

function byKey<T>(slices: readonly ResourceSlice[], items: (s: ResourceSlice) => readonly T[] | undefined, name: (x: T) => string): Map<string, T> {
  const out = new Map<string, T>();
  for (const s of slices) for (const x of items(s) ?? []) out.set(`${s.spec.pool.name}/${name(x)}`, x);
  return out;
}

function diffMaps<T>(have: Map<string, T>, want: Map<string, T>): { added: string[]; removed: string[]; changed: string[] } {
  const equal = (a: T, b: T): boolean => covers(a, b) && covers(b, a);
  return {
    added: [...want.keys()].filter((k) => !have.has(k)).sort(),
    removed: [...have.keys()].filter((k) => !want.has(k)).sort(),
    changed: [...want.keys()].filter((k) => have.has(k) && !equal(have.get(k) as T, want.get(k) as T)).sort(),
  };
}

/** `build(generation)` gives the slices this node would publish at that pool generation. */
export function compareSlices(published: readonly ResourceSlice[], build: (generation: number) => ResourceSlice[]): SliceDiff {
  const plan = planSync([...published], build, 0);
  const wanted = build(Math.max(1, ...published.map((s) => s.spec.pool?.generation ?? 0)));
  const devices = diffMaps(byKey(published, (s) => s.spec.devices, (d) => d.name), byKey(wanted, (s) => s.spec.devices, (d) => d.name));
  const counterSets = diffMaps(byKey(published, (s) => s.spec.sharedCounters, (c) => c.name), byKey(wanted, (s) => s.spec.sharedCounters, (c) => c.name));
  const count = (l: readonly ResourceSlice[]): number => l.reduce((n, s) => n + (s.spec.devices?.length ?? 0), 0);
  const writes = plan.create.length + plan.update.length + plan.delete.length;
  return {
    inSync: writes === 0,
    published: { slices: published.length, devices: count(published), generation: Math.max(0, ...published.map((s) => s.spec.pool?.generation ?? 0)) },
    wanted: { slices: wanted.length, devices: count(wanted) },
    devices,
    counterSets,
    plan: { generation: plan.generation, create: plan.create.map((s) => s.metadata.name ?? ""), update: plan.update.map((s) => s.metadata.name ?? ""), delete: plan.delete },
  };
}

/** One line: "in sync", or what differs and what the agent would write. */
export function diffSummary(d: SliceDiff): string {
  if (d.inSync) return `in sync: the published slices are what this node would publish (pool generation ${d.published.generation})`;
  const part = (what: string, x: { added: string[]; removed: string[]; changed: string[] }): string =>
    `${what} ${x.added.length} added${list(x.added)}, ${x.removed.length} removed${list(x.removed)}, ${x.changed.length} changed${list(x.changed)}`;
  return `${part("devices", d.devices)}; ${part("counter sets", d.counterSets)}; the agent would create ${d.plan.create.length}, update ${d.plan.update.length}, delete ${d.plan.delete.length} slices (pool generation ${d.published.generation} -> ${d.plan.generation})`;
}

function list(names: readonly string[]): string {
  if (names.length === 0) return "";
  const shown = names.slice(0, 6).map((n) => n.slice(n.indexOf("/") + 1));
  return ` (${shown.join(", ")}${names.length > shown.length ? `, +${names.length - shown.length}` : ""})`;
}
