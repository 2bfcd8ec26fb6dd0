// Fuzz surface `nvsmi`: mutated `nvidia-smi -q -x`, `-L` and `mig -lgi` outputs of the captured
// fixture nodes, fed through the real backend's exec seam (parse -> assemble -> validate), then
// built into ResourceSlices in both MIG modes. Invariant: discovery either fails with a
// TesseraError, or succeeds and then slice building never throws, every slice passes checkSlice,
// and every published UUID, minor and device path is well-formed. Never any other exception.
// An input is JSON {fixture, xml, list, lgi} (so a saved failure reruns as is).
import type { Rng } from "../../bench/sim/prng.js";
import { isTesseraError } from "../../agent/common/errors.js";
import { deviceFacts } from "../../agent/discovery/model.js";
import { GPU_UUID, MAX_GPU_MINOR, MIG_UUID } from "../../agent/discovery/validate.js";
import { buildResourceSlices } from "../../agent/slices/build.js";
import { checkSlice } from "../../agent/slices/limits.js";
import { chance, mutateBytes, pick, type FuzzSurface, type FuzzTarget } from "./fuzz.js";
import { discoverOutputs, fixtureOutputs, type NvsmiOutputs } from "./nvsmi-fake.js";

export const NVSMI_FIXTURES = ["h100-sxm-8x", "a100-80gb-mig", "l40s-1x", "workstation-2numa-4gpu", "mixed-2numa-h100-mig"];

const HOSTILE = ["", "N/A", "-1", "9".repeat(400), "9007199254740992", "255", "GPU-x,all", "$(reboot)", "../../../etc/passwd", "1e309", "0x1f", " 12 ",
  "999 TiB", `${"9".repeat(30)} MiB`, "81559 MiB", "&amp;", "&#x41;", "A".repeat(300), "\u202egnp.exe", "😀".repeat(40), "GPU-00000000-0000-0000-0000-000000000000",
  "MIG-GPU-00000000-0000-0000-0000-000000000000/1/0", "00000000:FF:1F.7", "Enabled", "Disabled", "1g.10gb", "7g.80gb+me", "0:8", "9:9"];

interface NvsmiInput extends NvsmiOutputs {
  fixture: string;
}

/** Replaces the text of the k-th leaf element (`>text<`) with `value`. */
function replaceLeaf(rng: Rng, xml: string, value: string): string {
  const leaves = [...xml.matchAll(/>([^<>\n]*)</g)];
  if (leaves.length === 0) return xml;
  const m = pick(rng, leaves);
  const at = (m.index as number) + 1;
  return xml.slice(0, at) + value.replace(/[<&]/g, "") + xml.slice(at + (m[1] as string).length);
}

/** Elements whose text becomes a device name, attribute, env value or path: mutated most often. */
const READ_FIELDS = ["minor_number", "uuid", "total", "product_name", "product_brand", "product_architecture", "driver_version", "cuda_version", "pci_bus_id", "pci_device_id", "gpu_instance_id", "compute_instance_id", "multiprocessor_count", "current_mig", "index"];

/** Replaces the text of one occurrence of <field>text</field>. */
function replaceField(rng: Rng, xml: string, value: string): string {
  const field = pick(rng, READ_FIELDS);
  const hits = [...xml.matchAll(new RegExp(`<${field}>([^<]*)</${field}>`, "g"))];
  if (hits.length === 0) return xml;
  const m = pick(rng, hits);
  return xml.slice(0, m.index) + `<${field}>${value.replace(/[<&]/g, "")}</${field}>` + xml.slice((m.index as number) + m[0].length);
}

function mutateXml(rng: Rng, xml: string): string {
  switch (rng.int(8)) {
    case 0:
    case 1:
    case 2: return replaceField(rng, xml, pick(rng, HOSTILE));
    case 7: return replaceLeaf(rng, xml, pick(rng, HOSTILE));
    case 3: { // a <gpu> twice (same minor, UUID, bus id)
      const s = xml.indexOf("<gpu "), e = xml.indexOf("</gpu>");
      return s < 0 || e < 0 ? xml : xml.slice(0, e + 6) + xml.slice(s, e + 6) + xml.slice(e + 6);
    }
    case 4: { // drop one element
      const tags = [...xml.matchAll(/<([a-z_]+)>[^<]*<\/\1>/g)];
      const m = tags.length > 0 ? pick(rng, tags) : undefined;
      return m ? xml.slice(0, m.index) + xml.slice((m.index as number) + m[0].length) : xml;
    }
    case 5: return xml.slice(0, rng.int(xml.length + 1));
    default: return Buffer.from(mutateBytes(rng, Buffer.from(xml), 8)).toString("utf8");
  }
}

