// Kubernetes resource.Quantity and semantic versions as exact values, for CEL (`quantity()`,
// `semver()`), capacity request policies and counter sums. Quantities are held as bigint nano-units
// (the API's smallest scale), so "80Gi", "85899345920" and "81920Mi" compare equal.
import { TesseraError } from "../common/errors.js";

const BINARY: Record<string, bigint> = { Ki: 1n << 10n, Mi: 1n << 20n, Gi: 1n << 30n, Ti: 1n << 40n, Pi: 1n << 50n, Ei: 1n << 60n };
const DECIMAL_EXP: Record<string, number> = { n: -9, u: -6, m: -3, "": 0, k: 3, M: 6, G: 9, T: 12, P: 15, E: 18 };
const QTY_RE = /^([+-]?)(\d+(?:\.\d*)?|\.\d+)(?:(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE]([+-]?\d+))?$/;
const NANO = 1_000_000_000n;

const memo = new Map<string, bigint | undefined>();

/** Parses a quantity to nano-units (rounded up below 1n, as the API server rounds). Undefined if malformed. */
export function parseQuantityNano(text: string): bigint | undefined {
  if (memo.has(text)) return memo.get(text);
  const v = parseUncached(text);
  if (memo.size > 10_000) memo.clear(); // quantities on a node are a small set; bound it anyway
  memo.set(text, v);
  return v;
}

function parseUncached(text: string): bigint | undefined {
  const m = QTY_RE.exec(text.trim());
  if (!m) return undefined;
  const [, sign, num = "", suffix, exp] = m;
  const [intPart = "", fracPart = ""] = num.split(".");
  let digits = BigInt((intPart || "0") + fracPart);
  let scale = -fracPart.length; // value = digits * 10^scale
  let mult = 1n;
  if (suffix !== undefined && suffix in BINARY) mult = BINARY[suffix] as bigint;
  else if (suffix !== undefined) scale += DECIMAL_EXP[suffix] ?? 0;
  else if (exp !== undefined) scale += Number(exp);
  if (Math.abs(scale) > 40) return undefined;
  digits *= mult;
  scale += 9; // to nano
  let nano: bigint;
  if (scale >= 0) nano = digits * 10n ** BigInt(scale);
  else {
    const div = 10n ** BigInt(-scale);
    nano = (digits + div - 1n) / div;
  }
  return sign === "-" ? -nano : nano;
}

export function quantityNano(text: string, where: string): bigint {
  const v = parseQuantityNano(text);
  if (v === undefined) throw new TesseraError("TESSERA_VALIDATION", `${where}: "${text}" is not a valid quantity (e.g. 80Gi, 500m, 4)`);
  return v;
}

/** Canonical-ish text of a nano quantity, for results (`consumedCapacity`): binary suffix when exact. */
export function formatQuantity(nano: bigint): string {
  if (nano % NANO !== 0n) {
    if (nano % 1_000_000n === 0n) return `${nano / 1_000_000n}m`;
    return `${nano}n`;
  }
  const v = nano / NANO;
  if (v === 0n) return "0";
  for (const [suffix, m] of Object.entries(BINARY).reverse()) {
    if (v % m === 0n) return `${v / m}${suffix}`;
  }
  return `${v}`;
}

export interface Semver {
  major: bigint;
  minor: bigint;
  patch: bigint;
  pre: string[];
}

const SEMVER_RE = /^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$/;

export function parseSemver(text: string): Semver | undefined {
  const m = SEMVER_RE.exec(text);
  if (!m) return undefined;
  return { major: BigInt(m[1] ?? 0), minor: BigInt(m[2] ?? 0), patch: BigInt(m[3] ?? 0), pre: m[4] ? m[4].split(".") : [] };
}

/** semver.org precedence: -1, 0, 1. Build metadata is ignored. */
export function compareSemver(a: Semver, b: Semver): number {
  for (const k of ["major", "minor", "patch"] as const) {
    if (a[k] !== b[k]) return a[k] < b[k] ? -1 : 1;
  }
  if (a.pre.length === 0 || b.pre.length === 0) return a.pre.length === b.pre.length ? 0 : a.pre.length === 0 ? 1 : -1;
  for (let i = 0; i < Math.max(a.pre.length, b.pre.length); i++) {
    const x = a.pre[i];
    const y = b.pre[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const xn = /^\d+$/.test(x);
    const yn = /^\d+$/.test(y);
    if (xn && yn) {
      const d = BigInt(x) - BigInt(y);
      if (d !== 0n) return d < 0n ? -1 : 1;
    } else if (xn !== yn) return xn ? -1 : 1;
    else if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/** Normalized text, used to intern version attributes for matchAttribute (build metadata dropped). */
export function semverKey(v: Semver): string {
  return `${v.major}.${v.minor}.${v.patch}${v.pre.length ? "-" + v.pre.join(".") : ""}`;
}
