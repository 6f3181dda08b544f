/**
 * Element types: their sizes, MSL spellings, promotion rules, and the conversion of JS numbers
 * to and from the raw storage a buffer holds. Pure TypeScript; nothing here touches a device.
 */
import { SmeltError } from "../errors.ts";

export type DType = "float32" | "float16" | "bfloat16" | "int32" | "uint32" | "int8" | "uint8" | "bool";

export const DTYPES: readonly DType[] = Object.freeze([
  "float32",
  "float16",
  "bfloat16",
  "int32",
  "uint32",
  "int8",
  "uint8",
  "bool",
] as const);

export type TypedArray = Float32Array | Uint16Array | Int32Array | Uint32Array | Int8Array | Uint8Array;
export type TypedArrayConstructor =
  | Float32ArrayConstructor
  | Uint16ArrayConstructor
  | Int32ArrayConstructor
  | Uint32ArrayConstructor
  | Int8ArrayConstructor
  | Uint8ArrayConstructor;

interface Info {
  size: number;
  msl: string;
  kind: "float" | "signed" | "unsigned" | "bool";
  storage: TypedArrayConstructor;
}

const INFO: Record<DType, Info> = {
  float32: { size: 4, msl: "float", kind: "float", storage: Float32Array },
  // Half-precision types are kept as their bit patterns: JS has no 16-bit float arithmetic to
  // lean on, and the bits are what the GPU reads.
  float16: { size: 2, msl: "half", kind: "float", storage: Uint16Array },
  bfloat16: { size: 2, msl: "bfloat", kind: "float", storage: Uint16Array },
  int32: { size: 4, msl: "int", kind: "signed", storage: Int32Array },
  uint32: { size: 4, msl: "uint", kind: "unsigned", storage: Uint32Array },
  int8: { size: 1, msl: "char", kind: "signed", storage: Int8Array },
  uint8: { size: 1, msl: "uchar", kind: "unsigned", storage: Uint8Array },
  // MSL's bool is one byte; storing 0/1 lets kernels read it without conversion.
  bool: { size: 1, msl: "bool", kind: "bool", storage: Uint8Array },
};

export function itemsize(d: DType): number {
  return INFO[d].size;
}

export function mslType(d: DType): string {
  return INFO[d].msl;
}

export function isFloating(d: DType): boolean {
  return INFO[d].kind === "float";
}

export function isInteger(d: DType): boolean {
  const k = INFO[d].kind;
  return k === "signed" || k === "unsigned";
}

/** Whether the type can hold negative values: signed integers and floats (unlike NumPy's issubdtype(d, signedinteger)). */
export function isSigned(d: DType): boolean {
  const k = INFO[d].kind;
  return k === "signed" || k === "float";
}

/**
 * Binary-op result type, NumPy/MLX rules restricted to the dtypes smelt has. Where NumPy's answer
 * does not exist here:
 * - uint8 + int8 → int32: NumPy gives int16, which smelt lacks; int32 is the next type that holds
 *   both ranges exactly.
 * - uint32 + int8/int32 → float32: NumPy and MLX give int64, which smelt lacks. No 32-bit integer
 *   holds both ranges (int32 loses 2^31..2^32-1, uint32 loses negatives), so wrapping would be
 *   silent corruption; float32 keeps sign and magnitude and loses only precision above 2^24, the
 *   same "lossy but defined" trade NumPy makes for uint64 + int64 → float64.
 * - int + float16/bfloat16 keeps the float type (MLX's rule; NumPy would widen to float64).
 * - float16 + bfloat16 → float32: neither holds the other's range and precision.
 */
export function promoteTypes(a: DType, b: DType): DType {
  if (a === b) return a;
  if (a === "bool") return b;
  if (b === "bool") return a;
  const ka = INFO[a].kind;
  const kb = INFO[b].kind;
  // Two different floats: either one is float32 (the wider), or they are float16 and bfloat16,
  // where neither holds the other's range and precision.
  if (ka === "float" && kb === "float") return "float32";
  if (ka === "float") return a;
  if (kb === "float") return b;
  if (ka === kb) return INFO[a].size >= INFO[b].size ? a : b;
  const [u, s] = ka === "unsigned" ? [a, b] : [b, a];
  if (u === "uint32") return "float32";
  // uint8 with int8 or int32: int32 holds every uint8 value.
  return s === "int8" ? "int32" : s;
}

