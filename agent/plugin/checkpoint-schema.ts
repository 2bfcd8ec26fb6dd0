// The shape a checkpoint must have before any of it is trusted: every entry and every device,
// field by field. A checksum only proves the bytes were written together; a file with a valid
// checksum and a wrong shape (an entry that is null, devices that is a string) crash-looped the
// agent or broke every later Prepare. Schemas are plain tables of field checks, so a new optional
// field is one line (e.g. `mig: optional(record(MIG_FIELDS))`).
import { isClaimUID } from "./prepared.js";

/** Returns why `v` is not acceptable, or undefined. `at` names the place for the reason. */
export type Check = (v: unknown, at: string) => string | undefined;

interface FieldCheck {
  check: Check;
  optional: boolean;
}
export type Fields = Readonly<Record<string, FieldCheck>>;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const show = (v: unknown): string => (v === null ? "null" : Array.isArray(v) ? "an array" : typeof v);

export function required(check: Check): FieldCheck {
  return { check, optional: false };
}
export function optional(check: Check): FieldCheck {
  return { check, optional: true };
}

export const string: Check = (v, at) => (typeof v === "string" ? undefined : `${at} is ${show(v)}, not a string`);
export const boolean: Check = (v, at) => (typeof v === "boolean" ? undefined : `${at} is ${show(v)}, not a boolean`);
export const integer: Check = (v, at) => (typeof v === "number" && Number.isSafeInteger(v) ? undefined : `${at} is ${show(v)}, not an integer`);
export const anyValue: Check = () => undefined;

export function oneOf(values: readonly string[]): Check {
  return (v, at) => (typeof v === "string" && values.includes(v) ? undefined : `${at} is ${JSON.stringify(typeof v === "string" ? v.slice(0, 40) : show(v))}, not one of ${values.join(", ")}`);
}

export function arrayOf(item: Check): Check {
  return (v, at) => {
    if (!Array.isArray(v)) return `${at} is ${show(v)}, not an array`;
    for (let i = 0; i < v.length; i++) {
      const bad = item(v[i], `${at}[${i}]`);
      if (bad) return bad;
    }
    return undefined;
  };
}

/** An object with these fields; fields not in the table are tolerated (a newer agent's additions). */
export function record(fields: Fields): Check {
  return (v, at) => {
    if (!isObject(v)) return `${at} is ${show(v)}, not an object`;
    for (const [name, f] of Object.entries(fields)) {
      if (!(name in v) || v[name] === undefined) {
        if (f.optional) continue;
        return `${at}.${name} is missing`;
      }
      const bad = f.check(v[name], `${at}.${name}`);
      if (bad) return bad;
    }
    return undefined;
  };
}

/** An object used as a map: every key passes `key`, every value `value`. */
export function mapOf(key: (k: string) => boolean, keyWhat: string, value: Check): Check {
  return (v, at) => {
    if (!isObject(v)) return `${at} is ${show(v)}, not an object`;
    for (const [k, x] of Object.entries(v)) {
      if (!key(k)) return `${at} has key ${JSON.stringify(k.slice(0, 80))}, not ${keyWhat}`;
      const bad = value(x, `${at}[${JSON.stringify(k)}]`);
      if (bad) return bad;
    }
    return undefined;
  };
}

/** PreparedMig: where a MIG device sits and, for instances Tessera created, that it owns it. */
export const MIG_FIELDS: Fields = {
  gpuUUID: required(string),
  profileId: required(integer),
  profileName: required(string),
  start: required(integer),
  size: required(integer),
  gi: optional(integer),
  ci: optional(integer),
  owned: optional(boolean),
};

/** DeviceSharing: the decoded GpuConfig sharing setting of one device. */
export const SHARING_FIELDS: Fields = {
  strategy: required(oneOf(["TimeSlicing", "MPS"])),
  interval: optional(oneOf(["Default", "Short", "Medium", "Long"])),
  activeThreadPercentage: optional(integer),
  pinnedMemoryLimitMiB: optional(integer),
};

/** PreparedDevice. */
export const DEVICE_FIELDS: Fields = {
  requestNames: required(arrayOf(string)),
  poolName: required(string),
  deviceName: required(string),
  shareID: optional(string),
  adminAccess: optional(boolean),
  cdiDeviceIds: required(arrayOf(string)),
  kind: required(oneOf(["gpu", "mig"])),
  uuid: required(string),
  gpuMinor: required(integer),
  deviceNodes: required(arrayOf(string)),
  configs: optional(arrayOf(anyValue)),
  mig: optional(record(MIG_FIELDS)),
  sharing: optional(record(SHARING_FIELDS)),
};

/** ClaimEntry. */
export const ENTRY_FIELDS: Fields = {
  state: required(oneOf(["PrepareStarted", "PrepareCompleted"])),
  namespace: required(string),
  name: required(string),
  devices: required(arrayOf(record(DEVICE_FIELDS))),
  rebuilt: optional(boolean),
};

/** CheckpointData: the boot id and the claims keyed by UID. */
export const DATA_FIELDS: Fields = {
  bootId: required(string),
  claims: required(mapOf(isClaimUID, "a claim UID", record(ENTRY_FIELDS))),
};

/** Why the decoded `data` of a checkpoint cannot be used, or undefined when every field is sound. */
export function checkpointDataProblem(data: unknown): string | undefined {
  return record(DATA_FIELDS)(data, "data");
}
