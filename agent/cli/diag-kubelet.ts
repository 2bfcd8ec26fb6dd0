// `tessera diag ping|prepare|unprepare`: kubelet-style calls against a running agent's sockets.
// ping does what the kubelet does every few seconds: GetInfo on the registration socket and an
// empty NodePrepareResources on the DRA socket, each with a 1 s deadline.
import { existsSync } from "node:fs";
import { optStr, outputFormat, parseFlags, resolveNodeConfig, VERB_FLAGS, type NodeConfig } from "../common/config.js";
import { ERROR_CATALOGUE, TesseraError, type ErrorCode } from "../common/errors.js";
import { createDraClient, createRegistrationClient, type PluginInfo, type WireDevice } from "../plugin/protos.js";
import { readRegistrationStatus } from "../plugin/registration.js";
import { readMpsStatus } from "../sharing/mps.js";
import type { CliIO } from "./io.js";
import { parseRef, table } from "./view.js";

const PING_DEADLINE_MS = 1000;
/** The kubelet waits 45 s for NodePrepareResources; diag does the same. */
const PREPARE_DEADLINE_MS = 45_000;

function unreachable(socket: string, what: string, err: unknown, deadlineMs = PING_DEADLINE_MS): TesseraError {
  const detail = (err as { details?: string }).details ?? (err instanceof Error ? err.message : String(err));
  if (!existsSync(socket)) {
    return new TesseraError("TESSERA_SOCKET", `${what} socket ${socket} does not exist; is \`tessera agent\` running with the same --kubelet-root?`);
  }
  return new TesseraError("TESSERA_SOCKET", `${what} socket ${socket} did not answer within ${deadlineMs / 1000} s (${detail}); check the agent's log`, { cause: err });
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = process.hrtime.bigint();
  const r = await fn();
  return [r, Number(process.hrtime.bigint() - t0) / 1e6];
}

export async function runPing(argv: string[], io: CliIO): Promise<number> {
  const args = parseFlags(argv, VERB_FLAGS["diag ping"], io.env);
  const out = outputFormat(args);
  const config = resolveNodeConfig(args);
  const reg = createRegistrationClient(config.registrationSocket, { deadlineMs: PING_DEADLINE_MS });
  let info: PluginInfo;
  let regMs: number;
  try {
    [info, regMs] = await timed(() => reg.getInfo({}));
  } catch (err) {
    throw unreachable(config.registrationSocket, "registration", err);
  } finally {
    reg.close();
  }
  const endpoint = info.endpoint || config.draSocket;
  const dra = createDraClient(endpoint, "v1", { deadlineMs: PING_DEADLINE_MS });
  let draMs: number;
  try {
    [, draMs] = await timed(() => dra.prepare({ claims: [] }));
  } catch (err) {
    throw unreachable(endpoint, "DRA", err);
  } finally {
    dra.close();
  }
  // What the kubelet last told the agent (informational: ping's verdict is about the sockets).
  const kubelet = (await readRegistrationStatus(config.stateDir)) ?? null;
  if (out === "json") {
    io.stdout(JSON.stringify({ registration: { socket: config.registrationSocket, ms: round(regMs), info }, dra: { socket: endpoint, ms: round(draMs) }, kubelet }) + "\n");
  } else {
    io.stdout(`registration  ${config.registrationSocket}  ok  ${round(regMs)} ms  ${info.type} ${info.name} [${info.supported_versions.join(", ")}]\n`);
    io.stdout(`dra           ${endpoint}  ok  ${round(draMs)} ms  empty NodePrepareResources answered\n`);
    io.stdout(`kubelet       ${kubeletStatusText(kubelet, config.kubeletRoot)}\n`);
  }
  return 0;
}

const round = (ms: number): number => Math.round(ms * 100) / 100;

function kubeletStatusText(s: { plugin_registered: boolean; error: string; at: string } | null, kubeletRoot: string): string {
  if (!s) return `no NotifyRegistrationStatus since the agent started (is the kubelet watching ${kubeletRoot}/plugins_registry?)`;
  return s.plugin_registered ? `registered the plugin at ${s.at}` : `REJECTED the plugin at ${s.at}: ${s.error}`;
}


