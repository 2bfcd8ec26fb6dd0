// `tessera <verb>`: dispatch only. Each verb lives in its own module under agent/cli/ (the table
// is agent/cli/verbs.ts) and is loaded on demand. `tessera`, `tessera help [verb]` and
// `tessera <verb> --help|-h` print help and exit 0.
import { HelpRequested } from "../common/config.js";
import { formatError, TesseraError } from "../common/errors.js";
import { renderUsage, renderVerbHelp } from "./help.js";
import { processIO, type CliIO } from "./io.js";
import { findVerb, isGroup } from "./verbs.js";

export const USAGE = renderUsage();

const isHelp = (a: string | undefined): boolean => a === "--help" || a === "-h";

export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
  if (argv.length === 0 || isHelp(argv[0]) || (argv[0] === "help" && argv.length === 1)) {
    io.stdout(USAGE);
    return 0;
  }
  // `tessera help claims apply` is `tessera claims apply --help`.
  const words = argv[0] === "help" ? [...argv.slice(1), "--help"] : argv;
  const found = findVerb(words);
  try {
    if (!found) {
      if (isGroup(words[0]) && (words.length === 1 || isHelp(words[1]))) {
        io.stdout(renderUsage(words[0]));
        return 0;
      }
      throw new TesseraError("TESSERA_USAGE", `unknown command "${words.filter((w) => !isHelp(w)).slice(0, 2).join(" ")}"; run \`tessera --help\``);
    }
    const verb = await found.doc.load();
    return await verb(words.slice(found.words), io);
  } catch (err) {
    if (err instanceof HelpRequested && found) {
      io.stdout(renderVerbHelp(found.doc, err.specs));
      return 0;
    }
    io.stderr(formatError(err) + "\n");
    if (io.env.TESSERA_DEBUG && err instanceof Error) io.stderr((err.stack ?? "") + "\n");
    return 1;
  }
}

/**
 * The process entry point (bin/tessera.js). A reader that goes away (`tessera ... | head -1`)
 * ends the output quietly: EPIPE on stdout or stderr stops further writes to that stream and
 * the verb's own exit code stands; no stack trace, for every verb, here in one place.
 */
export async function runProcess(argv: string[]): Promise<number> {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE" || err.code === "ERR_STREAM_DESTROYED") return;
      process.exitCode = 1;
    });
  }
  return main(argv, processIO);
}
