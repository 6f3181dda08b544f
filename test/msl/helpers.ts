/**
 * Shared pieces of the MSL kernel tests: compile a test/kernels/*.metal file once, run one
 * dispatch, compare arrays against float64 references with messages that name the index, the
 * value found and the value expected, and convert to and from half and bfloat.
 */
import { setDefaultTimeout } from "bun:test";
import { readFileSync } from "node:fs";
import * as sm from "../../src/index.ts";
import { prng } from "../../src/lora/data.ts";

export { sm };

// The first compile of a kernel file on the host backend runs a C++ compiler: seconds, not ms.
setDefaultTimeout(120_000);

export const dev = sm.device();

type Pipeline = sm.Pipeline;
type Dims = [number, number, number];

function kernelSource(file: string): string {
  return readFileSync(new URL(`../kernels/${file}`, import.meta.url), "utf8");
}

/** The kernels of one .metal file, compiled on first use and then shared by a file's tests. */
export function kernelFile(file: string): (name: string) => Pipeline {
  let lib: sm.Library | Error | undefined;
  const pipes = new Map<string, Pipeline>();
  return (name) => {
    if (lib === undefined) {
      try {
        lib = dev.compile(kernelSource(file));
      } catch (error) {
        lib = error as Error; // every test of the file reports the one compile failure
      }
    }
    if (lib instanceof Error) throw lib;
    let pipe = pipes.get(name);
    if (!pipe) {
      pipe = lib.pipeline(name);
      pipes.set(name, pipe);
    }
    return pipe;
  };
}

/** One dispatchThreads in its own command buffer, waited for. */
export function runThreads(pipe: Pipeline, args: sm.DispatchArg[], grid: Dims, threadgroup: Dims, threadgroupMemory?: number[]) {
  const cmd = dev.commandBuffer();
  cmd.dispatchThreads(pipe, { args, grid, threadgroup, threadgroupMemory });
  cmd.commit();
  cmd.wait();
}

/** One dispatchThreadgroups in its own command buffer, waited for. */
export function runGroups(
  pipe: Pipeline,
  args: sm.DispatchArg[],
  threadgroups: Dims,
  threadgroup: Dims,
  threadgroupMemory?: number[],
) {
  const cmd = dev.commandBuffer();
  cmd.dispatchThreadgroups(pipe, { args, threadgroups, threadgroup, threadgroupMemory });
  cmd.commit();
  cmd.wait();
}

/** A copy of a device buffer's contents (through the ABI's copy where the CPU cannot see it). */
export function read<T extends ArrayLike<number>>(buf: sm.DeviceBuffer, ctor: sm.TypedArrayConstructor<T>): T {
  return buf.read(ctor);
}

/** Seeded uniform numbers in [0, 1), so failures reproduce: the generator the LoRA data loader shuffles with. */
const rng = prng;

/** n float32 values uniform in [lo, hi). */
export function uniform(n: number, lo: number, hi: number, seed: number): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}

/** n int32 values uniform in [lo, hi]. */
export function uniformInt(n: number, lo: number, hi: number, seed: number): Int32Array {
  const r = rng(seed);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + Math.floor((hi - lo + 1) * r());
  return out;
}

/** The spacing of float32 numbers at x (subnormal spacing below the smallest normal). */
export function ulp32(x: number): number {
  const a = Math.abs(x);
  if (!Number.isFinite(a)) return 0;
  if (a < 2 ** -126) return 2 ** -149;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  return 2 ** (e - 23);
}

export interface CloseOptions {
  /** |got - want| <= atol + rtol * |want| passes, */
  atol?: number;
  rtol?: number;
  /** ... and so does |got - want| <= ulps float32 ulps of want, */
  ulps?: number;
  /** ... and so does |got - want| <= tolAt(i) (error bounds that depend on the inputs). */
  tolAt?: (i: number) => number;
  /** -0 and +0 must match when set. */
  signedZero?: boolean;
  /** names element i in messages, e.g. "x=2.5 exp" */
  label?: (i: number) => string;
  /** indices to leave out (results the spec leaves undefined) */
  skip?: (i: number) => boolean;
}

function show(v: number): string {
  if (Object.is(v, -0)) return "-0";
  return String(v);
}

