// `tessera claims apply -f <file>` (standalone store: validate, allocate on this node, store with
// status.allocation) and `tessera diag explain -f <file>` (dry run: which devices, or why not).
// Both read YAML or JSON, a ResourceClaim or a ResourceClaimTemplate.
import { randomUUID } from "node:crypto";
import { promises as fsp } from "node:fs";
import * as k8s from "@kubernetes/client-node";
import { parseDocument } from "yaml";
import { NODE_FLAGS, OUTPUT_FLAG, outputFormat, parseFlags, resolveNodeConfig, str, type FlagSpec, type NodeConfig } from "../common/config.js";
import { kubeApiError } from "../kube/api-error.js";
import { TesseraError } from "../common/errors.js";
import { allocateClaim, STAGE_NAMES, validateClaim, type AllocateOutput, type RequestReport, type Strategy } from "../allocator/index.js";
import { discoverNodeSlices } from "../allocator/node-slices.js";
import { openKube, parseKubeSpec } from "../kube/kube-source.js";
import type { DeviceClass, ResourceClaim, ResourceSlice } from "../kube/types.js";
import type { CliIO } from "./io.js";

const FLAGS: readonly FlagSpec[] = [
  ...NODE_FLAGS,
  OUTPUT_FLAG,
  { name: "filename", short: "f", type: "string", help: "claim file (YAML or JSON)" },
  { name: "strategy", type: "string", env: "ALLOCATION_STRATEGY", default: "first-fit", help: "first-fit | best-fit" },
];

interface World {
  slices: ResourceSlice[];
  deviceClasses: DeviceClass[];
  allocatedClaims: ResourceClaim[];
  source: string;
}

/** Reads a claim (or the claim of a template) from YAML/JSON; one clear error when it is not one. */
export async function readClaimFile(file: string): Promise<ResourceClaim> {
  let text: string;
  try {
    text = await fsp.readFile(file, "utf8");
  } catch (err) {
    throw new TesseraError("TESSERA_INPUT", `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? "error"}`, { cause: err });
  }
  const doc = parseDocument(text, { prettyErrors: false });
  const first = doc.errors[0];
  if (first) {
    const before = text.slice(0, first.pos[0]).split("\n");
    const where = `${before.length}:${(before[before.length - 1]?.length ?? 0) + 1}`;
    throw new TesseraError("TESSERA_INPUT", `${file}:${where}: not valid YAML/JSON: ${first.message.split("\n")[0]}`);
  }
  const obj = doc.toJS() as Record<string, unknown> | null;
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) throw new TesseraError("TESSERA_INPUT", `${file}: expected a ResourceClaim object`);
  if (obj.kind === "ResourceClaimTemplate") {
    const meta = (obj.metadata ?? {}) as Record<string, unknown>;
    const spec = ((obj.spec ?? {}) as Record<string, unknown>).spec ?? {};
    return { apiVersion: obj.apiVersion as "resource.k8s.io/v1", kind: "ResourceClaim", metadata: { name: meta.name as string, namespace: meta.namespace as string | undefined }, spec: spec as ResourceClaim["spec"] };
  }
  if (obj.kind !== "ResourceClaim") throw new TesseraError("TESSERA_INPUT", `${file}: kind is ${String(obj.kind)}, expected ResourceClaim or ResourceClaimTemplate`);
  return obj as unknown as ResourceClaim;
}

function strategyOf(v: string): Strategy {
  if (v !== "first-fit" && v !== "best-fit") throw new TesseraError("TESSERA_USAGE", `--strategy ${v}: expected first-fit or best-fit`);
  return v;
}

const allocated = (c: ResourceClaim): boolean => (c.status?.allocation?.devices?.results?.length ?? 0) > 0;

/** Store slices for this node when the agent published some, else this node's discovery. */
async function nodeSlices(config: NodeConfig, stored: ResourceSlice[]): Promise<{ slices: ResourceSlice[]; source: string }> {
  const mine = stored.filter((s) => s.spec?.nodeName === config.nodeName && s.spec.driver === config.driverName);
  if (mine.length > 0) return { slices: stored, source: "store" };
  return { slices: [...stored, ...(await discoverNodeSlices(config))], source: `discovery ${config.discovery}` };
}

async function loadWorld(config: NodeConfig): Promise<World> {
  const target = openKube(parseKubeSpec(config.kube));
  if (target.mode === "standalone") {
    const s = target.store;
    const { slices, source } = await nodeSlices(config, await s.listSlices());
    return { slices, deviceClasses: await s.listDeviceClasses(), allocatedClaims: (await s.listClaims()).filter(allocated), source };
  }
  const api = target.config.makeApiClient(k8s.CustomObjectsApi);
  const list = async <T>(plural: string, fieldSelector?: string): Promise<T[]> => {
    try {
      const r = (await api.listClusterCustomObject({ group: "resource.k8s.io", version: "v1", plural, ...(fieldSelector ? { fieldSelector } : {}) })) as { items?: T[] };
      return r.items ?? [];
    } catch (err) {
      throw kubeApiError(err, { verb: "list", group: "resource.k8s.io", resource: plural, what: `listing ${plural}` });
    }
  };
  const slices = await list<ResourceSlice>("resourceslices", `spec.nodeName=${config.nodeName}`);
  const claims = await list<ResourceClaim>("resourceclaims");
  return { slices, deviceClasses: await list<DeviceClass>("deviceclasses"), allocatedClaims: claims.filter(allocated), source: "cluster" };
}

