/**
 * sm.random: MLX's mlx.core.random over the Threefry kernels of metal/random.metal (docs/random.md
 * defines the streams). A key is a uint32 tensor of shape [2]; the same key gives the same numbers
 * on every backend. A random tensor is a graph node like any other, computed by a kernel of its
 * own (a stream kernel of metal/random.metal) in the evaluation that needs it: a dropout mask in a
 * training step costs no device sync of its own, and a lazy key is computed in the same one.
 *
 * Without a key, an op takes one from the global key, which is split on every use as MLX does:
 * global, sub = split(global); the op uses sub. seed(s) resets the global key to key(s); until then
 * it is seeded from the clock.
 */
import { SmeltError } from "../errors.ts";
import { type DType, isFloating, parseDType } from "../graph/dtype.ts";
import { Node } from "../graph/node.ts";
import { add, argmax, array, astype, less, log, moveaxis, negative, reshape } from "./ops.ts";
import * as reference from "./random-reference.ts";
import { broadcastShapes, checkShape, normalizeAxis, shapeSize } from "../graph/shape.ts";
import { composite, Tensor } from "./tensor.ts";

const fmt = (s: readonly number[]) => `[${s.join(", ")}]`;

// ---------------------------------------------------------------------------------------------
// keys
// ---------------------------------------------------------------------------------------------

function checkSeed(op: string, seed: unknown): number | bigint {
  if (typeof seed === "bigint" || (typeof seed === "number" && Number.isSafeInteger(seed))) return seed;
  throw new SmeltError(`random.${op}: the seed must be a safe integer or a bigint, got ${String(seed)}`);
}

let globalKey = reference.key(Date.now());

/** Resets the key that ops given no key draw from. */
export function seed(s: number | bigint): void {
  globalKey = reference.key(checkSeed("seed", s));
}

/** A key from a seed taken as a uint64 (negative seeds wrap): [seed >> 32, seed & 0xffffffff]. */
export function key(seed: number | bigint): Tensor {
  return array(reference.key(checkSeed("key", seed)), "uint32");
}

/** The key an op runs with: the next global subkey's words, or the given key's node (lazy or computed). */
type Key = Uint32Array | Node;

function keyOf(op: string, k: unknown): Key {
  if (k === undefined) {
    // The global key lives on the host; the reference's split is the kernel's, bit for bit.
    const pair = reference.split(globalKey, 2);
    globalKey = pair.slice(0, 2);
    return pair.slice(2, 4);
  }
  if (!(k instanceof Tensor) || k.dtype !== "uint32" || k.ndim !== 1 || k.shape[0] !== 2) {
    const got = k instanceof Tensor ? `dtype ${k.dtype} and shape ${fmt(k.shape)}` : String(k);
    throw new SmeltError(`random.${op}: key must be a uint32 tensor of shape [2] (from random.key or random.split), got ${got}`);
  }
  const n = k.node(`random.${op}`);
  // The kernel reads the two words from memory in a row: a key at other strides is copied first.
  return n.data && n.data.strides[0] !== 1 ? new Node("reshape", [n], [2], "uint32") : n;
}

// ---------------------------------------------------------------------------------------------
// nodes computed by a kernel of metal/random.metal
// ---------------------------------------------------------------------------------------------

/** @internal The struct { uint n; two 4-byte fields } the stream kernels take at buffer(2) (also used by test/random.test.ts). */
export function streamArgs(n: number, a: number, b: number, kind: "float" | "int"): Uint8Array {
  const bytes = new Uint8Array(12);
  const v = new DataView(bytes.buffer);
  v.setUint32(0, n, true);
  if (kind === "float") {
    v.setFloat32(4, a, true);
    v.setFloat32(8, b, true);
  } else {
    v.setInt32(4, a, true);
    v.setInt32(8, b, true);
  }
  return bytes;
}

/** A tensor of shape and dtype written by stream kernel `kernel` under key k, with its argument struct `args`. */
function generate(op: string, kernel: string, k: Key, shape: number[], dtype: DType, args: ArrayBufferView): Tensor {
  const size = shapeSize(shape);
  if (size >= 2 ** 32) throw new SmeltError(`random.${op}: at most 2^32 - 1 elements per call, got ${size}`);
  const params = Array.from(new Uint32Array(args.buffer, args.byteOffset, args.byteLength / 4));
  const attrs = { kernel, params, key: k instanceof Node ? null : Array.from(k) };
  return new Tensor(new Node("random", k instanceof Node ? [k] : [], shape, dtype, attrs));
}

