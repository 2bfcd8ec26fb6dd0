// `tessera demo`: the embedded default. One fixture node, a temporary kubelet root, CDI dir and
// standalone store, and the whole flow end to end through the same code paths the real verbs use:
// topology -> agent (sockets + ResourceSlices) -> kubelet handshake -> claims allocated by the
// WASM allocator -> "why pending?" -> NodePrepareResources/Unprepare with CDI -> the prefix-aware
// proxy in front of three mock model servers. Prints a readable summary; exits 0.
import { mkdtempSync, promises as fsp, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bool, NODE_FLAGS, parseFlags, resolveNodeConfig, str, VERB_FLAGS } from "../common/config.js";
import { formatError, TesseraError } from "../common/errors.js";
import { createMemoryLogger } from "../common/log.js";
import { startMockModelServer, startProxy, type MockModelServer } from "../proxy/index.js";
import { startAgent } from "./agent.js";
import { runApply, runExplain } from "./claims.js";
import { runPing, runPrepare, runUnprepare } from "./diag-kubelet.js";
import { runSlices, runTopology } from "./diag-node.js";
import { captureIO, type CliIO, type Verb } from "./io.js";


const NODE = "demo-node";

// Claims a pod author would write; the last one cannot fit (the two whole GPUs left sit on
// different NUMA nodes), to show `diag explain`.
const CLAIMS: Record<string, string> = {
  "train.yaml": `apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: { name: train, namespace: demo }
spec:
  devices:
    requests:
      - name: gpu
        exactly:
          deviceClassName: gpu.tessera.dev
          selectors:
            - cel: { expression: 'device.capacity["gpu.tessera.dev"].memory.compareTo(quantity("79Gi")) >= 0' }
`,
  "notebook.yaml": `apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: { name: notebook, namespace: demo }
spec:
  devices:
    requests:
      - name: slice
        exactly:
          deviceClassName: mig.tessera.dev
          selectors:
            - cel: { expression: 'device.attributes["gpu.tessera.dev"].profile == "1g.10gb"' }
`,
  "pair.yaml": `apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: { name: pair, namespace: demo }
spec:
  devices:
    requests:
      - name: gpus
        exactly:
          deviceClassName: gpu.tessera.dev
          count: 2
    constraints:
      - requests: [gpus]
        matchAttribute: gpu.tessera.dev/numaNode
`,
};

function indent(text: string): string {
  return text
    .trimEnd()
    .split("\n")
    .map((l) => "    " + l)
    .join("\n");
}

async function step(io: CliIO, title: string, verb: Verb, argv: string[], expectExit = 0): Promise<void> {
  io.stdout(`\n$ tessera ${title}\n`);
  const cap = captureIO(io.env);
  let code: number;
  try {
    code = await verb(argv, cap);
  } catch (err) {
    cap.stderr(formatError(err) + "\n"); // exactly what `tessera` itself prints for a failed verb
    code = 1;
  }
  const text = cap.out.join("") + cap.err.join("");
  io.stdout(indent(text) + "\n");
  if (code !== expectExit) throw new TesseraError("TESSERA_INTERNAL", `demo step "tessera ${title}" exited ${code}, expected ${expectExit}`);
}

