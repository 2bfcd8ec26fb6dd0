// Protocol-buffers binary wire format for messages described by small field tables, decoding to
// and encoding from the plain objects @grpc/proto-loader produced with the options the kubelet
// protos were loaded with (keepCase, longs: String, enums: String, arrays: true, oneofs: false,
// defaults true or false). Written here rather than imported: protobufjs + proto-loader cost the
// agent's start ~300 ms (import and code generation) and ~10 MiB; @bufbuild/protobuf/wire pulls in
// its reflection registry (~22 ms). The kubelet messages need only varint, LEN and the skips.
//
// Compatibility rules kept from protobufjs on purpose (a differential test holds them):
// - encode writes every field the object sets (not null/undefined), defaults included, in field-
//   number order; repeated elements unpacked (none of these protos has a packable repeated field);
//   map entries always carry key and value. The bytes are protobufjs's own.
// - decode: a field on the wire appears in the object even if it holds its default; with
//   defaults, absent scalars get their zero value, absent messages null, absent maps {}; repeated
//   fields are always arrays; proto3 `optional` fields (presence) appear only when on the wire.
//   Key order is protobufjs's: repeated fields, then maps, then the rest, each in field order.
// - enums decode to their name (an unknown number stays a number); encode takes a name or a
//   number, and an unknown name writes nothing. int64 decodes to a signed decimal string.
// Stricter than protobufjs: a known field with the wrong wire type is skipped as unknown (as Go
// does; protobufjs misreads it), and a map entry without its value decodes as the empty message
// (protobufjs throws).

export type FieldKind = "string" | "bool" | "int64" | "enum" | "message" | "map";

export interface EnumSpec {
  readonly names: readonly string[]; // index = number (the kubelet enums are dense from 0)
}

export interface FieldSpec {
  readonly name: string;
  readonly no: number;
  readonly kind: FieldKind;
  readonly repeated?: boolean;
  /** proto3 `optional`: present only when on the wire, never defaulted. */
  readonly presence?: boolean;
  /** The message type of a message field, or the value type of a map<string, message>. */
  readonly message?: MessageSpec;
  readonly enumType?: EnumSpec;
}

export interface MessageSpec {
  /** Fully qualified, for error messages (as protobufjs words them). */
  readonly fullName: string;
  /** In declaration order. */
  readonly fields: readonly FieldSpec[];
}

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_SGROUP = 3;
const WIRE_EGROUP = 4;
const WIRE_I32 = 5;

function wireTypeOf(f: FieldSpec): number {
  return f.kind === "string" || f.kind === "message" || f.kind === "map" ? WIRE_LEN : WIRE_VARINT;
}

// ---- reading ---------------------------------------------------------------------------------

interface Reader {
  readonly buf: Buffer;
  pos: number;
}

function outOfRange(r: Reader, need: number): RangeError {
  return new RangeError(`protobuf: index out of range: ${r.pos} + ${need} > ${r.buf.length}`);
}

/** The low 32 bits of a varint of up to 10 bytes, unsigned (tags, lengths, bool, enum). */
function readVarint32(r: Reader, end: number): number {
  let value = 0;
  for (let shift = 0; shift < 70; shift += 7) {
    if (r.pos >= end) throw outOfRange(r, 1);
    const b = r.buf[r.pos++] as number;
    if (shift < 32) value |= (b & 0x7f) << shift;
    if (b < 0x80) return value >>> 0;
  }
  throw new Error(`protobuf: varint longer than 10 bytes at ${r.pos}`);
}

function readVarint64(r: Reader, end: number): bigint {
  let lo = 0;
  let hi = 0;
  for (let i = 0; i < 10; i++) {
    if (r.pos >= end) throw outOfRange(r, 1);
    const b = r.buf[r.pos++] as number;
    if (i < 4) lo |= (b & 0x7f) << (i * 7);
    else if (i === 4) {
      lo |= (b & 0x0f) << 28;
      hi |= (b & 0x7f) >> 4;
    } else hi |= (b & 0x7f) << (i * 7 - 32);
    if (b < 0x80) return BigInt.asIntN(64, (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0));
  }
  throw new Error(`protobuf: varint longer than 10 bytes at ${r.pos}`);
}

