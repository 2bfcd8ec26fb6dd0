// CEL for DRA device selectors, on @bufbuild/cel (a conformance-tested CEL implementation in pure
// ECMAScript), extended with the Kubernetes DRA environment: the `device` variable (driver,
// attributes, capacity, allowMultipleAllocations) and the quantity()/semver() libraries.
// Compiled programs are cached by expression text; errors carry the expression and position.
import { create, createFileRegistry, type DescMessage } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FieldDescriptorProto_Label, FieldDescriptorProto_Type } from "@bufbuild/protobuf/wkt";
import { celEnv, celFunc, celMethod, CelScalar, isCelError, mapType, objectType, parse, plan, type CelEnv } from "@bufbuild/cel";
import { TesseraError } from "../common/errors.js";
import type { Device } from "../kube/types.js";
import { selectorDeps, type SelectorDeps } from "./cel-deps.js";
import { compareSemver, parseQuantityNano, parseSemver, type Semver } from "./quantity.js";

// Quantity and Semver are opaque CEL object types; one-field messages are how @bufbuild/cel models them.
const field = { name: "text", number: 1, type: FieldDescriptorProto_Type.STRING, label: FieldDescriptorProto_Label.OPTIONAL, jsonName: "text" };
const REGISTRY = createFileRegistry(
  create(FileDescriptorProtoSchema, { name: "tessera/dra-cel.proto", package: "kubernetes", syntax: "proto3", messageType: [{ name: "Quantity", field: [field] }, { name: "Semver", field: [field] }] }),
  () => undefined,
);
const QuantityDesc = REGISTRY.getMessage("kubernetes.Quantity") as DescMessage;
const SemverDesc = REGISTRY.getMessage("kubernetes.Semver") as DescMessage;
const QT = objectType(QuantityDesc);
const ST = objectType(SemverDesc);

type TextMsg = { message: { text?: string } };
const quantityValue = (text: string) => create(QuantityDesc, { text } as never);
const semverValue = (text: string) => create(SemverDesc, { text } as never);
const nanoOf = (v: unknown): bigint => {
  const text = (v as TextMsg).message.text ?? "";
  const n = parseQuantityNano(text);
  if (n === undefined) throw new Error(`invalid quantity "${text}"`);
  return n;
};
const semverOf = (v: unknown): Semver => {
  const text = (v as TextMsg).message.text ?? "";
  const s = parseSemver(text);
  if (!s) throw new Error(`invalid semver "${text}"`);
  return s;
};
const cmp = (a: bigint, b: bigint): bigint => (a < b ? -1n : a > b ? 1n : 0n);
const NANO = 1_000_000_000n;
const fromNano = (n: bigint): string => (n % NANO === 0n ? `${n / NANO}` : `${n}n`);

const FUNCS = [
  celFunc("quantity", [CelScalar.STRING], QT, (s) => {
    if (parseQuantityNano(s) === undefined) throw new Error(`quantity("${s}"): not a valid quantity`);
    return quantityValue(s);
  }),
  celFunc("isQuantity", [CelScalar.STRING], CelScalar.BOOL, (s) => parseQuantityNano(s) !== undefined),
  celMethod("compareTo", QT, [QT], CelScalar.INT, function (o) { return cmp(nanoOf(this), nanoOf(o)); }),
  celMethod("isLessThan", QT, [QT], CelScalar.BOOL, function (o) { return nanoOf(this) < nanoOf(o); }),
  celMethod("isGreaterThan", QT, [QT], CelScalar.BOOL, function (o) { return nanoOf(this) > nanoOf(o); }),
  celMethod("sign", QT, [], CelScalar.INT, function () { return cmp(nanoOf(this), 0n); }),
  celMethod("isInteger", QT, [], CelScalar.BOOL, function () { return nanoOf(this) % NANO === 0n; }),
  celMethod("asInteger", QT, [], CelScalar.INT, function () {
    const n = nanoOf(this);
    if (n % NANO !== 0n) throw new Error("asInteger: quantity is not an integer");
    return n / NANO;
  }),
  celMethod("asApproximateFloat", QT, [], CelScalar.DOUBLE, function () { return Number(nanoOf(this)) / 1e9; }),
  celMethod("add", QT, [QT], QT, function (o) { return quantityValue(fromNano(nanoOf(this) + nanoOf(o))); }),
  celMethod("sub", QT, [QT], QT, function (o) { return quantityValue(fromNano(nanoOf(this) - nanoOf(o))); }),
  celMethod("add", QT, [CelScalar.INT], QT, function (o) { return quantityValue(fromNano(nanoOf(this) + o * NANO)); }),
  celMethod("sub", QT, [CelScalar.INT], QT, function (o) { return quantityValue(fromNano(nanoOf(this) - o * NANO)); }),
  celFunc("semver", [CelScalar.STRING], ST, (s) => {
    if (!parseSemver(s)) throw new Error(`semver("${s}"): not a valid semantic version`);
    return semverValue(s);
  }),
  celFunc("isSemver", [CelScalar.STRING], CelScalar.BOOL, (s) => parseSemver(s) !== undefined),
  celMethod("compareTo", ST, [ST], CelScalar.INT, function (o) { return BigInt(compareSemver(semverOf(this), semverOf(o))); }),
  celMethod("isLessThan", ST, [ST], CelScalar.BOOL, function (o) { return compareSemver(semverOf(this), semverOf(o)) < 0; }),
  celMethod("isGreaterThan", ST, [ST], CelScalar.BOOL, function (o) { return compareSemver(semverOf(this), semverOf(o)) > 0; }),
  celMethod("major", ST, [], CelScalar.INT, function () { return semverOf(this).major; }),
  celMethod("minor", ST, [], CelScalar.INT, function () { return semverOf(this).minor; }),
  celMethod("patch", ST, [], CelScalar.INT, function () { return semverOf(this).patch; }),
];

