// Turns slices, classes, allocated claims and a validated claim into the flat problem the WASM
// search reads: devices in scheduler order (pools by driver/name, slices as listed, devices as
// listed), per alternative stage bitmaps (CEL evaluated here), counters and capacities as
// integers, constraint attributes interned to small ints.
import { TesseraError } from "../common/errors.js";
import type { Device, DeviceClass, DeviceToleration, ResourceClaim, ResourceSlice } from "../kube/types.js";
import { depsKey } from "./cel-deps.js";
import { celDevice, compileSelector, type CelDevice, type CompiledSelector } from "./cel-env.js";
import { parseQuantityNano } from "./quantity.js";
import type { NormAlternative, NormRequest } from "./types.js";

export interface DeviceRef {
  driver: string;
  pool: string;
  device: Device;
}

export interface Problem {
  devices: DeviceRef[];
  requests: NormRequest[];
  alts: NormAlternative[];
  classes: DeviceClass[]; // per alt
  reqAltStart: number[];
  /** [alt][stage bitmap][device] as booleans; the bridge packs them. */
  bits: Uint8Array[][];
  /** First CEL runtime error message per alt and device, for R_CEL_ERROR. */
  celErrors: Map<string, string>;
  inUse: Uint8Array;
  multi: Uint8Array;
  /** Multi-allocatable devices another claim already shares (their counters are paid). */
  multiUsed: Uint8Array;
  capEntries: { dev: number; name: string; total: bigint; used: bigint }[];
  devCapStart: number[];
  devCapCount: number[];
  /** [alt][capEntry] consumption in nano-units. */
  capCons: bigint[][];
  counters: { key: string; total: bigint; used: bigint }[];
  devCnt: { slot: number; amount: bigint }[][];
  constraints: { kind: 0 | 1; attribute: string; applies: boolean[]; values: Int32Array }[];
  devNuma: Int32Array;
  devRoot: Int32Array;
  incompletePools: string[];
}

export interface FlattenInput {
  slices: readonly ResourceSlice[];
  classes: (name: string) => DeviceClass | undefined;
  allocatedClaims: readonly ResourceClaim[];
  claim: ResourceClaim;
  requests: NormRequest[];
  nodeName: string;
  driverName?: string;
}

// Selector results, shared across calls. A selector whose reads of `device` are known (cel-deps.ts:
// the plain `device.attributes["d"].x` forms nearly every DeviceClass and claim uses) is memoized
// by exactly those values, so freshly parsed inputs (`claims apply`, `diag explain`, a new
// informer object) hit as well as the same objects do (docs/performance.md "Allocation"). Others
// keep a memo per device object. Bounded: cleared past RESULT_MEMO_MAX keys.
const resultMemo = new Map<string, boolean | string>();
const RESULT_MEMO_MAX = 65_536;
const objectMemo = new WeakMap<Device, { driver: string; view: CelDevice; results: Map<string, boolean | string> }>();

/** Drops the memoized selector results (benchmarks measure the path without them). */
export function clearSelectorMemo(): void {
  resultMemo.clear();
}

const B_CLASS = 0, B_SELECT = 1, B_CAPFIT = 2, B_TOLERATED = 3, B_POISON = 4;

/** Slices of this node, newest generation per pool, pools sorted by driver then name. */
export function nodeDevices(slices: readonly ResourceSlice[], nodeName: string, driverName?: string): { devices: DeviceRef[]; sliceOf: ResourceSlice[]; incomplete: string[] } {
  const pools = new Map<string, ResourceSlice[]>();
  for (const s of slices) {
    const spec = s.spec;
    if (!spec || (driverName !== undefined && spec.driver !== driverName)) continue;
    const local = spec.nodeName === nodeName || spec.allNodes === true || spec.perDeviceNodeSelection === true;
    if (!local) continue;
    const key = `${spec.driver}\u0000${spec.pool.name}`;
    const list = pools.get(key) ?? [];
    list.push(s);
    pools.set(key, list);
  }
  const devices: DeviceRef[] = [];
  const sliceOf: ResourceSlice[] = [];
  const incomplete: string[] = [];
  for (const key of [...pools.keys()].sort()) {
    const all = pools.get(key) ?? [];
    const gen = Math.max(...all.map((s) => s.spec.pool.generation ?? 0));
    const current = all.filter((s) => (s.spec.pool.generation ?? 0) === gen);
    const first = current[0];
    if (first && current.length < (first.spec.pool.resourceSliceCount ?? 1)) {
      incomplete.push(first.spec.pool.name); // the scheduler does not allocate from it until complete
      continue;
    }
    const seen = new Set<string>();
    for (const s of current) {
      for (const d of s.spec.devices ?? []) {
        if (s.spec.perDeviceNodeSelection === true && d.nodeName !== nodeName && d.allNodes !== true) continue;
        if (seen.has(d.name)) continue; // duplicate names make upstream reject the pool; keep the first
        seen.add(d.name);
        devices.push({ driver: s.spec.driver, pool: s.spec.pool.name, device: d });
        sliceOf.push(s);
      }
    }
  }
  return { devices, sliceOf, incomplete };
}