function readLength(r: Reader, end: number): number {
  const n = readVarint32(r, end);
  if (r.pos + n > end) throw outOfRange(r, n);
  return n;
}

function readString(r: Reader, end: number): string {
  const n = readLength(r, end);
  const s = r.buf.toString("utf8", r.pos, r.pos + n);
  r.pos += n;
  return s;
}

/** Skips one field's value of any wire type; a group is skipped up to its matching end tag. */
function skipField(r: Reader, end: number, wireType: number, fieldNo: number): void {
  switch (wireType) {
    case WIRE_VARINT:
      readVarint32(r, end);
      return;
    case WIRE_I64:
      if (r.pos + 8 > end) throw outOfRange(r, 8);
      r.pos += 8;
      return;
    case WIRE_LEN: {
      const n = readLength(r, end); // before the +=, which reads r.pos first
      r.pos += n;
      return;
    }
    case WIRE_I32:
      if (r.pos + 4 > end) throw outOfRange(r, 4);
      r.pos += 4;
      return;
    case WIRE_SGROUP:
      for (;;) {
        const tag = readVarint32(r, end);
        const wt = tag & 7;
        if (wt === WIRE_EGROUP) {
          if (tag >>> 3 !== fieldNo) throw new Error(`protobuf: group ${fieldNo} ended by ${tag >>> 3}`);
          return;
        }
        skipField(r, end, wt, tag >>> 3);
      }
    default:
      throw new Error(`protobuf: invalid wire type ${wireType} at offset ${r.pos}`);
  }
}

// Field number -> position in spec.fields (-1: unknown); the numbers here are all small.
const fieldIndex = new WeakMap<MessageSpec, Int16Array>();
function byNumber(spec: MessageSpec): Int16Array {
  let m = fieldIndex.get(spec);
  if (!m) {
    m = new Int16Array(Math.max(0, ...spec.fields.map((f) => f.no)) + 1).fill(-1);
    spec.fields.forEach((f, i) => ((m as Int16Array)[f.no] = i));
    fieldIndex.set(spec, m);
  }
  return m;
}

function defaultOf(f: FieldSpec): unknown {
  switch (f.kind) {
    case "string": return "";
    case "bool": return false;
    case "int64": return "0";
    case "enum": return f.enumType?.names[0] ?? 0;
    default: return null; // a message
  }
}

function setKey(o: Record<string, unknown>, k: string, v: unknown): void {
  // A map key is data: "__proto__" must be an own key, not the object's prototype.
  if (k === "__proto__") Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  else o[k] = v;
}

function readValue(r: Reader, end: number, f: FieldSpec, defaults: boolean): unknown {
  switch (f.kind) {
    case "string": return readString(r, end);
    case "bool": return readVarint64(r, end) !== 0n;
    case "int64": return readVarint64(r, end).toString();
    case "enum": {
      const n = readVarint32(r, end) | 0;
      return f.enumType?.names[n] ?? n;
    }
    default: {
      const n = readLength(r, end);
      return decodeAt(f.message as MessageSpec, r, r.pos + n, defaults);
    }
  }
}

const EMPTY = Buffer.alloc(0);

function readMapEntry(r: Reader, end: number, f: FieldSpec, defaults: boolean, into: Record<string, unknown>): void {
  const n = readLength(r, end);
  const stop = r.pos + n;
  let key = "";
  let value: unknown;
  while (r.pos < stop) {
    const tag = readVarint32(r, stop);
    const no = tag >>> 3;
    const wt = tag & 7;
    if (no === 1 && wt === WIRE_LEN) key = readString(r, stop);
    else if (no === 2 && wt === WIRE_LEN) {
      const n = readLength(r, stop);
      value = decodeAt(f.message as MessageSpec, r, r.pos + n, defaults);
    } else skipField(r, stop, wt, no);
  }
  setKey(into, key, value ?? decodeAt(f.message as MessageSpec, { buf: EMPTY, pos: 0 }, 0, defaults));
}

