/**
 * The exact JS reference of metal/random.metal: Threefry-2x32-20, the bit stream, key splitting and
 * the transforms to floats, integers and booleans. Integer results and float32 uniforms equal the
 * kernels' bit for bit; float16/bfloat16 uniforms too (the rounding to 16 bits is exact here). Normals
 * use the backend's float log and sqrt, so they agree to a few float32 ulps, not bit for bit.
 * docs/random.md specifies the stream; each function names the kernel it mirrors.
 */

/** A key: two uint32 words (k0, k1). */
export type RandomKey = ArrayLike<number>;

export type RandomFloatDtype = "float32" | "float16" | "bfloat16";

/** MLX's and JAX's key(seed): the seed as a uint64 (negative seeds wrap), high word first. */
export function key(seed: number | bigint): Uint32Array {
  if (typeof seed === "number" && !Number.isSafeInteger(seed)) {
    throw new RangeError(`random.key: seed must be a safe integer or a bigint, got ${seed}`);
  }
  const s = BigInt.asUintN(64, BigInt(seed));
  return new Uint32Array([Number(s >> 32n), Number(s & 0xffffffffn)]);
}

const rotl = (x: number, r: number): number => ((x << r) | (x >>> (32 - r))) >>> 0;

/** Threefry-2x32 with 20 rounds of the counter pair (c0, c1) under the key (k0, k1). */
export function threefry2x32(k0: number, k1: number, c0: number, c1: number): [number, number] {
  const ks = [k0 >>> 0, k1 >>> 0, (k0 ^ k1 ^ 0x1bd11bda) >>> 0] as const;
  let x0 = (c0 + ks[0]) >>> 0;
  let x1 = (c1 + ks[1]) >>> 0;
  for (let s = 1; s <= 5; s++) {
    const rs = s % 2 === 1 ? ROTATIONS_A : ROTATIONS_B;
    for (const r of rs) {
      x0 = (x0 + x1) >>> 0;
      x1 = (rotl(x1, r) ^ x0) >>> 0;
    }
    x0 = (x0 + ks[s % 3]!) >>> 0;
    x1 = (x1 + ks[(s + 1) % 3]! + s) >>> 0;
  }
  return [x0, x1];
}

const ROTATIONS_A = [13, 15, 26, 6] as const;
const ROTATIONS_B = [17, 29, 16, 24] as const;

function checkKey(op: string, k: RandomKey): void {
  if (k.length !== 2) throw new RangeError(`random.${op}: a key has 2 uint32 words, got ${k.length}`);
}

/**
 * Visits the bit stream of n words under key: block j < ceil(n / 2) encrypts (j, j + half) and gives
 * words j and j + half (the second dropped when it would be word n). Same as kernel random_bits.
 */
function forEachWord(k: RandomKey, n: number, visit: (i: number, bits: number) => void): void {
  const half = Math.ceil(n / 2);
  const k0 = k[0]!;
  const k1 = k[1]!;
  for (let j = 0; j < half; j++) {
    const [a, b] = threefry2x32(k0, k1, j, j + half);
    visit(j, a);
    if (j + half < n) visit(j + half, b);
  }
}

/** n words of random bits (kernel random_bits). */
export function randomBits(k: RandomKey, n: number): Uint32Array {
  checkKey("bits", k);
  const out = new Uint32Array(n);
  forEachWord(k, n, (i, bits) => (out[i] = bits));
  return out;
}

/** num new keys, key i at words 2i and 2i + 1: randomBits(key, 2 * num) (kernel random_split). */
export function split(k: RandomKey, num = 2): Uint32Array {
  checkKey("split", k);
  return randomBits(k, 2 * num);
}

// ---------------------------------------------------------------------------------------------------
// float32 arithmetic, emulated exactly

const f32 = Math.fround;
const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);
const F16 = new Float16Array(1);
const U16 = new Uint16Array(F16.buffer);

function bitsToF32(b: number): number {
  U32[0] = b >>> 0;
  return F32[0]!;
}

function f32ToBits(x: number): number {
  F32[0] = x;
  return U32[0]!;
}

