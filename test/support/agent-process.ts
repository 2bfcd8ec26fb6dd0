// A real `tessera agent` child process (bin/tessera.js), for tests that SIGKILL it mid-call.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const ROOT = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..", "..");

export interface AgentChild {
  proc: ChildProcess;
  exited: Promise<unknown>;
}

/** Spawns `tessera agent <flags>` with `env`; resolves once it logs that its sockets serve. */
export async function agentProcess(flags: readonly string[], env: NodeJS.ProcessEnv): Promise<AgentChild> {
  const proc = spawn(process.execPath, [join(ROOT, "bin", "tessera.js"), "agent", ...flags], { env, stdio: ["ignore", "ignore", "pipe"] });
  const exited = once(proc, "exit");
  const lines = createInterface({ input: proc.stderr as NodeJS.ReadableStream });
  const said: string[] = [];
  await new Promise<void>((resolve, reject) => {
    lines.on("line", (l) => {
      if (said.length < 20) said.push(l);
      if (l.includes("kubelet plugin serving")) resolve();
    });
    void exited.then(() => reject(new Error(`agent exited before serving: ${said.join(" | ")}`)));
  });
  return { proc, exited };
}
