// The verbs of `tessera`: what each does, its arguments, two examples, and where it lives. Flags
// are not here: each verb's come from VERB_FLAGS in agent/common/config.ts, the same table it
// parses with, so help and parsing cannot drift apart. Modules load on demand (`diag ping` is
// the liveness probe and must not pay for the proxy or the allocator).
import type { VerbName } from "../common/config.js";
import type { Verb } from "./io.js";

export interface VerbDoc {
  name: VerbName;
  args: string;
  summary: string;
  examples: readonly [string, string];
  load: () => Promise<Verb>;
}

const S = "--kube standalone:/tmp/store";
const FX = "--discovery fixture:h100-sxm-8x";

export const VERBS: readonly VerbDoc[] = [
  { name: "agent", args: "", summary: "run the node agent (kubelet DRA plugin + ResourceSlices) until SIGTERM/SIGINT",
    examples: ["tessera agent --node-name $(hostname)", `tessera agent ${FX} --kubelet-root /tmp/k --cdi-root /tmp/cdi ${S}`],
    load: async () => (await import("./agent.js")).runAgent },
  { name: "demo", args: "[--fixture <name>]", summary: "the whole flow on a fixture node, in a temporary directory",
    examples: ["tessera demo", "tessera demo --fixture a100-80gb-mig --keep"],
    load: async () => (await import("./demo.js")).runDemo },
  { name: "diag ping", args: "", summary: "GetInfo + empty NodePrepareResources, as the kubelet does (exit 0 if both answer)",
    examples: ["tessera diag ping", "tessera diag ping --kubelet-root /tmp/k -o json"],
    load: async () => (await import("./diag-kubelet.js")).runPing },
  { name: "diag prepare", args: "<ns>/<name>", summary: "NodePrepareResources for one claim, as the kubelet calls it",
    examples: [`tessera diag prepare default/one-gpu --kubelet-root /tmp/k ${S}`, "tessera diag prepare team-a/train -o json"],
    load: async () => (await import("./diag-kubelet.js")).runPrepare },
  { name: "diag unprepare", args: "<ns>/<name>", summary: "NodeUnprepareResources for one claim",
    examples: [`tessera diag unprepare default/one-gpu --kubelet-root /tmp/k ${S}`, "tessera diag unprepare team-a/gone --uid 0b7c9e2a-6f1d-4c55-9a3e-2d8f1c4b7a60"],
    load: async () => (await import("./diag-kubelet.js")).runUnprepare },
  { name: "diag topology", args: "", summary: "NUMA -> PCIe root -> GPU -> MIG tree of this node",
    examples: ["tessera diag topology", "tessera diag topology --discovery fixture:a100-80gb-mig -o json"],
    load: async () => (await import("./diag-node.js")).runTopology },
  { name: "diag slices", args: "", summary: "the ResourceSlices this node would publish; with --kube, next to what is published, and the difference",
    examples: [`tessera diag slices ${FX} --mig-mode dynamic`, `tessera diag slices ${FX} --node-name n1 ${S}`],
    load: async () => (await import("./diag-node.js")).runSlices },
  { name: "diag health", args: "", summary: "every device's health, its evidence (last XID, nvidia-smi queries), its taints and the prepared claims using it",
    examples: [`tessera diag health --discovery fixture:h100-sxm-8x-faulty --kubelet-root /tmp/k`, "tessera diag health -o json"],
    load: async () => (await import("./diag-health.js")).runHealth },
  { name: "diag explain", args: "-f <claim.yaml>", summary: "dry run: would each claim in the file fit here, which devices, and if not, why",
    examples: ["tessera diag explain -f deploy/examples/one-gpu.yaml", `kubectl get resourceclaim train -o yaml | tessera diag explain -f - ${FX} ${S}`],
    load: async () => (await import("./claims.js")).runExplain },
  { name: "claims apply", args: "-f <claim.yaml>", summary: "standalone store: validate, allocate on this node, store with status.allocation",
    examples: [`tessera claims apply -f deploy/examples/one-gpu.yaml ${FX} ${S}`, `cat claims.yaml | tessera claims apply -f - ${FX} ${S} -o json`],
    load: async () => (await import("./claims.js")).runApply },
  { name: "claims get", args: "<ns>/<name>", summary: "standalone store: one stored claim and its allocation",
    examples: [`tessera claims get default/one-gpu ${S}`, `tessera claims get default/one-gpu ${S} -o json`],
    load: async () => (await import("./claims-store.js")).runGet },
  { name: "claims list", args: "[-n <ns>]", summary: "standalone store: the stored claims",
    examples: [`tessera claims list ${S}`, `tessera claims list -n team-a ${S} -ojson`],
    load: async () => (await import("./claims-store.js")).runList },
  { name: "claims delete", args: "<ns>/<name>", summary: "standalone store: remove a claim (its devices become free)",
    examples: [`tessera claims delete default/one-gpu ${S}`, `tessera claims delete team-a/train ${S} -o json`],
    load: async () => (await import("./claims-store.js")).runDelete },
  { name: "proxy", args: "--listen <host:port> --endpoints <url,...>", summary: "the prefix-cache-aware in-node router (or --inference-pool <ns>/<name>)",
    examples: ["tessera proxy --listen 127.0.0.1:8080 --endpoints http://10.0.0.5:8000,http://10.0.0.6:8000", "tessera proxy --inference-pool default/llama --node-name $(hostname)"],
    load: async () => (await import("./proxy.js")).runProxy },
  { name: "version", args: "", summary: "versions of tessera, Node.js, the WASM core and the kubelet APIs served",
    examples: ["tessera version", "tessera version -o json"],
    load: async () => (await import("./version.js")).runVersion },
];

/** The verb named by the first one or two words of argv, and how many words that took. */
export function findVerb(argv: readonly string[]): { doc: VerbDoc; words: number } | undefined {
  const two = VERBS.find((v) => v.name === `${argv[0]} ${argv[1] ?? ""}`);
  if (two) return { doc: two, words: 2 };
  const one = VERBS.find((v) => v.name === argv[0]);
  return one ? { doc: one, words: 1 } : undefined;
}

/** Verb groups (`diag`, `claims`): words that start two-word verbs. */
export function isGroup(word: string | undefined): boolean {
  return word !== undefined && VERBS.some((v) => v.name.startsWith(`${word} `));
}