async function claimUID(config: NodeConfig, io: CliIO, ref: { namespace: string; name: string }): Promise<string> {
  // Loaded here, not at the top: `diag ping` runs as the liveness probe and must stay light.
  const { claimSourceFor } = await import("./agent.js");
  const claim = await (await claimSourceFor(config, io.env)).get(ref.namespace, ref.name);
  const uid = claim.metadata.uid;
  if (!uid) throw new TesseraError("TESSERA_INPUT", `ResourceClaim ${ref.namespace}/${ref.name} has no metadata.uid`);
  return uid;
}

/** An entry error ("CODE: message") becomes the same one-line CLI error. */
function entryError(text: string): TesseraError {
  const m = /^(TESSERA_[A-Z_]+): (.*)$/s.exec(text);
  const code = m && m[1] && m[1] in ERROR_CATALOGUE ? (m[1] as ErrorCode) : "TESSERA_INTERNAL";
  return new TesseraError(code, m ? (m[2] as string) : text);
}

export async function runPrepare(argv: string[], io: CliIO): Promise<number> {
  const args = parseFlags(argv, VERB_FLAGS["diag prepare"], io.env);
  const out = outputFormat(args);
  const config = resolveNodeConfig(args);
  const ref = parseRef(args.positionals, "diag prepare");
  const uid = await claimUID(config, io, ref);
  const dra = createDraClient(config.draSocket, "v1", { deadlineMs: PREPARE_DEADLINE_MS });
  let devices: WireDevice[];
  try {
    const res = await dra.prepare({ claims: [{ ...ref, uid }] });
    const entry = res.claims[uid];
    if (!entry) throw new TesseraError("TESSERA_INTERNAL", `the plugin answered without an entry for claim uid ${uid}`);
    if (entry.error) throw entryError(entry.error);
    devices = entry.devices;
  } catch (err) {
    if (err instanceof TesseraError) throw err;
    throw unreachable(config.draSocket, "DRA", err, PREPARE_DEADLINE_MS);
  } finally {
    dra.close();
  }
  // An MPS claim: the agent's supervisor records its daemon's state beside the pipe directory.
  const mps = await readMpsStatus(config.stateDir, uid);
  if (out === "json") {
    io.stdout(JSON.stringify({ claim: `${ref.namespace}/${ref.name}`, uid, devices, ...(mps ? { mps } : {}) }) + "\n");
    return 0;
  }
  io.stdout(`claim ${ref.namespace}/${ref.name} (uid ${uid}) prepared\n`);
  const rows = [["REQUEST", "POOL", "DEVICE", "CDI DEVICE IDS"], ...devices.map((d) => [d.request_names.join(",") || "*", d.pool_name, d.device_name, d.cdi_device_ids.join(" ")])];
  io.stdout(table(rows));
  if (mps) io.stdout(`MPS control daemon: ${mps.state}${mps.pid !== undefined ? `, pid ${mps.pid}` : ""}, ${mps.restarts} restart(s), pipe ${mps.pipeDir}${mps.lastError ? `; last error: ${mps.lastError}` : ""}\n`);
  return 0;
}

export async function runUnprepare(argv: string[], io: CliIO): Promise<number> {
  const args = parseFlags(argv, VERB_FLAGS["diag unprepare"], io.env);
  const out = outputFormat(args);
  const config = resolveNodeConfig(args);
  const ref = parseRef(args.positionals, "diag unprepare");
  const uid = optStr(args, "uid") ?? (await claimUID(config, io, ref));
  const dra = createDraClient(config.draSocket, "v1", { deadlineMs: PREPARE_DEADLINE_MS });
  try {
    const res = await dra.unprepare({ claims: [{ ...ref, uid }] });
    const error = res.claims[uid]?.error;
    if (error) throw entryError(error);
  } catch (err) {
    if (err instanceof TesseraError) throw err;
    throw unreachable(config.draSocket, "DRA", err, PREPARE_DEADLINE_MS);
  } finally {
    dra.close();
  }
  io.stdout(out === "json" ? JSON.stringify({ claim: `${ref.namespace}/${ref.name}`, uid, unprepared: true }) + "\n" : `claim ${ref.namespace}/${ref.name} (uid ${uid}) unprepared\n`);
  return 0;
}
