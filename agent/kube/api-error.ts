// Kubernetes API failures as Tessera errors. A 403 says exactly which permission is missing, in
// the words scripts match: TESSERA_KUBE_FORBIDDEN: <verb> <resource>: the service account lacks
// "<verb>" on <group>/<resource>; see docs/install.md
import { TesseraError } from "../common/errors.js";

/** HTTP status of an API error (client-node ApiException.code, or our statusCode), else undefined. */
export function statusOf(err: unknown): number | undefined {
  if (err === null || typeof err !== "object") return undefined;
  const e = err as { code?: unknown; statusCode?: unknown };
  if (typeof e.statusCode === "number") return e.statusCode;
  if (typeof e.code === "number") return e.code;
  return undefined;
}

export interface ApiCall {
  verb: "get" | "list" | "watch" | "create" | "update" | "patch" | "delete";
  /** API group; "" for the core group. */
  group: string;
  resource: string;
  /** What was being done, for the non-403 message ("reading ResourceClaim ns/name"). */
  what: string;
}

export function forbidden(call: ApiCall, cause?: unknown): TesseraError {
  const gr = `${call.group === "" ? "core" : call.group}/${call.resource}`;
  return new TesseraError("TESSERA_KUBE_FORBIDDEN", `${call.verb} ${call.resource}: the service account lacks "${call.verb}" on ${gr}; see docs/install.md`, cause === undefined ? undefined : { cause });
}

/** The Tessera error for a failed API call: TESSERA_KUBE_FORBIDDEN on 403, else TESSERA_KUBE_API. */
export function kubeApiError(err: unknown, call: ApiCall, hint = "check --kube and the API server"): TesseraError {
  if (err instanceof TesseraError) return err;
  const status = statusOf(err);
  if (status === 403) return forbidden(call, err);
  const detail = status !== undefined ? `HTTP ${status}` : ((err as Error)?.message ?? String(err)).split("\n")[0];
  return new TesseraError("TESSERA_KUBE_API", `${call.what}: ${call.verb} ${call.group ? `${call.resource}.${call.group}` : call.resource} failed (${detail}); ${hint}`, { cause: err });
}