const ENV: CelEnv = celEnv({ registry: REGISTRY, funcs: FUNCS, variables: { device: mapType(CelScalar.STRING, CelScalar.DYN) } });

/** The CEL view of one device, built once per device and reused by every selector. */
export type CelDevice = Map<string, unknown>;
type DomainMaps = Map<string, Map<string, unknown>>;

/** Groups attributes/capacity by domain: unqualified names belong to the driver's domain. */
export function celDevice(driver: string, device: Device): CelDevice {
  const attributes: DomainMaps = new Map();
  const capacity: DomainMaps = new Map();
  const put = (target: DomainMaps, name: string, value: unknown): void => {
    const slash = name.indexOf("/");
    const domain = slash < 0 ? driver : name.slice(0, slash);
    const id = slash < 0 ? name : name.slice(slash + 1);
    let m = target.get(domain);
    if (!m) target.set(domain, (m = new Map()));
    m.set(id, value);
  };
  for (const [name, a] of Object.entries(device.attributes ?? {})) {
    if (a.string !== undefined) put(attributes, name, a.string);
    else if (a.int !== undefined) put(attributes, name, BigInt(a.int));
    else if (a.bool !== undefined) put(attributes, name, a.bool);
    else if (a.version !== undefined) put(attributes, name, semverValue(a.version));
  }
  for (const [name, c] of Object.entries(device.capacity ?? {})) put(capacity, name, quantityValue(c.value));
  return new Map<string, unknown>([
    ["driver", driver],
    ["attributes", attributes],
    ["capacity", capacity],
    ["allowMultipleAllocations", device.allowMultipleAllocations === true],
  ]);
}

export type SelectorResult = boolean | { error: string };

export interface CompiledSelector {
  /** Unique per compilation (memo keys of results use it, not the expression text). */
  id: number;
  expression: string;
  /** What it reads of the device, when the expression is in the plain subset (cel-deps.ts). */
  deps: SelectorDeps | undefined;
  /** Domains named by string literals: looked up as empty maps when a device has none (as upstream). */
  domains: string[];
  evaluate(device: CelDevice): SelectorResult;
}

const cache = new Map<string, CompiledSelector | TesseraError>();
let nextId = 1;

/** Compiles (cached) a selector; throws TESSERA_CEL with `where`, the expression and the column. */
export function compileSelector(expression: string, where: string): CompiledSelector {
  let hit = cache.get(expression);
  if (!hit) {
    hit = compileUncached(expression);
    if (cache.size > 4096) cache.clear(); // bounded: claims come from users
    cache.set(expression, hit);
  }
  if (hit instanceof TesseraError) throw new TesseraError("TESSERA_CEL", `${where}: ${hit.message}`);
  return hit;
}

export function celCacheSize(): number {
  return cache.size;
}

function compileUncached(expression: string): CompiledSelector | TesseraError {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(expression);
  } catch (err) {
    const loc = (err as { location?: { start?: { line: number; column: number } } }).location?.start;
    const msg = (err as Error).message.replace(/^<input>:\d+:\d+: /, "");
    return new TesseraError("TESSERA_CEL", `CEL syntax error at line ${loc?.line ?? 1}, column ${loc?.column ?? 1} of \`${expression}\`: ${msg}`);
  }
  const program = plan(ENV, parsed);
  const positions = parsed.sourceInfo?.positions ?? {};
  // positions are offsets into the whole expression; multi-line selectors (YAML `|` blocks) need
  // the line too, reported like syntax errors
  const where = (id: bigint | undefined): string => {
    const offset = id === undefined ? undefined : positions[String(id)];
    if (offset === undefined) return "";
    const before = expression.slice(0, offset).split("\n");
    return ` at line ${before.length}, column ${(before[before.length - 1]?.length ?? 0) + 1}`;
  };
  const domains = [...expression.matchAll(/(?:attributes|capacity)\[\s*(?:"([^"\\]*)"|'([^'\\]*)')\s*\]/g)].map((m) => m[1] ?? m[2] ?? "");
  const evaluate = (device: CelDevice): SelectorResult => {
    for (const key of ["attributes", "capacity"]) {
      const maps = device.get(key) as DomainMaps;
      for (const d of domains) if (!maps.has(d)) maps.set(d, new Map());
    }
    let r: unknown;
    try {
      r = program({ device: device as never });
    } catch (err) {
      return { error: (err as Error).message };
    }
    if (isCelError(r)) return { error: `${r.message}${where(r.exprId)}` };
    if (typeof r !== "boolean") return { error: `the expression must evaluate to a bool, got ${typeof r === "bigint" ? "int" : typeof r}` };
    return r;
  };
  // Type check by probing: an empty device exposes operator/function misuse that no device can fix.
  const probe = evaluate(new Map<string, unknown>([["driver", ""], ["attributes", new Map()], ["capacity", new Map()], ["allowMultipleAllocations", false]]));
  if (typeof probe !== "boolean" && /no matching overload|must evaluate to a bool|unknown function|not a valid/.test(probe.error)) {
    return new TesseraError("TESSERA_CEL", `CEL type error in \`${expression}\`: ${probe.error}`);
  }
  return { id: nextId++, expression, deps: selectorDeps(expression), domains, evaluate };
}

/** Drops every compiled expression (benchmarks measure the cold path with it). */
export function clearCelCache(): void {
  cache.clear();
}
