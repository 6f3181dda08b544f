/**
 * Shared machinery of the tensor-engine tests: a float64 reference for n-d arrays, rounding of
 * reference values to a dtype, ulp-based comparison, deterministic inputs, inputs laid out as
 * non-contiguous views, and running one computation both lazily and eagerly.
 */
import { expect } from "bun:test";
import * as sm from "../../src/index.ts";
import { bf16BitsToNumber, f16BitsToNumber, numberToBf16Bits, numberToF16Bits } from "../../src/graph/dtype.ts";
import { prng } from "../../src/lora/data.ts";
import { withTargetEnv } from "../../src/runtime/target.ts";

export type DType = sm.DType;
export const FLOATS: readonly DType[] = ["float32", "float16", "bfloat16"];
export const INTS: readonly DType[] = ["int32", "uint32", "int8", "uint8"];

// ---------------------------------------------------------------------------------------------
// the float64 reference
// ---------------------------------------------------------------------------------------------

/** A row-major n-d array of float64 values (booleans as 0/1). */
export interface Ref {
  shape: number[];
  data: number[];
}

export const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
export const ref = (shape: readonly number[], data: readonly number[]): Ref => {
  if (data.length !== sizeOf(shape)) throw new Error(`ref: ${data.length} values for shape [${shape}]`);
  return { shape: [...shape], data: [...data] };
};

/** Row-major multi-index of flat index i. */
export function unravel(i: number, shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    out[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return out;
}
export function ravel(idx: readonly number[], shape: readonly number[]): number {
  let at = 0;
  for (let d = 0; d < shape.length; d++) at = at * shape[d]! + idx[d]!;
  return at;
}

export function broadcastShape(...shapes: (readonly number[])[]): number[] {
  const nd = Math.max(0, ...shapes.map((s) => s.length));
  const out = new Array<number>(nd).fill(1);
  for (const s of shapes) {
    for (let j = 0; j < s.length; j++) {
      const k = nd - s.length + j;
      if (s[j] === 1) continue;
      if (out[k] !== 1 && out[k] !== s[j]) throw new Error(`reference: [${shapes.join("],[")}] do not broadcast`);
      out[k] = s[j]!;
    }
  }
  return out;
}
export function broadcastRef(a: Ref, shape: readonly number[]): Ref {
  const lead = shape.length - a.shape.length;
  const n = sizeOf(shape);
  const data = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const idx = unravel(i, shape).slice(lead).map((v, d) => (a.shape[d] === 1 ? 0 : v));
    data[i] = a.data[ravel(idx, a.shape)]!;
  }
  return { shape: [...shape], data };
}
export const map1 = (a: Ref, f: (x: number) => number): Ref => ({ shape: [...a.shape], data: a.data.map(f) });
export function mapN(refs: Ref[], f: (...xs: number[]) => number): Ref {
  const shape = broadcastShape(...refs.map((r) => r.shape));
  const bs = refs.map((r) => broadcastRef(r, shape));
  return { shape, data: bs[0]!.data.map((_, i) => f(...bs.map((b) => b.data[i]!))) };
}

/** Reduces `axes` (all when undefined) with f over the list of reduced values, in row-major order. */
export function reduceRef(a: Ref, axes: readonly number[] | undefined, keepdims: boolean, f: (xs: number[]) => number): Ref {
  const nd = a.shape.length;
  const ax = (axes ?? [...Array(nd).keys()]).map((x) => (x < 0 ? x + nd : x));
  const kept = [...Array(nd).keys()].filter((d) => !ax.includes(d));
  const outShape = kept.map((d) => a.shape[d]!);
  const groups: number[][] = Array.from({ length: sizeOf(outShape) }, () => []);
  for (let i = 0; i < a.data.length; i++) {
    const idx = unravel(i, a.shape);
    groups[ravel(kept.map((d) => idx[d]!), outShape)]!.push(a.data[i]!);
  }
  const shape = keepdims ? a.shape.map((d, k) => (ax.includes(k) ? 1 : d)) : outShape;
  return { shape, data: groups.map(f) };
}