/**
 * Result type of `tensor op scalar` where the scalar is a plain JS value. Scalars are "weak" as in
 * MLX and NumPy 2: they adopt the tensor's dtype unless their kind cannot be represented in it.
 */
export function scalarResultType(d: DType, scalar: number | boolean): DType {
  if (typeof scalar === "boolean") return d;
  if (Number.isInteger(scalar)) return d === "bool" ? "int32" : d;
  return isFloating(d) ? d : "float32";
}

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/**
 * Default dtype of a plain JS value. Integers outside the int32 range become float32 rather than
 * wrapping, because smelt has no int64 to hold them (MLX would pick int64).
 */
export function defaultDTypeOf(value: number | boolean): DType {
  if (typeof value === "boolean") return "bool";
  return Number.isInteger(value) && value >= INT32_MIN && value <= INT32_MAX ? "int32" : "float32";
}

/** Dtype for `array(values)`: bool if all are booleans, float32 if any number needs it, else int32. Empty → float32, as in MLX. */
export function inferDType(values: ArrayLike<number | boolean>): DType {
  if (values.length === 0) return "float32";
  let allBool = true;
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as number | boolean;
    if (typeof v === "boolean") continue;
    allBool = false;
    if (defaultDTypeOf(v) === "float32") return "float32";
  }
  return allBool ? "bool" : "int32";
}

const RANGE: Partial<Record<DType, readonly [number, number]>> = {
  int32: [INT32_MIN, INT32_MAX],
  uint32: [0, 2 ** 32 - 1],
  int8: [-128, 127],
  uint8: [0, 255],
};

/** The smallest and largest value of an integer dtype (undefined for floats and bool). */
export function integerRange(d: DType): readonly [number, number] | undefined {
  return RANGE[d];
}

/**
 * A JS number given as a constant of dtype d (full, array with an explicit dtype, a scalar operand
 * of an integer tensor), in the form stored: integer dtypes truncate toward zero as NumPy's astype
 * does, and a value that does not fit after that is an error naming the op (NumPy 2 raises
 * OverflowError for `np.array([1], np.int8) + 300`), never a silently wrapped number.
 */
export function checkConstant(op: string, value: number | boolean, d: DType): number {
  const v = Number(value);
  const range = RANGE[d];
  if (!range || typeof value === "boolean") return v;
  const t = Math.trunc(v);
  if (!Number.isFinite(v) || t < range[0] || t > range[1])
    throw new SmeltError(`${op}: the value ${v} is out of range for ${d} (${range[0]} to ${range[1]})`);
  return t === 0 ? 0 : t;
}

/**
 * The dtype a typed array's elements have as values: its own type where smelt has it; Float64Array
 * becomes float32 (as MLX takes float64 input); Int16Array and Uint16Array become int32, the
 * smallest smelt type holding all their values (16-bit float bits go through fromBytes instead).
 */
export function typedArrayDType(op: string, a: ArrayBufferView): DType {
  if (a instanceof Float32Array || a instanceof Float64Array) return "float32";
  if (typeof Float16Array !== "undefined" && a instanceof Float16Array) return "float16";
  if (a instanceof Int32Array || a instanceof Int16Array || a instanceof Uint16Array) return "int32";
  if (a instanceof Uint32Array) return "uint32";
  if (a instanceof Int8Array) return "int8";
  if (a instanceof Uint8Array || a instanceof Uint8ClampedArray) return "uint8";
  throw new SmeltError(`${op}: ${a.constructor.name} is not supported (smelt has no 64-bit types); convert it to a Float32Array or Int32Array`);
}

export function storageFor(d: DType): TypedArrayConstructor {
  return INFO[d].storage;
}

/**
 * Rounds |x| (finite, non-negative) to a binary float with `expBits` exponent bits and `mantBits`
 * fraction bits, round to nearest even, straight from the double (one rounding, never through
 * float32, which could round twice). Returns the unsigned bit pattern; overflow gives Inf's bits.
 */
