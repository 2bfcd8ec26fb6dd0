// The resource.k8s.io/v1 validation rules the JSON schema does not express (the API server's own
// checks), so a slice we build is refused here, in tests, rather than by the API server at 3 a.m.
import type { ResourceSlice } from "../kube/types.js";

export const MAX_DEVICES_PER_SLICE = 128;
/** When any device in the slice consumes counters or has taints. */
export const MAX_DEVICES_PER_SLICE_WITH_COUNTERS = 64;
export const MAX_COUNTER_SETS_PER_SLICE = 8;
export const MAX_COUNTERS_PER_SET = 32;
export const MAX_ATTRIBUTES_AND_CAPACITIES = 32;
export const MAX_CONSUMES_COUNTERS_PER_DEVICE = 2;

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const C_IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,31}$/;

function qualifiedNameOk(n: string): boolean {
  const slash = n.indexOf("/");
  if (slash < 0) return C_IDENT.test(n);
  return DNS_SUBDOMAIN.test(n.slice(0, slash)) && C_IDENT.test(n.slice(slash + 1));
}

/** Problems of one slice, as "where: what" strings; [] when the API server would accept it. */
export function checkSlice(s: ResourceSlice): string[] {
  const p: string[] = [];
  const name = s.metadata.name ?? "";
  if (!DNS_SUBDOMAIN.test(name)) p.push(`metadata.name "${name}" is not a DNS subdomain`);
  const devices = s.spec.devices ?? [];
  const sets = s.spec.sharedCounters ?? [];
  if (devices.length > 0 && sets.length > 0) p.push("spec: devices and sharedCounters must be in separate slices");
  const usesCounters = devices.some((d) => (d.consumesCounters?.length ?? 0) > 0 || (d.taints?.length ?? 0) > 0);
  const limit = usesCounters ? MAX_DEVICES_PER_SLICE_WITH_COUNTERS : MAX_DEVICES_PER_SLICE;
  if (devices.length > limit) p.push(`spec.devices: ${devices.length} devices, limit ${limit}`);
  if (sets.length > MAX_COUNTER_SETS_PER_SLICE) p.push(`spec.sharedCounters: ${sets.length} sets, limit ${MAX_COUNTER_SETS_PER_SLICE}`);
  if (s.spec.pool.resourceSliceCount < 1 || s.spec.pool.generation < 0) p.push("spec.pool: bad generation or resourceSliceCount");
  const seen = new Set<string>();
  for (const cs of sets) {
    if (!DNS_LABEL.test(cs.name)) p.push(`counter set "${cs.name}" is not a DNS label`);
    const names = Object.keys(cs.counters);
    if (names.length > MAX_COUNTERS_PER_SET) p.push(`counter set ${cs.name}: ${names.length} counters, limit ${MAX_COUNTERS_PER_SET}`);
    for (const c of names) if (!DNS_LABEL.test(c)) p.push(`counter ${cs.name}/${c} is not a DNS label`);
  }
  for (const d of devices) {
    if (!DNS_LABEL.test(d.name)) p.push(`device "${d.name}" is not a DNS label`);
    if (seen.has(d.name)) p.push(`device "${d.name}" appears twice`);
    seen.add(d.name);
    const attrs = Object.keys(d.attributes ?? {});
    const caps = Object.keys(d.capacity ?? {});
    if (attrs.length + caps.length > MAX_ATTRIBUTES_AND_CAPACITIES) p.push(`device ${d.name}: ${attrs.length + caps.length} attributes+capacities, limit ${MAX_ATTRIBUTES_AND_CAPACITIES}`);
    for (const a of [...attrs, ...caps]) if (!qualifiedNameOk(a)) p.push(`device ${d.name}: "${a}" is not a valid qualified name`);
    for (const [a, v] of Object.entries(d.attributes ?? {})) {
      const set = [v.int, v.bool, v.string, v.version].filter((x) => x !== undefined).length;
      if (set !== 1) p.push(`device ${d.name}: attribute ${a} must set exactly one of int/bool/string/version`);
      if (v.version !== undefined && !/^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/.test(v.version)) {
        p.push(`device ${d.name}: attribute ${a} version "${v.version}" is not semver 2.0`);
      }
      if (v.string !== undefined && v.string.length > 64) p.push(`device ${d.name}: attribute ${a} string longer than 64`);
    }
    const cc = d.consumesCounters ?? [];
    if (cc.length > MAX_CONSUMES_COUNTERS_PER_DEVICE) p.push(`device ${d.name}: ${cc.length} consumesCounters, limit ${MAX_CONSUMES_COUNTERS_PER_DEVICE}`);
    if (new Set(cc.map((c) => c.counterSet)).size !== cc.length) p.push(`device ${d.name}: one consumesCounters entry per counter set`);
  }
  return p;
}