/** num new keys as a [num, 2] uint32 tensor: row i is key i, words 2i and 2i + 1 of key's stream. */
export function split(key: Tensor, num = 2): Tensor {
  if (!Number.isSafeInteger(num) || num < 1) throw new SmeltError(`random.split: num must be a positive integer, got ${num}`);
  return generate("split", "random_split", keyOf("split", key), [num, 2], "uint32", new Uint32Array([num]));
}

// ---------------------------------------------------------------------------------------------
// distributions
// ---------------------------------------------------------------------------------------------

const FLOAT_SUFFIX: Partial<Record<DType, string>> = { float32: "float", float16: "half", bfloat16: "bfloat" };

function floatKernel(op: string, base: string, dtype: unknown): [DType, string] {
  const dt = parseDType(`random.${op}`, dtype);
  const suffix = FLOAT_SUFFIX[dt];
  if (!suffix) throw new SmeltError(`random.${op}: dtype must be float32, float16 or bfloat16, got ${dt}`);
  return [dt, `${base}_${suffix}`];
}

function finite(op: string, what: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw new SmeltError(`random.${op}: ${what} must be a finite number, got ${String(v)}`);
  return v;
}

function uniformWith(op: string, k: Key, low: number, high: number, shape: number[], dtype: unknown): Tensor {
  const [dt, kernel] = floatKernel(op, "random_uniform", dtype);
  return generate(op, kernel, k, shape, dt, streamArgs(shapeSize(shape), low, high, "float"));
}

/**
 * Uniform numbers in [low, high) (low and high rounded to float32 first; the result never reaches
 * high, also after rounding to float16/bfloat16).
 */
export function uniform(low = 0, high = 1, shape: readonly number[] = [], dtype: DType = "float32", key?: Tensor): Tensor {
  const op = "uniform";
  const lo = Math.fround(finite(op, "low", low));
  const hi = Math.fround(finite(op, "high", high));
  if (!(lo < hi)) throw new SmeltError(`random.${op}: low (${low}) must be less than high (${high}) in float32`);
  const s = checkShape(`random.${op}`, shape);
  return uniformWith(op, keyOf(op, key), lo, hi, s, dtype);
}

/** Normal numbers with mean loc and standard deviation scale. */
export function normal(shape: readonly number[] = [], dtype: DType = "float32", loc = 0, scale = 1, key?: Tensor): Tensor {
  const op = "normal";
  const [dt, kernel] = floatKernel(op, "random_normal", dtype);
  const s = checkShape(`random.${op}`, shape);
  const args = streamArgs(shapeSize(s), finite(op, "loc", loc), finite(op, "scale", scale), "float");
  return generate(op, kernel, keyOf(op, key), s, dt, args);
}

/**
 * Booleans that are true with probability p. p is a number in [0, 1], or a float tensor that
 * broadcasts to shape (shape defaults to p's): element i is then uniform_i < p_i with the uniforms
 * in [0, 1) under the same key, which for a number p is exactly the kernel's result.
 */
export function bernoulli(p: number | Tensor = 0.5, shape?: readonly number[], key?: Tensor): Tensor {
  const op = "bernoulli";
  if (p instanceof Tensor) {
    const s = shape === undefined ? p.shape : checkShape(`random.${op}`, shape);
    const b = broadcastShapes(`random.${op}`, p.shape, s);
    if (b.length !== s.length || b.some((d, i) => d !== s[i])) {
      throw new SmeltError(`random.${op}: p of shape ${fmt(p.shape)} cannot be broadcast to shape ${fmt(s)}`);
    }
    const k = keyOf(op, key);
    return composite(() => less(uniformWith(op, k, 0, 1, s, "float32"), p));
  }
  if (typeof p !== "number" || !(p >= 0 && p <= 1)) throw new SmeltError(`random.${op}: p must be a probability in [0, 1], got ${String(p)}`);
  const s = checkShape(`random.${op}`, shape ?? []);
  const args = new Uint8Array(8);
  new DataView(args.buffer).setUint32(0, shapeSize(s), true);
  new DataView(args.buffer).setFloat32(4, p, true);
  return generate(op, "random_bernoulli", keyOf(op, key), s, "bool", args);
}