/** Upstream attribute lookup: the qualified name, else the short name when the domain is the driver's. */
export function lookupAttribute(ref: DeviceRef, qualified: string): string | undefined {
  const attrs = ref.device.attributes ?? {};
  let a = attrs[qualified];
  if (a === undefined) {
    const slash = qualified.indexOf("/");
    if (slash > 0 && qualified.slice(0, slash) === ref.driver) a = attrs[qualified.slice(slash + 1)];
  }
  if (a === undefined) return undefined;
  if (a.string !== undefined) return `s:${a.string}`;
  if (a.int !== undefined) return `i:${a.int}`;
  if (a.bool !== undefined) return `b:${a.bool}`;
  if (a.version !== undefined) {
    return `v:${a.version}`; // upstream compares version strings exactly (semver's minimal form)
  }
  return undefined;
}

export function tolerated(device: Device, tolerations: readonly DeviceToleration[]): boolean {
  for (const t of device.taints ?? []) {
    if (t.effect !== "NoSchedule" && t.effect !== "NoExecute") continue;
    const ok = tolerations.some((tol) => {
      if (tol.effect && tol.effect !== t.effect) return false;
      if (tol.operator === "Exists") return !tol.key || tol.key === t.key;
      return tol.key === t.key && (tol.value ?? "") === (t.value ?? "");
    });
    if (!ok) return false;
  }
  return true;
}

// attribute names are few and repeat on every device: test each one once
const numaNames = new Map<string, boolean>();
function isNumaName(name: string): boolean {
  let v = numaNames.get(name);
  if (v === undefined) {
    if (numaNames.size > 4096) numaNames.clear();
    numaNames.set(name, (v = /(^|\/)numa(Node)?$/i.test(name)));
  }
  return v;
}

const devKey = (driver: string, pool: string, name: string): string => `${driver}\u0000${pool}\u0000${name}`;
const stripDomain = (name: string, driver: string): string => (name.startsWith(`${driver}/`) ? name.slice(driver.length + 1) : name);

/** What one allocation of `alt` consumes of a shared capacity, per its requestPolicy; undefined = does not fit. */
export function consumedCapacity(requested: string | undefined, cap: { value: string; requestPolicy?: { default?: string; validValues?: string[]; validRange?: { min: string; max?: string; step?: string } } }): bigint | undefined {
  const total = parseQuantityNano(cap.value) ?? 0n;
  const p = cap.requestPolicy;
  let want: bigint;
  if (requested === undefined) want = p?.default !== undefined ? (parseQuantityNano(p.default) ?? total) : total;
  else want = parseQuantityNano(requested) ?? 0n;
  if (p?.validValues && p.validValues.length > 0) {
    const vals = p.validValues.map((v) => parseQuantityNano(v) ?? 0n).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const v = vals.find((x) => x >= want);
    if (v === undefined) return undefined;
    want = v;
  } else if (p?.validRange) {
    const min = parseQuantityNano(p.validRange.min) ?? 0n;
    if (want < min) want = min;
    const step = p.validRange.step !== undefined ? (parseQuantityNano(p.validRange.step) ?? 0n) : 0n;
    if (step > 0n) want = min + ((want - min + step - 1n) / step) * step;
    if (p.validRange.max !== undefined && want > (parseQuantityNano(p.validRange.max) ?? want)) return undefined;
  }
  return want <= total ? want : undefined;
}

interface NodeView {
  devices: DeviceRef[];
  incomplete: string[];
  knownDomains: Set<string>;
  multi: Uint8Array;
  capEntries: Problem["capEntries"];
  devCapStart: number[];
  devCapCount: number[];
  capIndex: Map<string, number>;
  byKey: Map<string, number>;
  counters: Problem["counters"];
  devCnt: Problem["devCnt"];
  devRoot: Int32Array;
  devNuma: Int32Array;
}

