// One catalogue of Tessera error codes. Every user-facing failure is a TesseraError with a code
// from this table; the message says what went wrong, where, and how to fix it. Causes are kept
// (`cause`), never flattened into strings. The CLI prints `code: message` and no stack.

export const ERROR_CATALOGUE = {
  TESSERA_USAGE: "bad command line; run `tessera --help` for the verbs and flags",
  TESSERA_CONFIG: "invalid setting; check the flag or its environment variable",
  TESSERA_SOCKET_PATH_TOO_LONG: "a unix socket path exceeds 107 bytes and would be truncated by the kernel; use a shorter --kubelet-root",
  TESSERA_SOCKET: "a unix socket could not be created or reached",
  TESSERA_PATH: "a directory the agent writes is missing, not a directory, on a pseudo filesystem or not writable; fix the flag that names it",
  TESSERA_STATE_LOCKED: "another agent holds the state dir; stop it first, or give this one its own --state-dir and --kubelet-root",
  TESSERA_STOPPED: "the agent was stopped (SIGTERM/SIGINT) before it finished starting",
  TESSERA_STORE: "the standalone object store could not be read or written",
  TESSERA_KUBE_API: "the Kubernetes API call failed",
  TESSERA_KUBE_TIMEOUT: "the Kubernetes API did not answer in time",
  TESSERA_KUBE_FORBIDDEN: "the Kubernetes API denied the call (RBAC); the message names the verb and resource the service account lacks",
  TESSERA_NOT_FOUND: "the named object does not exist",
  TESSERA_INPUT: "the input file is not a valid Kubernetes object of the expected kind",
  TESSERA_CLAIM_UID_MISMATCH: "the ResourceClaim was replaced: its UID differs from the one the kubelet asked for",
  TESSERA_CLAIM_NOT_ALLOCATED: "the ResourceClaim has no status.allocation; the scheduler (or `tessera claims apply`) must allocate it first",
  TESSERA_CLAIM_IMMUTABLE: "the ResourceClaim is allocated and its spec cannot change (the API server refuses it too); delete the claim and apply it again",
  TESSERA_CLAIM_INVALID_UID: "the claim UID is not a valid UID and cannot name a file",
  TESSERA_CLAIM_INVALID_REF: "the claim's namespace or name is not a valid Kubernetes name",
  TESSERA_CLAIM_UID_REUSED: "the claim UID is already recorded for another ResourceClaim (namespace/name)",
  TESSERA_REQUEST_TOO_LARGE: "a kubelet call names more claims than the plugin accepts in one call",
  TESSERA_OVERLOADED: "the plugin has too much claim work queued; the kubelet retries",
  TESSERA_DEVICE_UNKNOWN: "the allocated device is not on this node",
  TESSERA_DEVICE_CONFLICT: "the device is already prepared for another claim",
  TESSERA_CHECKPOINT: "the checkpoint file is corrupt or of an unknown version",
  TESSERA_CDI: "the CDI spec could not be written",
  TESSERA_MIG: "a MIG instance could not be created or destroyed; check MIG mode and `nvidia-smi mig -lgi`",
  TESSERA_MIG_DISABLED: "the allocated MIG placement is on a GPU whose MIG mode is off; Tessera never changes MIG mode",
  TESSERA_DEVICE_CONFIG: "the claim's or DeviceClass's opaque GpuConfig is invalid (unknown field, wrong type, out of range or contradictory); the message names the claim, the config entry and the field",
  TESSERA_SHARING: "GPU sharing could not be applied or undone (nvidia-smi compute-policy, the MPS control daemon); the message names the command and its answer",
  TESSERA_DISCOVERY: "GPU discovery failed",
  TESSERA_DISCOVERY_TIMEOUT: "a discovery command did not finish in time",
  TESSERA_PARSE: "command output could not be parsed",
  TESSERA_FIXTURE: "the fixture node does not exist or is incomplete",
  TESSERA_DISCOVERY_OUTPUT_TOO_LARGE: "a discovery command printed more output than allowed and was stopped",
  TESSERA_DISCOVERY_VALUE: "nvidia-smi or sysfs reported a value that cannot be published safely (UUID, minor, bus id, size, name); that device or fact was left out, the rest is published; check the driver and `nvidia-smi -q -x`",
  TESSERA_SYSFS: "a sysfs file could not be read; check --sysfs-root",
  TESSERA_SLICE_LIMIT: "a device does not fit the ResourceSlice limits (devices, attributes, counters)",
  TESSERA_PUBLISH: "ResourceSlices could not be published; the agent keeps retrying with backoff",
  TESSERA_HEALTH: "a device health source (kernel log, nvidia-smi health query, health records in the state dir) could not be read or written; the agent keeps the taints it has and retries",
  TESSERA_CEL: "a CEL expression does not compile or does not evaluate to a bool",
  TESSERA_VALIDATION: "the ResourceClaim fails validation",
  TESSERA_UNSATISFIABLE: "the claim cannot be allocated on this node",
  TESSERA_DEVICE_CLASS_NOT_FOUND: "the request names a DeviceClass that does not exist; use gpu.tessera.dev or mig.tessera.dev, or create the class",
  TESSERA_ALLOCATION_LIMIT: "the allocation search gave up (too many results or too many combinations); simplify the claim",
  TESSERA_WASM: "the WebAssembly core could not be loaded",
  TESSERA_PROXY: "the proxy could not serve the request",
  TESSERA_EPP: "the endpoint picker could not start (listen address taken or not local)",
  TESSERA_NO_ENDPOINT: "no model server endpoint is ready; check --endpoints / --inference-pool and each endpoint's /metrics",
  TESSERA_SATURATED: "every ready endpoint is saturated; retry after the Retry-After seconds",
  TESSERA_BAD_REQUEST: "the request body is not valid JSON for an OpenAI completions or chat completions request",
  TESSERA_BODY_TOO_LARGE: "the request body is over the proxy's limit; raise --max-body-bytes or send less",
  TESSERA_UPSTREAM: "the model server failed or closed the connection before answering",
  TESSERA_INTERNAL: "an internal error; please report it with the log",
} as const;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export class TesseraError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? ERROR_CATALOGUE[code], options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "TesseraError";
    this.code = code;
  }
}

