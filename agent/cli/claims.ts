// `tessera claims apply -f <file>` (standalone store: validate, allocate on this node, store with
// status.allocation; an identical claim again is "unchanged") and `tessera diag explain -f <file>`
// (dry run: which devices, or why not). Both read YAML or JSON, ResourceClaims or
// ResourceClaimTemplates, one result per document (claim-input.ts).
import { randomUUID } from "node:crypto";
import { outputFormat, parseFlags, resolveNodeConfig, str, VERB_FLAGS, type NodeConfig } from "../common/config.js";
import { formatError, TesseraError } from "../common/errors.js";
import { kubeApiError } from "../kube/api-error.js";
import { allocateClaim, STAGE_NAMES, validateClaim, type AllocateOutput, type RequestReport, type Strategy } from "../allocator/index.js";
import { discoverNodeSlices } from "../allocator/node-slices.js";
import { loadClientNode } from "../kube/client-node.js";
import { openKube, parseKubeSpec } from "../kube/kube-source.js";
import type { StandaloneStore } from "../kube/standalone-store.js";
import type { DeviceClass, ResourceClaim, ResourceSlice } from "../kube/types.js";
import { allocationSharing, checkClaimConfigs, describeSharing } from "../sharing/config.js";
import { inDocument, readClaimDocs, type ClaimDoc } from "./claim-input.js";
import { canonicalJson, claimRef, isAllocated, table } from "./view.js";
import type { CliIO } from "./io.js";

interface World {
  slices: ResourceSlice[];
  deviceClasses: DeviceClass[];
  allocatedClaims: ResourceClaim[];
  source: string;
}

function strategyOf(v: string): Strategy {
  if (v !== "first-fit" && v !== "best-fit") throw new TesseraError("TESSERA_USAGE", `--strategy ${v}: expected first-fit or best-fit`);
  return v;
}

/** Store slices for this node when the agent published some, else this node's discovery. */
async function nodeSlices(config: NodeConfig, stored: ResourceSlice[]): Promise<{ slices: ResourceSlice[]; source: string }> {
  const mine = stored.filter((s) => s.spec?.nodeName === config.nodeName && s.spec.driver === config.driverName);
  if (mine.length > 0) return { slices: stored, source: "store" };
  return { slices: [...stored, ...(await discoverNodeSlices(config))], source: `discovery ${config.discovery}` };
}

async function loadWorld(config: NodeConfig, env: NodeJS.ProcessEnv): Promise<World> {
  const target = await openKube(parseKubeSpec(config.kube), env);
  if (target.mode === "standalone") {
    const s = target.store;
    const { slices, source } = await nodeSlices(config, await s.listSlices());
    return { slices, deviceClasses: await s.listDeviceClasses(), allocatedClaims: (await s.listClaims()).filter(isAllocated), source };
  }
  const api = target.config.makeApiClient((await loadClientNode()).CustomObjectsApi);
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
  return { slices, deviceClasses: await list<DeviceClass>("deviceclasses"), allocatedClaims: claims.filter(isAllocated), source: "cluster" };
}

function stageTable(requests: RequestReport[]): string {
  const rows = [["REQUEST", "CLASS", "NEED", "CLASS-SEL", "REQ-SEL", "FREE", "UNTAINTED", "TOGETHER"]];
  for (const r of requests) for (const a of r.alternatives) {
    const s = a.stages;
    rows.push([a.name, a.deviceClassName, String(a.need), ...STAGE_NAMES.map((k) => String(s[k]))]);
  }
  return table(rows);
}

/** What one document produced: a JSON body and the table text. */
interface Report {
  json: Record<string, unknown>;
  text: string;
}