// What depends only on the node's slices, computed once per slices array (the agent and the bench
// reuse one; a caller passing a new array pays once more). Totals here, usage per call.
const views = new WeakMap<readonly ResourceSlice[], Map<string, NodeView>>();

function nodeView(slices: readonly ResourceSlice[], nodeName: string, driverName: string | undefined): NodeView {
  let perNode = views.get(slices);
  if (!perNode) views.set(slices, (perNode = new Map()));
  const key = `${nodeName}\u0000${driverName ?? ""}`;
  const hit = perNode.get(key);
  if (hit) return hit;
  const { devices, incomplete } = nodeDevices(slices, nodeName, driverName);
  const n = devices.length;
  const input = { slices };
  const knownDomains = new Set<string>();
  for (const ref of devices) {
    for (const map of [ref.device.attributes, ref.device.capacity]) {
      if (!map) continue;
      for (const name of Object.keys(map)) {
        const slash = name.indexOf("/");
        knownDomains.add(slash < 0 ? ref.driver : name.slice(0, slash));
      }
    }
  }
  // shared capacity of multi-allocatable devices and counters
  const multi = new Uint8Array(n);
  const capEntries: Problem["capEntries"] = [];
  const devCapStart: number[] = [];
  const devCapCount: number[] = [];
  const capIndex = new Map<string, number>();
  const byKey = new Map<string, number>();
  const counters: Problem["counters"] = [];
  // pool ("driver\0pool") -> counter set -> counter name -> slot: a MIG device consumes a dozen
  // counters, and building a four-part string key for each one was a third of this function
  const counterIndex = new Map<string, Map<string, Map<string, number>>>();
  const counterTotals = new Map<string, Map<string, Map<string, bigint>>>();
  const inner = <V>(m: Map<string, Map<string, V>>, k: string): Map<string, V> => {
    let x = m.get(k);
    if (!x) m.set(k, (x = new Map()));
    return x;
  };
  for (const s of input.slices) {
    for (const set of s.spec?.sharedCounters ?? []) {
      const totals = inner(inner(counterTotals, `${s.spec.driver}\u0000${s.spec.pool.name}`), set.name);
      for (const [cn, c] of Object.entries(set.counters ?? {})) totals.set(cn, parseQuantityNano(c.value) ?? 0n);
    }
  }
  const devCnt = devices.map((ref) => {
    const row: { slot: number; amount: bigint }[] = [];
    const consumes = ref.device.consumesCounters;
    if (!consumes || consumes.length === 0) return row;
    const pool = `${ref.driver}\u0000${ref.pool}`;
    const poolSets = inner(counterIndex, pool);
    for (const cc of consumes) {
      const slots = inner(poolSets, cc.counterSet);
      const cs = cc.counters ?? {};
      for (const cn in cs) {
        let slot = slots.get(cn);
        if (slot === undefined) {
          slot = counters.length;
          slots.set(cn, slot);
          counters.push({ key: `${pool}\u0000${cc.counterSet}\u0000${cn}`, total: counterTotals.get(pool)?.get(cc.counterSet)?.get(cn) ?? 0n, used: 0n });
        }
        row.push({ slot, amount: parseQuantityNano((cs[cn] as { value: string }).value) ?? 0n });
      }
    }
    return row;
  });
  devices.forEach((ref, d) => {
    byKey.set(devKey(ref.driver, ref.pool, ref.device.name), d);
    devCapStart.push(capEntries.length);
    if (ref.device.allowMultipleAllocations === true) {
      multi[d] = 1;
      for (const [name, c] of Object.entries(ref.device.capacity ?? {})) {
        capIndex.set(`${d}\u0000${stripDomain(name, ref.driver)}`, capEntries.length);
        capEntries.push({ dev: d, name, total: parseQuantityNano(c.value) ?? 0n, used: 0n });
      }
    }
    devCapCount.push(capEntries.length - (devCapStart[d] as number));
  });

  const roots = new Map<string, number>();
  const devRoot = new Int32Array(n).fill(-1);
  const devNuma = new Int32Array(n).fill(-1);
  devices.forEach((ref, d) => {
    const root = lookupAttribute(ref, "resource.kubernetes.io/pcieRoot");
    if (root !== undefined) {
      let id = roots.get(root);
      if (id === undefined) roots.set(root, (id = roots.size));
      devRoot[d] = id;
    }
    const attrs = ref.device.attributes;
    if (attrs) for (const name of Object.keys(attrs)) if (isNumaName(name) && attrs[name]?.int !== undefined) devNuma[d] = attrs[name]?.int as number;
  });
  const view = { devices, incomplete, knownDomains, multi, capEntries, devCapStart, devCapCount, capIndex, byKey, counters, devCnt, devRoot, devNuma };
  perNode.set(key, view);
  return view;
}

