// `tessera diag topology` (NUMA -> PCIe root -> GPU -> MIG tree) and `tessera diag slices` (the
// ResourceSlices this node would publish). Both run discovery with the node flags; when it fails
// (nvidia-smi missing, hanging, unparsable) they print the condition as one line and exit 1.
import { outputFormat, parseFlags, resolveNodeConfig, VERB_FLAGS, type NodeConfig, type ParsedArgs } from "../common/config.js";
import { TesseraError, formatError } from "../common/errors.js";
import { createDiscovery, type DiscoveryDeps } from "../discovery/index.js";
import type { Gpu, Inventory, MigDevice } from "../discovery/model.js";
import { buildResourceSlices, healthTargets } from "../slices/build.js";
import { recordedTaints } from "../health/keeper.js";
import { readHealthFile } from "../health/store.js";
import type { DeviceTaint } from "../kube/types.js";
import type { ResourceSlice } from "../kube/types.js";
import { compareSlices, diffSummary, type SliceDiff } from "../slices/compare.js";
import type { CliIO } from "./io.js";
import { table } from "./view.js";

/** Tests inject discovery deps (fake exec, fixtures dir) here. */
export const diagDeps: { discovery: DiscoveryDeps } = { discovery: {} };

export async function discover(argv: string[], io: CliIO, verb: "diag topology" | "diag slices" | "diag health"): Promise<{ cfg: NodeConfig; inv: Inventory; format: "table" | "json"; args: ParsedArgs }> {
  const args = parseFlags(argv, VERB_FLAGS[verb], io.env);
  if (args.positionals.length > 0) throw new TesseraError("TESSERA_USAGE", `unexpected argument ${args.positionals[0]}; run \`tessera ${verb} --help\``);
  const cfg = resolveNodeConfig(args);
  const format = outputFormat(args);
  try {
    return { cfg, inv: await createDiscovery(cfg, diagDeps.discovery).discover(), format, args };
  } catch (err) {
    if (err instanceof TesseraError && (err.code === "TESSERA_CONFIG" || err.code === "TESSERA_FIXTURE")) throw err;
    // The discovery condition, as the agent would log it: keep its code (e.g. TESSERA_DISCOVERY_TIMEOUT).
    const code = err instanceof TesseraError ? err.code : "TESSERA_DISCOVERY";
    const msg = err instanceof TesseraError ? err.message : formatError(err);
    throw new TesseraError(code, `discovery (${cfg.discovery}) failed: ${msg}`, { cause: err });
  }
}

const gib = (b: number): string => `${(b / 2 ** 30).toFixed(b % 2 ** 30 === 0 ? 0 : 1)} GiB`;

function migLine(m: MigDevice): string {
  const slots = m.placementSize === 1 ? `slice ${m.placementStart}` : `slices ${m.placementStart}-${m.placementStart + m.placementSize - 1}`;
  return `${m.name}  ${m.profileName}  ${slots}  ${gib(m.memoryBytes)}  ${m.multiprocessors} SMs  GI ${m.gpuInstanceId} CI ${m.computeInstanceId}${m.uuid ? `  ${m.uuid}` : ""}`;
}

function gpuLine(g: Gpu): string {
  const mig = g.migMode === "enabled" ? `MIG on (${g.migDevices.length})` : g.migMode === "disabled" ? "MIG off" : "no MIG";
  return `${g.name}  ${g.productName}  ${g.pciBusId}  ${gib(g.memoryBytes)}  ${mig}  ${g.uuid}`;
}

interface TreeRoot {
  name: string;
  gpus: Gpu[];
}
interface TreeNuma {
  id: number | null; // null: unknown (sysfs -1 or no NUMA information)
  cpuList: string;
  pcieRoots: TreeRoot[];
}

