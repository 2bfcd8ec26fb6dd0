// Golden-file assertions: the JSON of `actual` must equal test/golden/<file> byte for byte.
// UPDATE_GOLDEN=1 rewrites the files on purpose; a missing file is written and fails the test.
import type { Test } from "tap";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const GOLDEN_DIR = fileURLToPath(new URL("../../../test/golden/", import.meta.url));

export function golden(t: Test, file: string, actual: unknown): void {
  const p = join(GOLDEN_DIR, file);
  const text = JSON.stringify(actual, null, 2) + "\n";
  if (process.env.UPDATE_GOLDEN === "1" || !existsSync(p)) {
    mkdirSync(GOLDEN_DIR, { recursive: true });
    writeFileSync(p, text);
    if (process.env.UPDATE_GOLDEN !== "1") t.fail(`golden ${file} was missing and has been written; rerun`);
    return;
  }
  t.equal(text, readFileSync(p, "utf8"), `${file} matches (UPDATE_GOLDEN=1 to regenerate)`);
}
