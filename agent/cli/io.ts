// What a CLI verb receives: its arguments and its outputs. Tests pass buffers; main passes process.
import { Readable } from "node:stream";

export interface CliIO {
  stdout(text: string): void;
  stderr(text: string): void;
  env: NodeJS.ProcessEnv;
  /** Where `-f -` reads from; absent: no standard input. */
  stdin?: NodeJS.ReadableStream;
}

export type Verb = (argv: string[], io: CliIO) => Promise<number>;

/** Writes are dropped once a stream is broken (EPIPE: the reader went away; see main.ts). */
const write = (s: NodeJS.WriteStream, t: string): void => {
  if (!s.destroyed && s.writable) s.write(t);
};

export const processIO: CliIO = {
  stdout: (t) => write(process.stdout, t),
  stderr: (t) => write(process.stderr, t),
  env: process.env,
  stdin: process.stdin,
};

export function captureIO(env: NodeJS.ProcessEnv = {}, stdin?: string): CliIO & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, env, ...(stdin !== undefined ? { stdin: Readable.from([Buffer.from(stdin)]) } : {}), stdout: (t) => void out.push(t), stderr: (t) => void err.push(t) };
}