export async function runDemo(argv: string[], io: CliIO): Promise<number> {
  const args = parseFlags(argv, VERB_FLAGS.demo, io.env);
  const fixture = str(args, "fixture");
  const dir = mkdtempSync(join(tmpdir(), "tessera-demo-"));
  const nodeArgs = ["--discovery", `fixture:${fixture}`, "--node-name", NODE, "--kubelet-root", join(dir, "kubelet"), "--cdi-root", join(dir, "cdi"), "--kube", `standalone:${join(dir, "store")}`];
  const config = resolveNodeConfig(parseFlags(nodeArgs, NODE_FLAGS, {}));
  const log = createMemoryLogger();
  const stops: (() => Promise<void>)[] = [];
  try {
    io.stdout(`Tessera demo on fixture node "${fixture}" (temporary root ${dir})\n`);
    io.stdout(`\n== 1. What the node has ==`);
    await step(io, "diag topology", runTopology, nodeArgs);

    io.stdout(`\n== 2. The agent starts: kubelet plugin sockets + ResourceSlices ==\n`);
    const agent = await startAgent(config, { log, bootId: async () => "demo-boot" });
    stops.push(() => agent.stop(2000));
    io.stdout(indent(`registration socket  ${agent.registrationSocket}\nDRA socket           ${agent.draSocket}`) + "\n");
    await step(io, "diag slices", runSlices, nodeArgs);
    await step(io, "diag ping", runPing, nodeArgs);

    io.stdout(`\n== 3. Pod authors' claims, allocated on this node by the WASM allocator ==`);
    for (const [file, text] of Object.entries(CLAIMS)) await fsp.writeFile(join(dir, file), text);
    await step(io, "claims apply -f train.yaml      # one whole GPU with >= 79Gi (an 80GB H100 reports 81559Mi)", runApply, [...nodeArgs, "-f", join(dir, "train.yaml")]);
    await step(io, "claims apply -f notebook.yaml   # one 1g MIG slice", runApply, [...nodeArgs, "-f", join(dir, "notebook.yaml")]);
    await step(io, "diag explain -f pair.yaml       # 2 GPUs on one NUMA node: why would this pod stay pending?", runExplain, [...nodeArgs, "-f", join(dir, "pair.yaml")]);

    io.stdout(`\n== 4. The kubelet prepares the claims (CDI specs, checkpoint) ==`);
    await step(io, "diag prepare demo/train", runPrepare, [...nodeArgs, "demo/train"]);
    await step(io, "diag prepare demo/notebook", runPrepare, [...nodeArgs, "demo/notebook"]);
    const specs = (await fsp.readdir(config.cdiRoot)).sort();
    io.stdout(`\n    CDI specs written to ${config.cdiRoot}:\n${indent(specs.join("\n"))}\n`);
    const firstSpec = specs[0];
    if (firstSpec) {
      type Edits = { env?: string[]; deviceNodes?: { path: string }[] };
      const spec = JSON.parse(await fsp.readFile(join(config.cdiRoot, firstSpec), "utf8")) as { cdiVersion: string; kind: string; containerEdits?: Edits; devices: { name: string; containerEdits?: Edits }[] };
      const nodes = (e?: Edits): string => (e?.deviceNodes ?? []).map((n) => n.path).join(" ");
      const lines = [`${firstSpec} (cdiVersion ${spec.cdiVersion}):`, `  every device: env ${(spec.containerEdits?.env ?? []).join(" ")}; device nodes ${nodes(spec.containerEdits)}`];
      for (const d of spec.devices) lines.push(`  ${spec.kind}=${d.name}: device nodes ${nodes(d.containerEdits)}`);
      io.stdout(indent(lines.join("\n")) + "\n");
    }
    await step(io, "diag unprepare demo/notebook", runUnprepare, [...nodeArgs, "demo/notebook"]);

    io.stdout(`\n== 5. The in-node proxy routes by prefix-cache affinity ==\n`);
    await demoProxy(io, stops);
    io.stdout(`\nDemo complete: discovery, ResourceSlices, kubelet plugin, allocator, CDI and routing all ran.\n`);
    return 0;
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    if (bool(args, "keep")) io.stdout(`(kept ${dir})\n`);
    else rmSync(dir, { recursive: true, force: true });
  }
}

async function demoProxy(io: CliIO, stops: (() => Promise<void>)[]): Promise<void> {
  const servers: MockModelServer[] = [];
  for (let i = 0; i < 3; i++) {
    const s = await startMockModelServer({ model: "demo-llm" });
    servers.push(s);
    stops.push(() => s.close());
  }
  const proxy = await startProxy({ listen: "127.0.0.1:0", endpoints: servers.map((s) => s.url) });
  stops.push(() => proxy.stop());
  io.stdout(indent(`$ tessera proxy --listen ${proxy.url.replace("http://", "")} --endpoints ${servers.map((s) => s.url).join(",")}`) + "\n");
  // Wait for the first metric scrape so every endpoint is ready.
  for (let i = 0; i < 100 && proxy.endpoints.states().filter((e) => e.ready).length < servers.length; i++) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const system = (topic: string): string => `You are a helpful assistant for ${topic}. `.repeat(12);
  const topics = ["billing questions", "the GPU cluster runbook", "legal review", "travel bookings"];
  const rows: string[] = ["request  system prompt               -> endpoint"];
  for (let round = 0; round < 3; round++) {
    for (const topic of topics) {
      const res = await fetch(`${proxy.url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "demo-llm", prompt: `${system(topic)}Question ${round}: what now?`, max_tokens: 4 }),
      });
      await res.arrayBuffer();
      const dest = res.headers.get("x-gateway-destination-endpoint") ?? "?";
      rows.push(`#${String(rows.length).padEnd(7)} ${topic.padEnd(26)}  -> ${dest}`);
    }
  }
  io.stdout(indent(rows.join("\n")) + "\n\n");
  for (const s of servers) {
    io.stdout(indent(`${s.id.padEnd(16)} served ${s.stats.requests} requests, prefix index holds ${proxy.router.indexedBlocks(s.id)} blocks`) + "\n");
  }
  io.stdout(indent("Requests sharing a system prompt stick to the replica that already cached it; different prompts spread.") + "\n");
}
