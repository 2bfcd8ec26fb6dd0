// Strict field validation of ResourceClaim / ResourceClaimTemplate input, as `kubectl
// --validate=strict` does it: an unknown field or a value of the wrong type is an error naming
// its path (`spec.devices.requests[0].exactly.cuont`). The table is the resource.k8s.io/v1 Go
// types (k8s.io/api v0.37.2 resource/v1/types.go) and the metav1/core types they embed, field by
// field with their JSON names; opaque `parameters` and `data` (runtime.RawExtension) stay free-form.
// null is accepted wherever a value is (Go's decoder leaves the field unset).

const TYPE_NAMES = [
  "ObjectMeta", "OwnerReference", "ResourceClaim", "ResourceClaimTemplate", "ResourceClaimTemplateSpec", "ResourceClaimSpec",
  "DeviceClaim", "DeviceRequest", "ExactDeviceRequest", "DeviceSubRequest", "CapacityRequirements", "DeviceSelector",
  "CELDeviceSelector", "DeviceDerivedAttribute", "DeviceConstraint", "DeviceClaimConfiguration", "OpaqueDeviceConfiguration",
  "DeviceToleration", "ResourceClaimStatus", "AllocationResult", "DeviceAllocationResult", "DeviceRequestAllocationResult",
  "DeviceAllocationConfiguration", "ResourceClaimConsumerReference", "AllocatedDeviceStatus", "Condition", "NetworkDeviceData",
  "NodeSelector", "NodeSelectorTerm", "NodeSelectorRequirement",
] as const;
export type TypeName = (typeof TYPE_NAMES)[number];

type Scalar = "string" | "int" | "bool" | "quantity" | "time" | "any";
export type FieldType = Scalar | { ref: TypeName } | { list: FieldType } | { map: FieldType };

const ref = (t: TypeName): FieldType => ({ ref: t });
const list = (t: FieldType): FieldType => ({ list: t });
const map = (t: FieldType): FieldType => ({ map: t });
const strings = list("string");

const EXACT_FIELDS: Record<string, FieldType> = {
  deviceClassName: "string",
  selectors: list(ref("DeviceSelector")),
  allocationMode: "string",
  count: "int",
  tolerations: list(ref("DeviceToleration")),
  capacity: ref("CapacityRequirements"),
  derivedAttributes: list(ref("DeviceDerivedAttribute")),
};

export const CLAIM_SCHEMA: Record<TypeName, Record<string, FieldType>> = {
  ObjectMeta: {
    name: "string", generateName: "string", namespace: "string", selfLink: "string", uid: "string", resourceVersion: "string",
    generation: "int", creationTimestamp: "time", deletionTimestamp: "time", deletionGracePeriodSeconds: "int",
    labels: map("string"), annotations: map("string"), ownerReferences: list(ref("OwnerReference")), finalizers: strings,
    managedFields: list(map("any")),
  },
  OwnerReference: { apiVersion: "string", kind: "string", name: "string", uid: "string", controller: "bool", blockOwnerDeletion: "bool" },
  ResourceClaim: { apiVersion: "string", kind: "string", metadata: ref("ObjectMeta"), spec: ref("ResourceClaimSpec"), status: ref("ResourceClaimStatus") },
  ResourceClaimTemplate: { apiVersion: "string", kind: "string", metadata: ref("ObjectMeta"), spec: ref("ResourceClaimTemplateSpec") },
  ResourceClaimTemplateSpec: { metadata: ref("ObjectMeta"), spec: ref("ResourceClaimSpec") },
  ResourceClaimSpec: { devices: ref("DeviceClaim") },
  DeviceClaim: { requests: list(ref("DeviceRequest")), constraints: list(ref("DeviceConstraint")), config: list(ref("DeviceClaimConfiguration")) },
  DeviceRequest: { name: "string", exactly: ref("ExactDeviceRequest"), firstAvailable: list(ref("DeviceSubRequest")) },
  ExactDeviceRequest: { ...EXACT_FIELDS, adminAccess: "bool" },
  DeviceSubRequest: { name: "string", ...EXACT_FIELDS },
  CapacityRequirements: { requests: map("quantity") },
  DeviceSelector: { cel: ref("CELDeviceSelector") },
  CELDeviceSelector: { expression: "string" },
  DeviceDerivedAttribute: { name: "string", expression: "string" },
  DeviceConstraint: { requests: strings, matchAttribute: "string", distinctAttribute: "string" },
  DeviceClaimConfiguration: { requests: strings, opaque: ref("OpaqueDeviceConfiguration") },
  OpaqueDeviceConfiguration: { driver: "string", parameters: "any" },
  DeviceToleration: { key: "string", operator: "string", value: "string", effect: "string", tolerationSeconds: "int" },
  ResourceClaimStatus: { allocation: ref("AllocationResult"), reservedFor: list(ref("ResourceClaimConsumerReference")), devices: list(ref("AllocatedDeviceStatus")) },
  AllocationResult: { devices: ref("DeviceAllocationResult"), nodeSelector: ref("NodeSelector"), allocationTimestamp: "time" },
  DeviceAllocationResult: { results: list(ref("DeviceRequestAllocationResult")), config: list(ref("DeviceAllocationConfiguration")) },
  DeviceRequestAllocationResult: {
    request: "string", driver: "string", pool: "string", device: "string", adminAccess: "bool", tolerations: list(ref("DeviceToleration")),
    bindingConditions: strings, bindingFailureConditions: strings, shareID: "string", consumedCapacity: map("quantity"), skipNodeOperations: strings,
  },
  DeviceAllocationConfiguration: { source: "string", requests: strings, opaque: ref("OpaqueDeviceConfiguration") },
  ResourceClaimConsumerReference: { apiGroup: "string", resource: "string", name: "string", uid: "string" },
  AllocatedDeviceStatus: { driver: "string", pool: "string", device: "string", shareID: "string", conditions: list(ref("Condition")), data: "any", networkData: ref("NetworkDeviceData") },
  Condition: { type: "string", status: "string", observedGeneration: "int", lastTransitionTime: "time", reason: "string", message: "string" },
  NetworkDeviceData: { interfaceName: "string", ips: strings, hardwareAddress: "string" },
  NodeSelector: { nodeSelectorTerms: list(ref("NodeSelectorTerm")) },
  NodeSelectorTerm: { matchExpressions: list(ref("NodeSelectorRequirement")), matchFields: list(ref("NodeSelectorRequirement")) },
  NodeSelectorRequirement: { key: "string", operator: "string", values: strings },
};

