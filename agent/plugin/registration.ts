// The kubelet plugin-watcher Registration service. GetInfo answers from constants only (the
// kubelet re-dials every 10 s with a 1 s deadline); NotifyRegistrationStatus is logged and the
// last status kept for `diag`.
import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "../common/log.js";
import type { PluginInfo, RegistrationStatus } from "./protos.js";

export const SUPPORTED_VERSIONS = ["v1.DRAPlugin", "v1beta1.DRAPlugin"] as const;

export interface RegistrationState {
  info: PluginInfo;
  /** The kubelet's last verdict, with when it arrived; undefined until the kubelet calls. */
  last(): (RegistrationStatus & { at: string }) | undefined;
  impl: grpc.UntypedServiceImplementation;
}

export function createRegistration(opts: { driverName: string; draSocket: string; log: Logger; now?: () => Date }): RegistrationState {
  const info: PluginInfo = { type: "DRAPlugin", name: opts.driverName, endpoint: opts.draSocket, supported_versions: [...SUPPORTED_VERSIONS] };
  const now = opts.now ?? (() => new Date());
  let last: (RegistrationStatus & { at: string }) | undefined;
  return {
    info,
    last: () => last,
    impl: {
      GetInfo(_call: grpc.ServerUnaryCall<unknown, PluginInfo>, cb: grpc.sendUnaryData<PluginInfo>) {
        cb(null, info);
      },
      NotifyRegistrationStatus(call: grpc.ServerUnaryCall<RegistrationStatus, Record<string, never>>, cb: grpc.sendUnaryData<Record<string, never>>) {
        const s = call.request;
        last = { plugin_registered: s.plugin_registered === true, error: s.error ?? "", at: now().toISOString() };
        if (last.plugin_registered) opts.log.info("kubelet registered the plugin", { driver: opts.driverName });
        else opts.log.error("kubelet rejected the plugin registration", { driver: opts.driverName, error: last.error });
        cb(null, {});
      },
    },
  };
}