export function topologyTree(inv: Inventory): TreeNuma[] {
  const numa: TreeNuma[] = inv.numaNodes.map((n) => ({ id: n.id, cpuList: n.cpuList, pcieRoots: [] }));
  const unknown: TreeNuma = { id: null, cpuList: "", pcieRoots: [] };
  for (const g of inv.gpus) {
    let n = g.numaNode === undefined ? unknown : numa.find((x) => x.id === g.numaNode);
    if (!n) numa.push((n = { id: g.numaNode ?? null, cpuList: "", pcieRoots: [] }));
    const rootName = g.pcieRoot ?? "unknown root";
    let r = n.pcieRoots.find((x) => x.name === rootName);
    if (!r) n.pcieRoots.push((r = { name: rootName, gpus: [] }));
    r.gpus.push(g);
  }
  if (unknown.pcieRoots.length > 0) numa.push(unknown);
  return numa;
}

function header(inv: Inventory, cfg: NodeConfig): string[] {
  const h = inv.host;
  const host = [h.cpuModel, h.cpuCores !== undefined ? `${h.cpuCores} cores` : undefined, h.memoryBytes !== undefined ? gib(h.memoryBytes) : undefined, h.os, h.kernel ? `kernel ${h.kernel}` : undefined]
    .filter(Boolean)
    .join(", ");
  const lines = [`node ${inv.nodeName}  (${cfg.discovery})  driver ${inv.driverVersion ?? "?"}  CUDA ${inv.cudaDriverVersion ?? "?"}  GPUs ${inv.gpus.length}`];
  if (host) lines.push(`host ${host}`);
  return lines;
}

function conditionLines(inv: Inventory): string[] {
  return (inv.conditions ?? []).map((c) => `condition ${c.code}: ${c.message}`);
}

export async function runTopology(argv: string[], io: CliIO): Promise<number> {
  const { cfg, inv, format } = await discover(argv, io, "diag topology");
  const tree = topologyTree(inv);
  if (format === "json") {
    io.stdout(JSON.stringify({ node: inv.nodeName, driverVersion: inv.driverVersion, cudaDriverVersion: inv.cudaDriverVersion, host: inv.host, conditions: inv.conditions ?? [], numaNodes: tree }, null, 2) + "\n");
    return 0;
  }
  const out = [...header(inv, cfg)];
  for (const n of tree) {
    out.push(n.id === null ? "NUMA unknown" : `NUMA ${n.id}${n.cpuList ? `  cpus ${n.cpuList}` : ""}`);
    n.pcieRoots.forEach((r, ri) => {
      const lastRoot = ri === n.pcieRoots.length - 1;
      out.push(`${lastRoot ? "└─" : "├─"} ${r.name}`);
      const pad1 = lastRoot ? "   " : "│  ";
      r.gpus.forEach((g, gi) => {
        const lastGpu = gi === r.gpus.length - 1;
        out.push(`${pad1}${lastGpu ? "└─" : "├─"} ${gpuLine(g)}`);
        const pad2 = pad1 + (lastGpu ? "   " : "│  ");
        g.migDevices.forEach((m, mi) => out.push(`${pad2}${mi === g.migDevices.length - 1 ? "└─" : "├─"} ${migLine(m)}`));
      });
    });
  }
  if (inv.gpus.length === 0) out.push("(no GPUs found)");
  out.push(...conditionLines(inv));
  io.stdout(out.join("\n") + "\n");
  return 0;
}

function comparisonLines(source: string, d: SliceDiff): string[] {
  const lines = [
    `published in ${source}: ${d.published.slices} slices, ${d.published.devices} devices, pool generation ${d.published.generation}`,
    `would publish: ${d.wanted.slices} slices, ${d.wanted.devices} devices`,
  ];
  const rows = [
    ...d.devices.added.map((k) => [k, "-", "yes", "added"]),
    ...d.devices.removed.map((k) => [k, "yes", "-", "removed"]),
    ...d.devices.changed.map((k) => [k, "yes", "yes", "changed"]),
  ];
  if (rows.length > 0) lines.push(...table([["POOL/DEVICE", "PUBLISHED", "WOULD PUBLISH", "DIFF"], ...rows]).trimEnd().split("\n").map((l) => `  ${l}`));
  lines.push(`diff: ${diffSummary(d)}`);
  return lines;
}

function attr(s: ResourceSlice, i: number, key: string): string {
  const a = s.spec.devices?.[i]?.attributes?.[key];
  if (!a) return "-";
  return String(a.string ?? a.int ?? a.version ?? a.bool);
}

