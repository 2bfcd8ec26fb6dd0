// Node discovery: golden inventories per fixture, parser robustness (truncated, N/A, one vs many
// GPUs, MIG None, unknown DTD, garbage), a hanging nvidia-smi killed by the timeout, the real
// backend fed through a fake exec, keep-last-good rediscovery, and the diag verbs.
// Regenerate goldens explicitly: UPDATE_GOLDEN=1 npx tap dist/test/discovery.test.js
import t, { type Test } from "tap";
import { EventEmitter } from "node:events";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { NodeConfig } from "../agent/common/config.js";
import { isTesseraError } from "../agent/common/errors.js";
import { createMemoryLogger } from "../agent/common/log.js";
import { createDiscovery, defaultFixturesDir } from "../agent/discovery/index.js";
import type { ExecFn } from "../agent/discovery/exec.js";
import { execFile } from "../agent/discovery/exec.js";
import type { Inventory } from "../agent/discovery/model.js";
import { deviceFacts } from "../agent/discovery/model.js";
import { parseNvidiaSmiXml, normalizeBusId, memBytes } from "../agent/discovery/nvsmi-xml.js";
import { parseXml, XmlSyntaxError } from "../agent/discovery/xml-tree.js";
import { XMLValidator } from "fast-xml-parser";
import { parseListGpus, parseMigLgi } from "../agent/discovery/nvsmi-text.js";
import { pcieRootFromLink, parseMigMinors } from "../agent/discovery/sysfs.js";
import { computeCapability } from "../agent/discovery/mig-profiles.js";
import { createInventoryWatcher } from "../agent/discovery/watcher.js";
import { systeminformationHostFacts } from "../agent/discovery/host.js";
import { main } from "../agent/cli/main.js";
import { captureIO } from "../agent/cli/io.js";
import { golden } from "./support/golden.js";
import { diagDeps } from "../agent/cli/diag-node.js";

const ROOT = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
const FIXTURES = defaultFixturesDir();
export const FIXTURE_NAMES = ["h100-sxm-8x", "a100-80gb-mig", "l40s-1x", "workstation-2numa-4gpu", "mixed-2numa-h100-mig"];

function config(discovery: string, extra: Partial<NodeConfig> = {}): NodeConfig {
  return {
    driverName: "gpu.tessera.dev", nodeName: "golden-node", kubeletRoot: "/k", stateDir: "/k/s", cdiRoot: "/cdi", sysfsRoot: "/sys", discovery,
    kube: "auto", migMode: "static", gpuSharing: "none", nvidiaSmi: "nvidia-smi", mpsControl: "nvidia-cuda-mps-control", procRoot: "/proc", logLevel: "info", registrationSocket: "/k/r.sock", draSocket: "/k/d.sock", checkpointFile: "/k/c.json", ...extra,
  };
}


const xmlOf = (name: string): string => readFileSync(join(FIXTURES, name, "nvidia-smi-q-x.xml"), "utf8");

