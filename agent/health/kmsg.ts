// XID events from the kernel log. `/dev/kmsg` gives one record per read, `prio,seq,usec,flags;message`
// (continuation lines of key=value pairs start with a space and are skipped); a fixture's kmsg.txt
// holds the same records, one per line, and is replayed then tailed. The driver's XID lines look like
//   NVRM: Xid (PCI:0000:3b:00): 79, pid=0, name=..., GPU has fallen off the bus.
//   NVRM: Xid (PCI:0000:01:00 GPU-I:05): 94, pid=7194, Contained: CE User Channel (0x9). ...
//   NVRM: Xid (PCI:0000:3b:00 GPU-I:01 GPU-CI:02): 13, pid=9, name=a, Graphics Exception
// (domain:bus:device, sometimes with .function; GPU-I / GPU-CI name a MIG instance).
// The reader opens the path non-blocking and polls: no libuv thread waits forever on /dev/kmsg,
// and a burst is handed on in bounded batches with the event loop free in between.
import { constants, promises as fsp } from "node:fs";
import type { Logger } from "../common/log.js";

export interface KmsgRecord {
  seq: number;
  /** Microseconds since boot, as the kernel stamped it. */
  usec: number;
  message: string;
}

export interface XidLine {
  /** PCI domain:bus:device, lower case, e.g. 0000:3b:00 (the function is dropped). */
  pci: string;
  gi?: number;
  ci?: number;
  code: number;
  /** The driver's text after the code. */
  detail: string;
}

/** Longest record kept; the kernel caps a record near 1 KiB, a fixture line is cut here. */
const MAX_LINE = 4096;

export function parseKmsgRecord(line: string): KmsgRecord | undefined {
  if (line.length === 0 || line.startsWith(" ")) return undefined;
  const semi = line.indexOf(";");
  if (semi < 0) return undefined;
  const head = line.slice(0, semi).split(",");
  const seq = Number(head[1]);
  const usec = Number(head[2]);
  if (head.length < 4 || !Number.isSafeInteger(seq) || seq < 0 || !Number.isSafeInteger(usec) || usec < 0) return undefined;
  return { seq, usec, message: line.slice(semi + 1, semi + 1 + MAX_LINE) };
}

const XID = /NVRM: Xid \(PCI:([0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2})(?:\.[0-7])?(?: GPU-I:(\d{1,3}))?(?: GPU-CI:(\d{1,3}))?\): (\d{1,5}),? ?(.*)$/;

export function parseXid(message: string): XidLine | undefined {
  const m = XID.exec(message);
  if (!m) return undefined;
  const x: XidLine = { pci: (m[1] as string).toLowerCase(), code: Number(m[4]), detail: (m[5] ?? "").trim().slice(0, 512) };
  if (m[2] !== undefined) x.gi = Number(m[2]);
  if (m[3] !== undefined) x.ci = Number(m[3]);
  return x;
}

/** The XID's PCI id as our inventory writes bus ids ("0000:3b:00.0" -> "0000:3b:00"). */
export const pciDevicePart = (busId: string): string => busId.toLowerCase().replace(/\.[0-7]$/, "");

export interface KmsgReader {
  /** Resolves once everything readable now has been handed to `onRecords` (tests, start-up). */
  drained(): Promise<void>;
  stop(): void;
}

export interface KmsgReaderOptions {
  path: string;
  /** Gets records in batches of at most `batch`; the reader awaits it before reading on. */
  onRecords: (records: KmsgRecord[]) => void | Promise<void>;
  log: Logger;
  /** Milliseconds between polls when nothing is readable; default 200. */
  pollMs?: number;
  batch?: number;
}

/** Tails `path` (a /dev/kmsg character device or a regular file of records) until stop(). */
export function startKmsgReader(opts: KmsgReaderOptions): KmsgReader {
  const pollMs = opts.pollMs ?? 200;
  const batch = opts.batch ?? 500;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let handle: fsp.FileHandle | undefined;
  let position = 0; // regular files only
  let regular = true;
  let partial = "";
  let pending: (() => void)[] = []; // drained() callers waiting for the next full pass
  let warned = false;
  const buf = Buffer.alloc(64 * 1024);

  async function open(): Promise<fsp.FileHandle> {
    const h = await fsp.open(opts.path, constants.O_RDONLY | constants.O_NONBLOCK);
    regular = (await h.stat()).isFile();
    position = 0;
    return h;
  }

  async function hand(lines: string[]): Promise<void> {
    const records: KmsgRecord[] = [];
    for (const l of lines) {
      const r = parseKmsgRecord(l.length > MAX_LINE ? l.slice(0, MAX_LINE) : l);
      if (r) records.push(r);
    }
    for (let i = 0; i < records.length; i += batch) {
      await opts.onRecords(records.slice(i, i + batch));
      await new Promise((r) => setImmediate(r)); // a burst never holds the event loop for long
    }
  }

  /** Reads until nothing is readable now. */
  async function readAvailable(): Promise<void> {
    handle ??= await open();
    if (regular) {
      const size = (await handle.stat()).size;
      if (size < position) position = 0; // truncated or replaced: start over
    }
    for (;;) {
      let n: number;
      try {
        ({ bytesRead: n } = await handle.read(buf, 0, buf.length, regular ? position : null));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EAGAIN") return; // /dev/kmsg: no new record
        if (code === "EPIPE") continue; // /dev/kmsg: records were overwritten before we read them
        throw err;
      }
      if (n === 0) return;
      if (regular) position += n;
      const text = partial + buf.subarray(0, n).toString("utf8");
      const lines = text.split("\n");
      partial = (lines.pop() ?? "").slice(-MAX_LINE);
      await hand(lines);
      if (stopped) return;
    }
  }

  async function tick(): Promise<void> {
    timer = undefined;
    if (stopped) return;
    const passWaiters = pending;
    pending = [];
    try {
      await readAvailable();
      warned = false;
    } catch (err) {
      if (!warned) opts.log.warn("cannot read the kernel log for XID events; retrying", { code: "TESSERA_HEALTH", path: opts.path, err: (err as Error).message });
      warned = true;
      await handle?.close().catch(() => undefined);
      handle = undefined;
    }
    for (const f of passWaiters) f();
    if (!stopped) {
      timer = setTimeout(() => void tick(), pollMs);
      timer.unref();
    }
  }

  void tick();
  return {
    drained: () => new Promise<void>((resolve) => pending.push(resolve)),
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      for (const f of pending.splice(0)) f();
      void handle?.close().catch(() => undefined);
    },
  };
}
