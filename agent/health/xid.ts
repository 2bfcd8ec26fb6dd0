// The XID table: which NVIDIA driver XID errors taint a GPU, and how.
//
// Source of every row: NVIDIA's XID catalogue for Ampere and newer GPUs,
// https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html — the columns "Code",
// "Mnemonic", "Description" and "Resolution Bucket (Immediate Action)", transcribed for every code
// the catalogue marks as applying to A100, H100, B100 or GB200 and gives a bucket for. Codes it marks
// "Unused" on all four, or gives no bucket for, are left out: they are classified as unknown.
//
// Tessera's rule over the immediate-action bucket (BUCKET_CLASS below):
//   the GPU or the machine must be reset / rebooted before it is usable again -> fatal: NoExecute
//   an operator must look before more work is placed there                     -> attention: NoSchedule
//   the application is at fault, or the catalogue says to ignore it             -> informational: None
// One row departs from its bucket, with the catalogue's own words as the reason (`override`).
// An XID not in the table is published with effect None and its code in the message: visible, and
// never evicting or blocking anything Tessera cannot explain. docs/health.md shows the same table;
// a test checks the two agree row by row.
import type { TaintEffect } from "./types.js";

export type XidClass = "fatal" | "attention" | "informational";

/** The catalogue's "Resolution Bucket (Immediate Action)" values that occur in the table. */
export type XidBucket =
  | "RESET_GPU" | "RESTART_BM" | "RESTART_VM" | "WORKFLOW_XID_48" | "WORKFLOW_NVLINK_ERR"
  | "WORKFLOW_NVLINK5_ERR" | "CONTACT_SUPPORT" | "CHECK_MECHANICALS" | "UPDATE_SWFW" | "CHECK_UVM"
  | "RESTART_APP" | "IGNORE" | "WORKFLOW_XID_45" | "XID_154";

/** Why each bucket maps where it does (shown in docs/health.md). */
export const BUCKET_CLASS: Readonly<Record<XidBucket, { class: XidClass; why: string }>> = {
  RESET_GPU: { class: "fatal", why: "reset the GPU" },
  RESTART_BM: { class: "fatal", why: "restart the bare-metal node" },
  RESTART_VM: { class: "fatal", why: "restart the VM" },
  WORKFLOW_XID_48: { class: "fatal", why: "the catalogue: \"A GPU reset or node reboot is needed to clear this error\"" },
  WORKFLOW_NVLINK_ERR: { class: "fatal", why: "the catalogue: \"A GPU reset or node reboot is needed to clear this error\"" },
  WORKFLOW_NVLINK5_ERR: { class: "attention", why: "the action depends on the error status in the XID's subcode table (IGNORE or RESET_GPU); Tessera does not decode it" },
  CONTACT_SUPPORT: { class: "attention", why: "contact NVIDIA support" },
  CHECK_MECHANICALS: { class: "attention", why: "check the board's power and mechanicals" },
  UPDATE_SWFW: { class: "attention", why: "update driver / firmware" },
  CHECK_UVM: { class: "attention", why: "check the UVM driver" },
  RESTART_APP: { class: "informational", why: "restart the application" },
  IGNORE: { class: "informational", why: "no action" },
  WORKFLOW_XID_45: { class: "informational", why: "follows another XID or a killed application (the catalogue: \"Not Solo: IGNORE (follow other Xid)\")" },
  XID_154: { class: "attention", why: "the driver's text names the action: GPU Reset / Node Reboot Required -> fatal; Drain P2P / Drain and Reset -> attention; None -> informational" },
};

export interface XidRule {
  code: number;
  mnemonic: string;
  /** The catalogue's description. */
  name: string;
  bucket: XidBucket;
  /** Where Tessera departs from the bucket's class, and the catalogue's words that say why. */
  override?: { class: XidClass; why: string };
}

const EFFECT: Record<XidClass, TaintEffect> = { fatal: "NoExecute", attention: "NoSchedule", informational: "None" };

const r = (code: number, mnemonic: string, name: string, bucket: XidBucket, override?: XidRule["override"]): XidRule =>
  override ? { code, mnemonic, name, bucket, override } : { code, mnemonic, name, bucket };