// The values each integer dtype holds: low may be the least, high (exclusive) one past the greatest.
const INT_RANGE: Partial<Record<DType, [number, number]>> = {
  int32: [-(2 ** 31), 2 ** 31 - 1],
  uint32: [0, 2 ** 32 - 1],
  int8: [-128, 127],
  uint8: [0, 255],
};

/**
 * Integers in [low, high), as low + the high word of (bits * (high - low)): the bias is at most
 * (high - low) / 2^32. int32 and uint32 come straight from the kernel; int8 and uint8 are cast
 * from its int32 result.
 */
export function randint(low: number, high: number, shape: readonly number[] = [], dtype: DType = "int32", key?: Tensor): Tensor {
  const op = "randint";
  const dt = parseDType(`random.${op}`, dtype);
  const range = INT_RANGE[dt];
  if (!range) throw new SmeltError(`random.${op}: dtype must be an integer type, got ${dt}`);
  for (const [what, v] of [["low", low], ["high", high]] as const) {
    if (typeof v !== "number" || !Number.isSafeInteger(v)) throw new SmeltError(`random.${op}: ${what} must be an integer, got ${String(v)}`);
  }
  if (low >= high) throw new SmeltError(`random.${op}: low (${low}) must be less than high (${high})`);
  if (low < range[0] || high > range[1] + 1) {
    throw new SmeltError(`random.${op}: [${low}, ${high}) does not fit ${dt}, whose values are ${range[0]} to ${range[1]}`);
  }
  if (high - low > 2 ** 32 - 1) throw new SmeltError(`random.${op}: high - low must be at most 2^32 - 1, got ${high - low}`);
  const s = checkShape(`random.${op}`, shape);
  // The kernel works in uint32 arithmetic, so bounds past int32 pass as the same 32 bits.
  const args = streamArgs(shapeSize(s), low | 0, high | 0, "int");
  const k = keyOf(op, key);
  if (dt === "int32" || dt === "uint32") return generate(op, "random_randint", k, s, dt, args);
  return composite(() => astype(generate(op, "random_randint", k, s, "int32", args), dt));
}

/**
 * Samples class indices (uint32) from the unnormalized log-probabilities logits along axis:
 * argmax(logits + g) with g = -log(-log(u)) Gumbel noise, u uniform in [0, 1) under key.
 * shapeOrNumSamples: undefined gives one sample per distribution (logits' shape without axis); an
 * array is the output shape, which the distributions broadcast to; a number n gives n samples per
 * distribution, in a new last axis. The uniforms have the output shape plus a last axis of classes.
 */
export function categorical(logits: Tensor, axis = -1, shapeOrNumSamples?: readonly number[] | number, key?: Tensor): Tensor {
  const op = "categorical";
  if (!(logits instanceof Tensor)) throw new SmeltError(`random.${op}: logits must be a Tensor, got ${String(logits)}`);
  if (logits.ndim === 0) throw new SmeltError(`random.${op}: logits must have an axis of classes, got a zero-dimensional tensor`);
  const ax = normalizeAxis(`random.${op}`, axis, logits.ndim);
  const classes = logits.shape[ax]!;
  if (classes === 0) throw new SmeltError(`random.${op}: axis ${ax} of logits has no classes (size 0)`);
  const batch = logits.shape.filter((_, d) => d !== ax);
  let out: number[];
  let lifted = batch;
  if (shapeOrNumSamples === undefined) {
    out = batch;
  } else if (typeof shapeOrNumSamples === "number") {
    if (!Number.isSafeInteger(shapeOrNumSamples) || shapeOrNumSamples < 0) {
      throw new SmeltError(`random.${op}: the number of samples must be a non-negative integer, got ${shapeOrNumSamples}`);
    }
    out = [...batch, shapeOrNumSamples];
    lifted = [...batch, 1];
  } else {
    out = checkShape(`random.${op}`, shapeOrNumSamples);
    const b = broadcastShapes(`random.${op}`, batch, out);
    if (b.length !== out.length || b.some((d, i) => d !== out[i])) {
      throw new SmeltError(`random.${op}: the distributions (shape ${fmt(batch)}) cannot be broadcast to shape ${fmt(out)}`);
    }
  }
  const k = keyOf(op, key);
  return composite(() => {
    const l = reshape(moveaxis(isFloating(logits.dtype) ? logits : astype(logits, "float32"), ax, -1), [...lifted, classes]);
    const u = uniformWith(op, k, 0, 1, [...out, classes], "float32");
    return argmax(add(l, negative(log(negative(log(u))))), -1);
  });
}
