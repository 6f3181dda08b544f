/**
 * GGUF files (version 2 and 3, little-endian): metadata, and tensors on the device. Every count,
 * length and offset read from the file is checked against the bytes that remain before anything
 * is allocated for it, so a damaged or hostile file gives a SmeltError naming it and the problem,
 * never a huge allocation or a crash.
 *
 * GGUF lists a tensor's dimensions fastest first (ne[0] is the contiguous axis); smelt shapes are
 * row-major, slowest first, so a tensor's shape is ne reversed: a weight stored as
 * ne = [in, out] becomes [out, in], the layout PyTorch and transformers use for it.
 */
import { statSync } from "node:fs";
import { SmeltError } from "../errors.ts";
import type { DType } from "../graph/dtype.ts";
import type { QuantFormat } from "../graph/op.ts";
import { QUANT_BLOCKS } from "../graph/quant.ts";
import { fromBytes } from "../tensor/ops.ts";
import { QuantizedTensor } from "../tensor/quantized.ts";
import type { Tensor } from "../tensor/tensor.ts";

export type GGUFValue = number | bigint | boolean | string | GGUFValue[];

export interface GGUFTensorInfo {
  name: string;
  /** GGML's type name (F32, Q4_1, ...). */
  type: string;
  /** Row-major smelt shape: GGUF's ne reversed. */
  shape: number[];
  /** Byte offset from the start of the file. */
  offset: number;
  nbytes: number;
}

export interface GGUF {
  version: number;
  metadata: Record<string, GGUFValue>;
  tensors: Record<string, Tensor | QuantizedTensor>;
  /** Where each tensor lies in the file, in file order. */
  infos: GGUFTensorInfo[];
  alignment: number;
}

/** GGML type ids smelt reads: plain floats become tensors, block formats QuantizedTensors. */
const FLOAT_TYPES: Record<number, { name: string; dtype: DType }> = {
  0: { name: "F32", dtype: "float32" },
  1: { name: "F16", dtype: "float16" },
  30: { name: "BF16", dtype: "bfloat16" },
};
const QUANT_TYPES: Record<number, QuantFormat> = { 2: "Q4_0", 3: "Q4_1", 8: "Q8_0", 12: "Q4_K", 14: "Q6_K" };
/** Names of the GGML types smelt does not read, for the error that says so. */
const OTHER_TYPES: Record<number, string> = {
  6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 13: "Q5_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS",
  18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32",
  27: "I64", 28: "F64", 29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
};

const MAGIC = 0x46554747; // "GGUF" read as a little-endian uint32

class Reader {
  pos = 0;
  private readonly view: DataView;
  private readonly utf8 = new TextDecoder("utf-8", { fatal: true });
  constructor(readonly path: string, readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  fail(problem: string): never {
    throw new SmeltError(`loadGGUF: ${this.path}: ${problem}`);
  }
  need(n: number, what: string): void {
    if (n > this.bytes.byteLength - this.pos) {
      this.fail(`${what} at byte ${this.pos} needs ${n} bytes, but the file has ${this.bytes.byteLength - this.pos} left (truncated or corrupt)`);
    }
  }
  u8(what: string): number { this.need(1, what); return this.view.getUint8(this.pos++); }
  i8(what: string): number { this.need(1, what); return this.view.getInt8(this.pos++); }
  u16(what: string): number { this.need(2, what); const v = this.view.getUint16(this.pos, true); this.pos += 2; return v; }
  i16(what: string): number { this.need(2, what); const v = this.view.getInt16(this.pos, true); this.pos += 2; return v; }
  u32(what: string): number { this.need(4, what); const v = this.view.getUint32(this.pos, true); this.pos += 4; return v; }
  i32(what: string): number { this.need(4, what); const v = this.view.getInt32(this.pos, true); this.pos += 4; return v; }
  f32(what: string): number { this.need(4, what); const v = this.view.getFloat32(this.pos, true); this.pos += 4; return v; }
  f64(what: string): number { this.need(8, what); const v = this.view.getFloat64(this.pos, true); this.pos += 8; return v; }
  u64(what: string): bigint { this.need(8, what); const v = this.view.getBigUint64(this.pos, true); this.pos += 8; return v; }
  i64(what: string): bigint { this.need(8, what); const v = this.view.getBigInt64(this.pos, true); this.pos += 8; return v; }
  /** A uint64 that must be a count or size the file can hold: at most the bytes left over `unit`. */
  count(what: string, unit: number): number {
    const at = this.pos;
    const v = this.u64(what);
    const room = Math.floor((this.bytes.byteLength - this.pos) / unit);
    if (v > BigInt(room)) this.fail(`${what} at byte ${at} is ${v}, more than the ${this.bytes.byteLength - this.pos} bytes left can hold`);
    return Number(v);
  }
  string(what: string): string {
    const n = this.count(`length of ${what}`, 1);
    const s = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    try {
      return this.utf8.decode(s);
    } catch {
      return this.fail(`${what} is not valid UTF-8`);
    }
  }
}

/** Metadata value types by id, each with the least bytes one value takes (an array's count bound). */
const VALUE_MIN_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 8: 8, 9: 12, 10: 8, 11: 8, 12: 8 };