function report(claim: ResourceClaim, config: NodeConfig, strategy: Strategy, out: AllocateOutput, extra: Record<string, unknown> = {}): Report {
  const name = claimRef(claim);
  if (out.ok) {
    // The opaque GpuConfig each device gets, decoded as prepare will decode it (errors: TESSERA_DEVICE_CONFIG).
    const sharing = allocationSharing(out.allocation, config.driverName, name);
    const shared = (d: { request: string; device: string }): string => {
      const s = sharing.find((x) => x.request === d.request && x.device === d.device)?.sharing;
      return s ? describeSharing(s) : "-";
    };
    const rows = [["REQUEST", "DEVICE", "POOL", ...(sharing.length > 0 ? ["SHARING"] : [])], ...out.devices.map((d) => [d.request, d.device, d.pool, ...(sharing.length > 0 ? [shared(d)] : [])])];
    return {
      json: { claim: name, node: config.nodeName, strategy, fits: true, devices: out.devices, requests: out.requests, ...(sharing.length > 0 ? { sharing } : {}), ...extra },
      text: `claim ${name} fits on node ${config.nodeName} (${strategy}):\n` + table(rows),
    };
  }
  const stages = out.explanation.requests.length > 0 ? "devices passing each stage:\n" + stageTable(out.explanation.requests) : "";
  return {
    json: { claim: name, node: config.nodeName, strategy, fits: false, explanation: out.explanation, ...extra },
    text: `claim ${name} does not fit on node ${config.nodeName}: ${out.explanation.message}\n` + stages,
  };
}

/**
 * Runs `each` on every document in order: a failing document prints its one-line error on stderr
 * and the others still run. Output: the table texts, or JSON (an object for a one-document
 * file, a list otherwise). Exit 1 when any document failed.
 */
async function forEachDocument(docs: ClaimDoc[], io: CliIO, format: "table" | "json", each: (claim: ResourceClaim) => Promise<Report>): Promise<number> {
  const many = docs.length > 1;
  const bodies: Record<string, unknown>[] = [];
  let failed = false;
  for (const doc of docs) {
    try {
      if (!doc.result.ok) throw doc.result.error;
      const r = await each(doc.result.claim);
      if (format === "json") bodies.push(many ? { document: doc.index, ...r.json } : r.json);
      else io.stdout(r.text);
    } catch (err) {
      const line = formatError(inDocument(doc, many, err));
      io.stderr(line + "\n");
      if (format === "json" && many) bodies.push({ document: doc.index, error: line });
      failed = true;
    }
  }
  if (format === "json" && bodies.length > 0) io.stdout(JSON.stringify(many ? bodies : bodies[0], null, 2) + "\n");
  return failed ? 1 : 0;
}

async function prepare(argv: string[], io: CliIO, verb: "claims apply" | "diag explain"): Promise<{ config: NodeConfig; format: "table" | "json"; strategy: Strategy; docs: ClaimDoc[] }> {
  const args = parseFlags(argv, VERB_FLAGS[verb], io.env);
  const format = outputFormat(args);
  const file = args.values.filename;
  if (typeof file !== "string" || file === "") throw new TesseraError("TESSERA_USAGE", `-f <claim.yaml> is required (- reads stdin); run \`tessera ${verb} --help\``);
  if (args.positionals.length > 0) throw new TesseraError("TESSERA_USAGE", `unexpected argument ${args.positionals[0]}; run \`tessera ${verb} --help\``);
  const config = resolveNodeConfig(args);
  const strategy = strategyOf(str(args, "strategy"));
  return { config, format, strategy, docs: await readClaimDocs(file, io) };
}

/** Which of this node's devices are tainted, and by what: the words for a claim stopped at the taints stage. */
export function taintNote(slices: readonly ResourceSlice[], config: NodeConfig): string {
  const tainted: string[] = [];
  for (const s of slices) {
    if (s.spec?.nodeName !== config.nodeName || s.spec.driver !== config.driverName) continue;
    for (const d of s.spec.devices ?? []) {
      const ts = (d.taints ?? []).filter((t) => t.effect === "NoSchedule" || t.effect === "NoExecute");
      if (ts.length > 0) tainted.push(`${d.name} (${ts.map((t) => `${t.key}${t.value ? `=${t.value}` : ""}:${t.effect}`).join(", ")})`);
    }
  }
  if (tainted.length === 0) return "";
  const shown = tainted.slice(0, 8).join(", ") + (tainted.length > 8 ? ` and ${tainted.length - 8} more` : "");
  return `; the device is tainted: ${shown}; see \`tessera diag health\`, or add a toleration to the request to use it anyway`;
}

