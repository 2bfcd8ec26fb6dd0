// How the CLI names claims and lays out tables; shared by the claims and diag verbs.
import { TesseraError } from "../common/errors.js";
import type { ResourceClaim } from "../kube/types.js";

/** Rows of cells as aligned columns (two spaces apart), one line per row. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ").trimEnd()).join("\n") + "\n";
}

/** JSON with object keys sorted: equal for equal values, whatever order a file wrote them in. */
export function canonicalJson(v: unknown): string {
  const sort = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(sort);
    if (x === null || typeof x !== "object") return x;
    return Object.fromEntries(Object.keys(x).sort().map((k) => [k, sort((x as Record<string, unknown>)[k])]));
  };
  return JSON.stringify(sort(v) ?? null);
}

export const claimRef = (c: ResourceClaim): string => `${c.metadata.namespace ?? "default"}/${c.metadata.name}`;

export const isAllocated = (c: ResourceClaim): boolean => (c.status?.allocation?.devices?.results?.length ?? 0) > 0;

/** `<namespace>/<name>`, the one positional argument of a verb. */
export function parseRef(positionals: readonly string[], verb: string): { namespace: string; name: string } {
  const ref = positionals[0];
  const m = ref === undefined || positionals.length !== 1 ? null : /^([^/]+)\/([^/]+)$/.exec(ref);
  if (!m) throw new TesseraError("TESSERA_USAGE", `usage: tessera ${verb} <namespace>/<name>`);
  return { namespace: m[1] as string, name: m[2] as string };
}