export const XID_TABLE: readonly XidRule[] = [
  r(8, "ROBUST_CHANNEL_FIFO_ERROR_IDLE_TIMEOUT", "GPU stopped processing", "RESTART_APP"),
  r(11, "ROBUST_CHANNEL_GR_ERROR_MISSING_HW", "Invalid or corrupted push buffer stream", "RESTART_APP"),
  r(13, "ROBUST_CHANNEL_GR_EXCEPTION", "Graphics Engine Exception", "RESTART_APP"),
  r(14, "ROBUST_CHANNEL_FAKE_ERROR", "Fake or injected error", "IGNORE"),
  r(25, "ROBUST_CHANNEL_GR_ILLEGAL_NOTIFY", "Invalid or illegal push buffer stream", "RESTART_APP"),
  r(31, "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT", "GPU memory page fault", "RESTART_APP"),
  r(32, "ROBUST_CHANNEL_PBDMA_ERROR", "Invalid or corrupted push buffer stream", "RESTART_APP"),
  r(37, "ROBUST_CHANNEL_FECS_ERR_UNIMP_FIRMWARE_METHOD", "Driver firmware error", "IGNORE"),
  r(38, "ROBUST_CHANNEL_FECS_ERR_WATCHDOG_TIMEOUT", "Driver firmware error", "IGNORE"),
  r(39, "ROBUST_CHANNEL_CE0_ERROR", "Copy Engine Exception", "RESTART_APP"),
  r(40, "ROBUST_CHANNEL_CE1_ERROR", "Copy Engine Exception", "RESTART_APP"),
  r(41, "ROBUST_CHANNEL_CE2_ERROR", "Copy Engine Exception", "RESTART_APP"),
  r(43, "ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR", "GPU stopped processing", "IGNORE"),
  r(44, "ROBUST_CHANNEL_GR_FAULT_DURING_CTXSW", "Graphics Engine fault during context switch", "IGNORE"),
  r(45, "ROBUST_CHANNEL_PREEMPTIVE_REMOVAL", "Preemptive cleanup, due to previous errors", "WORKFLOW_XID_45"),
  r(46, "ROBUST_CHANNEL_GPU_TIMEOUT_ERROR", "GPU stopped processing", "RESET_GPU"),
  r(48, "ROBUST_CHANNEL_GPU_ECC_DBE", "Double Bit ECC Error", "WORKFLOW_XID_48"),
  r(54, "SILENT_RUNNING_PWR_REDUCED_CLOCKING", "Auxiliary power is not connected to the GPU board", "CHECK_MECHANICALS"),
  r(60, "ROBUST_CHANNEL_SEC2_ERROR", "Video processor exception", "RESTART_APP"),
  r(62, "PMU_HALT_ERROR", "Internal micro-controller halt", "RESET_GPU"),
  r(63, "INFOROM_DRAM_RETIREMENT_EVENT", "GPU memory remapping event", "IGNORE"),
  r(64, "INFOROM_DRAM_RETIREMENT_FAILURE", "GPU memory remapping failure", "RESET_GPU"),
  r(66, "ROBUST_CHANNEL_FECS_ERR_REG_ACCESS_VIOLATION", "Illegal access by driver", "IGNORE"),
  r(67, "ROBUST_CHANNEL_FECS_ERR_VERIF_VIOLATION", "Illegal access by driver", "IGNORE"),
  r(68, "ROBUST_CHANNEL_NVDEC0_ERROR", "NVDEC0 Exception", "RESTART_APP"),
  r(69, "ROBUST_CHANNEL_GR_CLASS_ERROR", "Graphics Engine class error", "RESTART_APP"),
  r(70, "ROBUST_CHANNEL_CE3_ERROR", "CE3: Unknown Error", "RESTART_APP"),
  r(71, "ROBUST_CHANNEL_CE4_ERROR", "CE4: Unknown Error", "RESTART_APP"),
  r(72, "ROBUST_CHANNEL_CE5_ERROR", "CE5: Unknown Error", "RESTART_APP"),
  r(74, "NVLINK_ERROR", "NVLINK Error", "WORKFLOW_NVLINK_ERR"),
  r(75, "ROBUST_CHANNEL_CE6_ERROR", "CE6: Unknown Error", "RESTART_APP"),
  r(76, "ROBUST_CHANNEL_CE7_ERROR", "CE7: Unknown Error", "RESTART_APP"),
  r(77, "ROBUST_CHANNEL_CE8_ERROR", "CE8: Unknown Error", "RESTART_APP"),
  r(78, "VGPU_START_ERROR", "vGPU Start Error", "UPDATE_SWFW"),
  r(79, "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS", "GPU has fallen off the bus", "RESTART_BM"),
  r(80, "PBDMA_PUSHBUFFER_CRC_MISMATCH", "Corrupted data sent to GPU", "RESTART_APP"),
  r(82, "ROBUST_CHANNEL_NVJPG0_ERROR", "NVJPG0 Error", "RESTART_APP"),
  r(83, "ROBUST_CHANNEL_NVDEC1_ERROR", "NVDEC1 Error", "RESTART_APP"),
  r(84, "ROBUST_CHANNEL_NVDEC2_ERROR", "NVDEC2 Error", "RESTART_APP"),
  r(85, "ROBUST_CHANNEL_CE9_ERROR", "CE9: Unknown Error", "RESTART_APP"),
  r(86, "ROBUST_CHANNEL_OFA0_ERROR", "OFA Exception", "RESTART_APP"),
  r(88, "ROBUST_CHANNEL_NVDEC3_ERROR", "NVDEC3 Error", "RESTART_APP"),
  r(89, "ROBUST_CHANNEL_NVDEC4_ERROR", "NVDEC4 Error", "RESTART_APP"),
  r(92, "EXCESSIVE_SBE_INTERRUPTS", "High single-bit ECC error rate", "IGNORE"),
  r(93, "INFOROM_ERASE_LIMIT_EXCEEDED", "Non-fatal violation of provisioned InfoROM wear limit", "IGNORE"),
  r(94, "ROBUST_CHANNEL_CONTAINED_ERROR", "Contained memory error", "RESTART_APP", {
    class: "attention",
    why: "the catalogue's text: \"It is recommended to reset the GPU when convenient. Applications can continue to be run until the reset can be performed.\"",
  }),
  r(95, "ROBUST_CHANNEL_UNCONTAINED_ERROR", "Uncontained memory error", "RESET_GPU"),
  r(96, "ROBUST_CHANNEL_NVDEC5_ERROR", "NVDEC5 Error", "RESTART_APP"),
  r(97, "ROBUST_CHANNEL_NVDEC6_ERROR", "NVDEC6 Error", "RESTART_APP"),
  r(98, "ROBUST_CHANNEL_NVDEC7_ERROR", "NVDEC7 Error", "RESTART_APP"),
  r(99, "ROBUST_CHANNEL_NVJPG1_ERROR", "NVJPG1 Error", "RESTART_APP"),
  r(100, "ROBUST_CHANNEL_NVJPG2_ERROR", "NVJPG2 Error", "RESTART_APP"),
  r(101, "ROBUST_CHANNEL_NVJPG3_ERROR", "NVJPG3 Error", "RESTART_APP"),
  r(102, "ROBUST_CHANNEL_NVJPG4_ERROR", "NVJPG4 Error", "RESTART_APP"),
  r(103, "ROBUST_CHANNEL_NVJPG5_ERROR", "NVJPG5 Error", "RESTART_APP"),
  r(104, "ROBUST_CHANNEL_NVJPG6_ERROR", "NVJPG6 Error", "RESTART_APP"),
  r(105, "ROBUST_CHANNEL_NVJPG7_ERROR", "NVJPG7 Error", "RESTART_APP"),
  r(106, "SMBPBI_TEST_MESSAGE", "SMBPBI Test Message", "IGNORE"),
  r(107, "SMBPBI_TEST_MESSAGE_SILENT", "SMBPBI Test Message Silent", "IGNORE"),
  r(109, "ROBUST_CHANNEL_CTXSW_TIMEOUT_ERROR", "Context Switch Timeout Error", "RESET_GPU"),
  r(110, "SEC_FAULT_ERROR", "Security Fault Error", "RESET_GPU"),
  r(119, "GSP_RPC_TIMEOUT", "GSP RPC Timeout", "RESET_GPU"),
  r(120, "GSP_ERROR", "GSP Error", "RESET_GPU"),
  r(121, "C2C_ERROR", "C2C Error", "IGNORE"),
  r(126, "ROBUST_CHANNEL_CE10_ERROR", "CE10: Unknown Error", "RESTART_APP"),
  r(127, "ROBUST_CHANNEL_CE11_ERROR", "CE11: Unknown Error", "RESTART_APP"),
  r(128, "ROBUST_CHANNEL_CE12_ERROR", "CE12: Unknown Error", "RESTART_APP"),
  r(129, "ROBUST_CHANNEL_CE13_ERROR", "CE13: Unknown Error", "RESTART_APP"),
  r(130, "ROBUST_CHANNEL_CE14_ERROR", "CE14: Unknown Error", "RESTART_APP"),
  r(131, "ROBUST_CHANNEL_CE15_ERROR", "CE15: Unknown Error", "RESTART_APP"),
  r(132, "ROBUST_CHANNEL_CE16_ERROR", "CE16: Unknown Error", "RESTART_APP"),
  r(133, "ROBUST_CHANNEL_CE17_ERROR", "CE17: Unknown Error", "RESTART_APP"),
  r(134, "ROBUST_CHANNEL_CE18_ERROR", "CE18: Unknown Error", "RESTART_APP"),
  r(135, "ROBUST_CHANNEL_CE19_ERROR", "CE19: Unknown Error", "RESTART_APP"),
  r(136, "ALI_TRAINING_FAIL", "Link Training Failed", "RESET_GPU"),
  r(137, "NVLINK_PRIV_ERR", "NVLink Privilege Error", "IGNORE"),
  r(139, "ROBUST_CHANNEL_OFA1_ERROR", "OFA1 Error", "RESTART_APP"),
  r(140, "UNRECOVERABLE_ECC_ERROR_ESCAPE", "ECC Unrecovered Error", "RESET_GPU"),
  r(141, "ROBUST_CHANNEL_FAST_PATH_ERROR", "CUDA Fast Path Error", "IGNORE"),
  r(142, "ROBUST_CHANNEL_NVENC3_ERROR", "NVENC3 Error", "CONTACT_SUPPORT"),
  r(143, "GPU_INIT_ERROR", "GPU Initialization Error", "RESET_GPU"),
  r(144, "NVLINK_SAW_ERROR", "NVLINK: SAW Error", "WORKFLOW_NVLINK5_ERR"),
  r(145, "NVLINK_RLW_ERROR", "NVLINK: RLW Error", "WORKFLOW_NVLINK5_ERR"),
  r(146, "NVLINK_TLW_ERROR", "NVLINK: TLW Error", "WORKFLOW_NVLINK5_ERR"),
  r(147, "NVLINK_TREX_ERROR", "NVLINK: TREX Error", "WORKFLOW_NVLINK5_ERR"),
  r(148, "NVLINK_NVLPW_CTRL_ERROR", "NVLINK: NVLPW_CTRL Error", "WORKFLOW_NVLINK5_ERR"),
  r(149, "NVLINK_NETIR_ERROR", "NVLINK: NETIR Error", "WORKFLOW_NVLINK5_ERR"),
  r(150, "NVLINK_MSE_ERROR", "NVLINK: MSE Error", "WORKFLOW_NVLINK5_ERR"),
  r(151, "ROBUST_CHANNEL_KEY_ROTATION_ERROR", "Key rotation Error", "RESTART_VM"),
  r(154, "GPU_RECOVERY_ACTION_CHANGED", "GPU Recovery Action Changed", "XID_154"),
  r(155, "NVLINK_SW_DEFINED_ERROR", "NVLINK: SW Defined Error", "RESET_GPU"),
  r(156, "RESOURCE_RETIREMENT_EVENT", "Resource Retirement Event", "RESET_GPU"),
  r(157, "RESOURCE_RETIREMENT_FAILURE", "Resource Retirement Failure", "IGNORE"),
  r(158, "GPU_FATAL_TIMEOUT", "GPU Fatal Timeout", "RESET_GPU"),
  r(159, "ROBUST_CHANNEL_CHI_NON_DATA_ERROR", "CHI Non-Data Error", "CHECK_UVM"),
  r(160, "CHANNEL_RETIREMENT_EVENT", "Channel Retirement Event", "IGNORE"),
  r(161, "CHANNEL_RETIREMENT_FAILURE", "Channel Retirement Failure", "IGNORE"),
];

