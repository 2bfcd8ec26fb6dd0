// `tessera`, `tessera help [verb]`, `tessera <verb> --help`: text generated from the verb table
// (agent/cli/verbs.ts) and the flag tables the verbs parse with (VERB_FLAGS in config.ts).
import { NODE_FLAGS, OUTPUT_FLAG, VERB_FLAGS, type FlagSpec } from "../common/config.js";
import { VERBS, type VerbDoc } from "./verbs.js";

const placeholder: Record<FlagSpec["type"], string> = { string: " <value>", int: " <n>", list: " <a,b,...>", bool: "" };

function flagName(f: FlagSpec): string {
  return `${f.short ? `-${f.short}, ` : "    "}--${f.name}${placeholder[f.type]}`;
}

function flagText(f: FlagSpec): string {
  const def = f.default === undefined || f.default === "" ? "" : ` (default ${Array.isArray(f.default) ? f.default.join(",") : String(f.default)})`;
  return `${f.help}${f.env ? ` [$${f.env}]` : ""}${def}`;
}

function flagLines(specs: readonly FlagSpec[], indent: string): string[] {
  const width = Math.max(0, ...specs.map((f) => flagName(f).length));
  return specs.map((f) => `${indent}${flagName(f).padEnd(width)}  ${flagText(f)}`);
}

function verbLine(v: VerbDoc, width: number): string {
  return `  ${`tessera ${v.name}${v.args ? ` ${v.args}` : ""}`.padEnd(width)}  ${v.summary}`;
}

/** The global usage; with a group (`diag`, `claims`) only that group's verbs. */
export function renderUsage(group?: string): string {
  const verbs = VERBS.filter((v) => group === undefined || v.name.startsWith(`${group} `));
  const width = Math.max(...verbs.map((v) => `tessera ${v.name} ${v.args}`.length));
  const lines = ["tessera — GPU node agent for Kubernetes DRA", "", "Usage:", ...verbs.map((v) => verbLine(v, width))];
  if (group === undefined) lines.push(`  ${"tessera help [verb]".padEnd(width)}  this text, or one verb's flags and examples (also: tessera <verb> --help)`);
  const common = new Set<FlagSpec>([...NODE_FLAGS, OUTPUT_FLAG]);
  lines.push("", "Node flags (agent, diag, claims apply; env mirror in brackets):", ...flagLines([...NODE_FLAGS, OUTPUT_FLAG], "  "));
  for (const v of verbs) {
    const own = VERB_FLAGS[v.name].filter((f) => !common.has(f));
    if (own.length > 0) lines.push("", `tessera ${v.name}:`, ...flagLines(own, "  "));
  }
  lines.push("", "Verbs that print data take -o table|json (also -ojson). Errors: one line `TESSERA_<CODE>: ...` on stderr, exit 1.");
  lines.push("Run `tessera help <verb>` for a verb's flags and two examples.", "");
  return lines.join("\n");
}

/** One verb's help: usage line, what it does, every flag it parses (with env mirror and default), examples. */
export function renderVerbHelp(doc: VerbDoc, specs: readonly FlagSpec[]): string {
  const lines = [`Usage: tessera ${doc.name} ${doc.args ? `${doc.args} ` : ""}[flags]`, "", doc.summary, ""];
  const help: FlagSpec = { name: "help", short: "h", type: "bool", help: "this text" };
  lines.push("Flags (env mirror in brackets):", ...flagLines([...specs, help], "  "));
  lines.push("", "Examples:", ...doc.examples.map((e) => `  ${e}`), "");
  return lines.join("\n");
}
