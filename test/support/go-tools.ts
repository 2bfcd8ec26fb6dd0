// Go programs the tests run (kustomize, helm): each pinned to one version, built once from the Go
// module proxy with `go install <module>@<version>` into ~/.cache/tessera/<name>-<version>/ and
// reused by every later run. scripts/run-tests.mjs builds them before tap starts (a cold helm
// build takes minutes, longer than tap's per-file timeout); a test only looks them up, and a tool
// that is not there is a failure with this module's message, never a skipped check.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export interface GoTool {
  name: string;
  /** The main package, as `go install` takes it. */
  module: string;
  version: string;
}

export const KUSTOMIZE: GoTool = { name: "kustomize", module: "sigs.k8s.io/kustomize/kustomize/v5", version: "v5.7.1" };
/** The latest Helm 3 on the module proxy (`go list -m -versions helm.sh/helm/v3`, 2026-12-01). */
export const HELM: GoTool = { name: "helm", module: "helm.sh/helm/v3/cmd/helm", version: "v3.22.0" };

/** Which compiled test files need which tools (scripts/run-tests.mjs builds these first). */
export const TOOLS_BY_TEST: Record<string, readonly GoTool[]> = { "deploy.test.js": [KUSTOMIZE, HELM] };

/** A cold build on this project's 2 shared cores: helm 3.22 took minutes (docs/install.md). */
const BUILD_TIMEOUT_MS = 40 * 60_000;

/** ~/.cache/tessera (or $XDG_CACHE_HOME/tessera): where Go programs the tests and benches run are built once. */
export function tesseraCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "tessera");
}

export function toolDir(tool: GoTool, env: NodeJS.ProcessEnv = process.env): string {
  return join(tesseraCacheDir(env), `${tool.name}-${tool.version}`);
}

export function toolPath(tool: GoTool, env: NodeJS.ProcessEnv = process.env): string {
  return join(toolDir(tool, env), tool.name);
}

const install = (tool: GoTool): string => `go install ${tool.module}@${tool.version}`;

/** The built tool's path, or the one-line reason it is not there and how to get it. */
export function findTool(tool: GoTool, env: NodeJS.ProcessEnv = process.env): { path: string } | { missing: string } {
  const path = toolPath(tool, env);
  if (existsSync(path)) return { path };
  return { missing: `${tool.name} ${tool.version} is not built at ${path}: \`node scripts/run-tests.mjs deploy\` builds it with Go (\`${install(tool)}\`, Go toolchain required)` };
}

export interface BuildResult {
  tool: GoTool;
  path?: string;
  /** Seconds the build took; 0 when the tool was already there. */
  seconds: number;
  error?: string;
}

/** Builds the tool unless it is there. At nice 10: the machines these run on are shared. */
export function buildTool(tool: GoTool, env: NodeJS.ProcessEnv = process.env): BuildResult {
  const found = findTool(tool, env);
  if ("path" in found) return { tool, path: found.path, seconds: 0 };
  const go = spawnSync("go", ["version"], { encoding: "utf8", env, timeout: 30_000 });
  if (go.status !== 0) {
    return { tool, seconds: 0, error: `cannot build ${tool.name} ${tool.version}: no Go toolchain (\`go version\`: ${go.error?.message ?? go.stderr.trim()}); install Go >= 1.26 (helm v3.22 needs it) from https://go.dev/dl and rerun` };
  }
  const dir = toolDir(tool, env);
  mkdirSync(dir, { recursive: true });
  const started = process.hrtime.bigint();
  const r = spawnSync("nice", ["-n", "10", "go", "install", `${tool.module}@${tool.version}`], {
    encoding: "utf8",
    timeout: BUILD_TIMEOUT_MS,
    env: { ...env, GOBIN: dir, GOFLAGS: "-buildvcs=false" },
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const path = toolPath(tool, env);
  if (r.status === 0 && existsSync(path)) return { tool, path, seconds };
  const why = r.error?.message ?? r.stderr.trim().split("\n").slice(-3).join(" | ");
  return { tool, seconds, error: `\`${install(tool)}\` failed after ${seconds.toFixed(0)} s: ${why}` };
}