export interface SchemaError {
  path: string;
  message: string;
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "an object";
  return `${typeof v} ${JSON.stringify(v)}`;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const child = (path: string, key: string): string => (path === "" ? key : `${path}.${key}`);

function checkScalar(t: Scalar, v: unknown): string | undefined {
  switch (t) {
    case "any":
      return undefined;
    case "string":
    case "time":
      return typeof v === "string" ? undefined : `expected a string, got ${describe(v)}`;
    case "bool":
      return typeof v === "boolean" ? undefined : `expected true or false, got ${describe(v)}`;
    case "int":
      return typeof v === "number" && Number.isSafeInteger(v) ? undefined : `expected an integer, got ${describe(v)}`;
    case "quantity":
      return typeof v === "string" || (typeof v === "number" && Number.isFinite(v)) ? undefined : `expected a quantity (e.g. "10Gi"), got ${describe(v)}`;
  }
}

function check(t: FieldType, v: unknown, path: string, out: SchemaError[]): void {
  if (v === null) return;
  if (typeof t === "string") {
    const msg = checkScalar(t, v);
    if (msg) out.push({ path, message: msg });
  } else if ("list" in t) {
    if (!Array.isArray(v)) out.push({ path, message: `expected a list, got ${describe(v)}` });
    else v.forEach((x, i) => check(t.list, x, `${path}[${i}]`, out));
  } else if ("map" in t) {
    if (!isObject(v)) out.push({ path, message: `expected an object (a map), got ${describe(v)}` });
    else for (const [k, x] of Object.entries(v)) check(t.map, x, child(path, k), out);
  } else checkType(t.ref, v, path, out);
}

function checkType(type: TypeName, v: unknown, path: string, out: SchemaError[]): void {
  if (!isObject(v)) {
    out.push({ path: path || "(document)", message: `expected an object (${type}), got ${describe(v)}` });
    return;
  }
  const fields = CLAIM_SCHEMA[type];
  for (const [k, x] of Object.entries(v)) {
    const f = Object.hasOwn(fields, k) ? fields[k] : undefined;
    if (f === undefined) out.push({ path: child(path, k), message: `unknown field "${child(path, k)}"` });
    else check(f, x, child(path, k), out);
  }
}

/** Every unknown field and wrongly typed value of `doc` read as `type`, in document order. */
export function schemaErrors(type: "ResourceClaim" | "ResourceClaimTemplate", doc: unknown): SchemaError[] {
  const out: SchemaError[] = [];
  checkType(type, doc, "", out);
  return out;
}

/** One line for a user: the first errors, then how many more. */
export function formatSchemaErrors(errors: readonly SchemaError[], max = 5): string {
  const shown = errors.slice(0, max).map((e) => (e.message.startsWith("unknown field") ? e.message : `${e.path}: ${e.message}`));
  return shown.join("; ") + (errors.length > max ? `; and ${errors.length - max} more` : "");
}