/**
 * fma on float32 values, rounded once. a * b is exact in a double; the double sum can land exactly
 * on a float32 midpoint only by rounding, and then the sum's rounding error says which way to go.
 */
export function fmaf(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = f32(s);
  if (r === s || !Number.isFinite(s)) return r;
  const bv = s - p;
  const err = p - (s - bv) + (c - bv);
  if (err === 0) return r;
  const d = s - r;
  const other = r + 2 * d;
  if (f32(other) !== other) return r; // s is not a midpoint: rounding s is rounding the exact sum
  return Math.sign(err) === Math.sign(d) ? other : r;
}

/** The top 23 bits as a float in [0, 1) on a grid of 2^-23. */
export function unitFloat(bits: number): number {
  return bitsToF32(((bits >>> 9) | 0x3f800000) >>> 0) - 1;
}

/** The largest float32 below x (x a finite float32 or +inf). */
export function floatBelow(x: number): number {
  const b = f32ToBits(x);
  if (x > 0) return bitsToF32(b - 1);
  if (x < 0) return bitsToF32(b + 1);
  return bitsToF32(0x80000001);
}

/** A float32 uniform in [low, high) from one word: min(fma(high - low, u, low), below(high)). */
export function uniformFloat(bits: number, low: number, high: number): number {
  const lo = f32(low);
  const hi = f32(high);
  const v = fmaf(f32(hi - lo), unitFloat(bits), lo);
  return Math.min(v, floatBelow(hi));
}

function halfBits(x: number): number {
  F16[0] = x;
  return U16[0]!;
}

function halfValue(bits: number): number {
  U16[0] = bits;
  return F16[0]!;
}