export function flatten(input: FlattenInput): Problem {
  const view = nodeView(input.slices, input.nodeName, input.driverName);
  const { devices, incomplete, knownDomains, multi, devCapStart, devCapCount, capIndex, byKey, devCnt, devRoot, devNuma } = view;
  const capEntries = view.capEntries.map((e) => ({ ...e, used: 0n }));
  const counters = view.counters.map((c) => ({ ...c, used: 0n }));
  const n = devices.length;
  const alts = input.requests.flatMap((r) => r.alternatives);
  const reqAltStart: number[] = [];
  let k = 0;
  for (const r of input.requests) {
    reqAltStart.push(k);
    k += r.alternatives.length;
  }
  const classes = alts.map((a) => {
    const c = input.classes(a.deviceClassName);
    if (!c) throw new TesseraError("TESSERA_DEVICE_CLASS_NOT_FOUND", `${a.path}.deviceClassName: DeviceClass "${a.deviceClassName}" does not exist; use gpu.tessera.dev or mig.tessera.dev, or create the class`);
    return c;
  });
  // compile everything before evaluating anything: a syntax error is reported even on an empty node
  const classSel = classes.map((c, i) => (c.spec.selectors ?? []).map((s, j) => compileSelector(s.cel?.expression ?? "", `DeviceClass ${c.metadata.name} selectors[${j}] (used by ${alts[i]?.path})`)));
  const reqSel = alts.map((a) => a.selectors.map((s) => compileSelector(s.expression, s.path)));

  const views: (CelDevice | undefined)[] = new Array(n);
  const evalSel = (sel: CompiledSelector, d: number): boolean | string => {
    const ref = devices[d] as DeviceRef;
    if (sel.deps) {
      const key = depsKey(sel.id, sel.deps, ref.driver, ref.device);
      let v = resultMemo.get(key);
      if (v === undefined) {
        const r = sel.evaluate((views[d] ??= celDevice(ref.driver, ref.device)));
        v = typeof r === "boolean" ? r : r.error;
        if (resultMemo.size >= RESULT_MEMO_MAX) resultMemo.clear();
        resultMemo.set(key, v);
      }
      return v;
    }
    let memo = objectMemo.get(ref.device);
    if (!memo || memo.driver !== ref.driver) objectMemo.set(ref.device, (memo = { driver: ref.driver, view: views[d] ?? celDevice(ref.driver, ref.device), results: new Map() }));
    let v = memo.results.get(sel.expression);
    if (v === undefined) {
      const r = sel.evaluate(memo.view);
      v = typeof r === "boolean" ? r : r.error;
      memo.results.set(sel.expression, v);
    }
    return v;
  };
  const celErrors = new Map<string, string>();
  const bits = alts.map(() => [0, 1, 2, 3, 4].map(() => new Uint8Array(n)));
  // all selectors in order; the first false stops, the first error poisons (as the scheduler does)
  const runList = (sels: CompiledSelector[], d: number, a: number, what: string): boolean | "error" => {
    for (let j = 0; j < sels.length; j++) {
      const sel = sels[j] as CompiledSelector;
      const v = evalSel(sel, d);
      if (typeof v === "string") {
        const unknown = sel.domains.filter((dom) => !knownDomains.has(dom));
        const hint = unknown.length > 0 ? `unknown attribute domain "${unknown[0]}" (no device on this node has attributes or capacity in it); ` : "";
        celErrors.set(`${a}:${d}`, `${hint}${what} selector #${j} \`${sel.expression}\` on device ${devices[d]?.device.name}: ${v}`);
        return "error";
      }
      if (!v) return false;
    }
    return true;
  };

  // what other claims hold
  const inUse = new Uint8Array(n);
  const multiUsed = new Uint8Array(n);
  const me = `${input.claim.metadata.namespace ?? "default"}/${input.claim.metadata.name}`;
  for (const c of input.allocatedClaims) {
    if (`${c.metadata.namespace ?? "default"}/${c.metadata.name}` === me) continue;
    for (const r of c.status?.allocation?.devices?.results ?? []) {
      if (r.adminAccess === true) continue;
      const d = byKey.get(devKey(r.driver, r.pool, r.device));
      if (d === undefined) continue;
      const ref = devices[d] as DeviceRef;
      if (multi[d]) {
        for (const [name, q] of Object.entries(r.consumedCapacity ?? {})) {
          const e = capIndex.get(`${d}\u0000${stripDomain(name, ref.driver)}`);
          if (e !== undefined) (capEntries[e] as Problem["capEntries"][number]).used += parseQuantityNano(q) ?? 0n;
        }
        if (multiUsed[d]) continue; // a shared device pays its counters once
        multiUsed[d] = 1;
      } else if (!inUse[d]) inUse[d] = 1;
      else continue; // the same exclusive device twice: count its counters once
      for (const c2 of devCnt[d] ?? []) (counters[c2.slot] as Problem["counters"][number]).used += c2.amount;
    }
  }

  const capCons = alts.map(() => capEntries.map(() => 0n));
  alts.forEach((alt, a) => {
    const classList = classSel[a] ?? [];
    const reqList = reqSel[a] ?? [];
    const b = bits[a] as Uint8Array[];
    for (let d = 0; d < n; d++) {
      const ref = devices[d] as DeviceRef;
      const cls = runList(classList, d, a, `DeviceClass ${alt.deviceClassName}`);
      if (cls === "error") {
        (b[B_POISON] as Uint8Array)[d] = 1;
        continue;
      }
      if (!cls) continue;
      (b[B_CLASS] as Uint8Array)[d] = 1;
      const sel = runList(reqList, d, a, `request ${alt.resultName}`);
      if (sel === "error") {
        (b[B_POISON] as Uint8Array)[d] = 1;
        continue;
      }
      if (!sel) continue;
      (b[B_SELECT] as Uint8Array)[d] = 1;
      if (tolerated(ref.device, alt.tolerations)) (b[B_TOLERATED] as Uint8Array)[d] = 1;
      (b[B_CAPFIT] as Uint8Array)[d] = capacityFits(alt, ref, multi[d] === 1, capIndex, d, capCons[a] as bigint[]) ? 1 : 0;
    }
  });

  const constraintsSpec = input.claim.spec?.devices?.constraints ?? [];
  const constraints = constraintsSpec.map((c) => {
    const attribute = (c.matchAttribute ?? c.distinctAttribute) as string;
    const names = new Set(c.requests ?? []);
    const applies = alts.map((a) => names.size === 0 || names.has(a.resultName) || names.has(a.resultName.split("/")[0] as string));
    const intern = new Map<string, number>();
    const values = new Int32Array(n);
    devices.forEach((ref, d) => {
      const v = lookupAttribute(ref, attribute);
      if (v === undefined) return;
      let id = intern.get(v);
      if (id === undefined) intern.set(v, (id = intern.size + 1));
      values[d] = id;
    });
    return { kind: (c.matchAttribute !== undefined ? 0 : 1) as 0 | 1, attribute, applies, values };
  });


  return {
    devices, requests: input.requests, alts, classes, reqAltStart, bits, celErrors, inUse, multi, multiUsed, capEntries, devCapStart, devCapCount,
    capCons, counters, devCnt, constraints, devNuma, devRoot, incompletePools: incomplete,
  };
}

/** Static capacity check: every requested capacity exists and fits; fills the per-allocation consumption of shared devices. */
function capacityFits(alt: NormAlternative, ref: DeviceRef, isMulti: boolean, capIndex: Map<string, number>, d: number, cons: bigint[]): boolean {
  if (!isMulti && Object.keys(alt.capacityRequests).length === 0) return true;
  const caps = new Map(Object.entries(ref.device.capacity ?? {}).map(([k, v]) => [stripDomain(k, ref.driver), v]));
  for (const [name, q] of Object.entries(alt.capacityRequests)) {
    const cap = caps.get(stripDomain(name, ref.driver));
    if (!cap) return false;
    if (!isMulti && (parseQuantityNano(q) ?? 0n) > (parseQuantityNano(cap.value) ?? 0n)) return false;
  }
  if (!isMulti) return true;
  const requested = new Map(Object.entries(alt.capacityRequests).map(([k, v]) => [stripDomain(k, ref.driver), v]));
  for (const [name, cap] of caps) {
    const amount = consumedCapacity(requested.get(name), cap);
    if (amount === undefined) return false;
    const e = capIndex.get(`${d}\u0000${name}`);
    if (e !== undefined) cons[e] = amount;
  }
  return true;
}
