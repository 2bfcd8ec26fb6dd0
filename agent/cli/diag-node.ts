// Placeholder: implemented by its own issue.
import { TesseraError } from "../common/errors.js";
import type { CliIO } from "./io.js";

export async function runTopology(_argv: string[], _io: CliIO): Promise<number> {
  throw new TesseraError("TESSERA_USAGE", "not implemented yet");
}
export async function runSlices(_argv: string[], _io: CliIO): Promise<number> {
  throw new TesseraError("TESSERA_USAGE", "not implemented yet");
}
