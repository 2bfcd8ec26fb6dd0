// Property tests of the allocator against a brute-force enumerator that lives only here: on small
// random nodes and claims (seeded, bounded), first-fit returns exactly the first solution in the
// scheduler's order (requests, then alternatives, then device combinations in slice order), best-fit
// finds an allocation iff one exists, and every allocation returned satisfies every rule.
import t from "tap";
import { allocateClaim, type AllocateOutput } from "../agent/allocator/index.js";
import type { Device, ResourceClaim, ResourceSlice } from "../agent/kube/types.js";

const DRIVER = "gpu.tessera.dev";
const CASES = 600;
const SEED = Number(process.env.TESSERA_SEED ?? 20251127); // rerun a failure with its seed

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

interface Dev { name: string; type: "gpu" | "mig"; kind: string; grp?: number; taint: boolean; cnt: number; cap: number; multi: boolean }
interface Alt { name: string; type: "gpu" | "mig"; sel?: { op: "==" | "!="; kind: string }; all: boolean; count: number; tol: boolean; capReq?: number }
interface Req { name: string; alts: Alt[]; first: boolean }
interface Case { devs: Dev[]; cntTotal: number; inUse: Set<number>; capUsed: number[]; reqs: Req[]; con?: { match: boolean; reqs: string[] } }

function gen(r: () => number): Case {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const n = 1 + Math.floor(r() * 6);
  const devs: Dev[] = Array.from({ length: n }, (_, i) => {
    const multi = r() < 0.2;
    return { name: `d${i}`, type: r() < 0.7 ? "gpu" : "mig", kind: pick(["a", "b", "c"]), ...(r() < 0.8 ? { grp: Math.floor(r() * 3) } : {}), taint: r() < 0.15, cnt: !multi && r() < 0.4 ? 1 + Math.floor(r() * 3) : 0, cap: pick([2, 4]), multi };
  });
  const inUse = new Set(devs.map((d, i) => (!d.multi && r() < 0.12 ? i : -1)).filter((i) => i >= 0));
  const capUsed = devs.map((d) => (d.multi && r() < 0.5 ? Math.floor(r() * 3) : 0));
  const mkAlt = (name: string): Alt => {
    const all = r() < 0.15;
    return { name, type: r() < 0.75 ? "gpu" : "mig", ...(r() < 0.5 ? { sel: { op: pick(["==", "!="] as const), kind: pick(["a", "b", "c"]) } } : {}), all, count: all ? 0 : 1 + Math.floor(r() * 2), tol: r() < 0.3, ...(r() < 0.3 ? { capReq: 1 + Math.floor(r() * 3) } : {}) };
  };
  const reqs: Req[] = Array.from({ length: 1 + Math.floor(r() * 3) }, (_, i) => {
    const first = r() < 0.3;
    return { name: `r${i}`, first, alts: first ? [mkAlt(`r${i}/s0`), mkAlt(`r${i}/s1`)] : [mkAlt(`r${i}`)] };
  });
  const con = r() < 0.5 ? { match: r() < 0.5, reqs: r() < 0.5 ? [] : reqs.filter(() => r() < 0.6).map((q) => q.name) } : undefined;
  return { devs, cntTotal: 3 + Math.floor(r() * 6), inUse, capUsed, reqs, ...(con ? { con } : {}) };
}