export function permuteRef(a: Ref, perm: readonly number[]): Ref {
  const shape = perm.map((p) => a.shape[p]!);
  const data = new Array<number>(a.data.length);
  for (let i = 0; i < data.length; i++) {
    const idx = unravel(i, shape);
    const src = new Array<number>(perm.length);
    perm.forEach((p, k) => (src[p] = idx[k]!));
    data[i] = a.data[ravel(src, a.shape)]!;
  }
  return { shape, data };
}

/** Python's slice(start, stop, step).indices(n), as the list of indices it selects. */
export function sliceIndices(n: number, start: number | null, stop: number | null, step: number): number[] {
  const out: number[] = [];
  const norm = (v: number, lo: number, hi: number) => Math.min(Math.max(v < 0 ? v + n : v, lo), hi);
  const s = start === null ? (step > 0 ? 0 : n - 1) : norm(start, step > 0 ? 0 : -1, step > 0 ? n : n - 1);
  const e = stop === null ? (step > 0 ? n : -1) : norm(stop, step > 0 ? 0 : -1, step > 0 ? n : n - 1);
  for (let i = s; step > 0 ? i < e : i > e; i += step) out.push(i);
  return out;
}
/** Selects, per axis, the listed indices (an outer product of index lists). */
export function takeRef(a: Ref, lists: number[][]): Ref {
  const shape = lists.map((l) => l.length);
  const data = new Array<number>(sizeOf(shape));
  for (let i = 0; i < data.length; i++) {
    const idx = unravel(i, shape);
    data[i] = a.data[ravel(idx.map((v, d) => lists[d]![v]!), a.shape)]!;
  }
  return { shape, data };
}

export function matmulRef(a: Ref, b: Ref): Ref {
  const M = a.shape[a.shape.length - 2]!, K = a.shape[a.shape.length - 1]!, N = b.shape[b.shape.length - 1]!;
  const batch = broadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const A = broadcastRef(a, [...batch, M, K]), B = broadcastRef(b, [...batch, K, N]);
  const nb = sizeOf(batch);
  const data: number[] = [];
  for (let q = 0; q < nb; q++)
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += A.data[q * M * K + i * K + k]! * B.data[q * K * N + k * N + j]!;
        data.push(s);
      }
  return { shape: [...batch, M, N], data };
}

// ---------------------------------------------------------------------------------------------
// scalar math in float64 with C/NumPy semantics where JS differs
// ---------------------------------------------------------------------------------------------

