// `tessera version [-o json]`: what is running: tessera, Node.js, the WASM core (ABI and the
// digest of the module file) and the kubelet and Kubernetes APIs served.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { outputFormat, parseFlags, VERB_FLAGS } from "../common/config.js";
import { TesseraError } from "../common/errors.js";
import { RESOURCE_API_VERSION } from "../kube/types.js";
import { SUPPORTED_VERSIONS } from "../plugin/registration.js";
import { DEFAULT_WASM_PATH, loadWasmCore } from "../wasm/core.js";
import type { CliIO } from "./io.js";

export interface VersionInfo {
  tessera: string;
  node: string;
  wasmCore: { abi: number; sha256: string };
  kubeletApis: string[];
  resourceApi: string;
}

const PACKAGE_JSON = new URL("../../../package.json", import.meta.url);

export function versionInfo(): VersionInfo {
  let pkg: { version?: unknown };
  try {
    pkg = JSON.parse(readFileSync(PACKAGE_JSON, "utf8")) as { version?: unknown };
  } catch (err) {
    throw new TesseraError("TESSERA_INTERNAL", `cannot read the package version from ${PACKAGE_JSON.pathname}`, { cause: err });
  }
  const core = loadWasmCore();
  const sha256 = createHash("sha256").update(readFileSync(DEFAULT_WASM_PATH)).digest("hex");
  return {
    tessera: String(pkg.version),
    node: process.versions.node,
    wasmCore: { abi: core.exports.coreVersion(), sha256 },
    kubeletApis: [...SUPPORTED_VERSIONS],
    resourceApi: RESOURCE_API_VERSION,
  };
}

export async function runVersion(argv: string[], io: CliIO): Promise<number> {
  const args = parseFlags(argv, VERB_FLAGS.version, io.env);
  if (args.positionals.length > 0) throw new TesseraError("TESSERA_USAGE", `tessera version takes no arguments, got "${args.positionals.join(" ")}"`);
  const v = versionInfo();
  if (outputFormat(args) === "json") {
    io.stdout(JSON.stringify(v) + "\n");
    return 0;
  }
  io.stdout(`tessera       ${v.tessera}\nnode          ${v.node}\nwasm core     ABI ${v.wasmCore.abi}, sha256 ${v.wasmCore.sha256.slice(0, 16)}\nkubelet APIs  ${v.kubeletApis.join(", ")}\nresource API  ${v.resourceApi}\n`);
  return 0;
}
