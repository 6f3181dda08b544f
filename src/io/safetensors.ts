/**
 * The safetensors format: an 8-byte little-endian header length, a JSON header naming each
 * tensor's dtype, shape and byte range, then the tensors' bytes. Loading maps the file and copies
 * each tensor's bytes once, into its device buffer; saving writes a temporary file and renames it,
 * so a reader never sees half a file.
 */
import { closeSync, fstatSync, openSync, readSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { SmeltError } from "../errors.ts";
import { type DType, itemsize } from "../graph/dtype.ts";
import { fromBytes } from "../tensor/ops.ts";
import { Tensor } from "../tensor/tensor.ts";

const TO_SMELT: Record<string, DType> = {
  F32: "float32", F16: "float16", BF16: "bfloat16", I32: "int32", U32: "uint32", I8: "int8", U8: "uint8", BOOL: "bool",
};
const FROM_SMELT: Record<DType, string> = {
  float32: "F32", float16: "F16", bfloat16: "BF16", int32: "I32", uint32: "U32", int8: "I8", uint8: "U8", bool: "BOOL",
};
/**
 * The Python package lays tensors out by dtype (its enum's order, largest first) then by name;
 * following it makes our files byte-identical to its files for the same tensors.
 */
const DTYPE_RANK: Record<string, number> = { BOOL: 0, U8: 1, I8: 2, F16: 3, BF16: 4, I32: 5, U32: 6, F32: 7 };

/** A header larger than this is refused before it is read: the Python package's own limit. */
const MAX_HEADER = 100_000_000;

export interface Safetensors {
  tensors: Record<string, Tensor>;
  metadata: Record<string, string>;
}

interface Entry {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

/** Reads and checks the header against the file's size, allocating nothing the header claims. */
function readHeader(path: string, fd: number, fileSize: number): { entries: Entry[]; metadata: Record<string, string>; dataStart: number } {
  const fail = (what: string): never => {
    throw new SmeltError(`loadSafetensors: ${path}: ${what}`);
  };
  if (fileSize < 8) fail(`the file has ${fileSize} bytes, fewer than the 8 of the header length`);
  const lenBytes = new Uint8Array(8);
  readSync(fd, lenBytes, 0, 8, 0);
  const len = Number(new DataView(lenBytes.buffer).getBigUint64(0, true));
  if (len > MAX_HEADER) fail(`the header claims ${len} bytes, more than the ${MAX_HEADER} allowed`);
  if (8 + len > fileSize) fail(`the header claims ${len} bytes but the file has only ${fileSize - 8} after the length`);
  const headerBytes = new Uint8Array(len);
  readSync(fd, headerBytes, 0, len, 8);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (e) {
    fail(`the header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) fail("the header is not a JSON object");
  const dataStart = 8 + len;
  const dataSize = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, info] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof info !== "object" || info === null || Array.isArray(info)) fail("__metadata__ is not an object");
      for (const [k, v] of Object.entries(info as Record<string, unknown>)) {
        if (typeof v !== "string") fail(`__metadata__ value of "${k}" is not a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    const t = info as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof t !== "object" || t === null) fail(`tensor "${name}" is not an object`);
    const dtype = TO_SMELT[t.dtype as string];
    if (!dtype) fail(`tensor "${name}" has dtype ${JSON.stringify(t.dtype)}, which smelt does not have (it reads ${Object.keys(TO_SMELT).join(", ")})`);
    const shape = t.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
    const off = t.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0) || off[0] > off[1])
      fail(`tensor "${name}" has invalid data_offsets ${JSON.stringify(off)}`);
    const [begin, end] = off as [number, number];
    const want = (shape as number[]).reduce((a, b) => a * b, 1) * itemsize(dtype!);
    if (end - begin !== want) fail(`tensor "${name}" of shape [${shape}] ${t.dtype} needs ${want} bytes but its data_offsets span ${end - begin}`);
    if (end > dataSize) fail(`tensor "${name}" ends at byte ${end} of the data but the file holds only ${dataSize} (truncated?)`);
    entries.push({ name, dtype: dtype!, shape: shape as number[], begin, end });
  }
  // Ranges must tile the data without overlap, as the format requires.
  const sorted = [...entries].sort((a, b) => a.begin - b.begin);
  let at = 0;
  for (const e of sorted) {
    if (e.begin !== at) fail(`tensor "${e.name}" starts at byte ${e.begin} of the data, expected ${at} (gap or overlap)`);
    at = e.end;
  }
  if (at !== dataSize) fail(`the tensors cover ${at} bytes of data but the file holds ${dataSize}`);
  return { entries, metadata, dataStart };
}