function toInput(c: Case): { slices: ResourceSlice[]; claim: ResourceClaim; allocated: ResourceClaim[] } {
  const devices: Device[] = c.devs.map((d) => ({
    name: d.name,
    attributes: { type: { string: d.type }, kind: { string: d.kind }, ...(d.grp !== undefined ? { grp: { int: d.grp } } : {}) },
    capacity: { mem: { value: String(d.cap) } },
    ...(d.taint ? { taints: [{ key: "t", effect: "NoSchedule" }] } : {}),
    ...(d.cnt > 0 ? { consumesCounters: [{ counterSet: "cs", counters: { c: { value: String(d.cnt) } } }] } : {}),
    ...(d.multi ? { allowMultipleAllocations: true } : {}),
  }));
  const slices: ResourceSlice[] = [{ apiVersion: "resource.k8s.io/v1", kind: "ResourceSlice", metadata: { name: "s" }, spec: { driver: DRIVER, nodeName: "n1", pool: { name: "n1", generation: 1, resourceSliceCount: 1 }, devices, sharedCounters: [{ name: "cs", counters: { c: { value: String(c.cntTotal) } } }] } }];
  const exact = (a: Alt) => ({
    deviceClassName: a.type === "gpu" ? "gpu.tessera.dev" : "mig.tessera.dev",
    ...(a.sel ? { selectors: [{ cel: { expression: `device.attributes["${DRIVER}"].kind ${a.sel.op} "${a.sel.kind}"` } }] } : {}),
    ...(a.all ? { allocationMode: "All" as const } : { count: a.count }),
    ...(a.tol ? { tolerations: [{ key: "t", operator: "Exists" as const }] } : {}),
    ...(a.capReq !== undefined ? { capacity: { requests: { mem: String(a.capReq) } } } : {}),
  });
  const requests = c.reqs.map((q) => (q.first ? { name: q.name, firstAvailable: q.alts.map((a) => ({ name: a.name.split("/")[1] as string, ...exact(a) })) } : { name: q.name, exactly: exact(q.alts[0] as Alt) }));
  const constraints = c.con ? [{ ...(c.con.reqs.length ? { requests: c.con.reqs } : {}), ...(c.con.match ? { matchAttribute: `${DRIVER}/grp` } : { distinctAttribute: `${DRIVER}/grp` }) }] : [];
  const claim: ResourceClaim = { apiVersion: "resource.k8s.io/v1", kind: "ResourceClaim", metadata: { name: "c", namespace: "default", uid: "u" }, spec: { devices: { requests, constraints } } };
  const results = [
    ...[...c.inUse].map((i) => ({ request: "x", driver: DRIVER, pool: "n1", device: `d${i}` })),
    ...c.capUsed.flatMap((u, i) => (u > 0 ? [{ request: "x", driver: DRIVER, pool: "n1", device: `d${i}`, shareID: "s", consumedCapacity: { mem: String(u) } }] : [])),
  ];
  const allocated: ResourceClaim[] = results.length ? [{ apiVersion: "resource.k8s.io/v1", kind: "ResourceClaim", metadata: { name: "other", namespace: "default" }, spec: {}, status: { allocation: { devices: { results } } } }] : [];
  return { slices, claim, allocated };
}

// ---- the brute-force reference (scheduler order) ---------------------------------------------
type Pick = [string, number]; // [result name, device]
const ERROR = "error" as const;

const selectable = (a: Alt, d: Dev): boolean => d.type === a.type && (!a.sel || (a.sel.op === "==" ? d.kind === a.sel.kind : d.kind !== a.sel.kind));
const consumes = (a: Alt, d: Dev): number => (a.capReq !== undefined ? a.capReq : d.cap);
const capStatic = (a: Alt, d: Dev): boolean => a.capReq === undefined || a.capReq <= d.cap;
const bound = (c: Case, name: string): boolean => !!c.con && (c.con.reqs.length === 0 || c.con.reqs.includes(name.split("/")[0] as string));

/** Every rule, checked on a complete or partial set of picks. */
function valid(c: Case, picks: Pick[], alts: Map<string, Alt>): boolean {
  let cnt = [...c.inUse].reduce((sum, i) => sum + (c.devs[i]?.cnt ?? 0), 0); // other claims' devices consume counters too
  const cap = [...c.capUsed];
  const seen = new Set<string>();
  for (const [name, i] of picks) {
    const a = alts.get(name) as Alt;
    const d = c.devs[i] as Dev;
    if (!selectable(a, d) || !capStatic(a, d) || (d.taint && !a.tol)) return false;
    if (!d.multi && (c.inUse.has(i) || seen.has(`x${i}`))) return false;
    if (seen.has(`${name}:${i}`)) return false;
    seen.add(`${name}:${i}`);
    if (!d.multi) seen.add(`x${i}`);
    cnt += d.cnt;
    if (d.multi) cap[i] = (cap[i] as number) + consumes(a, d);
    if (d.multi && (cap[i] as number) > d.cap) return false;
  }
  // the counter check runs only for devices that consume counters (upstream), so it binds iff one was picked
  if (picks.some(([, i]) => (c.devs[i]?.cnt ?? 0) > 0) && cnt > c.cntTotal) return false;
  const b = picks.filter(([n]) => bound(c, n)).map(([, i]) => c.devs[i]?.grp);
  if (b.some((g) => g === undefined)) return false;
  if (c.con?.match && new Set(b).size > 1) return false;
  if (c.con && !c.con.match && new Set(b).size < b.length) return false;
  return true;
}

