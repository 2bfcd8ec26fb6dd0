// Claim files for `claims apply -f` and `diag explain -f`: YAML or JSON, one or more documents,
// `-` for standard input. Checked before any allocation: a 4 MiB cap before parsing (the API
// server's own object limit is 3 MiB), YAML syntax and alias limits, and strict field
// validation (claim-schema.ts). Each document is its own result, so one bad document is
// reported without hiding the others.
import { promises as fsp } from "node:fs";
import { parseAllDocuments } from "yaml";
import { TesseraError } from "../common/errors.js";
import { formatSchemaErrors, schemaErrors } from "../kube/claim-schema.js";
import type { ResourceClaim } from "../kube/types.js";
import type { CliIO } from "./io.js";

export const MAX_INPUT_BYTES = 4 * 1024 * 1024;
/** Aliases resolved per document at most (yaml's maxAliasCount; a "billion laughs" file stops here). */
export const MAX_YAML_ALIASES = 100;

export interface ClaimDoc {
  /** 1-based position in the file. */
  index: number;
  /** `claim.yaml` for a one-document file, `claim.yaml (document 2)` otherwise. */
  where: string;
  result: { ok: true; claim: ResourceClaim } | { ok: false; error: TesseraError };
}

const tooLarge = (what: string): TesseraError =>
  new TesseraError("TESSERA_INPUT", `${what} is over ${MAX_INPUT_BYTES / 2 ** 20} MiB, more than any ResourceClaim can be (the API server's limit is 3 MiB); split the file or check that it is the right one`);

async function readStdin(io: CliIO): Promise<Buffer> {
  if (!io.stdin) throw new TesseraError("TESSERA_INPUT", "-f - reads standard input, and there is none here; pass a file name");
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of io.stdin) {
    const b = typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer);
    total += b.length;
    if (total > MAX_INPUT_BYTES) throw tooLarge("standard input");
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

async function readBounded(file: string): Promise<Buffer> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, "r");
  } catch (err) {
    throw new TesseraError("TESSERA_INPUT", `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? "error"}; check the path given to -f`, { cause: err });
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new TesseraError("TESSERA_INPUT", `${file} is a directory; -f takes a file (or - for stdin)`);
    if (st.size > MAX_INPUT_BYTES) throw tooLarge(file);
    // Not regular files (a FIFO, /dev/zero) report no size: read at most one byte past the cap.
    const buf = Buffer.alloc(MAX_INPUT_BYTES + 1);
    let n = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, null);
      if (bytesRead === 0) break;
      n += bytesRead;
      if (n > MAX_INPUT_BYTES) throw tooLarge(file);
    }
    return buf.subarray(0, n);
  } finally {
    await fh.close();
  }
}

function lineCol(text: string, offset: number): string {
  const before = text.slice(0, offset).split("\n");
  return `${before.length}:${(before[before.length - 1]?.length ?? 0) + 1}`;
}

/** A document's object → the claim it names (a template's inner claim), or why not. */
function toClaim(obj: unknown, where: string): ResourceClaim {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) throw new TesseraError("TESSERA_INPUT", `${where}: expected a ResourceClaim object`);
  const o = obj as Record<string, unknown>;
  if (o.kind !== "ResourceClaim" && o.kind !== "ResourceClaimTemplate") {
    throw new TesseraError("TESSERA_INPUT", `${where}: kind is ${String(o.kind)}, expected ResourceClaim or ResourceClaimTemplate`);
  }
  const errors = schemaErrors(o.kind, o);
  if (errors.length > 0) throw new TesseraError("TESSERA_INPUT", `${where}: ${formatSchemaErrors(errors)} (strict validation against ${o.kind} resource.k8s.io/v1, as kubectl --validate=strict; fix or remove the field)`);
  if (o.kind === "ResourceClaim") return o as unknown as ResourceClaim;
  const meta = (o.metadata ?? {}) as ResourceClaim["metadata"];
  const spec = ((o.spec ?? {}) as { spec?: ResourceClaim["spec"] }).spec ?? {};
  return { apiVersion: o.apiVersion as "resource.k8s.io/v1", kind: "ResourceClaim", metadata: { name: meta.name, namespace: meta.namespace }, spec };
}

/** Reads `-f <file|->` into one result per non-empty document; throws only when the file itself cannot be read. */
export async function readClaimDocs(file: string, io: CliIO): Promise<ClaimDoc[]> {
  const name = file === "-" ? "stdin" : file;
  const text = (file === "-" ? await readStdin(io) : await readBounded(file)).toString("utf8");
  const docs = parseAllDocuments(text, { prettyErrors: false, uniqueKeys: true });
  const parsed: { index: number; value: unknown; error?: TesseraError }[] = [];
  (Array.isArray(docs) ? docs : [docs]).forEach((doc, i) => {
    const first = doc.errors[0];
    if (first) {
      parsed.push({ index: i + 1, value: undefined, error: new TesseraError("TESSERA_INPUT", `${name}:${lineCol(text, first.pos[0])}: not valid YAML/JSON: ${first.message.split("\n")[0]}`) });
      return;
    }
    try {
      const value: unknown = doc.toJS({ maxAliasCount: MAX_YAML_ALIASES });
      if (value !== null && value !== undefined) parsed.push({ index: i + 1, value });
    } catch (err) {
      // yaml throws a ReferenceError for alias bombs and unresolvable aliases: bad input, not a bug.
      const why = err instanceof Error ? err.message : String(err);
      parsed.push({ index: i + 1, value: undefined, error: new TesseraError("TESSERA_INPUT", `${name} document ${i + 1}: ${why} (more than ${MAX_YAML_ALIASES} aliases resolved, or an alias without anchor); write the values out`, { cause: err }) });
    }
  });
  if (parsed.length === 0) throw new TesseraError("TESSERA_INPUT", `${name} holds no document; expected a ResourceClaim or ResourceClaimTemplate`);
  const many = parsed.length > 1;
  return parsed.map((p) => {
    const where = many ? `${name} (document ${p.index})` : name;
    if (p.error) return { index: p.index, where, result: { ok: false, error: p.error } };
    try {
      return { index: p.index, where, result: { ok: true, claim: toClaim(p.value, where) } };
    } catch (err) {
      return { index: p.index, where, result: { ok: false, error: err as TesseraError } };
    }
  });
}

/** An error about one document of several names the document; a one-document file keeps the plain message. */
export function inDocument(doc: ClaimDoc, many: boolean, err: unknown): unknown {
  if (!many || !(err instanceof TesseraError) || err.message.startsWith(doc.where)) return err;
  return new TesseraError(err.code, `${doc.where}: ${err.message}`, { cause: err });
}