t.test("golden inventory per fixture node", async (t) => {
  for (const name of FIXTURE_NAMES) {
    const inv = await createDiscovery(config(`fixture:${name}`)).discover();
    golden(t, `inventory-${name}.json`, inv);
  }
  const h100 = await createDiscovery(config("fixture:h100-sxm-8x")).discover();
  t.equal(h100.gpus.length, 8);
  t.same(h100.gpus.map((g) => g.pcieRoot), ["pci0000:50", "pci0000:61", "pci0000:72", "pci0000:83", "pci0000:94", "pci0000:a5", "pci0000:b6", "pci0000:c7"]);
  t.same(h100.gpus.map((g) => g.numaNode), [0, 0, 0, 0, 1, 1, 1, 1]);
  t.equal(h100.gpus[0]?.pciBusId, "0000:53:00.0", "8-digit nvidia-smi domain becomes the 4-digit sysfs form");
  t.equal(h100.conditions, undefined, "a clean fixture has no conditions");
  const l40s = await createDiscovery(config("fixture:l40s-1x")).discover();
  t.equal(l40s.gpus[0]?.numaNode, undefined, "numa_node -1 means unknown: no attribute");
  t.equal(l40s.gpus[0]?.migMode, "unsupported", "current_mig N/A");
  const a100 = await createDiscovery(config("fixture:a100-80gb-mig")).discover();
  t.same(a100.gpus[0]?.migDevices.map((m) => m.name), ["gpu-1-mig-15-0-2", "gpu-1-mig-15-2-2", "gpu-1-mig-15-4-2", "gpu-1-mig-15-6-2"], "names from minor, profile id and placement");
  t.match(a100.conditions?.[0]?.message ?? "", /attached_gpus is 4 but 1/, "the trimmed upstream capture is reported, not hidden");
  const facts = deviceFacts(a100).get("gpu-1-mig-15-2-2");
  t.same(facts?.deviceNodes, ["/dev/nvidia1", "/dev/nvidia-caps/nvidia-cap174", "/dev/nvidia-caps/nvidia-cap175"], "MIG caps from mig-minors (gpu1/gi4)");
  t.equal(facts?.uuid, "MIG-a1004010-0000-5000-8000-000000000004");
  const mixed = await createDiscovery(config("fixture:mixed-2numa-h100-mig")).discover();
  t.same(mixed.gpus.map((g) => `${g.name}:${g.numaNode}:${g.migDevices.length}`), ["gpu-0:0:4", "gpu-1:0:0", "gpu-4:1:3", "gpu-5:1:0"], "mixed MIG and whole GPUs on two NUMA nodes; names by minor, not index");
});

t.test("xml parser robustness: clear error or sensible partial result, never a crash", async (t) => {
  const h100 = xmlOf("h100-sxm-8x");
  const cutAfter3 = h100.slice(0, h100.split("</gpu>", 3).join("</gpu>").length + "</gpu>".length + 40);
  const partial = parseNvidiaSmiXml(cutAfter3);
  t.equal(partial.gpus.length, 3, "truncated after 3 GPUs: the 3 complete ones");
  t.match(partial.warnings.join("\n"), /truncated/);
  t.throws(() => parseNvidiaSmiXml(h100.slice(0, 2000)), { code: "TESSERA_PARSE", message: /not well-formed XML.*truncated/ }, "cut inside the first GPU");
  for (const garbage of ["", "hello", "{\"json\": true}", "<html><body>502</body></html>", "\u0000\u0001binary", "<nvidia_smi_log><gpu"]) {
    let ok = false;
    try {
      const r = parseNvidiaSmiXml(garbage);
      ok = r.gpus.length === 0;
    } catch (err) {
      ok = isTesseraError(err) && err.code === "TESSERA_PARSE";
    }
    t.ok(ok, `garbage ${JSON.stringify(garbage.slice(0, 20))} gives TESSERA_PARSE or no GPUs`);
  }
  const v99 = parseNvidiaSmiXml(h100.replace("nvsmi_device_v13.dtd", "nvsmi_device_v99.dtd"));
  t.equal(v99.gpus.length, 8, "unknown DTD version still parses");
  t.match(v99.warnings.join("\n"), /v99 is not one we were tested with/);
  const one = parseNvidiaSmiXml(xmlOf("l40s-1x"));
  t.equal(one.gpus.length, 1, "a single <gpu> is still a list");
  t.same(one.gpus[0]?.migDevices, [], "<mig_devices>None</mig_devices>");
  const na = parseNvidiaSmiXml(xmlOf("l40s-1x").replace("<minor_number>0</minor_number>", "<minor_number>N/A</minor_number>"));
  t.equal(na.gpus.length, 0, "a GPU without a minor cannot be named: skipped");
  t.match(na.warnings.join("\n"), /minor_number/);
  const naMem = parseNvidiaSmiXml(xmlOf("l40s-1x").replace("<total>46068 MiB</total>", "<total>N/A</total>"));
  t.equal(naMem.gpus[0]?.memoryBytes, 0, "N/A memory is 0, not NaN");
  t.equal(normalizeBusId("00000000:CA:00.0"), "0000:ca:00.0");
  t.throws(() => normalizeBusId("nonsense"), { code: "TESSERA_PARSE" });
  t.equal(memBytes("81559 MiB"), 81559 * 2 ** 20);
  t.equal(memBytes("N/A"), undefined);
  // Seeded, bounded: any prefix of a real capture either parses partially or fails with TESSERA_PARSE.
  let seed = 12345;
  const next = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
  const a100 = xmlOf("a100-80gb-mig");
  for (let i = 0; i < 40; i++) {
    const cut = next() % a100.length;
    try {
      parseNvidiaSmiXml(a100.slice(0, cut));
    } catch (err) {
      if (!isTesseraError(err) || err.code !== "TESSERA_PARSE") t.fail(`cut at ${cut}: ${String(err)}`);
    }
  }
});

