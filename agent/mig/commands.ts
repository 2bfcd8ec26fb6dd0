// The nvidia-smi MIG commands Tessera runs, and the parsing of their answers. Pure: argv in,
// text out. GPUs are addressed by UUID (`-i GPU-…`), never by index, which can change.
//   create:  nvidia-smi mig -i <gpu> -cgi <profileId>:<start> -C   (GI at exactly that placement + its default CI)
//   destroy: nvidia-smi mig -i <gpu> -gi <gi> -ci <ci> -dci, then nvidia-smi mig -i <gpu> -gi <gi> -dgi

export function createArgs(gpuUUID: string, profileId: number, start: number): string[] {
  return ["mig", "-i", gpuUUID, "-cgi", `${profileId}:${start}`, "-C"];
}

export function destroyCiArgs(gpuUUID: string, gi: number, ci: number): string[] {
  return ["mig", "-i", gpuUUID, "-gi", String(gi), "-ci", String(ci), "-dci"];
}

export function destroyGiArgs(gpuUUID: string, gi: number): string[] {
  return ["mig", "-i", gpuUUID, "-gi", String(gi), "-dgi"];
}

// "Successfully created GPU instance ID  1 on GPU  0 using profile MIG 3g.20gb (ID  9)"
// "Successfully created compute instance ID  0 on GPU  0 GPU instance ID  1 using profile MIG 3g.20gb (ID  2)"
const GI_CREATED = /Successfully created GPU instance ID\s+(\d+) on GPU\s+\d+/;
const CI_CREATED = /Successfully created compute instance ID\s+(\d+) on GPU\s+\d+ GPU instance ID\s+(\d+)/;

/** The GI and CI ids of a successful `-cgi … -C`, or undefined when the output does not say them. */
export function parseCreated(stdout: string): { gi: number; ci: number } | undefined {
  const gi = GI_CREATED.exec(stdout);
  const ci = CI_CREATED.exec(stdout);
  if (!gi || !ci || ci[2] !== gi[1]) return undefined;
  return { gi: Number(gi[1]), ci: Number(ci[1]) };
}

/** The tool said the instance is not there (destroying what is gone is done). */
export function isNotFound(text: string): boolean {
  return /\bNot Found\b/i.test(text);
}

/** The first line the tool printed about a failure, for the per-claim error. */
export function toolMessage(stdout: string, stderr: string): string {
  const line = (stderr.trim() || stdout.trim()).split("\n").find((l) => l.trim().length > 0) ?? "";
  return line.trim().slice(0, 300);
}