function decodeAt(spec: MessageSpec, r: Reader, end: number, defaults: boolean): Record<string, unknown> {
  const index = byNumber(spec);
  const seen: unknown[] = new Array<unknown>(spec.fields.length);
  while (r.pos < end) {
    const tag = readVarint32(r, end);
    const no = tag >>> 3;
    const wt = tag & 7;
    const i = no < index.length ? (index[no] as number) : -1;
    const f = i >= 0 ? spec.fields[i] : undefined;
    if (!f || wt !== wireTypeOf(f)) {
      skipField(r, end, wt, no);
      continue;
    }
    if (f.kind === "map") {
      let m = seen[i] as Record<string, unknown> | undefined;
      if (!m) seen[i] = m = {};
      readMapEntry(r, end, f, defaults, m);
    } else if (f.repeated) {
      let a = seen[i] as unknown[] | undefined;
      if (!a) seen[i] = a = [];
      a.push(readValue(r, end, f, defaults));
    } else seen[i] = readValue(r, end, f, defaults); // the last one wins, as in protobufjs
  }
  if (r.pos !== end) throw outOfRange(r, r.pos - end);
  const o: Record<string, unknown> = {};
  for (const f of spec.fields) if (f.repeated) o[f.name] = [];
  if (defaults) {
    for (const f of spec.fields) if (f.kind === "map") o[f.name] = {};
    for (const f of spec.fields) if (!f.repeated && f.kind !== "map" && !f.presence) o[f.name] = defaultOf(f);
  }
  for (let i = 0; i < spec.fields.length; i++) {
    const f = spec.fields[i] as FieldSpec;
    const v = seen[i];
    if (v === undefined) continue;
    if (f.kind === "map" && Object.keys(v as object).length === 0) continue;
    o[f.name] = v;
  }
  return o;
}

/** Decodes one message; `defaults` as proto-loader's option of that name. */
export function decodeMessage(spec: MessageSpec, buf: Uint8Array, defaults: boolean): Record<string, unknown> {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  return decodeAt(spec, { buf: b, pos: 0 }, b.length, defaults);
}

// ---- writing ---------------------------------------------------------------------------------

interface Writer {
  buf: Buffer;
  pos: number;
}

function reserve(w: Writer, n: number): void {
  if (w.pos + n <= w.buf.length) return;
  const next = Buffer.allocUnsafe(Math.max(w.buf.length * 2, w.pos + n));
  w.buf.copy(next, 0, 0, w.pos);
  w.buf = next;
}

function writeVarint32(w: Writer, n: number): void {
  reserve(w, 5);
  let v = n >>> 0;
  while (v > 0x7f) {
    w.buf[w.pos++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  w.buf[w.pos++] = v;
}

/** Any 64-bit value, two's complement (a negative int32 enum takes 10 bytes, as in protobuf). */
function writeVarint64(w: Writer, n: bigint): void {
  reserve(w, 10);
  let v = BigInt.asUintN(64, n);
  while (v > 0x7fn) {
    w.buf[w.pos++] = Number(v & 0x7fn) | 0x80;
    v >>= 7n;
  }
  w.buf[w.pos++] = Number(v);
}

function writeString(w: Writer, s: string): void {
  const n = Buffer.byteLength(s, "utf8");
  writeVarint32(w, n);
  reserve(w, n);
  w.pos += w.buf.write(s, w.pos, n, "utf8");
}

/** Runs `body`, then puts its byte length in front of what it wrote. */
function delimited(w: Writer, body: () => void): void {
  const start = w.pos;
  body();
  const len = w.pos - start;
  let k = 1;
  while (len >>> (7 * k) !== 0 && k < 5) k++;
  reserve(w, k);
  w.buf.copyWithin(start + k, start, w.pos);
  const end = w.pos + k;
  w.pos = start;
  writeVarint32(w, len);
  w.pos = end;
}

function typeError(spec: MessageSpec, f: FieldSpec, what: string): TypeError {
  return new TypeError(`.${spec.fullName}.${f.name}: ${what} expected`);
}

function toInt64(v: unknown): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v === "number") return Number.isFinite(v) ? BigInt(Math.trunc(v)) : 0n;
  if (typeof v === "string") return BigInt(v.trim() === "" ? "0" : v);
  if (typeof v === "object" && v !== null && "low" in v && "high" in v) {
    const { low, high } = v as { low: number; high: number };
    return BigInt.asIntN(64, (BigInt(high >>> 0) << 32n) | BigInt(low >>> 0));
  }
  return 0n;
}

