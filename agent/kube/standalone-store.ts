// The standalone object store (`--kube standalone:<dir>`): full Kubernetes objects as JSON files,
// laid out as contracts.md fixes. Every write is atomic (temp file + fsync + rename).
//   <dir>/resourceslices/<name>.json
//   <dir>/resourceclaims/<namespace>/<name>.json
//   <dir>/deviceclasses/<name>.json
import * as path from "node:path";
import { ensureDirDurable, removeFileDurable, writeFileAtomic } from "../common/atomic-file.js";
import { nodeDurableFs, type DurableFs } from "../common/durable-fs.js";
import { echoInput, TesseraError } from "../common/errors.js";
import type { DeviceClass, ResourceClaim, ResourceSlice } from "./types.js";

export interface StandaloneStore {
  readonly dir: string;
  getClaim(namespace: string, name: string): Promise<ResourceClaim | undefined>;
  listClaims(): Promise<ResourceClaim[]>;
  putClaim(claim: ResourceClaim): Promise<void>;
  deleteClaim(namespace: string, name: string): Promise<void>;
  getSlice(name: string): Promise<ResourceSlice | undefined>;
  listSlices(): Promise<ResourceSlice[]>;
  putSlice(slice: ResourceSlice): Promise<void>;
  deleteSlice(name: string): Promise<void>;
  getDeviceClass(name: string): Promise<DeviceClass | undefined>;
  listDeviceClasses(): Promise<DeviceClass[]>;
  putDeviceClass(cls: DeviceClass): Promise<void>;
}

// DNS-1123 subdomain: the rule the API server applies to these names; it also keeps "../" out of paths.
const NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export function assertObjectName(name: unknown, what: string): asserts name is string {
  if (typeof name !== "string") throw new TesseraError("TESSERA_INPUT", `${what} is ${name === null ? "null" : typeof name}, not a string; set it to a valid Kubernetes object name`);
  if (!NAME_RE.test(name) || name.includes("..")) {
    throw new TesseraError("TESSERA_INPUT", `${what} "${echoInput(name)}" is not a valid Kubernetes object name (lower-case letters, digits, '-' and '.')`);
  }
}

/** Every read and write goes through `fs` (default: node:fs). */
export function createStandaloneStore(dir: string, fs: DurableFs = nodeDurableFs): StandaloneStore {
  const root = path.resolve(dir);
  const slicesDir = path.join(root, "resourceslices");
  const claimsDir = path.join(root, "resourceclaims");
  const classesDir = path.join(root, "deviceclasses");

  async function readJson<T>(file: string): Promise<T | undefined> {
    let text: string;
    try {
      text = await fs.readFile(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new TesseraError("TESSERA_STORE", `cannot read ${file}`, { cause: err });
    }
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new TesseraError("TESSERA_STORE", `${file} is not valid JSON; fix or remove it`, { cause: err });
    }
  }

  async function listJson<T>(d: string): Promise<T[]> {
    let names: string[];
    try {
      names = await fs.readdir(d);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw new TesseraError("TESSERA_STORE", `cannot list ${d}`, { cause: err });
    }
    const out: T[] = [];
    for (const n of names.filter((f) => f.endsWith(".json") && !f.startsWith(".")).sort()) {
      const obj = await readJson<T>(path.join(d, n));
      if (obj !== undefined) out.push(obj);
    }
    return out;
  }

  async function writeJson(file: string, obj: unknown): Promise<void> {
    try {
      await ensureDirDurable(path.dirname(file), undefined, fs);
      await writeFileAtomic(file, JSON.stringify(obj, null, 2) + "\n", 0o644, fs);
    } catch (err) {
      throw new TesseraError("TESSERA_STORE", `cannot write ${file}`, { cause: err });
    }
  }

  async function remove(file: string): Promise<void> {
    await removeFileDurable(file, fs);
  }

  const claimFile = (ns: string, name: string): string => {
    assertObjectName(ns, "namespace");
    assertObjectName(name, "ResourceClaim name");
    return path.join(claimsDir, ns, `${name}.json`);
  };
  const sliceFile = (name: string): string => {
    assertObjectName(name, "ResourceSlice name");
    return path.join(slicesDir, `${name}.json`);
  };
  const classFile = (name: string): string => {
    assertObjectName(name, "DeviceClass name");
    return path.join(classesDir, `${name}.json`);
  };

  return {
    dir: root,
    getClaim: async (ns, name) => readJson<ResourceClaim>(claimFile(ns, name)),
    async listClaims() {
      let namespaces: string[];
      try {
        namespaces = (await fs.readdir(claimsDir)).sort();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
        throw new TesseraError("TESSERA_STORE", `cannot list ${claimsDir}`, { cause: err });
      }
      const all: ResourceClaim[] = [];
      for (const ns of namespaces) all.push(...(await listJson<ResourceClaim>(path.join(claimsDir, ns))));
      return all;
    },
    putClaim: async (claim) => writeJson(claimFile(claim.metadata.namespace ?? "default", claim.metadata.name ?? ""), claim),
    deleteClaim: async (ns, name) => remove(claimFile(ns, name)),
    getSlice: async (name) => readJson<ResourceSlice>(sliceFile(name)),
    listSlices: () => listJson<ResourceSlice>(slicesDir),
    putSlice: async (slice) => writeJson(sliceFile(slice.metadata.name ?? ""), slice),
    deleteSlice: async (name) => remove(sliceFile(name)),
    getDeviceClass: async (name) => readJson<DeviceClass>(classFile(name)),
    listDeviceClasses: () => listJson<DeviceClass>(classesDir),
    putDeviceClass: async (cls) => writeJson(classFile(cls.metadata.name ?? ""), cls),
  };
}