/** Which error code a failed allocation maps to. */
function failureError(out: Extract<AllocateOutput, { ok: false }>): TesseraError {
  const e = out.explanation;
  const code = e.reason === "cel-error" ? "TESSERA_CEL" : e.reason === "search-budget" ? "TESSERA_ALLOCATION_LIMIT" : "TESSERA_UNSATISFIABLE";
  return new TesseraError(code, e.message);
}

export async function runExplain(argv: string[], io: CliIO): Promise<number> {
  const { config, format, strategy, docs } = await prepare(argv, io, "diag explain");
  const world = await loadWorld(config, io.env);
  return forEachDocument(docs, io, format, async (claim) => {
    const out = allocateClaim({ ...world, claim, strategy, nodeName: config.nodeName });
    checkClaimConfigs(claim.spec?.devices?.config, config.driverName, claimRef(claim));
    if (!out.ok && out.explanation.reason === "cel-error") throw failureError(out);
    if (!out.ok && out.explanation.stage === "taints") out.explanation.message += taintNote(world.slices, config);
    return report(claim, config, strategy, out, { slices: world.source });
  });
}

export async function runApply(argv: string[], io: CliIO): Promise<number> {
  const { config, format, strategy, docs } = await prepare(argv, io, "claims apply");
  const spec = parseKubeSpec(config.kube);
  const target = spec.mode === "standalone" ? await openKube(spec, io.env) : undefined;
  if (target?.mode !== "standalone") throw new TesseraError("TESSERA_USAGE", "claims apply works on a standalone store only (--kube standalone:<dir>); in a cluster the scheduler allocates");
  const store = target.store;
  // Each document sees the allocations of those before it: the world is read again every time.
  return forEachDocument(docs, io, format, (claim) => applyOne(claim, store, config, strategy, io.env));
}

async function applyOne(claim: ResourceClaim, store: StandaloneStore, config: NodeConfig, strategy: Strategy, env: NodeJS.ProcessEnv): Promise<Report> {
  // metadata is read below to look up the store: a claim without one must fail validation, not crash
  validateClaim(claim);
  const ns = claim.metadata.namespace ?? "default";
  const name = `${ns}/${claim.metadata.name}`;
  const existing = await store.getClaim(ns, claim.metadata.name ?? "");
  if (existing && isAllocated(existing)) {
    const devices = (existing.status?.allocation?.devices?.results ?? []).map((r) => ({ request: r.request, driver: r.driver, pool: r.pool, device: r.device }));
    if (canonicalJson(existing.spec) !== canonicalJson(claim.spec)) {
      throw new TesseraError(
        "TESSERA_CLAIM_IMMUTABLE",
        `ResourceClaim ${name} in ${store.dir} is allocated (${devices.map((d) => d.device).join(", ")}) and the file changes its spec; the spec of an allocated claim cannot change (the API server refuses it too): run \`tessera claims delete ${name} --kube standalone:${store.dir}\`, then apply again`,
      );
    }
    // The same claim again: nothing to do, the stored object and its allocation stay as they are.
    const rows = [["REQUEST", "DEVICE", "POOL"], ...devices.map((d) => [d.request, d.device, d.pool])];
    return {
      json: { claim: name, node: config.nodeName, unchanged: true, uid: existing.metadata.uid, devices },
      text: `claim ${name} unchanged (uid ${existing.metadata.uid ?? "?"}, allocated):\n` + table(rows),
    };
  }
  const world = await loadWorld(config, env);
  const uid = claim.metadata.uid ?? randomUUID();
  const toAllocate: ResourceClaim = { ...claim, metadata: { ...claim.metadata, namespace: ns, uid } };
  delete toAllocate.status;
  const out = allocateClaim({ ...world, claim: toAllocate, strategy, nodeName: config.nodeName });
  checkClaimConfigs(claim.spec?.devices?.config, config.driverName, name);
  if (!out.ok) throw failureError(out);
  allocationSharing(out.allocation, config.driverName, name); // a config the devices cannot take is refused before it is stored
  const stored: ResourceClaim = {
    ...toAllocate,
    metadata: { ...toAllocate.metadata, creationTimestamp: toAllocate.metadata.creationTimestamp ?? new Date().toISOString() },
    status: { allocation: out.allocation },
  };
  await store.putClaim(stored);
  return report(stored, config, strategy, out, { uid });
}