export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x === Infinity) return 1;
  if (x === -Infinity) return -1;
  const a = Math.abs(x);
  if (a < 2.5) {
    // Maclaurin series: converges fast here and is accurate to double rounding.
    let term = x, sum = x;
    for (let n = 1; n < 80; n++) {
      term *= (-x * x) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  return Math.sign(x) * (1 - erfcLarge(a));
}
/** erfc(a) for a >= 2.5 by its continued fraction (Lentz). */
function erfcLarge(a: number): number {
  if (a > 27) return 0;
  // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + 1/2/(a + 1/(a + 3/2/(a + 2/(a + ...)))))
  let f = a, C = a, D = 0;
  for (let n = 1; n < 300; n++) {
    const an = n / 2;
    D = a + an * D;
    D = 1 / D;
    C = a + an / C;
    const delta = C * D;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
}
export function erfinv(y: number): number {
  if (Number.isNaN(y) || y < -1 || y > 1) return NaN;
  if (y === 1) return Infinity;
  if (y === -1) return -Infinity;
  if (y === 0) return y;
  // Newton on erf from a bracketing bisection start: exact to double precision.
  let lo = -6, hi = 6;
  for (let i = 0; i < 200; i++) {
    const mid = (lo + hi) / 2;
    if (erf(mid) < y) lo = mid;
    else hi = mid;
    if (hi - lo < 1e-15 * Math.max(1, Math.abs(mid))) break;
  }
  let x = (lo + hi) / 2;
  for (let i = 0; i < 3; i++) x -= (erf(x) - y) / ((2 / Math.sqrt(Math.PI)) * Math.exp(-x * x));
  return x;
}
/** C's pow: pow(1, y) and pow(x, 0) are 1 even for NaN; pow(-1, ±inf) is 1. */
export function cpow(a: number, b: number): number {
  if (b === 0 || a === 1) return 1;
  if (a === -1 && !Number.isFinite(b) && !Number.isNaN(b)) return 1;
  return Math.pow(a, b);
}
/** NumPy's npy_divmod for floats: (floor quotient, remainder with the divisor's sign). */
export function pyDivmod(a: number, b: number): [number, number] {
  let mod = a % b; // fmod
  if (b === 0) return [a / b, mod];
  let div = (a - mod) / b;
  if (mod !== 0) {
    if (b < 0 !== mod < 0) {
      mod += b;
      div -= 1;
    }
  } else mod = b < 0 ? -0 : 0;
  let fd: number;
  if (div !== 0) {
    fd = Math.floor(div);
    if (div - fd > 0.5) fd += 1;
  } else fd = a / b < 0 || Object.is(a / b, -0) ? -0 : 0;
  return [fd, mod];
}
export const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
export const softplus = (x: number) => Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));
export const gelu = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
export const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
/** Round half to even, as rint. */
export function rint(x: number): number {
  if (!Number.isFinite(x)) return x;
  const f = Math.floor(x), d = x - f;
  if (d !== 0.5) return Math.round(x) === 0 && x < 0 ? -0 : Math.round(x);
  return f % 2 === 0 ? f : f + 1;
}

// ---------------------------------------------------------------------------------------------
// dtypes: rounding, ulps, comparison
// ---------------------------------------------------------------------------------------------

/** x as stored in dtype: floats rounded to nearest even, integers wrapped as a C cast in range. */
export function roundTo(dtype: DType, x: number): number {
  switch (dtype) {
    case "float32": return Math.fround(x);
    case "float16": return f16BitsToNumber(numberToF16Bits(x));
    case "bfloat16": return bf16BitsToNumber(numberToBf16Bits(x));
    case "int32": return x | 0;
    case "uint32": return x >>> 0;
    case "int8": return (x << 24) >> 24;
    case "uint8": return x & 255;
    case "bool": return x !== 0 ? 1 : 0;
  }
}
const MANT: Partial<Record<DType, [number, number]>> = { float32: [23, -126], float16: [10, -14], bfloat16: [7, -126] };
/** The spacing of dtype's floats at |x| (its unit in the last place). */
export function ulp(dtype: DType, x: number): number {
  const m = MANT[dtype];
  if (!m) return 1;
  const a = Math.abs(x);
  const e = a === 0 ? m[1] : Math.max(Math.floor(Math.log2(a)), m[1]);
  return 2 ** (e - m[0]);
}

export interface Tol {
  /** allowed error in units in the last place of the dtype, at the expected value */
  ulps?: number;
  /** absolute slack, for results that cancel (atol) */
  atol?: number;
  /** relative slack */
  rtol?: number;
  /** per-element absolute slack from the inputs, e.g. condition numbers */
  atolAt?: (i: number) => number;
}
export const defaultUlps = (dtype: DType) => (dtype === "float32" ? 4 : 1);