/** 64-bit integers as numbers where exact, else as bigints. */
const int64 = (v: bigint): number | bigint => (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);

function readValue(r: Reader, type: number, key: string, depth: number): GGUFValue {
  const what = `value of ${key}`;
  switch (type) {
    case 0: return r.u8(what);
    case 1: return r.i8(what);
    case 2: return r.u16(what);
    case 3: return r.i16(what);
    case 4: return r.u32(what);
    case 5: return r.i32(what);
    case 6: return r.f32(what);
    case 7: {
      const b = r.u8(what);
      if (b > 1) r.fail(`${what} is a bool of byte ${b}, not 0 or 1`);
      return b === 1;
    }
    case 8: return r.string(what);
    case 9: {
      if (depth > 8) r.fail(`${what}: arrays nested more than 8 deep`);
      const inner = r.u32(`element type of ${key}`);
      const min = VALUE_MIN_BYTES[inner];
      if (min === undefined) r.fail(`${key} is an array of unknown value type ${inner}`);
      const n = r.count(`element count of ${key}`, min);
      const out: GGUFValue[] = new Array(n);
      for (let i = 0; i < n; i++) out[i] = readValue(r, inner, key, depth + 1);
      return out;
    }
    case 10: return int64(r.u64(what));
    case 11: return int64(r.i64(what));
    case 12: return r.f64(what);
    default: return r.fail(`${key} has unknown value type ${type}`);
  }
}

/**
 * The file's bytes, memory-mapped: tensors are then copied once, from the page cache into their
 * device buffers, and the file is never held twice in memory.
 */
function mapFile(path: string): Uint8Array {
  let size: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new Error("not a regular file");
    size = st.size;
  } catch (e) {
    throw new SmeltError(`loadGGUF: cannot open ${path}: ${(e as Error).message}`);
  }
  if (size === 0) return new Uint8Array(0); // nothing to map; the parser reports it as truncated
  try {
    return Bun.mmap(path, { shared: false });
  } catch (e) {
    throw new SmeltError(`loadGGUF: cannot map ${path}: ${(e as Error).message}`);
  }
}