function mutateText(rng: Rng, text: string | undefined): string | undefined {
  if (text === undefined || chance(rng, 0.05)) return undefined; // the command fails
  const lines = text.split("\n");
  const i = rng.int(lines.length);
  const line = lines[i] ?? "";
  switch (rng.int(4)) {
    case 0: lines[i] = line.replace(/(GPU|MIG)-[0-9a-fA-F-]+/, pick(rng, ["GPU-x,all", "MIG-$(reboot)", "MIG-GPU-00000000-0000-0000-0000-000000000000/1/0", "MIG-e1000300-0000-5000-8000-000000000000", "GPU-00000000-0000-0000-0000-000000000000"])); break;
    case 1: lines[i] = line.replace(/\d+/, pick(rng, ["9".repeat(40), "9007199254740992", "300", "0", "7"])); break;
    case 2: lines.splice(i, 1); break;
    default: lines.splice(i, 0, line); break;
  }
  return lines.join("\n");
}

/** Fixture outputs are read once per process: generation must not be dominated by file reads. */
const cache = new Map<string, NvsmiOutputs>();
const cachedOutputs = (name: string): NvsmiOutputs => {
  let o = cache.get(name);
  if (!o) {
    o = fixtureOutputs(name);
    // <supported_clocks> (1,760 clock rows in the 8xH100 capture) is never read by the parser and
    // is over half of each capture: without it a case costs half the CPU and mutations land on read fields.
    o = { ...o, xml: o.xml.replace(/<supported_clocks>[\s\S]*?<\/supported_clocks>/g, "") };
    cache.set(name, o);
  }
  return o;
};

function genInput(rng: Rng): Uint8Array {
  const fixture = pick(rng, NVSMI_FIXTURES);
  const base = cachedOutputs(fixture);
  const input: NvsmiInput = { fixture, ...base };
  for (let m = 1 + rng.int(3); m > 0; m--) {
    const which = rng.int(4);
    if (which <= 1) input.xml = mutateXml(rng, input.xml);
    else if (which === 2) input.list = mutateText(rng, input.list);
    else input.lgi = mutateText(rng, input.lgi);
  }
  return Buffer.from(JSON.stringify(input));
}

const MIG_FALLBACK_UUID = new RegExp(`^${GPU_UUID.source.slice(1, -1)}/gi\\d+/ci\\d+$`);
const DEVICE_NODE = /^\/dev\/nvidia(\d{1,3}|-caps\/nvidia-cap\d{1,7})$/;

async function execInput(bytes: Uint8Array): Promise<void> {
  const input = JSON.parse(Buffer.from(bytes).toString("utf8")) as NvsmiInput;
  let inv;
  try {
    inv = await discoverOutputs(input.fixture, input);
  } catch (err) {
    if (isTesseraError(err)) return;
    throw new Error(`discovery threw a non-Tessera error: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
  }
  for (const mode of ["static", "dynamic"] as const) {
    let slices;
    try {
      slices = buildResourceSlices(inv, { driverName: "gpu.tessera.dev", nodeName: "fuzz-node", migMode: mode });
    } catch (err) {
      throw new Error(`${mode} slice building threw after discovery succeeded (the publisher would retry forever): ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
    }
    const problems = slices.flatMap(checkSlice);
    if (problems.length > 0) throw new Error(`${mode} slice fails checkSlice: ${problems.slice(0, 3).join("; ")}`);
  }
  for (const g of inv.gpus) if (!(Number.isSafeInteger(g.minor) && g.minor >= 0 && g.minor <= MAX_GPU_MINOR)) throw new Error(`published minor ${g.minor}`);
  for (const f of deviceFacts(inv).values()) {
    const uuidOk = f.kind === "gpu" ? GPU_UUID.test(f.uuid) : MIG_UUID.test(f.uuid) || MIG_FALLBACK_UUID.test(f.uuid);
    if (!uuidOk) throw new Error(`device ${f.name} publishes UUID ${JSON.stringify(f.uuid)}`);
    const badNode = f.deviceNodes.find((p) => !DEVICE_NODE.test(p));
    if (badNode !== undefined) throw new Error(`device ${f.name} names device node ${JSON.stringify(badNode)}`);
  }
}

export const nvsmiSurface: FuzzSurface = {
  name: "nvsmi",
  async open(): Promise<FuzzTarget> {
    return {
      gen: genInput,
      exec: execInput,
      async close() {},
    };
  },
};