function num(v: number | boolean): number {
  return typeof v === "boolean" ? Number(v) : v;
}
/** Asserts got matches want rounded to dtype, within the tolerance; NaN matches NaN, inf must be exact. */
export function expectClose(got: ArrayLike<number | boolean>, want: readonly number[], dtype: DType, tol: Tol = {}, label = ""): void {
  expect(got.length).toBe(want.length);
  const ulps = tol.ulps ?? defaultUlps(dtype);
  const bad: string[] = [];
  for (let i = 0; i < want.length; i++) {
    const g = num(got[i]!);
    const w = roundTo(dtype, want[i]!);
    let ok: boolean;
    if (Number.isNaN(want[i]!)) ok = Number.isNaN(g);
    else if (!Number.isFinite(w)) ok = g === w || Math.abs(g - want[i]!) <= (tol.atol ?? 0);
    else if (dtype === "bool" || !(dtype in MANT)) ok = g === w;
    else {
      const slack = ulps * ulp(dtype, w) + (tol.atol ?? 0) + (tol.rtol ?? 0) * Math.abs(w) + (tol.atolAt?.(i) ?? 0);
      ok = Math.abs(g - w) <= slack;
    }
    if (!ok && bad.length < 8) bad.push(`[${i}] got ${g}, want ${w} (exact ${want[i]})`);
    if (!ok && bad.length === 8) bad.push("...");
  }
  if (bad.length) throw new Error(`${label} (${dtype}): ${bad.join("; ")}`);
}

/** Bitwise-identical values (NaN equal to NaN, -0 distinct from 0 is not required). */
export function expectSameValues(a: ArrayLike<number | boolean>, b: ArrayLike<number | boolean>, label = ""): void {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) {
    const x = num(a[i]!), y = num(b[i]!);
    if (!(x === y || (Number.isNaN(x) && Number.isNaN(y)))) throw new Error(`${label}: lazy and eager differ at ${i}: ${x} vs ${y}`);
  }
}

// ---------------------------------------------------------------------------------------------
// running both modes
// ---------------------------------------------------------------------------------------------

export interface Result {
  shape: number[];
  dtype: DType;
  values: (number | boolean)[];
}
function read(t: sm.Tensor): Result {
  return { shape: t.shape, dtype: t.dtype, values: t.toArray() };
}
/**
 * Runs fn lazily and inside sm.eager, asserts both give the same shape and dtype, and values bit
 * for bit (elementwise fusion rounds where eager does), or within `modes` where the kernels differ
 * in summation order (a fused row reduction against a plain one). Returns the lazy result.
 */
export function both(fn: () => sm.Tensor, label = "", modes?: Tol): Result {
  const lazy = read(fn());
  const eager = sm.eager(() => read(fn()));
  expect(eager.shape).toEqual(lazy.shape);
  expect(eager.dtype).toBe(lazy.dtype);
  if (modes && lazy.dtype in MANT) expectClose(lazy.values, eager.values.map(num), lazy.dtype, modes, `${label}: lazy vs eager`);
  else expectSameValues(lazy.values, eager.values, label);
  return lazy;
}
/** both(), then compares with the reference (shape, dtype and values). */
export function check(fn: () => sm.Tensor, want: Ref, dtype: DType, tol: Tol & { modes?: Tol } = {}, label = ""): Result {
  const r = both(fn, label, tol.modes);
  expect(r.dtype).toBe(dtype);
  expect(r.shape).toEqual(want.shape);
  expectClose(r.values, want.data, dtype, tol, label);
  return r;
}

// ---------------------------------------------------------------------------------------------
// inputs
// ---------------------------------------------------------------------------------------------

/** Seeded uniform numbers in [0, 1), so failures reproduce: the generator the LoRA data loader shuffles with. */
export const rng = prng;
export function uniform(n: number, lo: number, hi: number, seed = 1): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => lo + (hi - lo) * r());
}
export function randn(n: number, seed = 1): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()));
}
export function randint(n: number, lo: number, hi: number, seed = 1): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => lo + Math.floor((hi - lo) * r()));
}
/** Values rounded to what dtype can hold, so the reference sees exactly the tensor's inputs. */
export const inDType = (dtype: DType, xs: readonly number[]) => xs.map((x) => roundTo(dtype, x));

/**
 * How an input is laid out:
 * - contiguous: a fresh array
 * - transposed: the transpose of a computed array (a strided view of storage)
 * - strided: every other element of a larger array, the last axis reversed
 * - lazyTransposed: the transpose of an uncomputed node (index math in the consumer's kernel)
 */