function writeScalar(w: Writer, spec: MessageSpec, f: FieldSpec, v: unknown): void {
  switch (f.kind) {
    case "string":
      writeVarint32(w, (f.no << 3) | WIRE_LEN);
      writeString(w, String(v));
      return;
    case "bool":
      writeVarint32(w, (f.no << 3) | WIRE_VARINT);
      writeVarint32(w, v ? 1 : 0);
      return;
    case "int64":
      writeVarint32(w, (f.no << 3) | WIRE_VARINT);
      writeVarint64(w, toInt64(v));
      return;
    case "enum": {
      const n = typeof v === "number" ? v | 0 : f.enumType?.names.indexOf(String(v)) ?? -1;
      if (typeof v !== "number" && n < 0) return; // an unknown name sets nothing (protobufjs)
      writeVarint32(w, (f.no << 3) | WIRE_VARINT);
      writeVarint64(w, BigInt(n));
      return;
    }
    default: {
      if (typeof v !== "object") throw typeError(spec, f, "object");
      writeVarint32(w, (f.no << 3) | WIRE_LEN);
      delimited(w, () => encodeInto(w, f.message as MessageSpec, v as Record<string, unknown>));
    }
  }
}

const sortedFields = new WeakMap<MessageSpec, readonly FieldSpec[]>();

function encodeInto(w: Writer, spec: MessageSpec, o: Record<string, unknown> | null): void {
  if (o === null) return;
  let fields = sortedFields.get(spec);
  if (!fields) sortedFields.set(spec, (fields = [...spec.fields].sort((a, b) => a.no - b.no)));
  for (const f of fields) {
    const v = o[f.name];
    if (f.kind === "map") {
      if (!v) continue;
      if (typeof v !== "object") throw typeError(spec, f, "object");
      const m = v as Record<string, unknown>;
      for (const k of Object.keys(m)) {
        const value = m[k];
        if (typeof value !== "object") throw typeError(spec, f, "object");
        writeVarint32(w, (f.no << 3) | WIRE_LEN);
        delimited(w, () => {
          writeVarint32(w, (1 << 3) | WIRE_LEN);
          writeString(w, k);
          writeVarint32(w, (2 << 3) | WIRE_LEN);
          delimited(w, () => encodeInto(w, f.message as MessageSpec, value as Record<string, unknown> | null));
        });
      }
    } else if (f.repeated) {
      if (!v) continue;
      if (!Array.isArray(v)) throw typeError(spec, f, "array");
      for (const e of v as unknown[]) writeScalar(w, spec, f, e);
    } else if (v !== null && v !== undefined) writeScalar(w, spec, f, v);
  }
}

/** Encodes one message from a plain object (proto-loader's fromObject + encode). */
export function encodeMessage(spec: MessageSpec, o: unknown): Buffer {
  if (typeof o !== "object") throw new TypeError(`.${spec.fullName}: object expected`);
  const w: Writer = { buf: Buffer.allocUnsafe(256), pos: 0 };
  encodeInto(w, spec, o as Record<string, unknown> | null);
  return Buffer.from(w.buf.subarray(0, w.pos));
}
