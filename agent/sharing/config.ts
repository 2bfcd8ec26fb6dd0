// The driver's opaque device configuration, decoded strictly. Pure: parameters in, a sharing
// setting or a TesseraError out (TESSERA_DEVICE_CONFIG: what, where, how to fix).
//   apiVersion: gpu.tessera.dev/v1alpha1
//   kind: GpuConfig (whole GPUs) | MigDeviceConfig (MIG devices)
//   sharing:
//     strategy: TimeSlicing | MPS
//     timeSlicing: {interval: Default|Short|Medium|Long}                     (TimeSlicing only)
//     mps: {defaultActiveThreadPercentage: 1..100, defaultPinnedDeviceMemoryLimit: <quantity>}   (MPS only)
// Precedence (as Kubernetes defines it): configs from the DeviceClass first, then the claim's, in
// order; each applies to the requests it names (none: every request). For one device the last
// applicable config wins; every applicable one is decoded, so a bad one is never silently ignored.
// MIG devices take MigDeviceConfig and MPS only: the driver has no time-slice policy per MIG device.
import { parseQuantityNano } from "../allocator/quantity.js";
import { echoInput, TesseraError } from "../common/errors.js";
import type { DeviceAllocationConfiguration } from "../kube/types.js";

export const CONFIG_API_VERSION = "gpu.tessera.dev/v1alpha1";
export const INTERVALS = ["Default", "Short", "Medium", "Long"] as const;
export type Interval = (typeof INTERVALS)[number];
/** `nvidia-smi compute-policy --set-timeslice <n>`: 0 DEFAULT, 1 SHORT, 2 MEDIUM, 3 LONG. */
export const TIMESLICE_VALUE: Readonly<Record<Interval, number>> = { Default: 0, Short: 1, Medium: 2, Long: 3 };

export type DeviceSharing =
  | { strategy: "TimeSlicing"; interval: Interval }
  | { strategy: "MPS"; activeThreadPercentage?: number; pinnedMemoryLimitMiB?: number };

export type ConfigKind = "GpuConfig" | "MigDeviceConfig";

export interface DecodedConfig {
  kind: ConfigKind;
  sharing?: DeviceSharing;
}

const MIB = 1024n * 1024n;
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const show = (v: unknown): string => (v === null ? "null" : Array.isArray(v) ? "a list" : typeof v === "string" ? JSON.stringify(echoInput(v, 60)) : typeof v === "object" ? "an object" : String(v));

function bad(where: string, field: string, what: string, fix: string): never {
  throw new TesseraError("TESSERA_DEVICE_CONFIG", `${where}: ${field} ${what}; ${fix}`);
}

function onlyKeys(v: Record<string, unknown>, allowed: readonly string[], where: string, at: string): void {
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k)) bad(where, `${at}.${echoInput(k, 60)}`, "is not a field of the Tessera GpuConfig", `remove it (fields here: ${allowed.join(", ")})`);
  }
}

/**
 * Decodes one opaque `parameters` object. `where` names the claim and the config entry (it starts
 * every message); `at` is the field path of the parameters object itself.
 */