export type Layout = "contiguous" | "transposed" | "strided" | "lazyTransposed";
export const LAYOUTS: readonly Layout[] = ["contiguous", "transposed", "strided", "lazyTransposed"];

/** A tensor of the given logical shape and row-major values, stored as `layout`. */
export function input(shape: readonly number[], values: readonly (number | boolean)[], dtype: DType, layout: Layout = "contiguous"): sm.Tensor {
  const nd = shape.length;
  if (layout === "contiguous" || (nd < 2 && layout !== "strided")) return sm.array(values as number[], dtype).reshape(shape);
  if (layout === "transposed" || layout === "lazyTransposed") {
    const rev = [...shape].reverse();
    const perm = [...Array(nd).keys()].reverse();
    const phys: (number | boolean)[] = new Array(values.length);
    for (let i = 0; i < values.length; i++) phys[i] = values[ravel(unravel(i, rev).reverse(), shape)]!;
    let base = sm.array(phys as number[], dtype).reshape(rev);
    if (layout === "lazyTransposed") base = sm.where(true, base, base);
    const t = sm.transpose(base, perm);
    expect(t.shape).toEqual([...shape]);
    return t;
  }
  // strided: physical dims 2d+1; logical i sits at 2i+1 (last axis: 2d-1-2i, read with step -2).
  const phys = shape.map((d) => 2 * d + 1);
  const fill = values.length ? values[0]! : 0;
  const data: (number | boolean)[] = new Array(sizeOf(phys)).fill(typeof fill === "boolean" ? false : 0);
  for (let i = 0; i < values.length; i++) {
    const idx = unravel(i, shape).map((v, d) => (d === nd - 1 ? 2 * shape[d]! - 1 - 2 * v : 2 * v + 1));
    data[ravel(idx, phys)] = values[i]!;
  }
  const items = shape.map((d, k) => (k === nd - 1 ? { start: 2 * d - 1, stop: null, step: -2 } : { start: 1, stop: null, step: 2 }));
  const t = sm.array(data as number[], dtype).reshape(phys).slice(...items);
  expect(t.shape).toEqual([...shape]);
  return t;
}

/** Asserts fn throws a SmeltError whose message matches every pattern. */
export function expectSmeltError(fn: () => unknown, ...patterns: (string | RegExp)[]): sm.SmeltError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  if (caught === undefined) throw new Error(`expected a SmeltError matching ${patterns.join(", ")}, but the call succeeded`);
  expect(caught).toBeInstanceOf(sm.SmeltError);
  const msg = (caught as Error).message;
  for (const p of patterns) {
    if (typeof p === "string") expect(msg).toContain(p);
    else expect(msg).toMatch(p);
  }
  return caught as sm.SmeltError;
}

/** Kernels dispatched to evaluate what build() makes (compiled once beforehand). */
// Kernels, not dispatches: a GPU target runs kernels of one source as one multi-tensor dispatch.
export function kernels(build: () => sm.Tensor[]): number {
  return withTargetEnv(sm.device(), { SMELT_MULTI_TENSOR: "0" }, () => {
    sm.eval(build());
    const outs = build();
    sm.resetStats();
    sm.eval(outs);
    return sm.stats().kernelsDispatched;
  });
}

/** x [rows, K] @ w [N, K]^T in float64, and sum |x||w| of each output (float32's error scale). */
export function matmulNT64(x: number[], w: number[], rows: number, N: number, K: number) {
  const want: number[] = [], scale: number[] = [];
  for (let m = 0; m < rows; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0, a = 0;
      for (let k = 0; k < K; k++) {
        s += x[m * K + k]! * w[n * K + k]!;
        a += Math.abs(x[m * K + k]! * w[n * K + k]!);
      }
      want.push(s);
      scale.push(a);
    }
  }
  return { want, scale };
}