function roundToSmallFloat(a: number, expBits: number, mantBits: number): number {
  const bias = 2 ** (expBits - 1) - 1;
  const implicit = 2 ** mantBits;
  const minExp = 1 - bias;
  if (a < 2 ** minExp) {
    // Subnormal: a multiple of 2^(minExp - mantBits). Scaling by a power of two is exact, and a
    // result of `implicit` is exactly the smallest normal's bit pattern.
    return roundHalfEven(a * 2 ** (mantBits - minExp));
  }
  let e = Math.floor(Math.log2(a));
  // log2 can be off by one next to powers of two; pin e so that 2^e <= a < 2^(e+1).
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  const infBits = (2 ** expBits - 1) * implicit;
  if (e > bias) return infBits;
  const m = roundHalfEven(a * 2 ** (mantBits - e)); // in [implicit, 2 * implicit]
  // A mantissa that rounds up to 2*implicit carries into the exponent, which at e = bias lands
  // exactly on Inf's bit pattern, the IEEE overflow result of round to nearest even.
  return (e + bias) * implicit + (m - implicit);
}

/** Round to the nearest integer, ties to even. `v - floor(v)` is exact for the values used here. */
function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function signBit(x: number): boolean {
  return x < 0 || Object.is(x, -0);
}

/** IEEE binary16 bits of x, round to nearest even; NaN → 0x7e00 (quiet NaN). */
export function numberToF16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = signBit(x) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | 0x7c00;
  return sign | roundToSmallFloat(a, 5, 10);
}

export function f16BitsToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1024 + frac) * 2 ** (exp - 25);
}

/** bfloat16 bits of x, round to nearest even from the double; NaN → 0x7fc0 (quiet NaN). */
export function numberToBf16Bits(x: number): number {
  if (Number.isNaN(x)) return 0x7fc0;
  const sign = signBit(x) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | 0x7f80;
  return sign | roundToSmallFloat(a, 8, 7);
}

// bfloat16 is the top half of a float32, so decoding is a bit copy.
const scratchU32 = new Uint32Array(1);
const scratchF32 = new Float32Array(scratchU32.buffer);

export function bf16BitsToNumber(bits: number): number {
  scratchU32[0] = (bits & 0xffff) << 16;
  return scratchF32[0] as number;
}

/**
 * JS values → raw storage. Floats round to nearest even (float32 by the typed array, the 16-bit
 * types by the functions above). Integer types use ECMAScript's ToInt32/ToUint32/ToInt8/ToUint8:
 * truncate toward zero, then wrap modulo 2^bits; NaN and ±Inf become 0. In range this equals a C
 * cast; out of range a C cast is undefined (Metal saturates), so results there are only defined
 * here, on the host. bool stores 0/1: nonzero and NaN are true.
 */
export function encode(d: DType, values: ArrayLike<number | boolean>, out?: TypedArray): TypedArray {
  const Storage = INFO[d].storage;
  const n = values.length;
  let target: TypedArray;
  if (out === undefined) {
    target = new Storage(n);
  } else {
    if (!(out instanceof Storage) || out.length < n) {
      throw new SmeltError(
        `encode: output for ${d} must be a ${Storage.name} of length >= ${n}, got ${out.constructor.name} of length ${out.length}`,
      );
    }
    target = out;
  }
  if (d === "float16" || d === "bfloat16") {
    const toBits = d === "float16" ? numberToF16Bits : numberToBf16Bits;
    for (let i = 0; i < n; i++) target[i] = toBits(Number(values[i]));
  } else if (d === "bool") {
    for (let i = 0; i < n; i++) {
      const v = values[i];
      target[i] = typeof v === "boolean" ? Number(v) : v !== 0 ? 1 : 0;
    }
  } else {
    // Typed-array stores perform exactly the conversions documented above.
    for (let i = 0; i < n; i++) target[i] = Number(values[i]);
  }
  return target;
}

/** Raw storage → JS values: numbers, or booleans for bool. */
export function decode(d: DType, storage: TypedArray): number[] | boolean[] {
  if (d === "bool") return Array.from(storage, (v) => v !== 0);
  if (d === "float16") return Array.from(storage, f16BitsToNumber);
  if (d === "bfloat16") return Array.from(storage, bf16BitsToNumber);
  return Array.from(storage);
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "symbol") return value.toString();
  if (value === null || typeof value !== "object") return String(value);
  return Object.prototype.toString.call(value);
}

/** Validates a user-supplied dtype; the error names the op and lists what is accepted. */
export function parseDType(op: string, value: unknown): DType {
  if (typeof value === "string" && (DTYPES as readonly string[]).includes(value)) return value as DType;
  const hint =
    typeof value === "string" && /^(float64|int64|uint64|int16|uint16|complex64)$/.test(value)
      ? ` (smelt has no ${value})`
      : "";
  throw new SmeltError(`${op}: invalid dtype ${describe(value)}${hint}; expected one of ${DTYPES.join(", ")}`);
}
