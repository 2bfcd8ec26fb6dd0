// Parser for `nvidia-smi -q -x`. Every value in that XML is text with a unit ("81559 MiB"), "N/A",
// or a sentence ("Requested functionality has been deprecated"); one <gpu> or many; <mig_devices>
// holds "None" or <mig_device> elements. We use fast-xml-parser (maintained, no native code) and
// read only the fields we need. Bad input gives a TesseraError("TESSERA_PARSE") or, where a part
// is still usable (truncated after whole <gpu> elements, one malformed GPU), a partial result
// with warnings: never a crash, never a silently empty node.
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { TesseraError } from "../common/errors.js";

export interface XmlMigDevice {
  index: number;
  gpuInstanceId: number;
  computeInstanceId: number;
  multiprocessors: number;
  copyEngines: number;
  encoders: number;
  decoders: number;
  ofaEngines: number;
  jpegEngines: number;
  memoryBytes: number;
}

export interface XmlGpu {
  /** Position in the XML = nvidia-smi index (nvidia-smi lists GPUs in PCI bus order). */
  index: number;
  pciBusId: string; // normalised to sysfs form "0000:53:00.0"
  productName: string;
  brand: string;
  architecture: string;
  uuid: string;
  minor: number;
  pciDeviceId?: string; // "0x233010DE"
  memoryBytes: number;
  migMode: "enabled" | "disabled" | "unsupported";
  migDevices: XmlMigDevice[];
}

export interface XmlReport {
  dtdVersion?: number;
  driverVersion?: string;
  cudaVersion?: string;
  attachedGpus?: number;
  gpus: XmlGpu[];
  warnings: string[];
}

/** DTD versions whose layout we have fixtures for; others parse with a warning. */
export const KNOWN_DTD_VERSIONS: readonly number[] = [11, 12, 13];

type Node = Record<string, unknown>;

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: "@_",
  parseTagValue: false, // keep "00" and "0x..." as text; we convert explicitly
  parseAttributeValue: false,
  trimValues: true,
  processEntities: false,
  isArray: (name) => name === "gpu" || name === "mig_device",
});

/** "00000000:53:00.0" or "0000:53:00.0" -> "0000:53:00.0" (sysfs / Kubernetes form, lower case). */
export function normalizeBusId(id: string): string {
  const m = /^([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$/.exec(id.trim());
  if (!m) throw new TesseraError("TESSERA_PARSE", `PCI bus id "${id}" is not of the form DDDDDDDD:BB:DD.F`);
  const domain = (m[1] as string).slice(-4);
  return `${domain}:${m[2]}:${m[3]}.${m[4]}`.toLowerCase();
}

/** Text of a leaf; undefined for absent, "N/A", "[N/A]", "Unknown Error", non-text nodes. */
export function text(v: unknown): string | undefined {
  if (typeof v !== "string") return undefined;
  const t = v.trim();
  if (t === "" || t === "N/A" || t === "[N/A]" || /^(Unknown Error|Not Supported|\[Not Supported\])$/i.test(t)) return undefined;
  return t;
}

function int(v: unknown): number | undefined {
  const t = text(v);
  if (t === undefined || !/^-?\d+$/.test(t)) return undefined;
  return Number(t);
}

const UNIT: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };

/** "81559 MiB" -> bytes; undefined when unknown. */
export function memBytes(v: unknown): number | undefined {
  const t = text(v);
  const m = t === undefined ? null : /^(\d+)\s*(B|KiB|MiB|GiB|TiB)$/.exec(t);
  if (!m) return undefined;
  return Number(m[1]) * (UNIT[m[2] as string] as number);
}

function obj(v: unknown): Node | undefined {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Node) : undefined;
}

function migMode(gpu: Node): XmlGpu["migMode"] {
  const cur = text(obj(gpu.mig_mode)?.current_mig);
  if (cur === "Enabled") return "enabled";
  if (cur === "Disabled") return "disabled";
  return "unsupported";
}

function parseMig(m: Node, where: string, warnings: string[]): XmlMigDevice | undefined {
  const shared = obj(obj(m.device_attributes)?.shared) ?? {};
  const gi = int(m.gpu_instance_id);
  const ci = int(m.compute_instance_id);
  const mem = memBytes(obj(m.fb_memory_usage)?.total);
  if (gi === undefined || ci === undefined) {
    warnings.push(`${where}: MIG device without gpu_instance_id/compute_instance_id skipped`);
    return undefined;
  }
  return {
    index: int(m.index) ?? -1,
    gpuInstanceId: gi,
    computeInstanceId: ci,
    multiprocessors: int(shared.multiprocessor_count) ?? 0,
    copyEngines: int(shared.copy_engine_count) ?? 0,
    encoders: int(shared.encoder_count) ?? 0,
    decoders: int(shared.decoder_count) ?? 0,
    ofaEngines: int(shared.ofa_count) ?? 0,
    jpegEngines: int(shared.jpg_count) ?? 0,
    memoryBytes: mem ?? 0,
  };
}

