// `tessera <verb>`: dispatch only. Each verb lives in its own module under agent/cli/ and is
// loaded on demand so `tessera diag ping` does not pay for the proxy or the allocator.
import { formatError, TesseraError } from "../common/errors.js";
import { processIO, type CliIO, type Verb } from "./io.js";

const VERBS: Record<string, () => Promise<Verb>> = {
  agent: async () => (await import("./agent.js")).runAgent,
  demo: async () => (await import("./demo.js")).runDemo,
  "diag ping": async () => (await import("./diag-kubelet.js")).runPing,
  "diag prepare": async () => (await import("./diag-kubelet.js")).runPrepare,
  "diag unprepare": async () => (await import("./diag-kubelet.js")).runUnprepare,
  "diag topology": async () => (await import("./diag-node.js")).runTopology,
  "diag slices": async () => (await import("./diag-node.js")).runSlices,
  "diag explain": async () => (await import("./claims.js")).runExplain,
  "claims apply": async () => (await import("./claims.js")).runApply,
  proxy: async () => (await import("./proxy.js")).runProxy,
};

export const USAGE = `tessera — GPU node agent for Kubernetes DRA

Usage:
  tessera agent [flags]                      run the node agent (kubelet DRA plugin + ResourceSlices)
  tessera demo                               the whole flow on a fixture node, in a temp dir
  tessera diag ping                          GetInfo + empty NodePrepareResources, as the kubelet does
  tessera diag prepare <ns>/<name>           NodePrepareResources for one claim
  tessera diag unprepare <ns>/<name>         NodeUnprepareResources for one claim
  tessera diag topology                      NUMA -> PCIe root -> GPU -> MIG tree of this node
  tessera diag slices                        the ResourceSlices this node publishes
  tessera diag explain -f <claim.yaml>       would this claim fit here, and if not, why
  tessera claims apply -f <claim.yaml>       standalone store: allocate and store a claim
  tessera proxy --listen <host:port> --endpoints <url,...>   prefix-aware in-node router

Common flags (env mirror in brackets):
  --driver-name [DRIVER_NAME]  --node-name [NODE_NAME]  --kubelet-root [KUBELET_ROOT]
  --state-dir [STATE_DIR]  --cdi-root [CDI_ROOT]  --sysfs-root [SYSFS_ROOT]
  --discovery nvidia-smi|fixture:<name> [DISCOVERY]  --kube auto|kubeconfig:<path>|standalone:<dir> [KUBE]
  -o table|json
`;

export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
    io.stdout(USAGE);
    return argv.length === 0 ? 1 : 0;
  }
  const two = `${argv[0]} ${argv[1] ?? ""}`;
  const key = VERBS[two] ? two : argv[0] ?? "";
  const load = VERBS[key];
  try {
    if (!load) throw new TesseraError("TESSERA_USAGE", `unknown command "${argv.slice(0, 2).join(" ")}"; run \`tessera --help\``);
    const verb = await load();
    return await verb(argv.slice(key.split(" ").length), io);
  } catch (err) {
    io.stderr(formatError(err) + "\n");
    if (process.env.TESSERA_DEBUG && err instanceof Error) io.stderr((err.stack ?? "") + "\n");
    return 1;
  }
}