const BY_CODE = new Map(XID_TABLE.map((x) => [x.code, x]));

/** A row's class: its override where it has one, else its bucket's. */
export const xidClass = (x: XidRule): XidClass => x.override?.class ?? BUCKET_CLASS[x.bucket].class;

export interface XidVerdict {
  effect: TaintEffect;
  /** One line for the health message, the Event and diag. */
  message: string;
  known: boolean;
}

// XID 154's text, per the catalogue: "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot
// Required)"; the values are "None", "Drain P2P", "Drain and Reset", "GPU Reset Required", "Node Reboot Required".
function xid154Class(detail: string): XidClass {
  const to = /\bto\s+0x[0-9a-f]+\s+\(([^)]*)\)/i.exec(detail)?.[1] ?? detail;
  if (/(reset|reboot) required/i.test(to)) return "fatal";
  if (/^\s*none\s*$/i.test(to)) return "informational";
  return "attention";
}

/** Classifies one XID event; `detail` is the rest of the driver's line (XID 154 names its action there). */
export function classifyXid(code: number, detail = ""): XidVerdict {
  const x = BY_CODE.get(code);
  if (!x) return { effect: "None", known: false, message: `XID ${code} (not in Tessera's XID table; effect None): ${detail}`.trim() };
  const cls = code === 154 ? xid154Class(detail) : xidClass(x);
  return { effect: EFFECT[cls], known: true, message: `XID ${code} ${x.name} (${cls}; NVIDIA: ${x.bucket})${detail ? `: ${detail}` : ""}` };
}
