// Parsers for the two text outputs the XML lacks:
//   `nvidia-smi -L`        GPU and MIG UUIDs (the XML has no MIG UUID)
//   `nvidia-smi mig -lgi`  GI profile id, name and placement Start:Size (the XML has none of them)
// Lines that do not match are ignored; nothing here throws on odd input.

export interface ListedMig {
  profileName: string; // "1g.10gb"
  deviceIndex: number; // "Device N" = the <mig_device><index> in the XML
  uuid: string;
}

export interface ListedGpu {
  index: number;
  productName: string;
  uuid: string;
  migs: ListedMig[];
}

const GPU_LINE = /^GPU\s+(\d+):\s+(.*?)\s+\(UUID:\s*(GPU-[0-9A-Za-z-]+)\)\s*$/;
// R470+: "  MIG 1g.10gb     Device  0: (UUID: MIG-c6d4...)"; R450: "MIG-GPU-<uuid>/<gi>/<ci>"
const MIG_LINE = /^\s+MIG\s+(\S+)\s+Device\s+(\d+):\s+\(UUID:\s*(MIG-[0-9A-Za-z/-]+)\)\s*$/;

export function parseListGpus(out: string): ListedGpu[] {
  const gpus: ListedGpu[] = [];
  for (const line of out.split(/\r?\n/)) {
    const g = GPU_LINE.exec(line);
    if (g) {
      gpus.push({ index: Number(g[1]), productName: g[2] as string, uuid: g[3] as string, migs: [] });
      continue;
    }
    const m = MIG_LINE.exec(line);
    const cur = gpus[gpus.length - 1];
    if (m && cur) cur.migs.push({ profileName: m[1] as string, deviceIndex: Number(m[2]), uuid: m[3] as string });
  }
  return gpus;
}

export interface GpuInstanceRow {
  gpuIndex: number;
  profileName: string; // without the "MIG " prefix
  profileId: number;
  gpuInstanceId: number;
  placementStart: number;
  placementSize: number;
}

// "|   0  MIG 1g.10gb          19        9          2:1     |"
const LGI_ROW = /^\|\s*(\d+)\s+MIG\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+):(\d+)\s*\|\s*$/;

/** Rows of `nvidia-smi mig -lgi`; "No GPU instances found" / "No MIG-enabled devices found" give []. */
export function parseMigLgi(out: string): GpuInstanceRow[] {
  const rows: GpuInstanceRow[] = [];
  for (const line of out.split(/\r?\n/)) {
    const m = LGI_ROW.exec(line);
    if (!m) continue;
    rows.push({
      gpuIndex: Number(m[1]),
      profileName: m[2] as string,
      profileId: Number(m[3]),
      gpuInstanceId: Number(m[4]),
      placementStart: Number(m[5]),
      placementSize: Number(m[6]),
    });
  }
  return rows;
}

/** True when `mig -lgi` failed only because nothing is MIG-enabled (it exits non-zero then). */
export function isNoMigMessage(out: string): boolean {
  return /No (MIG-enabled devices|GPU instances) found/i.test(out);
}