t.test("xml reader: well-formedness as a general validator sees it, stricter only where XML 1.0 is", async (t) => {
  // fast-xml-parser's validator (a devDependency, the parser discovery used before) is the oracle: on
  // seeded, bounded mutations of a real capture, everything it rejects our reader rejects too. Where
  // ours rejects what it accepts, the reason must be one XML 1.0 itself gives: an undefined entity or
  // an illegal character reference (no DTD is read, so only the five predefined entities exist), a
  // DOCTYPE that is misplaced or misshapen, "]]>" outside a CDATA section.
  const base = xmlOf("a100-80gb-mig");
  let seed = 7;
  const rnd = (n: number): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  const toks = ["<", ">", "&", '"', "'", "/", "=", "!", "?", "-", "<a>", "</a>", "<b/>", "&amp;", "&bogus;", "&#0;", "<!-- x -->", "<![CDATA[x]]>", " ", "\u0001", "]]>", "--", "<?pi x?>", "<!DOCTYPE x>", 'x="1"'];
  const missed: string[] = [];
  const stricter = new Map<string, number>();
  let rejected = 0;
  const N = 1500;
  for (let i = 0; i < N; i++) {
    const p = rnd(base.length);
    const k = rnd(4);
    const q = rnd(base.length);
    const doc = k === 0 ? base.slice(0, p) + base.slice(p + 1 + rnd(5)) : k === 1 ? base.slice(0, p) + (toks[rnd(toks.length)] as string) + base.slice(p) : k === 2 ? base.slice(0, p) + base.slice(q, q + rnd(40)) + base.slice(p) : base.slice(0, p);
    const oracle = XMLValidator.validate(doc) === true;
    let ours: string | undefined;
    try {
      parseXml(doc);
    } catch (err) {
      if (!(err instanceof XmlSyntaxError)) throw err;
      ours = err.message;
    }
    if (ours !== undefined) rejected++;
    if (!oracle && ours === undefined) missed.push(`mutation ${i} at ${p}: ${JSON.stringify(doc.slice(Math.max(0, p - 30), p + 30))}`);
    if (oracle && ours !== undefined) {
      const why = /^bad reference|DOCTYPE|markup declaration inside an element|"\]\]>" in character data/.exec(ours)?.[0] ?? ours;
      stricter.set(why, (stricter.get(why) ?? 0) + 1);
    }
  }
  t.same(missed, [], `of ${N} mutations, none the oracle rejects is accepted (${rejected} rejected)`);
  t.ok(rejected > N / 3, `the mutations do break documents (${rejected} of ${N})`);
  for (const why of stricter.keys()) t.match(why, /^(bad reference|DOCTYPE|markup declaration inside an element|"\]\]>" in character data)$/, `stricter than the oracle only as XML 1.0 is: ${why}`);

  const bad: [string, RegExp][] = [
    ["<a><b></a></b>", /<\/a> does not close <b>/],
    ["<a></a><a></a>", /second root/],
    ["<a x=1></a>", /not quoted/],
    ['<a x="1" x="2"></a>', /repeated/],
    ['<a x="<"></a>', /"<" in the value/],
    ["<a>&lt</a>", /bad reference/],
    ["<a>&#xD800;</a>", /bad reference/],
    ["<a><!-- a -- b --></a>", /"--" inside a comment/],
    ["<a>x]]>y</a>", /"\]\]>" in character data/],
    ["text<a/>", /text before the root/],
    ["<a/>text", /text after the root/],
    ["<a>", /not closed/],
    ["<1a/>", /expected a name/],
    ["<a\u0001/>", /expected whitespace before an attribute|expected ">"/],
    [" <?xml version=\"1.0\"?><a/>", /XML declaration is only allowed at the start/],
    ["<a/><!DOCTYPE a>", /DOCTYPE declaration is only allowed once, before the root/],
    ["<a>" + "<b>".repeat(300), /nested deeper than 256/],
  ];
  for (const [doc, re] of bad) t.throws(() => parseXml(doc), re, `refused: ${JSON.stringify(doc.slice(0, 30))}`);
  const err = (() => {
    try {
      parseXml("<a>\n  <b>\n  </c>\n</a>");
    } catch (e) {
      return e as XmlSyntaxError;
    }
    return undefined;
  })();
  t.same([err?.line, err?.column], [3, 3], "errors carry the 1-based line and column of the offending markup");
  const ok = parseXml('\ufeff<?xml version="1.0"?>\n<!DOCTYPE r SYSTEM "r.dtd" [ <!ENTITY x "y"> ]>\n<r a=\'1 &amp; 2\'><x>&lt;&#65;&#x42;<![CDATA[<raw>]]></x><!-- c --><?pi data?><y/></r>\n');
  t.same(ok, { name: "r", attrs: { a: "1 & 2" }, text: "", children: [{ name: "x", attrs: {}, text: "<AB<raw>", children: [] }, { name: "y", attrs: {}, text: "", children: [] }] }, "BOM, declaration, DOCTYPE with an internal subset, references, CDATA, comment, PI");
});

