/**
 * Packs dispatches into the record stream that smelt_cmd_encode reads (layout in smelt.h:
 * smelt_record, smelt_binding, threadgroup memory lengths, constant bytes), so a whole batch of
 * dispatches crosses the FFI boundary in one call.
 */
import type { Pointer } from "bun:ffi";

export const REC_DISPATCH_THREADS = 1;
export const REC_DISPATCH_THREADGROUPS = 2;
export const REC_BARRIER = 3;
export const BIND_BUFFER = 1;
export const BIND_BYTES = 2;
/** Metal's argument tables, as smelt.h states them (SMELT_MAX_BUFFER_SLOTS, SMELT_MAX_THREADGROUP_SLOTS). */
export const MAX_BUFFER_SLOTS = 31;
export const MAX_THREADGROUP_SLOTS = 31;

/** The words shim/common/records.c uses for a dispatch with too many threadgroup memory lengths. */
export function tooManyThreadgroupSlots(count: number): string {
  return (
    `${count} threadgroup memory lengths; Metal has ${MAX_THREADGROUP_SLOTS} threadgroup memory slots, ` +
    `[[threadgroup(0)]]..[[threadgroup(${MAX_THREADGROUP_SLOTS - 1})]]`
  );
}

const HEADER_BYTES = 48;
const BINDING_BYTES = 24;
const TWO_32 = 4294967296;

export type Binding =
  | { readonly index: number; readonly kind: typeof BIND_BUFFER; readonly buffer: Pointer; readonly offset: number }
  | { readonly index: number; readonly kind: typeof BIND_BYTES; readonly data: Uint8Array };

const align8 = (n: number) => (n + 7) & ~7;

export class RecordStream {
  #bytes = new Uint8Array(16 * 1024);
  #view = new DataView(this.#bytes.buffer);
  #length = 0;
  #count = 0;

  /** Records written since the last reset. */
  get count(): number {
    return this.#count;
  }

  /** The packed records, valid until the next write or reset. */
  get bytes(): Uint8Array {
    return this.#bytes.subarray(0, this.#length);
  }

  reset(): void {
    this.#length = 0;
    this.#count = 0;
  }

  barrier(): void {
    const at = this.#reserve(HEADER_BYTES);
    this.#bytes.fill(0, at, at + HEADER_BYTES);
    this.#view.setUint32(at, REC_BARRIER, true);
    this.#view.setUint32(at + 4, HEADER_BYTES, true);
    this.#count++;
  }

  dispatch(
    kind: typeof REC_DISPATCH_THREADS | typeof REC_DISPATCH_THREADGROUPS,
    pipeline: Pointer,
    size: readonly [number, number, number],
    threadgroup: readonly [number, number, number],
    bindings: readonly Binding[],
    threadgroupMemory: readonly number[],
  ): void {
    const tgmemAt = HEADER_BYTES + bindings.length * BINDING_BYTES;
    let end = align8(tgmemAt + threadgroupMemory.length * 4);
    const bytesAt: number[] = [];
    for (const b of bindings) {
      if (b.kind !== BIND_BYTES) continue;
      bytesAt.push(end);
      end = align8(end + b.data.byteLength);
    }
    const at = this.#reserve(end);
    const v = this.#view;
    this.#bytes.fill(0, at, at + end);
    v.setUint32(at, kind, true);
    v.setUint32(at + 4, end, true);
    setU64(v, at + 8, pipeline);
    for (let i = 0; i < 3; i++) {
      v.setUint32(at + 16 + 4 * i, size[i]!, true);
      v.setUint32(at + 28 + 4 * i, threadgroup[i]!, true);
    }
    v.setUint32(at + 40, bindings.length, true);
    v.setUint32(at + 44, threadgroupMemory.length, true);
    let nextBytes = 0;
    bindings.forEach((b, i) => {
      const bAt = at + HEADER_BYTES + i * BINDING_BYTES;
      v.setUint32(bAt, b.index, true);
      v.setUint32(bAt + 4, b.kind, true);
      if (b.kind === BIND_BUFFER) {
        setU64(v, bAt + 8, b.buffer);
        setU64(v, bAt + 16, b.offset);
      } else {
        const offset = bytesAt[nextBytes++]!;
        setU64(v, bAt + 8, offset);
        setU64(v, bAt + 16, b.data.byteLength);
        this.#bytes.set(b.data, at + offset);
      }
    });
    threadgroupMemory.forEach((len, i) => v.setUint32(at + tgmemAt + 4 * i, len, true));
    this.#count++;
  }

  /** Makes room for `n` more bytes and returns where they start. */
  #reserve(n: number): number {
    const at = this.#length;
    if (at + n > this.#bytes.byteLength) {
      let capacity = this.#bytes.byteLength * 2;
      while (capacity < at + n) capacity *= 2;
      const grown = new Uint8Array(capacity);
      grown.set(this.#bytes.subarray(0, at));
      this.#bytes = grown;
      this.#view = new DataView(grown.buffer);
    }
    this.#length = at + n;
    return at;
  }
}

// Pointers and offsets stay below 2^53, so two 32-bit halves carry them without BigInt.
function setU64(v: DataView, at: number, value: number): void {
  v.setUint32(at, value >>> 0, true);
  v.setUint32(at + 4, Math.floor(value / TWO_32), true);
}
