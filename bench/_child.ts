// Stopping a child process a bench started: SIGTERM, SIGKILL if it has not exited after
// `killAfterMs`, resolved once it has exited (at once if it already had).
import type { ChildProcess } from "node:child_process";

export async function stopChild(child: ChildProcess, killAfterMs = 30_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const t = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
  await exited;
  clearTimeout(t);
}
