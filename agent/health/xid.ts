// The XID table: which NVIDIA driver XID errors taint a GPU, and how. Source of every row: NVIDIA's
// XID catalogue (docs.nvidia.com/deploy/xid-errors/, "XID Errors" table and its "Resolution" /
// immediate-action column). Tessera's rule over that column:
//   the catalogue asks for a GPU reset or a node reboot      -> fatal: NoExecute
//   it asks an operator to look (monitor, reset when drained) -> attention: NoSchedule
//   it blames the application, or says nothing is needed    -> informational: None
// An XID not in the table is published with effect None and its code in the message: it is
// visible, and never evicts or blocks anything Tessera cannot explain. docs/health.md has the
// table with each row's catalogue wording.
import type { TaintEffect } from "./types.js";

export type XidClass = "fatal" | "attention" | "informational";

export interface XidRule {
  code: number;
  name: string;
  class: XidClass;
  /** The catalogue's resolution as Tessera reads it. */
  catalogue: string;
}

const EFFECT: Record<XidClass, TaintEffect> = { fatal: "NoExecute", attention: "NoSchedule", informational: "None" };

const rule = (code: number, name: string, cls: XidClass, catalogue: string): XidRule => ({ code, name, class: cls, catalogue });

export const XID_TABLE: readonly XidRule[] = [
  rule(13, "Graphics engine exception", "informational", "application error: restart the application"),
  rule(31, "GPU memory page fault", "informational", "application error (illegal address): restart the application"),
  rule(43, "GPU stopped processing", "informational", "application fault; the GPU stays usable: restart the application"),
  rule(45, "Preemptive cleanup, due to previous errors", "informational", "follows another error or a killed application: no action of its own"),
  rule(48, "Double bit ECC error", "fatal", "uncorrectable memory error: reset the GPU"),
  rule(61, "Internal micro-controller breakpoint/warning", "attention", "firmware warning: collect a bug report; reset the GPU if errors follow"),
  rule(62, "Internal micro-controller halt", "fatal", "firmware halted: reset the GPU"),
  rule(63, "ECC page retirement or row remapping recording event", "attention", "a remap is pending: reset the GPU when it is drained"),
  rule(64, "ECC page retirement or row remapper recording failure", "fatal", "the remap could not be recorded: reset the GPU"),
  rule(68, "NVDEC0 exception", "informational", "video decoder fault of an application: restart the application"),
  rule(69, "Graphics engine class error", "informational", "application error: restart the application"),
  rule(74, "NVLink error", "fatal", "NVLink failure: reset the GPU (check the link if it repeats)"),
  rule(79, "GPU has fallen off the bus", "fatal", "the GPU is gone from PCIe: reboot the node"),
  rule(92, "High single-bit ECC error rate", "attention", "correctable errors at a high rate: monitor, reset when drained"),
  rule(94, "Contained ECC error", "attention", "contained to one application: restart it; reset the GPU when drained"),
  rule(95, "Uncontained ECC error", "fatal", "uncontained memory error: reset the GPU"),
  rule(109, "Context switch timeout error", "informational", "usually an application fault: restart the application"),
  rule(119, "GSP RPC timeout", "fatal", "GPU System Processor not answering: reset the GPU"),
  rule(120, "GSP error", "fatal", "GPU System Processor error: reset the GPU"),
  rule(121, "C2C link corrected error", "informational", "corrected: no action"),
  rule(140, "Unrecovered ECC error", "fatal", "unrecovered memory error: reset the GPU"),
  rule(143, "GPU initialization failure", "fatal", "the GPU did not initialize: reset the GPU or reboot"),
  rule(154, "GPU recovery action changed", "attention", "the driver names the action needed: reset or reboot (fatal), otherwise drain"),
];

const BY_CODE = new Map(XID_TABLE.map((r) => [r.code, r]));

export interface XidVerdict {
  effect: TaintEffect;
  /** One line for the health message, the Event and diag. */
  message: string;
  known: boolean;
}

/** Classifies one XID event; `detail` is the rest of the driver's line (XID 154 names its action there). */
export function classifyXid(code: number, detail = ""): XidVerdict {
  const r = BY_CODE.get(code);
  if (!r) return { effect: "None", known: false, message: `XID ${code} (not in Tessera's XID table; effect None): ${detail}`.trim() };
  let effect = EFFECT[r.class];
  if (code === 154 && /(reset|reboot) required/i.test(detail)) effect = "NoExecute";
  return { effect, known: true, message: `XID ${code} ${r.name} (${r.class}: ${r.catalogue})${detail ? `: ${detail}` : ""}` };
}
