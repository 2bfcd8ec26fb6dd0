// Kubernetes resource.Quantity strings in canonical form. The API server stores quantities
// canonically; writing "85899345920" and reading back "80Gi" would look like a change on every
// reconcile and republish forever, so we emit the canonical string ourselves.

const BINARY: [string, number][] = [
  ["Ei", 2 ** 60],
  ["Pi", 2 ** 50],
  ["Ti", 2 ** 40],
  ["Gi", 2 ** 30],
  ["Mi", 2 ** 20],
  ["Ki", 2 ** 10],
];

/** Bytes as a BinarySI quantity: the largest power-of-1024 suffix that divides exactly ("81559Mi", "80Gi"). */
export function bytesQuantity(bytes: number): string {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`bytes must be a non-negative integer, got ${bytes}`);
  if (bytes === 0) return "0";
  for (const [suffix, factor] of BINARY) if (bytes % factor === 0) return `${bytes / factor}${suffix}`;
  return decimalQuantity(bytes);
}

const DECIMAL: [string, number][] = [
  ["E", 1e18],
  ["P", 1e15],
  ["T", 1e12],
  ["G", 1e9],
  ["M", 1e6],
  ["k", 1e3],
];

/** A count as a DecimalSI quantity (1000 is canonically "1k"). */
export function decimalQuantity(n: number): string {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`quantity must be a non-negative integer, got ${n}`);
  if (n === 0) return "0";
  for (const [suffix, factor] of DECIMAL) if (n % factor === 0) return `${n / factor}${suffix}`;
  return String(n);
}

/** "9.0" -> "9.0.0", "580.105.08" -> "580.105.8": semver 2.0 for DRA `version` attributes; undefined if not numeric. */
export function semver(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  const m = /^(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(v.trim());
  if (!m) return undefined;
  return [m[1], m[2] ?? "0", m[3] ?? "0"].map((x) => String(Number(x))).join(".");
}
