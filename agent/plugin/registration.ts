// The kubelet plugin-watcher Registration service. GetInfo answers from constants only (the
// kubelet re-dials every 10 s with a 1 s deadline); NotifyRegistrationStatus is logged and the
// last status kept, in memory and in <state-dir>/registration-status.json, because `diag ping`
// runs in another process (the liveness probe, an operator's shell).
import { promises as fsp } from "node:fs";
import * as path from "node:path";
import type * as grpc from "@grpc/grpc-js";
import { writeFileAtomic } from "../common/atomic-file.js";
import { describeChain, echoInput } from "../common/errors.js";
import type { Logger } from "../common/log.js";
import { HEALTH_SERVICES, type HealthApiVersion, type PluginInfo, type RegistrationStatus } from "./protos.js";

export const SUPPORTED_VERSIONS = ["v1.DRAPlugin", "v1beta1.DRAPlugin"] as const;

export interface RegistrationState {
  info: PluginInfo;
  /** The kubelet's last verdict, with when it arrived; undefined until the kubelet calls. */
  last(): LastRegistrationStatus | undefined;
  impl: grpc.UntypedServiceImplementation;
}

export type LastRegistrationStatus = RegistrationStatus & { at: string };

export const REGISTRATION_STATUS_FILE = "registration-status.json";
/** The most characters of the kubelet's NotifyRegistrationStatus error kept, logged and stored. */
export const REGISTRATION_ERROR_MAX_CHARS = 1024;

/** What the running agent last heard from the kubelet; undefined when nothing (yet) or unreadable. */
export async function readRegistrationStatus(stateDir: string): Promise<LastRegistrationStatus | undefined> {
  try {
    const parsed = JSON.parse(await fsp.readFile(path.join(stateDir, REGISTRATION_STATUS_FILE), "utf8")) as LastRegistrationStatus;
    return typeof parsed.plugin_registered === "boolean" && typeof parsed.at === "string" ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/** A status from a previous run must not pass for this one's. */
export async function clearRegistrationStatus(stateDir: string): Promise<void> {
  await fsp.rm(path.join(stateDir, REGISTRATION_STATUS_FILE), { force: true });
}

/** What GetInfo advertises: the DRAPlugin versions, plus each DRAResourceHealth version served. */
export function supportedVersions(health: readonly HealthApiVersion[] = []): string[] {
  return [...SUPPORTED_VERSIONS, ...health.map((v) => HEALTH_SERVICES[v])];
}

export function createRegistration(opts: { driverName: string; draSocket: string; log: Logger; now?: () => Date; stateDir?: string; healthVersions?: readonly HealthApiVersion[] }): RegistrationState {
  const info: PluginInfo = { type: "DRAPlugin", name: opts.driverName, endpoint: opts.draSocket, supported_versions: supportedVersions(opts.healthVersions) };
  const now = opts.now ?? (() => new Date());
  let last: LastRegistrationStatus | undefined;
  return {
    info,
    last: () => last,
    impl: {
      GetInfo(_call: grpc.ServerUnaryCall<unknown, PluginInfo>, cb: grpc.sendUnaryData<PluginInfo>) {
        cb(null, info);
      },
      NotifyRegistrationStatus(call: grpc.ServerUnaryCall<RegistrationStatus, Record<string, never>>, cb: grpc.sendUnaryData<Record<string, never>>) {
        const s = call.request;
        // The kubelet's error is a sentence; a hostile caller's megabyte is cut before it is logged or stored.
        last = { plugin_registered: s.plugin_registered === true, error: echoInput(s.error ?? "", REGISTRATION_ERROR_MAX_CHARS), at: now().toISOString() };
        if (last.plugin_registered) opts.log.info("kubelet registered the plugin", { driver: opts.driverName });
        else opts.log.error("kubelet rejected the plugin registration", { driver: opts.driverName, error: last.error });
        const record = last;
        const persisted = opts.stateDir
          ? writeFileAtomic(path.join(opts.stateDir, REGISTRATION_STATUS_FILE), JSON.stringify(record) + "\n").catch((err: unknown) => {
              opts.log.warn("cannot record the registration status for diag", { error: describeChain(err) });
            })
          : Promise.resolve();
        // Answer after the write so `diag ping` right after the kubelet's call sees it; a failed
        // write is logged, never turned into an error for the kubelet.
        void persisted.then(() => cb(null, {}));
      },
    },
  };
}