export function decodeGpuConfig(parameters: unknown, where: string, at: string): DecodedConfig {
  if (!isObj(parameters)) bad(where, at, `is ${show(parameters)}, not an object`, `write apiVersion: ${CONFIG_API_VERSION}, kind: GpuConfig and sharing`);
  onlyKeys(parameters, ["apiVersion", "kind", "sharing"], where, at);
  if (parameters.apiVersion !== CONFIG_API_VERSION) bad(where, `${at}.apiVersion`, `is ${show(parameters.apiVersion)}`, `use ${CONFIG_API_VERSION}`);
  const kind = parameters.kind;
  if (kind !== "GpuConfig" && kind !== "MigDeviceConfig") bad(where, `${at}.kind`, `is ${show(kind)}`, "use GpuConfig (whole GPUs) or MigDeviceConfig (MIG devices)");
  if (parameters.sharing === undefined) return { kind };
  const s = parameters.sharing;
  const sat = `${at}.sharing`;
  if (!isObj(s)) bad(where, sat, `is ${show(s)}, not an object`, "write sharing: {strategy: TimeSlicing|MPS, ...}");
  onlyKeys(s, ["strategy", "timeSlicing", "mps"], where, sat);
  const strategy = s.strategy;
  if (strategy !== "TimeSlicing" && strategy !== "MPS") bad(where, `${sat}.strategy`, `is ${show(strategy)}`, "use TimeSlicing or MPS");
  if (strategy === "TimeSlicing") {
    if (s.mps !== undefined) bad(where, `${sat}.mps`, "is set but strategy is TimeSlicing", "remove mps, or set strategy: MPS");
    if (kind === "MigDeviceConfig") bad(where, `${sat}.strategy`, "is TimeSlicing, which MIG devices do not support (the time-slice policy is per whole GPU)", "use strategy: MPS on MIG devices, or request a whole GPU with kind: GpuConfig");
    let interval: Interval = "Default";
    if (s.timeSlicing !== undefined) {
      const ts = s.timeSlicing;
      if (!isObj(ts)) bad(where, `${sat}.timeSlicing`, `is ${show(ts)}, not an object`, "write timeSlicing: {interval: Default|Short|Medium|Long}");
      onlyKeys(ts, ["interval"], where, `${sat}.timeSlicing`);
      if (ts.interval !== undefined) {
        if (typeof ts.interval !== "string" || !(INTERVALS as readonly string[]).includes(ts.interval)) bad(where, `${sat}.timeSlicing.interval`, `is ${show(ts.interval)}`, `use one of ${INTERVALS.join(", ")}`);
        interval = ts.interval as Interval;
      }
    }
    return { kind, sharing: { strategy, interval } };
  }
  if (s.timeSlicing !== undefined) bad(where, `${sat}.timeSlicing`, "is set but strategy is MPS", "remove timeSlicing, or set strategy: TimeSlicing");
  const out: DeviceSharing = { strategy: "MPS" };
  if (s.mps !== undefined) {
    const m = s.mps;
    const mat = `${sat}.mps`;
    if (!isObj(m)) bad(where, mat, `is ${show(m)}, not an object`, "write mps: {defaultActiveThreadPercentage: <1-100>, defaultPinnedDeviceMemoryLimit: <quantity>}");
    onlyKeys(m, ["defaultActiveThreadPercentage", "defaultPinnedDeviceMemoryLimit"], where, mat);
    const p = m.defaultActiveThreadPercentage;
    if (p !== undefined) {
      if (typeof p !== "number" || !Number.isInteger(p)) bad(where, `${mat}.defaultActiveThreadPercentage`, `is ${show(p)}, not a whole number`, "set a whole number from 1 to 100");
      if (p < 1 || p > 100) bad(where, `${mat}.defaultActiveThreadPercentage`, `is ${p}, outside 1..100`, "set a whole number from 1 to 100");
      out.activeThreadPercentage = p;
    }
    const q = m.defaultPinnedDeviceMemoryLimit;
    if (q !== undefined) {
      const nano = typeof q === "string" ? parseQuantityNano(q) : undefined;
      if (nano === undefined) bad(where, `${mat}.defaultPinnedDeviceMemoryLimit`, `is ${show(q)}, not a Kubernetes quantity`, 'write a memory size as a string, e.g. "10Gi"');
      const mib = nano / 1_000_000_000n / MIB;
      if (mib < 1n) bad(where, `${mat}.defaultPinnedDeviceMemoryLimit`, `is ${show(q)}, under 1Mi`, 'set at least "1Mi" (MPS limits pinned device memory in MiB)');
      if (mib > 1n << 30n) bad(where, `${mat}.defaultPinnedDeviceMemoryLimit`, `is ${show(q)}, larger than any GPU`, "set at most the device's memory");
      out.pinnedMemoryLimitMiB = Number(mib);
    }
  }
  return { kind, sharing: out };
}

/** Where one allocation config entry comes from, for messages. */
function entryWhere(claim: string, c: DeviceAllocationConfiguration, i: number): { where: string; at: string } {
  const reqs = c.requests && c.requests.length > 0 ? `requests ${c.requests.join(",")}` : "every request";
  return { where: `ResourceClaim ${claim}, status.allocation.devices.config[${i}] (${c.source === "FromClass" ? "from the DeviceClass" : "from the claim"}, ${reqs})`, at: "opaque.parameters" };
}

/** The allocation's configs of this driver in precedence order (class, then claim), with their index. */
export function driverConfigs(configs: readonly DeviceAllocationConfiguration[] | undefined, driverName: string): { c: DeviceAllocationConfiguration; i: number }[] {
  const mine = (configs ?? []).map((c, i) => ({ c, i })).filter(({ c }) => c.opaque?.driver === driverName);
  return [...mine.filter(({ c }) => c.source === "FromClass"), ...mine.filter(({ c }) => c.source !== "FromClass")];
}

const appliesTo = (c: DeviceAllocationConfiguration, request: string): boolean => {
  const base = request.split("/")[0] ?? request;
  return !c.requests || c.requests.length === 0 || c.requests.includes(request) || c.requests.includes(base);
};

/**
 * The sharing setting of one allocated device (its result's `request`, its kind), or undefined
 * for none. Throws TESSERA_DEVICE_CONFIG naming the claim, the config entry and the field.
 */
export function sharingForDevice(
  configs: readonly { c: DeviceAllocationConfiguration; i: number }[],
  device: { request: string; deviceName: string; kind: "gpu" | "mig" },
  claim: string,
): DeviceSharing | undefined {
  let chosen: DecodedConfig | undefined;
  for (const { c, i } of configs) {
    if (!appliesTo(c, device.request)) continue;
    const { where, at } = entryWhere(claim, c, i);
    const d = decodeGpuConfig(c.opaque?.parameters, where, at);
    if (d.kind === "GpuConfig" && device.kind === "mig") bad(where, `${at}.kind`, `is GpuConfig but request ${device.request} got MIG device ${device.deviceName}`, "use kind: MigDeviceConfig for MIG devices (MPS only), or name only whole-GPU requests in requests");
    if (d.kind === "MigDeviceConfig" && device.kind === "gpu") bad(where, `${at}.kind`, `is MigDeviceConfig but request ${device.request} got whole GPU ${device.deviceName}`, "use kind: GpuConfig for whole GPUs, or name only MIG requests in requests");
    chosen = d;
  }
  return chosen?.sharing;
}

