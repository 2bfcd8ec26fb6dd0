#!/usr/bin/env node
// A simulated nvidia-cuda-mps-control for tests of the real seam (`--mps-control
// test/support/nvidia-cuda-mps-control-sim.mjs`). Like the real tool:
//   -d        starts a control daemon in the background for CUDA_MPS_PIPE_DIRECTORY: it listens on
//             <pipe>/control, writes <pipe>/nvidia-cuda-mps-control.pid and logs to
//             <CUDA_MPS_LOG_DIRECTORY>/control.log; refused while a daemon runs there
//   (no args) the client: commands on stdin, one per line, sent to the daemon of
//             CUDA_MPS_PIPE_DIRECTORY; their answers on stdout
// Commands: set_default_active_thread_percentage <1-100>, get_default_active_thread_percentage,
// set_default_device_pinned_mem_limit <dev> <n>M|G, get_default_device_pinned_mem_limit <dev>,
// get_server_list, quit. Modelled, not captured: the wording of refusals and their exit code 1.
//   TESSERA_MPS_SIM_LOG  optional: each call (argv, pipe dir, CUDA_VISIBLE_DEVICES, stdin) and each
//                        command the daemon ran, one JSON line each
import { spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
const pipeDir = process.env.CUDA_MPS_PIPE_DIRECTORY || "/tmp/nvidia-mps";
const logDir = process.env.CUDA_MPS_LOG_DIRECTORY || "/var/log/nvidia-mps";
const pidFile = join(pipeDir, "nvidia-cuda-mps-control.pid");
const socket = join(pipeDir, "control");
const record = (o) => {
  if (process.env.TESSERA_MPS_SIM_LOG) appendFileSync(process.env.TESSERA_MPS_SIM_LOG, JSON.stringify(o) + "\n");
};
const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

function runningPid() {
  if (!existsSync(pidFile)) return undefined;
  const pid = Number(readFileSync(pidFile, "utf8").trim());
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

function daemon() {
  const settings = { threads: 100, pinned: {} };
  const answer = (line) => {
    const [cmd, ...rest] = line.trim().split(/\s+/);
    record({ daemon: process.pid, pipe: pipeDir, command: line.trim() });
    appendFileSync(join(logDir, "control.log"), `[${new Date().toISOString()}] ${line.trim()}\n`);
    switch (cmd) {
      case "set_default_active_thread_percentage": {
        const n = Number(rest[0]);
        if (rest.length !== 1 || !Number.isInteger(n) || n < 1 || n > 100) return "Invalid percentage\n";
        settings.threads = n;
        return "";
      }
      case "get_default_active_thread_percentage":
        return `${settings.threads.toFixed(1)}\n`;
      case "set_default_device_pinned_mem_limit":
        if (rest.length !== 2 || !/^\d+$/.test(rest[0]) || !/^\d+[MG]$/.test(rest[1])) return "Invalid arguments\n";
        settings.pinned[rest[0]] = rest[1];
        return "";
      case "get_default_device_pinned_mem_limit":
        return `${settings.pinned[rest[0]] ?? "0M"}\n`;
      case "get_server_list":
        return "";
      case "quit":
        return "";
      default:
        return `Unrecognized command ${cmd}\n`;
    }
  };
  rmSync(socket, { force: true });
  const server = createServer((conn) => {
    let buf = "";
    conn.on("data", (d) => (buf += d));
    conn.on("end", () => {
      let out = "";
      let quit = false;
      for (const line of buf.split("\n").filter((l) => l.trim())) {
        out += answer(line);
        if (line.trim() === "quit") quit = true;
      }
      conn.end(out, () => {
        if (!quit) return;
        rmSync(pidFile, { force: true });
        server.close(() => process.exit(0));
      });
    });
  });
  server.listen(socket, () => {
    writeFileSync(`${pidFile}.tmp`, `${process.pid}\n`);
    renameSync(`${pidFile}.tmp`, pidFile);
    appendFileSync(join(logDir, "control.log"), `[${new Date().toISOString()}] Control daemon started (devices ${process.env.CUDA_VISIBLE_DEVICES ?? "all"})\n`);
  });
}

if (args[0] === "--sim-daemon") {
  daemon();
} else if (args[0] === "-d") {
  record({ argv: args, pipe: pipeDir, log: logDir, visible: process.env.CUDA_VISIBLE_DEVICES ?? null });
  if (runningPid() !== undefined) {
    process.stderr.write("An instance of this daemon is already running\n");
    process.exit(1);
  }
  mkdirSync(pipeDir, { recursive: true });
  mkdirSync(logDir, { recursive: true });
  rmSync(pidFile, { force: true });
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "--sim-daemon"], { detached: true, stdio: "ignore", env: process.env });
  child.unref();
  // The real -d returns once the daemon is up; so does this one (bounded: 10 s).
  for (let i = 0; i < 2000 && runningPid() !== child.pid; i++) sleep(5);
  process.exit(runningPid() === child.pid ? 0 : 1);
} else if (args.length === 0) {
  let input = "";
  process.stdin.on("data", (d) => (input += d));
  process.stdin.on("end", () => {
    record({ argv: args, pipe: pipeDir, input });
    if (runningPid() === undefined) {
      process.stdout.write("Cannot find MPS control daemon process\n");
      process.exit(1);
    }
    const conn = createConnection(socket);
    let out = "";
    conn.on("data", (d) => (out += d));
    conn.on("error", () => {
      process.stdout.write("Cannot find MPS control daemon process\n");
      process.exit(1);
    });
    conn.on("end", () => {
      process.stdout.write(out);
      process.exit(0);
    });
    conn.end(input);
  });
} else {
  process.stderr.write(`Unknown option ${args[0]}; usage: nvidia-cuda-mps-control [-d | -f]\n`);
  process.exit(1);
}