/** The header (metadata and tensor infos) of GGUF bytes, checked against their length. */
function parseGGUF(path: string, bytes: Uint8Array): Omit<GGUF, "tensors"> {
  const r: Reader = new Reader(path, bytes);
  const magic = r.u32("magic");
  if (magic !== MAGIC) r.fail(`not a GGUF file (magic ${magic.toString(16).padStart(8, "0")}, expected 46554747 for "GGUF")`);
  const version = r.u32("version");
  if (version !== 2 && version !== 3) r.fail(`GGUF version ${version} is not supported (2 and 3 are)`);
  // A tensor info takes at least 8 (name length) + 4 (dims) + 4 (type) + 8 (offset) bytes; a key-value 8 + 4 + 1.
  const tensorCount = r.count("tensor count", 24);
  const kvCount = r.count("metadata count", 13);
  const metadata: Record<string, GGUFValue> = {};
  for (let i = 0; i < kvCount; i++) {
    const key = r.string(`key ${i}`);
    if (Object.hasOwn(metadata, key)) r.fail(`metadata key ${key} appears twice`);
    metadata[key] = readValue(r, r.u32(`value type of ${key}`), key, 0);
  }
  const alignment = metadata["general.alignment"] ?? 32;
  if (typeof alignment !== "number" || alignment <= 0 || (alignment & (alignment - 1)) !== 0) {
    r.fail(`general.alignment is ${String(alignment)}, not a power of two`);
  }
  const raw: { name: string; type: number; ne: number[]; offset: bigint }[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = r.string(`name of tensor ${i}`);
    const dims = r.u32(`dimension count of ${name}`);
    if (dims > 8) r.fail(`tensor ${name} has ${dims} dimensions (at most 8)`);
    const ne: number[] = [];
    for (let d = 0; d < dims; d++) {
      const v = r.u64(`dimension ${d} of ${name}`);
      if (v > BigInt(bytes.byteLength) * 8n) r.fail(`tensor ${name} has dimension ${v}, more than the file's ${bytes.byteLength} bytes can hold`);
      ne.push(Number(v));
    }
    raw.push({ name, type: r.u32(`type of ${name}`), ne, offset: r.u64(`offset of ${name}`) });
  }
  const dataStart = Math.ceil(r.pos / alignment) * alignment;
  const infos = raw.map(({ name, type, ne, offset }) => {
    const size = ne.reduce((a, d) => a * d, 1);
    let typeName: string;
    let nbytes: number;
    const q = QUANT_TYPES[type];
    if (FLOAT_TYPES[type]) {
      typeName = FLOAT_TYPES[type].name;
      nbytes = size * (type === 0 ? 4 : 2);
    } else if (q) {
      typeName = q;
      const { elements, bytes: per } = QUANT_BLOCKS[q];
      if ((ne[0] ?? 1) % elements !== 0) r.fail(`tensor ${name} of ${q} has ${ne[0]} values per row, not a multiple of its block of ${elements}`);
      nbytes = (size / elements) * per;
    } else {
      const known = OTHER_TYPES[type];
      return r.fail(`tensor ${name} has ${known ? `type ${known}, which smelt does not read` : `unknown type ${type}`} (smelt reads F32, F16, BF16, ${Object.values(QUANT_TYPES).join(", ")})`);
    }
    if (offset % BigInt(alignment) !== 0n) r.fail(`tensor ${name} starts at data offset ${offset}, not a multiple of the alignment ${alignment}`);
    const at = BigInt(dataStart) + offset;
    if (at + BigInt(nbytes) > BigInt(bytes.byteLength)) {
      r.fail(`tensor ${name} (${typeName}, ${nbytes} bytes at byte ${at}) runs past the end of the file (${bytes.byteLength} bytes): truncated or corrupt`);
    }
    return { name, type: typeName, shape: [...ne].reverse(), offset: Number(at), nbytes };
  });
  return { version, metadata, infos, alignment };
}

/**
 * A GGUF file's metadata and tensors: F32, F16 and BF16 tensors as tensors of those dtypes,
 * quantized ones as QuantizedTensors. Each tensor's bytes are copied once, from the mapped file
 * into its device buffer. The file must not shrink while it loads (a mapped page past the end
 * would fault).
 */
export function loadGGUF(path: string): GGUF {
  if (typeof path !== "string") throw new SmeltError(`loadGGUF: path must be a string, got ${typeof path}`);
  const bytes = mapFile(path);
  const header = parseGGUF(path, bytes);
  const tensors: Record<string, Tensor | QuantizedTensor> = {};
  for (const info of header.infos) {
    if (Object.hasOwn(tensors, info.name)) throw new SmeltError(`loadGGUF: ${path}: tensor ${info.name} appears twice`);
    const data = bytes.subarray(info.offset, info.offset + info.nbytes);
    const float = Object.values(FLOAT_TYPES).find((t) => t.name === info.type);
    tensors[info.name] = float ? fromBytes(data, info.shape, float.dtype) : QuantizedTensor.fromBytes(data, info.shape, info.type as QuantFormat);
  }
  return { ...header, tensors };
}