/** `{ tensors, metadata }` of a safetensors file, each tensor's bytes copied once to the device. */
export function loadSafetensors(path: string): Safetensors {
  if (typeof path !== "string") throw new SmeltError(`loadSafetensors: path must be a string, got ${typeof path}`);
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw new SmeltError(`loadSafetensors: cannot open ${path} (${(e as Error).message})`);
  }
  let parsed: ReturnType<typeof readHeader>;
  try {
    parsed = readHeader(path, fd, fstatSync(fd).size);
  } finally {
    closeSync(fd);
  }
  const tensors: Record<string, Tensor> = {};
  if (parsed.entries.length === 0) return { tensors, metadata: parsed.metadata };
  // A memory map lets the one copy go from the page cache straight into device buffers.
  const map = Bun.mmap(path, { shared: false });
  for (const e of parsed.entries) {
    const bytes = map.subarray(parsed.dataStart + e.begin, parsed.dataStart + e.end);
    try {
      tensors[e.name] = fromBytes(bytes, e.shape, e.dtype);
    } catch (err) {
      for (const t of Object.values(tensors)) t.dispose();
      throw new SmeltError(`loadSafetensors: ${path}: tensor "${e.name}": ${(err as Error).message}`);
    }
  }
  return { tensors, metadata: parsed.metadata };
}

/** Writes tensors (and string metadata) as a safetensors file, atomically. */
export function saveSafetensors(path: string, tensors: Record<string, Tensor>, metadata?: Record<string, string>): void {
  if (typeof path !== "string") throw new SmeltError(`saveSafetensors: path must be a string, got ${typeof path}`);
  if (typeof tensors !== "object" || tensors === null) throw new SmeltError("saveSafetensors: tensors must be an object of name → tensor");
  for (const [k, v] of Object.entries(tensors)) {
    if (!(v instanceof Tensor)) throw new SmeltError(`saveSafetensors: "${k}" is not a tensor`);
    if (k === "__metadata__") throw new SmeltError('saveSafetensors: "__metadata__" is reserved for the metadata');
  }
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== "string") throw new SmeltError(`saveSafetensors: metadata "${k}" must be a string, got ${typeof v}`);
  }
  const names = Object.keys(tensors).sort((a, b) => {
    const r = DTYPE_RANK[FROM_SMELT[tensors[b]!.dtype]]! - DTYPE_RANK[FROM_SMELT[tensors[a]!.dtype]]!;
    return r !== 0 ? r : a < b ? -1 : a > b ? 1 : 0;
  });
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    header.__metadata__ = { ...metadata };
  }
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const name of names) {
    const t = tensors[name]!;
    const raw = t.raw() as unknown as ArrayBufferView;
    const bytes = new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
    header[name] = { dtype: FROM_SMELT[t.dtype], shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
    blobs.push(bytes);
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  // Padding with spaces to a multiple of 8 keeps the data aligned, as the Python package does.
  const padded = Math.ceil(json.byteLength / 8) * 8;
  if (padded !== json.byteLength) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, "w");
    for (const part of [len, json, ...blobs]) {
      let done = 0;
      while (done < part.byteLength) done += writeSync(fd, part, done, part.byteLength - done);
    }
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {}
    throw new SmeltError(`saveSafetensors: cannot write ${path} (${(e as Error).message})`);
  }
}