/** bfloat16 bits of a float32 value, rounded to nearest even. */
export function bfloatBits(x: number): number {
  const b = f32ToBits(x);
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bfloatValue(bits: number): number {
  return bitsToF32((bits & 0xffff) << 16);
}

/** Bits of the 16-bit value one step toward -inf from v's bits b (v finite or inf). */
function stepDown16(b: number, v: number): number {
  if (v > 0) return b - 1;
  if (v < 0) return b + 1;
  return 0x8001;
}

/**
 * The bits of a float32 uniform v rounded to a 16-bit type (its bits and value functions) and
 * kept below high after rounding (store_below in the kernel).
 */
function belowBits(toBits: (x: number) => number, value: (b: number) => number, v: number, high: number): number {
  const h = toBits(v);
  if (value(h) < high) return h;
  const hh = toBits(high);
  const hv = value(hh);
  return hv < high ? hh : stepDown16(hh, hv);
}

/**
 * n uniforms in [low, high) (kernels random_uniform_float/half/bfloat): float32 values, or the bits
 * of float16/bfloat16 values as the kernels store them.
 */
export function uniform(k: RandomKey, n: number, low: number, high: number, dtype: "float32"): Float32Array;
export function uniform(k: RandomKey, n: number, low: number, high: number, dtype: "float16" | "bfloat16"): Uint16Array;
export function uniform(k: RandomKey, n: number, low: number, high: number, dtype: RandomFloatDtype): Float32Array | Uint16Array;
export function uniform(k: RandomKey, n: number, low: number, high: number, dtype: RandomFloatDtype): Float32Array | Uint16Array {
  checkKey("uniform", k);
  const hi = f32(high);
  if (dtype === "float32") {
    const out = new Float32Array(n);
    forEachWord(k, n, (i, bits) => (out[i] = uniformFloat(bits, low, hi)));
    return out;
  }
  const out = new Uint16Array(n);
  const [toBits, value] = dtype === "float16" ? [halfBits, halfValue] : [bfloatBits, bfloatValue];
  forEachWord(k, n, (i, bits) => (out[i] = belowBits(toBits, value, uniformFloat(bits, low, hi), hi)));
  return out;
}

// The polynomials of smelt_erfinv in metal/prelude.metal, highest degree first.
const ERFINV_SMALL = [
  -8.941444918e-9, 2.32647821e-8, 4.68267416e-7, -3.463092753e-6, -4.973071555e-6, 2.183458855e-4, -1.252725255e-3,
  -4.177388269e-3, 2.466402799e-1, 1.501409411,
].map(f32);
const ERFINV_LARGE = [
  1.101428134e-4, -3.048501385e-4, -4.810651444e-5, 1.479093102e-3, -3.6023024e-3, 5.689296871e-3, -7.636175957e-3,
  9.445015341e-3, 1.001674891, 2.832976818,
].map(f32);

function horner(coefs: readonly number[], t: number): number {
  let p = coefs[0]!;
  for (let i = 1; i < coefs.length; i++) p = fmaf(p, t, coefs[i]!);
  return p;
}

/** The kernels' float32 erfinv (smelt_erfinv) for x in (-1, 1); log and sqrt rounded to float32 from doubles. */
export function erfinvFloat(x: number): number {
  const w = -f32(Math.log(fmaf(-x, x, 1)));
  const p = w < 5 ? horner(ERFINV_SMALL, f32(w - 2.5)) : horner(ERFINV_LARGE, f32(f32(Math.sqrt(w)) - 3));
  return f32(p * x);
}

const SQRT2 = f32(Math.SQRT2);
const NORMAL_LOW = f32(-0.99999994); // -1 + 2^-24

/** A standard normal from one word: sqrt(2) * erfinv(uniform in [-1 + 2^-24, 1)). */
export function standardNormal(bits: number): number {
  return f32(SQRT2 * erfinvFloat(uniformFloat(bits, NORMAL_LOW, 1)));
}

/** n normals T(fma(scale, z, loc)) (kernels random_normal_float/half/bfloat); 16-bit types as bits. */
export function normal(k: RandomKey, n: number, loc: number, scale: number, dtype: "float32"): Float32Array;
export function normal(k: RandomKey, n: number, loc: number, scale: number, dtype: "float16" | "bfloat16"): Uint16Array;
export function normal(k: RandomKey, n: number, loc: number, scale: number, dtype: RandomFloatDtype): Float32Array | Uint16Array;
export function normal(k: RandomKey, n: number, loc: number, scale: number, dtype: RandomFloatDtype): Float32Array | Uint16Array {
  checkKey("normal", k);
  const m = f32(loc);
  const s = f32(scale);
  const value = (bits: number) => fmaf(s, standardNormal(bits), m);
  if (dtype === "float32") {
    const out = new Float32Array(n);
    forEachWord(k, n, (i, bits) => (out[i] = value(bits)));
    return out;
  }
  const out = new Uint16Array(n);
  const round = dtype === "float16" ? halfBits : bfloatBits;
  forEachWord(k, n, (i, bits) => (out[i] = round(value(bits))));
  return out;
}

/** The high 32 bits of the 64-bit product of two uint32 (MSL mulhi), exact in doubles. */
export function mulhi32(a: number, b: number): number {
  const x = a >>> 0;
  const bh = (b >>> 16) & 0xffff;
  const bl = b & 0xffff;
  const hiPart = x * bh; // < 2^48, exact
  const loPart = x * bl; // < 2^48, exact
  return (Math.floor(hiPart / 65536) + Math.floor(((hiPart % 65536) * 65536 + loPart) / 4294967296)) >>> 0;
}

/** n int32 in [low, high): low + mulhi(word, high - low) in uint32 arithmetic (kernel random_randint). */
export function randint(k: RandomKey, n: number, low: number, high: number): Int32Array {
  checkKey("randint", k);
  const range = ((high | 0) - (low | 0)) >>> 0;
  const out = new Int32Array(n);
  forEachWord(k, n, (i, bits) => (out[i] = (low | 0) + mulhi32(bits, range)));
  return out;
}

/** n booleans as bytes, 1 where the float uniform in [0, 1) is below p (kernel random_bernoulli). */
export function bernoulli(k: RandomKey, n: number, p: number): Uint8Array {
  checkKey("bernoulli", k);
  const pf = f32(p);
  const out = new Uint8Array(n);
  forEachWord(k, n, (i, bits) => (out[i] = unitFloat(bits) < pf ? 1 : 0));
  return out;
}