/** Checks the opaque configs a claim file carries for this driver (before allocation): spec paths. */
export function checkClaimConfigs(config: readonly { requests?: string[]; opaque?: { driver: string; parameters?: unknown } }[] | undefined, driverName: string, claim: string): void {
  (config ?? []).forEach((c, i) => {
    if (c.opaque?.driver !== driverName) return;
    decodeGpuConfig(c.opaque.parameters, `ResourceClaim ${claim}`, `spec.devices.config[${i}].opaque.parameters`);
  });
}

/** Two settings on one GPU that cannot hold at once, as a phrase, or undefined when compatible. */
export function sharingClash(a: DeviceSharing | undefined, b: DeviceSharing | undefined): string | undefined {
  if (!a || !b) return undefined;
  if (a.strategy !== b.strategy) return `${describeSharing(a)} and ${describeSharing(b)}`;
  if (a.strategy === "TimeSlicing" && b.strategy === "TimeSlicing" && a.interval !== b.interval) return `${describeSharing(a)} and ${describeSharing(b)}`;
  return undefined;
}

export function describeSharing(s: DeviceSharing): string {
  if (s.strategy === "TimeSlicing") return `TimeSlicing (interval ${s.interval})`;
  const parts = [s.activeThreadPercentage !== undefined ? `${s.activeThreadPercentage}% threads` : "", s.pinnedMemoryLimitMiB !== undefined ? `${s.pinnedMemoryLimitMiB}Mi pinned` : ""].filter(Boolean);
  return parts.length > 0 ? `MPS (${parts.join(", ")})` : "MPS";
}

/** What the claim's MPS daemon manages: its MPS devices in claim order, one thread percentage. */
export interface MpsPlan {
  uuids: string[];
  activeThreadPercentage?: number;
  pinnedMemoryLimitMiB?: number;
}

/**
 * The claim's MPS daemon, or undefined when no device asks for MPS. One daemon per claim: every
 * device of an MPS claim must ask for MPS (a client of the daemon sees only the daemon's devices),
 * with one thread percentage and one pinned-memory limit.
 */
export function mpsPlanOf(devices: readonly { deviceName: string; uuid: string; sharing?: DeviceSharing }[], claim: string): MpsPlan | undefined {
  const mps = devices.filter((d) => d.sharing?.strategy === "MPS");
  if (mps.length === 0) return undefined;
  const other = devices.find((d) => d.sharing?.strategy !== "MPS");
  if (other) throw new TesseraError("TESSERA_DEVICE_CONFIG", `ResourceClaim ${claim}: MPS applies to ${mps[0]?.deviceName} but not to ${other.deviceName}; the claim's MPS daemon serves all of its devices: apply the MPS GpuConfig to every request (omit requests), or split the claim`);
  const settings = mps.map((d) => d.sharing as Extract<DeviceSharing, { strategy: "MPS" }>);
  const plan: MpsPlan = { uuids: [...new Set(mps.map((d) => d.uuid))] };
  for (const key of ["activeThreadPercentage", "pinnedMemoryLimitMiB"] as const) {
    const values = [...new Set(settings.map((s) => s[key]))];
    if (values.length > 1) throw new TesseraError("TESSERA_DEVICE_CONFIG", `ResourceClaim ${claim}: its devices ask for different MPS ${key === "activeThreadPercentage" ? "defaultActiveThreadPercentage" : "defaultPinnedDeviceMemoryLimit"} values (${values.map((v) => v ?? "unset").join(", ")}); the claim's one daemon takes one: use one value for every request`);
    if (values[0] !== undefined) plan[key] = values[0];
  }
  return plan;
}

/**
 * The sharing setting of every allocated device of this driver, from an allocation result (diag
 * explain, claims apply). Tessera device names say the kind (`gpu-N-mig-…` is a MIG device).
 */
export function allocationSharing(
  allocation: { devices?: { results?: readonly { request: string; driver: string; device: string }[]; config?: readonly DeviceAllocationConfiguration[] } },
  driverName: string,
  claim: string,
): { request: string; device: string; sharing: DeviceSharing }[] {
  const ordered = driverConfigs(allocation.devices?.config, driverName);
  const out: { request: string; device: string; sharing: DeviceSharing }[] = [];
  for (const r of allocation.devices?.results ?? []) {
    if (r.driver !== driverName) continue;
    const sharing = sharingForDevice(ordered, { request: r.request, deviceName: r.device, kind: /-mig-/.test(r.device) ? "mig" : "gpu" }, claim);
    if (sharing) out.push({ request: r.request, device: r.device, sharing });
  }
  return out;
}