function bruteForce(c: Case): Pick[] | null | typeof ERROR {
  const alts = new Map(c.reqs.flatMap((q) => q.alts.map((a) => [a.name, a] as const)));
  const picks: Pick[] = [];
  const solve = (r: number): boolean | typeof ERROR => {
    const q = c.reqs[r];
    if (!q) return true;
    for (const a of q.alts) {
      if (a.all) {
        const list = c.devs.map((d, i) => (selectable(a, d) && capStatic(a, d) ? i : -1)).filter((i) => i >= 0);
        if (list.length === 0) continue;
        const mark = picks.length;
        let ok = true;
        for (const i of list) {
          picks.push([a.name, i]);
          if (!valid(c, picks, alts)) {
            const withoutCon = { ...c, con: undefined } as Case;
            const constraintOnly = valid(withoutCon, picks, alts);
            picks.pop();
            if (constraintOnly) return ERROR; // upstream: a constraint blocking "all" is an error
            ok = false;
            break;
          }
        }
        if (ok) {
          const s = solve(r + 1);
          if (s) return s;
        }
        picks.length = mark;
      } else {
        const combo = (k: number, from: number): boolean | typeof ERROR => {
          if (k === a.count) return solve(r + 1);
          for (let i = from; i < c.devs.length; i++) {
            picks.push([a.name, i]);
            if (valid(c, picks, alts)) {
              const s = combo(k + 1, i + 1);
              if (s) return s;
            }
            picks.pop();
          }
          return false;
        };
        const s = combo(0, 0);
        if (s) return s;
      }
    }
    return false;
  };
  const s = solve(0);
  if (s === ERROR) return ERROR;
  return s ? picks : null;
}

function picksOf(out: AllocateOutput): Pick[] {
  return out.ok ? out.devices.map((d) => [d.request, Number(d.device.slice(1))] as Pick) : [];
}

t.test(`allocator vs brute force on ${CASES} random nodes and claims (seed ${SEED})`, async (t) => {
  const r = rng(SEED);
  let fits = 0, fails = 0, errors = 0, mismatches = 0;
  for (let k = 0; k < CASES && mismatches < 5; k++) {
    const c = gen(r);
    const { slices, claim, allocated } = toInput(c);
    const want = bruteForce(c);
    const alts = new Map(c.reqs.flatMap((q) => q.alts.map((a) => [a.name, a] as const)));
    const ff = allocateClaim({ slices, deviceClasses: [], allocatedClaims: allocated, claim, nodeName: "n1", strategy: "first-fit" });
    const bf = allocateClaim({ slices, deviceClasses: [], allocatedClaims: allocated, claim, nodeName: "n1", strategy: "best-fit" });
    const ctx = `case ${k}: ${JSON.stringify({ ...c, inUse: [...c.inUse] })}`;
    let ok = true;
    if (want === ERROR) {
      errors++;
      ok = !ff.ok && ff.explanation.reason === "constraint-error";
    } else if (want === null) {
      fails++;
      ok = !ff.ok && !bf.ok && ff.explanation.reason === "unsatisfiable" && ff.explanation.requests.length === c.reqs.length;
    } else {
      fits++;
      ok = JSON.stringify(picksOf(ff)) === JSON.stringify(want) && bf.ok && valid(c, picksOf(bf), alts);
      // best-fit returns a complete allocation: every request got its alternative's devices
      if (bf.ok) {
        for (const q of c.reqs) {
          const got = picksOf(bf).filter(([n]) => n.split("/")[0] === q.name);
          const alt = alts.get(got[0]?.[0] ?? "");
          const need = alt?.all ? c.devs.filter((d) => selectable(alt, d) && capStatic(alt, d)).length : alt?.count;
          if (!alt || got.length !== need || got.some(([n]) => n !== alt.name)) ok = false;
        }
      }
    }
    if (!ok) {
      mismatches++;
      t.fail(`${ctx}\n want ${JSON.stringify(want)}\n first-fit ${JSON.stringify(ff.ok ? picksOf(ff) : ff.explanation)}\n best-fit ${JSON.stringify(bf.ok ? picksOf(bf) : bf.explanation.reason)}`);
    }
  }
  t.equal(mismatches, 0, `fits ${fits}, does not fit ${fails}, constraint errors ${errors}`);
  t.ok(fits > CASES / 8 && fails > CASES / 8, "the generator covers both outcomes");
});

t.test("heap stays flat across many searches", async (t) => {
  const c = gen(rng(7));
  const { slices, claim, allocated } = toInput(c);
  const { loadWasmCore } = await import("../agent/wasm/core.js");
  allocateClaim({ slices, deviceClasses: [], allocatedClaims: allocated, claim, nodeName: "n1" });
  const before = loadWasmCore().exports.memory.buffer.byteLength;
  for (let i = 0; i < 2000; i++) allocateClaim({ slices, deviceClasses: [], allocatedClaims: allocated, claim, nodeName: "n1", strategy: i % 2 ? "best-fit" : "first-fit" });
  t.equal(loadWasmCore().exports.memory.buffer.byteLength, before, "WASM memory does not grow");
});
