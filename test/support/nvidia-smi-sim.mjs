#!/usr/bin/env node
// A simulated nvidia-smi executable for tests of the real seam (`--discovery nvidia-smi
// --nvidia-smi test/support/nvidia-smi-sim.mjs`): the same state machine as the fixture backend
// (agent/discovery/nvsmi-sim.ts, from dist/), printing the real tool's formats.
//   TESSERA_SIM_FIXTURE  fixture node folder whose captures it answers from (required)
//   TESSERA_SIM_STATE    MIG state file (required for MIG changes)
//   TESSERA_SIM_FAULTS   optional: injected faults (GPU lost / removed, ECC errors), see nvsmi-sim-health.ts
//   TESSERA_SIM_LOG      optional: each call's argv appended as one JSON line
//   TESSERA_SIM_KILL_PARENT_AFTER_CREATE=1  after a successful `mig -cgi`, SIGKILL the caller
//                        before answering: a crash between creating an instance and recording it
//   TESSERA_SIM_KILL_PARENT_AFTER_TIMESLICE=1  the same after a successful `compute-policy --set-timeslice`
//                        other than 0: a crash between setting a policy and recording the claim done
import { appendFileSync } from "node:fs";
import { createSimulatedNvidiaSmi } from "../../dist/agent/discovery/nvsmi-sim.js";

const args = process.argv.slice(2);
const fixtureDir = process.env.TESSERA_SIM_FIXTURE;
if (!fixtureDir) {
  process.stderr.write("nvidia-smi-sim: set TESSERA_SIM_FIXTURE to a fixture node folder\n");
  process.exit(9);
}
if (process.env.TESSERA_SIM_LOG) appendFileSync(process.env.TESSERA_SIM_LOG, JSON.stringify(args) + "\n");
const sim = createSimulatedNvidiaSmi({ fixtureDir, ...(process.env.TESSERA_SIM_STATE ? { stateFile: process.env.TESSERA_SIM_STATE } : {}), ...(process.env.TESSERA_SIM_FAULTS ? { faultsFile: process.env.TESSERA_SIM_FAULTS } : {}) });
const r = sim.run(args);
if (r.code === 0 && args.includes("-cgi") && process.env.TESSERA_SIM_KILL_PARENT_AFTER_CREATE === "1") process.kill(process.ppid, "SIGKILL");
if (r.code === 0 && args[0] === "compute-policy" && args.at(-1) !== "0" && process.env.TESSERA_SIM_KILL_PARENT_AFTER_TIMESLICE === "1") process.kill(process.ppid, "SIGKILL");
process.stdout.write(r.stdout);
process.stderr.write(r.stderr);
process.exitCode = r.code;