function fail(what: string, bad: string[], total: number, checked: number): never {
  const more = bad.length > 12 ? `\n  ... and ${bad.length - 12} more` : "";
  throw new Error(`${what}: ${bad.length} of ${checked} values differ (${total} in all)\n  ${bad.slice(0, 12).join("\n  ")}${more}`);
}

/**
 * Elementwise closeness. NaN matches only NaN; infinities match only the same infinity; other
 * values pass within any of the tolerances of CloseOptions. Throws with the first mismatches.
 */
export function expectClose(what: string, got: ArrayLike<number>, want: ArrayLike<number>, opts: CloseOptions = {}) {
  if (got.length !== want.length) throw new Error(`${what}: got ${got.length} values, expected ${want.length}`);
  const { atol = 0, rtol = 0, ulps = 0, signedZero = false, tolAt, label, skip } = opts;
  const bad: string[] = [];
  let checked = 0;
  for (let i = 0; i < want.length; i++) {
    if (skip?.(i)) continue;
    checked++;
    const g = got[i]!;
    const w = want[i]!;
    let ok: boolean;
    if (Number.isNaN(w) || Number.isNaN(g)) ok = Number.isNaN(w) && Number.isNaN(g);
    else if (!Number.isFinite(w) || !Number.isFinite(g)) ok = g === w;
    else {
      const err = Math.abs(g - w);
      ok = err <= atol + rtol * Math.abs(w) || err <= ulps * ulp32(w) || (tolAt !== undefined && err <= tolAt(i));
      if (ok && signedZero && g === 0 && w === 0) ok = Object.is(g, w);
    }
    if (!ok) {
      const err = Math.abs(g - w);
      const where = label ? ` (${label(i)})` : "";
      bad.push(`[${i}]${where}: got ${show(g)}, expected ${show(w)}, |diff| ${err.toPrecision(3)}`);
    }
  }
  if (checked === 0) throw new Error(`${what}: nothing was compared`);
  if (bad.length > 0) fail(what, bad, want.length, checked);
}

/** Exact equality (integers, bit patterns); NaN matches NaN. */
export function expectEqual(
  what: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  opts: Pick<CloseOptions, "label" | "skip"> = {},
) {
  expectClose(what, got, want, { ...opts, signedZero: true });
}

/** A float32 value's bit pattern. */
export function f32Bits(x: number): number {
  const f = new Float32Array([x]);
  return new Uint32Array(f.buffer)[0]!;
}

/** The float32 whose bit pattern is b. */
export function bitsF32(b: number): number {
  const u = new Uint32Array([b >>> 0]);
  return new Float32Array(u.buffer)[0]!;
}

/** Half bits of x rounded to nearest even (Float16Array does IEEE conversion). */
export function f16Bits(x: number): number {
  const h = new Float16Array([x]);
  return new Uint16Array(h.buffer)[0]!;
}

/** x rounded to half (then widened): IEEE round to nearest even, overflow to inf. */
export const f16 = (x: number): number => Math.f16round(x);

/** Half bits for a whole array. */
export function toF16(xs: ArrayLike<number>): Uint16Array {
  const h = Float16Array.from(xs);
  return new Uint16Array(h.buffer);
}

/** The values of an array of half bits. */
export function fromF16(bits: Uint16Array): Float64Array {
  const h = new Float16Array(bits.buffer, bits.byteOffset, bits.length);
  return Float64Array.from(h);
}

/** bfloat bits of x, a float32 value: round to nearest even on the top 16 bits, NaN stays NaN. */
export function bf16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7fc0;
  const b = f32Bits(x);
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The value of bfloat bits. */
export function bf16Value(bits: number): number {
  return bitsF32((bits & 0xffff) << 16);
}

/** x rounded to bfloat (then widened). */
export const bf16 = (x: number): number => bf16Value(bf16Bits(Math.fround(x)));

/** Little-endian bytes of a constant struct, built field by field. */
export class StructBytes {
  private readonly view: DataView;
  readonly bytes: Uint8Array;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
  }
  f32(offset: number, ...values: number[]): this {
    values.forEach((v, k) => this.view.setFloat32(offset + 4 * k, v, true));
    return this;
  }
  u32(offset: number, ...values: number[]): this {
    values.forEach((v, k) => this.view.setUint32(offset + 4 * k, v, true));
    return this;
  }
}
