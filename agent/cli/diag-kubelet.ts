// Placeholder: implemented by its own issue.
import { TesseraError } from "../common/errors.js";
import type { CliIO } from "./io.js";
export async function runPing(_argv: string[], _io: CliIO): Promise<number> {
  throw new TesseraError("TESSERA_USAGE", "not implemented yet");
}
export async function runPrepare(_argv: string[], _io: CliIO): Promise<number> {
  throw new TesseraError("TESSERA_USAGE", "not implemented yet");
}
export async function runUnprepare(_argv: string[], _io: CliIO): Promise<number> {
  throw new TesseraError("TESSERA_USAGE", "not implemented yet");
}