function stageTable(requests: RequestReport[]): string {
  const rows = [["REQUEST", "CLASS", "NEED", "CLASS-SEL", "REQ-SEL", "FREE", "UNTAINTED", "TOGETHER"]];
  for (const r of requests) for (const a of r.alternatives) {
    const s = a.stages;
    rows.push([a.name, a.deviceClassName, String(a.need), ...STAGE_NAMES.map((k) => String(s[k]))]);
  }
  const w = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows.map((r) => r.map((c, i) => c.padEnd(w[i] ?? 0)).join("  ").trimEnd()).join("\n") + "\n";
}

function render(io: CliIO, format: "table" | "json", claim: ResourceClaim, config: NodeConfig, strategy: Strategy, out: AllocateOutput, extra: Record<string, unknown> = {}): void {
  const name = `${claim.metadata.namespace ?? "default"}/${claim.metadata.name}`;
  if (format === "json") {
    const body = out.ok
      ? { claim: name, node: config.nodeName, strategy, fits: true, devices: out.devices, requests: out.requests, ...extra }
      : { claim: name, node: config.nodeName, strategy, fits: false, explanation: out.explanation, ...extra };
    io.stdout(JSON.stringify(body, null, 2) + "\n");
    return;
  }
  if (out.ok) {
    io.stdout(`claim ${name} fits on node ${config.nodeName} (${strategy}):\n`);
    const rows = [["REQUEST", "DEVICE", "POOL"], ...out.devices.map((d) => [d.request, d.device, d.pool])];
    const w = [0, 1, 2].map((i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
    io.stdout(rows.map((r) => r.map((c, i) => c.padEnd(w[i] ?? 0)).join("  ").trimEnd()).join("\n") + "\n");
  } else {
    io.stdout(`claim ${name} does not fit on node ${config.nodeName}: ${out.explanation.message}\n`);
    if (out.explanation.requests.length > 0) io.stdout("devices passing each stage:\n" + stageTable(out.explanation.requests));
  }
}

async function prepare(argv: string[], io: CliIO): Promise<{ config: NodeConfig; format: "table" | "json"; strategy: Strategy; claim: ResourceClaim; file: string }> {
  const args = parseFlags(argv, FLAGS, io.env);
  const format = outputFormat(args);
  const file = args.values.filename;
  if (typeof file !== "string" || file === "") throw new TesseraError("TESSERA_USAGE", "-f <claim.yaml> is required");
  const config = resolveNodeConfig(args);
  return { config, format, strategy: strategyOf(str(args, "strategy")), claim: await readClaimFile(file), file };
}

/** Which error code a failed allocation maps to. */
function failureError(out: Extract<AllocateOutput, { ok: false }>): TesseraError {
  const e = out.explanation;
  const code = e.reason === "cel-error" ? "TESSERA_CEL" : e.reason === "search-budget" ? "TESSERA_ALLOCATION_LIMIT" : "TESSERA_UNSATISFIABLE";
  return new TesseraError(code, e.message);
}

export async function runExplain(argv: string[], io: CliIO): Promise<number> {
  const { config, format, strategy, claim } = await prepare(argv, io);
  const world = await loadWorld(config);
  const out = allocateClaim({ ...world, claim, strategy, nodeName: config.nodeName });
  if (!out.ok && out.explanation.reason === "cel-error") throw failureError(out);
  render(io, format, claim, config, strategy, out, { slices: world.source });
  return 0;
}

export async function runApply(argv: string[], io: CliIO): Promise<number> {
  const { config, format, strategy, claim } = await prepare(argv, io);
  const target = openKube(parseKubeSpec(config.kube));
  if (target.mode !== "standalone") throw new TesseraError("TESSERA_USAGE", "claims apply works on a standalone store only (--kube standalone:<dir>); in a cluster the scheduler allocates");
  // metadata is read below to look up the store: a claim without one must fail validation, not crash
  validateClaim(claim);
  const store = target.store;
  const ns = claim.metadata.namespace ?? "default";
  const existing = await store.getClaim(ns, claim.metadata.name ?? "");
  if (existing && allocated(existing)) {
    throw new TesseraError("TESSERA_VALIDATION", `ResourceClaim ${ns}/${claim.metadata.name} is already allocated in ${store.dir}; delete it before applying again`);
  }
  const world = await loadWorld(config);
  const uid = claim.metadata.uid ?? randomUUID();
  const toAllocate: ResourceClaim = { ...claim, metadata: { ...claim.metadata, namespace: ns, uid } };
  delete toAllocate.status;
  const out = allocateClaim({ ...world, claim: toAllocate, strategy, nodeName: config.nodeName });
  if (!out.ok) throw failureError(out);
  const stored: ResourceClaim = {
    ...toAllocate,
    metadata: { ...toAllocate.metadata, creationTimestamp: toAllocate.metadata.creationTimestamp ?? new Date().toISOString() },
    status: { allocation: out.allocation },
  };
  await store.putClaim(stored);
  render(io, format, stored, config, strategy, out, { uid });
  return 0;
}
