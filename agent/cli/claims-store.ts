// `tessera claims get <ns>/<name>`, `claims list [-n <ns>]`, `claims delete <ns>/<name>`: read
// and remove the claims of a standalone store (--kube standalone:<dir>), -o table|json.
import { outputFormat, parseFlags, str, VERB_FLAGS, type ParsedArgs } from "../common/config.js";
import { TesseraError } from "../common/errors.js";
import { parseKubeSpec } from "../kube/kube-source.js";
import { createStandaloneStore, type StandaloneStore } from "../kube/standalone-store.js";
import type { ResourceClaim } from "../kube/types.js";
import type { CliIO } from "./io.js";
import { claimRef, isAllocated, parseRef, table } from "./view.js";

type StoreVerb = "claims get" | "claims list" | "claims delete";

function open(argv: string[], io: CliIO, verb: StoreVerb): { args: ParsedArgs; store: StandaloneStore; format: "table" | "json" } {
  const args = parseFlags(argv, VERB_FLAGS[verb], io.env);
  const format = outputFormat(args);
  const spec = parseKubeSpec(str(args, "kube"));
  if (spec.mode !== "standalone") {
    throw new TesseraError("TESSERA_USAGE", `tessera ${verb} reads a standalone store only (--kube standalone:<dir>); in a cluster use \`kubectl ${verb.split(" ")[1]} resourceclaims\``);
  }
  return { args, store: createStandaloneStore(spec.dir), format };
}

async function getOrFail(store: StandaloneStore, ns: string, name: string): Promise<ResourceClaim> {
  const claim = await store.getClaim(ns, name);
  if (!claim) throw new TesseraError("TESSERA_NOT_FOUND", `ResourceClaim ${ns}/${name} is not in ${store.dir}; \`tessera claims list --kube standalone:${store.dir}\` shows what is there`);
  return claim;
}

const devicesOf = (c: ResourceClaim): string => (c.status?.allocation?.devices?.results ?? []).map((r) => r.device).join(",") || "-";

function rows(claims: readonly ResourceClaim[]): string {
  return table([
    ["NAMESPACE", "NAME", "STATE", "DEVICES", "UID", "CREATED"],
    ...claims.map((c) => [c.metadata.namespace ?? "default", c.metadata.name ?? "", isAllocated(c) ? "allocated" : "pending", devicesOf(c), c.metadata.uid ?? "-", c.metadata.creationTimestamp ?? "-"]),
  ]);
}

export async function runGet(argv: string[], io: CliIO): Promise<number> {
  const { args, store, format } = open(argv, io, "claims get");
  const ref = parseRef(args.positionals, "claims get");
  const claim = await getOrFail(store, ref.namespace, ref.name);
  if (format === "json") {
    io.stdout(JSON.stringify(claim, null, 2) + "\n");
    return 0;
  }
  io.stdout(rows([claim]));
  for (const r of claim.status?.allocation?.devices?.results ?? []) io.stdout(`  ${r.request} -> ${r.driver}/${r.pool}/${r.device}\n`);
  return 0;
}

export async function runList(argv: string[], io: CliIO): Promise<number> {
  const { args, store, format } = open(argv, io, "claims list");
  if (args.positionals.length > 0) throw new TesseraError("TESSERA_USAGE", `unexpected argument ${args.positionals[0]}; use -n <namespace>`);
  const ns = args.values.namespace;
  const claims = (await store.listClaims()).filter((c) => typeof ns !== "string" || (c.metadata.namespace ?? "default") === ns);
  if (format === "json") {
    io.stdout(JSON.stringify({ apiVersion: "v1", kind: "List", metadata: {}, items: claims }, null, 2) + "\n");
    return 0;
  }
  io.stdout(claims.length > 0 ? rows(claims) : `no ResourceClaims in ${store.dir}${typeof ns === "string" ? ` (namespace ${ns})` : ""}\n`);
  return 0;
}

export async function runDelete(argv: string[], io: CliIO): Promise<number> {
  const { args, store, format } = open(argv, io, "claims delete");
  const ref = parseRef(args.positionals, "claims delete");
  const claim = await getOrFail(store, ref.namespace, ref.name);
  await store.deleteClaim(ref.namespace, ref.name);
  const name = claimRef(claim);
  io.stdout(format === "json" ? JSON.stringify({ claim: name, uid: claim.metadata.uid, deleted: true }) + "\n" : `claim ${name} (uid ${claim.metadata.uid ?? "?"}) deleted\n`);
  return 0;
}
