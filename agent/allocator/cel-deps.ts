// What a DRA selector reads of its `device`, found from the expression's text, so the allocator can
// memoize a selector's result by exactly those values (a key of a few short strings) instead of by
// device object (missed by every freshly parsed input) or by the whole device's content (a JSON
// text of every attribute: slower than evaluating). Only a plain subset is recognised: every use
// of the variable `device` must be `device.driver`, `device.allowMultipleAllocations`, or
// `device.attributes|capacity["<domain>"].<name>` / `["<domain>"]["<name>"]` not followed by a
// call; string literals without escapes; no comments. Anything else (a whole map used, a macro
// over the device, an escape) gives undefined and the caller evaluates every device as before.
import type { Device } from "../kube/types.js";

export interface SelectorPath {
  kind: "attributes" | "capacity";
  domain: string;
  name: string;
}

export interface SelectorDeps {
  paths: SelectorPath[];
}

const IDENT = /[A-Za-z_][A-Za-z0-9_]*/y;

/** The device paths `expression` reads, or undefined when it is outside the recognised subset. */
export function selectorDeps(expression: string): SelectorDeps | undefined {
  if (/[\u0001\u0002]/.test(expression) || expression.includes("\\") || expression.includes("//") || expression.includes('"""') || expression.includes("'''")) return undefined;
  // string literals -> placeholders (their text must not be read as code); their contents kept
  const literals: string[] = [];
  const code = expression.replace(/"([^"\n]*)"|'([^'\n]*)'/g, (_m, a: string | undefined, b: string | undefined) => {
    literals.push(a ?? b ?? "");
    return ` \u0001${literals.length - 1}\u0002 `;
  });
  if (/["']/.test(code)) return undefined;
  const paths: SelectorPath[] = [];
  const use = /(^|[^A-Za-z0-9_.])device(?![A-Za-z0-9_])/g;
  for (let m = use.exec(code); m; m = use.exec(code)) {
    const at = m.index + (m[1] as string).length + "device".length;
    const rest = code.slice(at);
    const plain = /^\s*\.\s*(driver|allowMultipleAllocations)(?![A-Za-z0-9_])\s*(?!\s*\()/.exec(rest);
    if (plain) continue; // the driver is part of every key; allowMultipleAllocations too
    const p = /^\s*\.\s*(attributes|capacity)\s*\[\s*\u0001(\d+)\u0002\s*\]\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*\u0001(\d+)\u0002\s*\])/.exec(rest);
    if (!p) return undefined;
    const after = rest.slice(p[0].length);
    if (/^\s*\(/.test(after)) return undefined; // `.size()`-style: a method on the whole domain map
    const name = p[3] ?? literals[Number(p[4])];
    const domain = literals[Number(p[2])];
    if (name === undefined || domain === undefined) return undefined;
    if (p[3] !== undefined) {
      IDENT.lastIndex = 0;
      if (!IDENT.test(p[3])) return undefined;
    }
    paths.push({ kind: p[1] as SelectorPath["kind"], domain, name });
  }
  return { paths };
}

/** One length-prefixed part of a key: no value can fake a boundary. */
const part = (s: string): string => `${s.length}:${s}`;

/** An own entry as key text ("-" when absent), exactly what the CEL view takes of it (celDevice:
 *  an attribute's first set field of string, int, bool, version; a capacity's value). */
function entry(kind: SelectorPath["kind"], map: Record<string, unknown> | undefined, name: string): string {
  if (!map || !Object.hasOwn(map, name)) return "-";
  const e = map[name] as { string?: string; int?: number; bool?: boolean; version?: string; value?: string } | null;
  if (typeof e !== "object" || e === null) return "?";
  if (kind === "capacity") return e.value === undefined ? "q" : `q${part(String(e.value))}`;
  if (e.string !== undefined) return `s${part(String(e.string))}`;
  if (e.int !== undefined) return `i${String(e.int)}`;
  if (e.bool !== undefined) return `b${String(e.bool)}`;
  if (e.version !== undefined) return `v${part(String(e.version))}`;
  return "0";
}

/** The memo key of selector `id` on a device: its driver, allowMultipleAllocations and the raw
 *  entries of every path it reads (the qualified name and, in the driver's own domain, the short
 *  name: both feed the CEL view, so both are in the key). */
export function depsKey(id: number, deps: SelectorDeps, driver: string, device: Device): string {
  let key = `${id}|${part(driver)}|${device.allowMultipleAllocations === true ? 1 : 0}`;
  for (const p of deps.paths) {
    const map = (p.kind === "attributes" ? device.attributes : device.capacity) as Record<string, unknown> | undefined;
    key += `|${entry(p.kind, map, `${p.domain}/${p.name}`)}`;
    if (p.domain === driver) key += `|${entry(p.kind, map, p.name)}`;
  }
  return key;
}