t.test("-L, mig -lgi, sysfs helpers and compute capability", async (t) => {
  const l = parseListGpus(readFileSync(join(FIXTURES, "mixed-2numa-h100-mig", "nvidia-smi-L.txt"), "utf8"));
  t.same(l.map((g) => g.migs.length), [4, 0, 3, 0]);
  t.same(parseListGpus("GPU 0: A100-SXM4-40GB (UUID: GPU-5d5b)\n  MIG 1g.5gb Device 0: (UUID: MIG-GPU-5d5b/7/0)\n")[0]?.migs[0]?.uuid, "MIG-GPU-5d5b/7/0", "R450 MIG UUID form");
  t.same(parseListGpus("garbage\n\n"), []);
  const rows = parseMigLgi(readFileSync(join(FIXTURES, "a100-80gb-mig", "nvidia-smi-mig-lgi.txt"), "utf8"));
  t.same(rows.map((r) => `${r.profileId}@${r.placementStart}:${r.placementSize}/gi${r.gpuInstanceId}`), ["15@0:2/gi3", "15@2:2/gi4", "15@4:2/gi5", "15@6:2/gi6"]);
  t.same(parseMigLgi("No MIG-enabled devices found.\n"), []);
  t.equal(pcieRootFromLink("../../../devices/pci0000:c0/0000:c0:01.1/0000:c1:00.0"), "pci0000:c0");
  t.equal(pcieRootFromLink("../../../devices/platform/foo"), undefined);
  t.equal(parseMigMinors("config 1\nmonitor 2\ngpu0/gi3/access 30\ngpu0/gi3/ci0/access 31\njunk\n").get("gpu0/gi3/ci0/access"), 31);
  t.same(["Hopper|NVIDIA H100 80GB HBM3", "Ampere|NVIDIA A100-SXM4-80GB", "Ada Lovelace|NVIDIA L40S", "Blackwell|NVIDIA B200", "Ampere|NVIDIA A10", "Nope|x"].map((s) => computeCapability(...(s.split("|") as [string, string]))), ["9.0", "8.0", "8.9", "10.0", "8.6", undefined]);
});

function fakeScript(dir: string, name: string, body: string): string {
  const p = join(dir, name);
  writeFileSync(p, `#!/bin/sh\n${body}\n`);
  chmodSync(p, 0o755);
  return p;
}