function parseGpu(g: Node, index: number, warnings: string[]): XmlGpu | undefined {
  const idAttr = typeof g["@_id"] === "string" ? (g["@_id"] as string) : text(obj(g.pci)?.pci_bus_id);
  const where = `GPU ${index}${idAttr ? ` (${idAttr})` : ""}`;
  const minor = int(g.minor_number);
  const uuid = text(g.uuid);
  if (idAttr === undefined || minor === undefined || uuid === undefined) {
    warnings.push(`${where}: missing bus id, minor_number or uuid; GPU skipped`);
    return undefined;
  }
  let pciBusId: string;
  try {
    pciBusId = normalizeBusId(idAttr);
  } catch {
    warnings.push(`${where}: unparsable bus id; GPU skipped`);
    return undefined;
  }
  const mode = migMode(g);
  const migDevices: XmlMigDevice[] = [];
  const md = obj(g.mig_devices);
  if (md && Array.isArray(md.mig_device)) {
    for (const m of md.mig_device) {
      const o = obj(m);
      const parsed = o ? parseMig(o, where, warnings) : undefined;
      if (parsed) migDevices.push(parsed);
    }
  }
  const devId = text(obj(g.pci)?.pci_device_id);
  const out: XmlGpu = {
    index,
    pciBusId,
    productName: text(g.product_name) ?? "unknown",
    brand: text(g.product_brand) ?? "unknown",
    architecture: text(g.product_architecture) ?? "unknown",
    uuid,
    minor,
    memoryBytes: memBytes(obj(g.fb_memory_usage)?.total) ?? 0,
    migMode: mode,
    migDevices,
  };
  if (devId !== undefined && /^[0-9a-fA-F]{8}$/.test(devId)) out.pciDeviceId = `0x${devId.toUpperCase()}`;
  return out;
}

/** Keeps only whole <gpu> elements of a cut-off document, so a truncated read still yields those. */
function salvageTruncated(xml: string): string | undefined {
  const end = xml.lastIndexOf("</gpu>");
  if (end < 0) return undefined;
  return xml.slice(0, end + "</gpu>".length) + "\n</nvidia_smi_log>\n";
}

export function parseNvidiaSmiXml(xml: string, source = "nvidia-smi -q -x"): XmlReport {
  const warnings: string[] = [];
  let doc = xml;
  const valid = XMLValidator.validate(doc);
  if (valid !== true) {
    const salvaged = doc.includes("<nvidia_smi_log") ? salvageTruncated(doc) : undefined;
    if (salvaged === undefined || XMLValidator.validate(salvaged) !== true) {
      throw new TesseraError(
        "TESSERA_PARSE",
        `${source}: not well-formed XML (line ${valid.err.line}, column ${valid.err.col}: ${valid.err.msg.slice(0, 120)}); is the output truncated or not from nvidia-smi?`,
      );
    }
    warnings.push(`${source}: output is truncated (line ${valid.err.line}); only complete <gpu> elements were read`);
    doc = salvaged;
  }
  let root: Node | undefined;
  try {
    root = obj(obj(parser.parse(doc))?.nvidia_smi_log);
  } catch (err) {
    throw new TesseraError("TESSERA_PARSE", `${source}: cannot parse XML`, { cause: err });
  }
  if (!root) throw new TesseraError("TESSERA_PARSE", `${source}: no <nvidia_smi_log> root element; is this nvidia-smi -q -x output?`);

  const dtd = /<!DOCTYPE\s+nvidia_smi_log\s+SYSTEM\s+"nvsmi_device_v(\d+)\.dtd"/.exec(xml.slice(0, 512));
  const report: XmlReport = { gpus: [], warnings };
  if (dtd) {
    report.dtdVersion = Number(dtd[1]);
    if (!KNOWN_DTD_VERSIONS.includes(report.dtdVersion)) {
      warnings.push(`${source}: DTD version v${report.dtdVersion} is not one we were tested with (${KNOWN_DTD_VERSIONS.map((v) => `v${v}`).join(", ")}); parsed by element names`);
    }
  } else {
    warnings.push(`${source}: no nvsmi_device DTD declaration; parsed by element names`);
  }
  const driver = text(root.driver_version);
  if (driver !== undefined) report.driverVersion = driver;
  const cuda = text(root.cuda_version);
  if (cuda !== undefined) report.cudaVersion = cuda;
  const attached = int(root.attached_gpus);
  if (attached !== undefined) report.attachedGpus = attached;

  const gpus = Array.isArray(root.gpu) ? root.gpu : [];
  gpus.forEach((g, i) => {
    const o = obj(g);
    const parsed = o ? parseGpu(o, i, warnings) : undefined;
    if (parsed) report.gpus.push(parsed);
  });
  if (attached !== undefined && attached !== gpus.length) {
    warnings.push(`${source}: attached_gpus is ${attached} but ${gpus.length} <gpu> element(s) are present`);
  }
  return report;
}
