// Parser for `nvidia-smi -q -x`. Every value in that XML is text with a unit ("81559 MiB"), "N/A",
// or a sentence ("Requested functionality has been deprecated"); one <gpu> or many; <mig_devices>
// holds "None" or <mig_device> elements. The document is read by our own strict XML reader
// (xml-tree.ts: one pass, well-formedness checked, line/column errors) and only the fields we need
// are taken from the tree. Bad input gives a TesseraError("TESSERA_PARSE") or, where a part is
// still usable (truncated after whole <gpu> elements, one malformed GPU), a partial result with
// warnings: never a crash, never a silently empty node.
import { TesseraError } from "../common/errors.js";
import { child, childrenNamed, parseXml, XmlSyntaxError, type XmlElement } from "./xml-tree.js";

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

/** "00000000:53:00.0" or "0000:53:00.0" -> "0000:53:00.0" (sysfs / Kubernetes form, lower case). */
export function normalizeBusId(id: string): string {
  const m = /^([0-9a-fA-F]{4,8}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$/.exec(id.trim());
  if (!m) throw new TesseraError("TESSERA_PARSE", `PCI bus id "${id}" is not of the form DDDDDDDD:BB:DD.F`);
  const domain = (m[1] as string).slice(-4);
  return `${domain}:${m[2]}:${m[3]}.${m[4]}`.toLowerCase();
}

/** Text of a leaf; undefined for absent, "N/A", "[N/A]", "Unknown Error", "Not Supported". */
export function text(v: XmlElement | string | undefined): string | undefined {
  if (v === undefined) return undefined;
  const t = typeof v === "string" ? v.trim() : v.children.length > 0 ? "" : v.text;
  if (t === "" || t === "N/A" || t === "[N/A]" || /^(Unknown Error|Not Supported|\[Not Supported\])$/i.test(t)) return undefined;
  return t;
}

function int(v: XmlElement | undefined): number | undefined {
  const t = text(v);
  if (t === undefined || !/^-?\d+$/.test(t)) return undefined;
  return Number(t);
}

const UNIT: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };

/** "81559 MiB" -> bytes; undefined when unknown. */
export function memBytes(v: XmlElement | string | undefined): number | undefined {
  const t = text(v);
  const m = t === undefined ? null : /^(\d+)\s*(B|KiB|MiB|GiB|TiB)$/.exec(t);
  if (!m) return undefined;
  return Number(m[1]) * (UNIT[m[2] as string] as number);
}

function migMode(gpu: XmlElement): XmlGpu["migMode"] {
  const cur = text(child(child(gpu, "mig_mode"), "current_mig"));
  if (cur === "Enabled") return "enabled";
  if (cur === "Disabled") return "disabled";
  return "unsupported";
}

function parseMig(m: XmlElement, where: string, warnings: string[]): XmlMigDevice | undefined {
  const shared = child(child(m, "device_attributes"), "shared");
  const gi = int(child(m, "gpu_instance_id"));
  const ci = int(child(m, "compute_instance_id"));
  const mem = memBytes(child(child(m, "fb_memory_usage"), "total"));
  if (gi === undefined || ci === undefined) {
    warnings.push(`${where}: MIG device without gpu_instance_id/compute_instance_id skipped`);
    return undefined;
  }
  const count = (name: string): number => int(child(shared, name)) ?? 0;
  return {
    index: int(child(m, "index")) ?? -1,
    gpuInstanceId: gi,
    computeInstanceId: ci,
    multiprocessors: count("multiprocessor_count"),
    copyEngines: count("copy_engine_count"),
    encoders: count("encoder_count"),
    decoders: count("decoder_count"),
    ofaEngines: count("ofa_count"),
    jpegEngines: count("jpg_count"),
    memoryBytes: mem ?? 0,
  };
}

function parseGpu(g: XmlElement, index: number, warnings: string[]): XmlGpu | undefined {
  const pci = child(g, "pci");
  const idAttr = g.attrs.id ?? text(child(pci, "pci_bus_id"));
  const where = `GPU ${index}${idAttr ? ` (${idAttr})` : ""}`;
  const minor = int(child(g, "minor_number"));
  const uuid = text(child(g, "uuid"));
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
  const migDevices: XmlMigDevice[] = [];
  for (const m of childrenNamed(child(g, "mig_devices"), "mig_device")) {
    const parsed = parseMig(m, where, warnings);
    if (parsed) migDevices.push(parsed);
  }
  const devId = text(child(pci, "pci_device_id"));
  const out: XmlGpu = {
    index,
    pciBusId,
    productName: text(child(g, "product_name")) ?? "unknown",
    brand: text(child(g, "product_brand")) ?? "unknown",
    architecture: text(child(g, "product_architecture")) ?? "unknown",
    uuid,
    minor,
    memoryBytes: memBytes(child(child(g, "fb_memory_usage"), "total")) ?? 0,
    migMode: migMode(g),
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

function tryParse(doc: string): XmlElement | XmlSyntaxError {
  try {
    return parseXml(doc);
  } catch (err) {
    if (err instanceof XmlSyntaxError) return err;
    throw err;
  }
}

export function parseNvidiaSmiXml(xml: string, source = "nvidia-smi -q -x"): XmlReport {
  const warnings: string[] = [];
  let root = tryParse(xml);
  if (root instanceof XmlSyntaxError) {
    const err = root;
    const salvaged = xml.includes("<nvidia_smi_log") ? salvageTruncated(xml) : undefined;
    const again = salvaged === undefined ? undefined : tryParse(salvaged);
    if (again === undefined || again instanceof XmlSyntaxError) {
      throw new TesseraError(
        "TESSERA_PARSE",
        `${source}: not well-formed XML (line ${err.line}, column ${err.column}: ${err.message.slice(0, 120)}); is the output truncated or not from nvidia-smi?`,
      );
    }
    warnings.push(`${source}: output is truncated (line ${err.line}); only complete <gpu> elements were read`);
    root = again;
  }
  if (root.name !== "nvidia_smi_log") throw new TesseraError("TESSERA_PARSE", `${source}: no <nvidia_smi_log> root element (found <${root.name.slice(0, 40)}>); is this nvidia-smi -q -x output?`);

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
  const driver = text(child(root, "driver_version"));
  if (driver !== undefined) report.driverVersion = driver;
  const cuda = text(child(root, "cuda_version"));
  if (cuda !== undefined) report.cudaVersion = cuda;
  const attached = int(child(root, "attached_gpus"));
  if (attached !== undefined) report.attachedGpus = attached;

  const gpus = childrenNamed(root, "gpu");
  gpus.forEach((g, i) => {
    const parsed = parseGpu(g, i, warnings);
    if (parsed) report.gpus.push(parsed);
  });
  if (attached !== undefined && attached !== gpus.length) {
    warnings.push(`${source}: attached_gpus is ${attached} but ${gpus.length} <gpu> element(s) are present`);
  }
  return report;
}