t.test("exec: a hanging nvidia-smi is killed by the timeout and named in the condition", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "tessera-exec-"));
  const pidFile = join(dir, "pid");
  const hang = fakeScript(dir, "nvidia-smi", `echo $$ > ${pidFile}\nexec sleep 30`);
  const started = Date.now();
  const err = await createDiscovery(config("nvidia-smi"), { nvidiaSmi: hang, execOptions: { timeoutMs: 300 } }).discover().catch((e: unknown) => e);
  t.ok(isTesseraError(err) && err.code === "TESSERA_DISCOVERY_TIMEOUT", "TESSERA_DISCOVERY_TIMEOUT");
  t.match(String((err as Error).message), /did not finish within 300 ms and was killed/);
  t.ok(Date.now() - started < 5000, "returns promptly");
  const pid = Number(readFileSync(pidFile, "utf8"));
  // The promise settles at the kill (a process stuck in the driver may never exit); reaping follows.
  const alive = (): boolean => { try { process.kill(pid, 0); return true; } catch { return false; } };
  for (let i = 0; i < 100 && alive(); i++) await new Promise((r) => setTimeout(r, 20));
  t.notOk(alive(), "the hung child is gone (SIGKILL)");
  await t.rejects(execFile(fakeScript(dir, "loud", "exec cat /dev/zero"), [], { timeoutMs: 5000, maxBytes: 4096 }), { code: "TESSERA_DISCOVERY_OUTPUT_TOO_LARGE" });
  await t.rejects(createDiscovery(config("nvidia-smi"), { nvidiaSmi: fakeScript(dir, "fails", "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver' >&2\nexit 9") }).discover(), {
    code: "TESSERA_DISCOVERY",
    message: /exited with 9: NVIDIA-SMI has failed/,
  });
  await t.rejects(createDiscovery(config("nvidia-smi"), { nvidiaSmi: join(dir, "absent") }).discover(), { code: "TESSERA_DISCOVERY", message: /not found on PATH/ });
  const r = await execFile("/bin/echo", ["a;", "$(rm -rf /)"], { timeoutMs: 2000, maxBytes: 1000 });
  t.equal(r.stdout, "a; $(rm -rf /)\n", "no shell: arguments are passed verbatim");
});

t.test("real backend through a fake exec gives the fixture's inventory; -L failure only degrades", async (t) => {
  const name = "mixed-2numa-h100-mig";
  const files: Record<string, string> = { "-q -x": "nvidia-smi-q-x.xml", "-L": "nvidia-smi-L.txt", "mig -lgi": "nvidia-smi-mig-lgi.txt" };
  const calls: string[] = [];
  let failL = false;
  const exec: ExecFn = async (_file, args) => {
    const key = args.join(" ");
    calls.push(key);
    if (key === "-L" && failL) return { stdout: "", stderr: "Unable to determine the device handle\n", code: 15 };
    return { stdout: readFileSync(join(FIXTURES, name, files[key] as string), "utf8"), stderr: "", code: 0 };
  };
  const deps = { exec, procRoot: join(FIXTURES, name, "proc"), hostFacts: async () => ({ cpuModel: "fake" }) };
  const real = await createDiscovery(config("nvidia-smi", { sysfsRoot: join(FIXTURES, name, "sys") }), deps).discover();
  const fixture = await createDiscovery(config(`fixture:${name}`)).discover();
  t.same(calls, ["-q -x", "-L", "mig -lgi"]);
  t.same(real.gpus, fixture.gpus, "same parsers, same result");
  failL = true;
  const log = createMemoryLogger();
  const degraded = await createDiscovery(config("nvidia-smi", { sysfsRoot: join(FIXTURES, name, "sys") }), { ...deps, logger: log }).discover();
  t.equal(degraded.gpus.length, 4, "GPUs still there");
  t.equal(degraded.gpus[0]?.migDevices[0]?.uuid, undefined, "MIG UUIDs unknown");
  t.match(degraded.conditions?.[0]?.message ?? "", /-L \(MIG UUIDs unknown\).*exited with 15/);
  t.ok(log.records.some((r) => r.level === "warn" && r.msg === "discovery condition"), "conditions are logged");
  // Host facts (systeminformation spawns lsb_release etc.) are read once, not every rediscovery.
  let hostCalls = 0;
  const repeated = createDiscovery(config("nvidia-smi", { sysfsRoot: join(FIXTURES, name, "sys") }), { ...deps, hostFacts: async () => (hostCalls++, { cpuModel: "fake" }) });
  const [first, second] = [await repeated.discover(), await repeated.discover()];
  t.equal(hostCalls, 1, "host facts read once per discovery instance");
  t.same([first.host, second.host], [{ cpuModel: "fake" }, { cpuModel: "fake" }]);
});