type Taints = ReadonlyMap<string, readonly DeviceTaint[]>;

/** With --kube (flag or $KUBE): this node's slices as published there, compared with `build` — with
 *  the taints the agent would publish to that server (effect None only from 1.35, as the agent does). */
async function publishedDiff(cfg: NodeConfig, io: CliIO, build: (generation: number, taints: Taints) => ResourceSlice[], taints: Taints): Promise<{ source: string; items: ResourceSlice[]; diff: SliceDiff }> {
  // loaded only here: client-node is heavy and plain `diag slices` does not need it
  const { openKube, parseKubeSpec } = await import("../kube/kube-source.js");
  const { sliceBackendFor } = await import("../slices/backend.js");
  const { kubeApiError } = await import("../kube/api-error.js");
  const { publishableTaints, readServerVersion } = await import("../kube/server-version.js");
  const target = await openKube(parseKubeSpec(cfg.kube), io.env);
  const backend = sliceBackendFor(target, cfg.nodeName, cfg.driverName);
  const version = target.mode === "cluster" ? await readServerVersion(target.config) : undefined;
  const forServer = publishableTaints(taints, version);
  let items: ResourceSlice[];
  try {
    items = await backend.list();
  } catch (err) {
    throw kubeApiError(err, { verb: "list", group: "resource.k8s.io", resource: "resourceslices", what: `listing the resourceslices of node ${cfg.nodeName} in ${backend.describe}` });
  }
  return { source: backend.describe, items, diff: compareSlices(items, (g) => build(g, forServer)) };
}

export async function runSlices(argv: string[], io: CliIO): Promise<number> {
  const { cfg, inv, format, args } = await discover(argv, io, "diag slices");
  // The device taints the agent keeps in the state dir (device health) are part of what it publishes.
  const taints = recordedTaints((await readHealthFile(cfg.stateDir)).file, healthTargets(inv, cfg.migMode, cfg.gpuSharing));
  const build = (generation: number, t: Taints): ResourceSlice[] =>
    buildResourceSlices(inv, { driverName: cfg.driverName, nodeName: cfg.nodeName, migMode: cfg.migMode, gpuSharing: cfg.gpuSharing, generation, ...(t.size > 0 ? { taints: t } : {}) });
  const slices = build(1, taints);
  const published = args.given.has("kube") ? await publishedDiff(cfg, io, build, taints) : undefined;
  if (format === "json") {
    const extra = published ? { published: { source: published.source, items: published.items }, diff: published.diff } : {};
    io.stdout(JSON.stringify({ apiVersion: "v1", kind: "List", metadata: {}, items: slices, ...extra }, null, 2) + "\n");
    for (const line of conditionLines(inv)) io.stderr(line + "\n"); // stdout stays pure JSON
    return 0;
  }
  const out = [...header(inv, cfg), `pool ${cfg.nodeName}  driver ${cfg.driverName}  mig-mode ${cfg.migMode}  slices ${slices.length}`];
  for (const s of slices) {
    const devs = s.spec.devices ?? [];
    const sets = s.spec.sharedCounters ?? [];
    out.push(`slice ${s.metadata.name}  generation ${s.spec.pool.generation}  ${devs.length > 0 ? `${devs.length} devices` : `${sets.length} counter sets`}`);
    for (const cs of sets) out.push(`  counters ${cs.name}: ${Object.keys(cs.counters).length}`);
    devs.forEach((d, i) => {
      const counters = d.consumesCounters?.length ? "  consumes counters" : "";
      out.push(`  ${d.name.padEnd(20)} ${attr(s, i, "type").padEnd(4)} ${attr(s, i, "profile").padEnd(11)} ${String(d.capacity?.memory?.value ?? "-").padEnd(8)} numa ${attr(s, i, "numaNode").padEnd(3)} ${attr(s, i, "resource.kubernetes.io/pcieRoot")}${counters}`);
    });
  }
  if (published) out.push(...comparisonLines(published.source, published.diff));
  out.push(...conditionLines(inv));
  io.stdout(out.join("\n") + "\n");
  return 0;
}