export function isTesseraError(err: unknown): err is TesseraError {
  return err instanceof TesseraError;
}

/** `code: message` for one line of CLI output; unknown errors become TESSERA_INTERNAL. */
export function formatError(err: unknown): string {
  if (isTesseraError(err)) return `${err.code}: ${err.message}`;
  const msg = err instanceof Error ? err.message : String(err);
  return `TESSERA_INTERNAL: ${msg}`;
}

/** The most characters of one input (a name, a UID, a status text) echoed into an error or log. */
export const ECHO_MAX_CHARS = 128;

/**
 * Input as it may appear in a message or log line: control characters escaped (one line stays one
 * line) and at most `max` characters, with how long it was. Every echo of outside input goes
 * through here: a 1 MiB name must not become a 1 MiB error, event or log record.
 */
export function echoInput(input: string, max = ECHO_MAX_CHARS): string {
  const cut = input.length > max ? input.slice(0, max) : input;
  const safe = /[\u0000-\u001f\u007f]/.test(cut) ? JSON.stringify(cut).slice(1, -1) : cut;
  return input.length > max ? `${safe}…(${input.length} chars)` : safe;
}

/** Message of an error and its causes, joined, for logs ("what: because: because"). */
export function describeChain(err: unknown): string {
  const parts: string[] = [];
  let cur: unknown = err;
  for (let depth = 0; cur !== undefined && cur !== null && depth < 8; depth++) {
    parts.push(cur instanceof Error ? cur.message : String(cur));
    cur = cur instanceof Error ? (cur as Error & { cause?: unknown }).cause : undefined;
  }
  return parts.join(": ");
}