t.test("watcher keeps the last good inventory and exposes the condition; SIGHUP rediscovers", async (t) => {
  const good = await createDiscovery(config("fixture:l40s-1x")).discover();
  let fail = false;
  let runs = 0;
  const changes: Inventory[] = [];
  const signals = new EventEmitter();
  const w = createInventoryWatcher({
    discovery: { discover: async () => { runs++; if (fail) throw Object.assign(new Error("nvidia-smi -q -x did not finish"), { code: "TESSERA_DISCOVERY_TIMEOUT" }); return good; } },
    intervalMs: 0, signals, onChange: (inv) => changes.push(inv), logger: createMemoryLogger(),
  });
  t.equal(await w.start(), good);
  fail = true;
  t.equal(await w.rediscover(), good, "failure keeps the last good inventory, never an empty node");
  t.equal(w.current(), good);
  t.match(w.condition()?.message ?? "", /did not finish/);
  fail = false;
  const before = runs;
  signals.emit("SIGHUP");
  await w.rediscover(); // joins the SIGHUP run
  t.ok(runs > before, "SIGHUP ran discovery");
  t.equal(w.condition(), undefined, "condition cleared after a good run");
  t.equal(changes.length, 1, "onChange only when the inventory changed");
  w.stop();
  t.equal(signals.listenerCount("SIGHUP"), 0, "stop() unsubscribes");
  const empty = createInventoryWatcher({ discovery: { discover: async () => { throw new Error("no driver"); } }, intervalMs: 0 });
  await t.rejects(empty.start(), /no driver/, "no inventory at all: start fails loudly");
});

t.test("diag topology and diag slices (fixtures, json, failing nvidia-smi)", async (t) => {
  const io = captureIO();
  t.equal(await main(["diag", "topology", "--discovery", "fixture:workstation-2numa-4gpu", "--node-name", "ws"], io), 0);
  const out = io.out.join("");
  t.match(out, /NUMA 0 {2}cpus 0-31\n├─ pci0000:00\n│ {2}└─ gpu-0 {2}NVIDIA RTX 6000 Ada Generation {2}0000:01:00.0/);
  t.match(out, /NUMA 1 {2}cpus 32-63\n├─ pci0000:c0/);
  const j = captureIO();
  t.equal(await main(["diag", "topology", "--discovery", "fixture:mixed-2numa-h100-mig", "-o", "json"], j), 0);
  const tree = JSON.parse(j.out.join("")) as { numaNodes: { id: number; pcieRoots: { gpus: { migDevices: unknown[] }[] }[] }[] };
  t.same(tree.numaNodes.map((n) => n.pcieRoots.map((r) => r.gpus[0]?.migDevices.length)), [[4, 0], [3, 0]]);
  const dir = mkdtempSync(join(tmpdir(), "tessera-diag-"));
  diagDeps.discovery = { nvidiaSmi: fakeScript(dir, "nvidia-smi", "exec sleep 30"), execOptions: { timeoutMs: 200 } };
  t.teardown(() => void (diagDeps.discovery = {}));
  for (const verb of ["topology", "slices"]) {
    const e = captureIO();
    t.equal(await main(["diag", verb, "--discovery", "nvidia-smi", "--node-name", "n"], e), 1);
    t.match(e.err.join(""), /^TESSERA_DISCOVERY_TIMEOUT: discovery \(nvidia-smi\) failed: .*killed/, `diag ${verb} shows the condition in one line`);
  }
  const bad = captureIO();
  t.equal(await main(["diag", "slices", "--discovery", "fixture:no-such-node"], bad), 1);
  t.match(bad.err.join(""), /^TESSERA_FIXTURE: fixture .*no-such-node has no nvidia-smi-q-x.xml/);
});

