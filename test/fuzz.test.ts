// Every registered fuzz surface (test/support/fuzz-surfaces.ts) for a small fixed budget: seeded,
// so a failure here names the seed and case index and reruns with `npm run bench -- fuzz`.
// The long budget is `npm run bench -- fuzz` (docs/reliability.md has the figures of the last one).
import t from "tap";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runFuzz, type FuzzSurface } from "./support/fuzz.js";
import { SURFACES } from "./support/fuzz-surfaces.js";

const BUDGET_MS = 2500; // per surface; the file stays under ~10 s
const SEED = 20261201;

t.test("runFuzz: same seed, same inputs; a failure names seed and case and saves the input", async (t) => {
  const seen: string[] = [];
  const probe: FuzzSurface = {
    name: "probe",
    async open() {
      return {
        gen: (rng) => Buffer.from(String(rng.int(1e9))),
        async exec(input) {
          seen.push(Buffer.from(input).toString());
          if (seen.length === 3) throw new Error("invariant broke");
        },
        async close() {},
      };
    },
  };
  const outDir = mkdtempSync(join(tmpdir(), "tessera-fuzz-"));
  const lines: string[] = [];
  const r = await runFuzz(probe, { seed: 7, cases: 5, outDir, report: (l) => lines.push(l) });
  t.same([r.cases, r.failures], [5, 1]);
  t.equal(r.firstFailure?.index, 2);
  t.equal(readFileSync(r.firstFailure?.file ?? "", "utf8"), seen[2], "the failing input is in the file");
  t.match(lines[0] ?? "", /seed 7 case 2 failed: invariant broke; input in .*probe-seed7-case2\.bin; rerun: npm run bench -- fuzz --surface probe --seed 7 --case 2/);
  const again: string[] = [];
  await runFuzz({ ...probe, open: async () => ({ gen: (rng) => Buffer.from(String(rng.int(1e9))), exec: async (i) => void again.push(Buffer.from(i).toString()), close: async () => undefined }) }, { seed: 7, first: 2, cases: 1, outDir });
  t.same(again, [seen[2]], "case 2 alone regenerates the same input");
  await t.rejects(runFuzz(probe, { seed: 1, outDir }), /bounded/, "an unbounded run is refused");
});

for (const surface of SURFACES) {
  t.test(`fuzz surface ${surface.name}: ${BUDGET_MS} ms, seed ${SEED}, no invariant broken`, async (t) => {
    const outDir = mkdtempSync(join(tmpdir(), `tessera-fuzz-${surface.name}-`));
    const r = await runFuzz(surface, { seed: SEED, timeMs: BUDGET_MS, outDir });
    t.comment(`${surface.name}: ${r.cases} cases, p99 ${r.p99Ms} ms, max RSS ${Math.round(r.maxRssBytes / 2 ** 20)} MiB`);
    t.ok(r.cases >= 20, `ran ${r.cases} cases`);
    t.equal(r.failures, 0, r.firstFailure ? `first failure: ${r.firstFailure.message} (${r.firstFailure.file})` : "no failures");
  });
}