t.test("host facts via systeminformation (cpu, mem, osInfo; never graphics)", async (t) => {
  const facts = await systeminformationHostFacts(10_000)();
  t.ok((facts.cpuCores ?? 0) > 0 && (facts.memoryBytes ?? 0) > 0, "cores and memory of this machine");
  const src = readFileSync(join(ROOT, "agent", "discovery", "host.ts"), "utf8");
  t.notMatch(src.replace(/\/\/.*$/gm, ""), /graphics\s*\(/, "graphics() is not called");
});

t.test("hostile nvidia-smi values: the bad device is dropped with a condition, the rest is published", async (t) => {
  const { buildResourceSlices } = await import("../agent/slices/build.js");
  const { checkSlice } = await import("../agent/slices/limits.js");
  const { GPU_UUID, MIG_UUID, migProblems, attributeText } = await import("../agent/discovery/validate.js");
  const { discoverOutputs, fixtureOutputs } = await import("./support/nvsmi-fake.js");
  const h100 = fixtureOutputs("h100-sxm-8x");
  const mixed = fixtureOutputs("mixed-2numa-h100-mig");
  const swap = (s: string, from: string, to: string): string => {
    if (!s.includes(from)) throw new Error(`fixture has no ${from}`);
    return s.replace(from, to);
  };
  /** Everything published is safe: slices pass the API rules, UUIDs and device paths are well-formed. */
  const publishable = (t: Test, inv: Inventory, what: string): void => {
    for (const mode of ["static", "dynamic"] as const) {
      const slices = buildResourceSlices(inv, { driverName: "gpu.tessera.dev", nodeName: "n", migMode: mode });
      t.same(slices.flatMap(checkSlice), [], `${what}: ${mode} slices pass checkSlice`);
    }
    for (const f of deviceFacts(inv).values()) {
      if (!(f.kind === "gpu" ? GPU_UUID : MIG_UUID).test(f.uuid) && f.kind === "gpu") t.fail(`${what}: ${f.name} uuid ${f.uuid}`);
      for (const p of f.deviceNodes) if (!/^\/dev\/nvidia(\d{1,3}|-caps\/nvidia-cap\d{1,7})$/.test(p)) t.fail(`${what}: ${f.name} device node ${p}`);
    }
  };
  const gpuCases: [string, string, string][] = [
    ["memory total 999…9 MiB (was a RangeError in slice building, retried forever)", "<total>81559 MiB</total>", `<total>${"9".repeat(400)} MiB</total>`],
    ["UUID GPU-x,all (would widen NVIDIA_VISIBLE_DEVICES)", "<uuid>GPU-00000002-0000-0000-0000-000000000002</uuid>", "<uuid>GPU-x,all</uuid>"],
    ["UUID $(reboot)", "<uuid>GPU-00000002-0000-0000-0000-000000000002</uuid>", "<uuid>$(reboot)</uuid>"],
    ["minor 9007199254740992 (/dev/nvidia9007199254740992)", "<minor_number>3</minor_number>", "<minor_number>9007199254740992</minor_number>"],
    ["minor -1", "<minor_number>3</minor_number>", "<minor_number>-1</minor_number>"],
    ["minor 255 (/dev/nvidiactl)", "<minor_number>3</minor_number>", "<minor_number>255</minor_number>"],
    ["a UUID twice", "<uuid>GPU-00000002-0000-0000-0000-000000000002</uuid>", "<uuid>GPU-00000001-0000-0000-0000-000000000001</uuid>"],
  ];
  for (const [what, from, to] of gpuCases) {
    const log = createMemoryLogger();
    const inv = await discoverOutputs("h100-sxm-8x", { ...h100, xml: swap(h100.xml, from, to) }, log);
    t.equal(inv.gpus.length, 7, `${what}: that GPU dropped, the other 7 published`);
    const c = inv.conditions?.find((x) => x.code === "TESSERA_DISCOVERY_VALUE");
    t.match(c?.message ?? "", /GPU not published/, `${what}: a condition says so`);
    t.ok(log.records.some((r) => r.msg === "discovery condition" && JSON.stringify(r).includes("TESSERA_DISCOVERY_VALUE")), `${what}: logged`);
    publishable(t, inv, what);
  }
  const version = await discoverOutputs("h100-sxm-8x", { ...h100, xml: swap(h100.xml, "<driver_version>", `<driver_version>${"9".repeat(40)}`) });
  t.equal(version.gpus.length, 8, "a bad driver version drops only that fact");
  t.equal(version.driverVersion, undefined);
  t.match(version.conditions?.map((c) => c.message).join("\n") ?? "", /driver_version .* not a dotted number/);
  publishable(t, version, "driver version of 40 digits");
  const name = await discoverOutputs("h100-sxm-8x", { ...h100, xml: h100.xml.replace(/<product_name>[^<]*</, `<product_name>${"\u0007evil ".repeat(60)}😀<`) });
  t.ok(name.gpus.every((g) => g.productName.length <= 64 && !/\p{Cc}/u.test(g.productName)), "product names cut to 64 characters, control characters removed");
  t.equal(attributeText(`${"x".repeat(63)}😀`), "x".repeat(63), "a cut never splits a surrogate pair");
  publishable(t, name, "hostile product name");
  const migCases: [string, string][] = [
    ["R450 MIG-GPU-<uuid>/<gi>/<ci> form (in no capture here)", "MIG-GPU-00000000-0000-0000-0000-000000000000/9/0"],
    ["a MIG UUID another device has", "MIG-e1000300-0000-5000-8000-000000000000"],
  ];
  for (const [what, uuid] of migCases) {
    const inv = await discoverOutputs("mixed-2numa-h100-mig", { ...mixed, list: swap(mixed.list ?? "", "MIG-e1000901-0000-5000-8000-000000000001", uuid) });
    t.same(inv.gpus.map((g) => g.migDevices.length), [3, 0, 3, 0], `${what}: that MIG device dropped, its GPU and the rest published`);
    t.match(inv.conditions?.map((c) => `${c.code} ${c.message}`).join("\n") ?? "", /TESSERA_DISCOVERY_VALUE .*MIG GI .*device not published/);
    publishable(t, inv, what);
  }
  const lgi = await discoverOutputs("mixed-2numa-h100-mig", { ...mixed, lgi: (mixed.lgi ?? "").replace(/ 0:2 /, " 6:4 ") });
  t.ok(lgi.conditions?.some((c) => /placement 6:4 outside/.test(c.message)), "a placement past the 8 memory slices is refused");
  publishable(t, lgi, "bad placement");
  const mig = (await discoverOutputs("mixed-2numa-h100-mig", mixed)).gpus[0]?.migDevices[0];
  t.ok(mig && migProblems(mig).length === 0, "a real MIG device passes");
  if (mig) t.match(migProblems({ ...mig, capDevicePaths: ["/dev/nvidia-caps/nvidia-cap1e+30"] }).join(), /capability device/, "a mig-minors number that is no minor is refused");
  // diag shows the condition
  diagDeps.discovery = { exec: async (_f, args) => ({ stdout: args.join(" ") === "-q -x" ? swap(h100.xml, "<uuid>GPU-00000002-0000-0000-0000-000000000002</uuid>", "<uuid>GPU-x,all</uuid>") : "", stderr: "", code: 0 }), hostFacts: async () => ({}) };
  t.teardown(() => void (diagDeps.discovery = {}));
  const io = captureIO();
  t.equal(await main(["diag", "slices", "--discovery", "nvidia-smi", "--node-name", "n", "--sysfs-root", join(FIXTURES, "h100-sxm-8x", "sys")], io), 0, "diag slices still publishes the rest");
  t.match(io.out.join("") + io.err.join(""), /condition TESSERA_DISCOVERY_VALUE: GPU .*"GPU-x,all" is not GPU-<8-4-4-4-12 hex>; GPU not published/, "diag shows the condition");
});
