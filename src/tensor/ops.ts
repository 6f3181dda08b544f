/**
 * The op set: every function checks its arguments where the user called it (a SmeltError
 * naming the op and the offending shapes, dtypes or axes), then adds one node to the graph.
 * Views of computed data share its storage; views of lazy nodes are index math in the kernel
 * that consumes them.
 */
import { SmeltError } from "../errors.ts";
import { memory } from "../exec/memory.ts";
import {
  checkConstant,
  type DType,
  defaultDTypeOf,
  encode,
  inferDType,
  integerRange,
  isFloating,
  isInteger,
  itemsize,
  parseDType,
  promoteTypes,
  scalarResultType,
  storageFor,
  type TypedArrayConstructor,
  typedArrayDType,
} from "../graph/dtype.ts";
import { type Data, gradientStops, Node } from "../graph/node.ts";
import { attrsOf, type BinaryOp, OPS, type ReduceKind, type UnaryOp, type ViewMap } from "../graph/op.ts";
import {
  broadcastShapes,
  checkShape,
  contiguousStrides,
  type IndexItem,
  inferReshape,
  isRowContiguous,
  normalizeAxes,
  normalizeAxis,
  parseSliceString,
  permuteShape,
  planIndex,
  reducedShape,
  sameShape,
  shapeSize,
} from "../graph/shape.ts";
import { composite, Tensor } from "./tensor.ts";

export type Scalar = number | boolean;
export type TensorLike = Tensor | Scalar;
/** Numbers and booleans, nested in arrays; typed arrays may stand for the innermost rows. */
type Nested = Scalar | ArrayBufferView | readonly Nested[];

// ---------------------------------------------------------------------------------------------
// creation
// ---------------------------------------------------------------------------------------------

/**
 * A tensor from nested arrays, a number, a boolean or a typed array, copied to the device. A typed
 * array keeps its natural dtype (typedArrayDType) and is copied in one native set() when no dtype or
 * a non-16-bit dtype is given; with an explicit dtype it converts as astype does (floats round,
 * integers truncate and wrap). Plain numbers with an explicit integer dtype truncate toward zero and
 * must then fit the dtype (checkConstant), as NumPy 2 checks Python ints.
 */
export function array(data: Nested | Tensor, dtype?: DType): Tensor {
  if (data instanceof Tensor) return dtype ? astype(data, dtype) : data;
  const dt = dtype === undefined ? undefined : parseDType("array", dtype);
  if (ArrayBuffer.isView(data)) return fromTypedArray(data, dt);
  const shape: number[] = [];
  const flat: (number | boolean)[] = [];
  // Rows given as float typed arrays make the tensor float even where their values are integral.
  let floatRows = false;
  const walk = (x: unknown, d: number) => {
    if (ArrayBuffer.isView(x) && isFloating(typedArrayDType("array", x))) floatRows = true;
    if (Array.isArray(x) || ArrayBuffer.isView(x)) {
      const arr = x as ArrayLike<unknown>;
      if (shape.length === d) shape.push(arr.length);
      else if (shape[d] !== arr.length)
        throw new SmeltError(`array: ragged nested arrays: length ${arr.length} at depth ${d}, expected ${shape[d]}`);
      for (let i = 0; i < arr.length; i++) walk(arr[i], d + 1);
    } else if (typeof x === "number" || typeof x === "boolean") {
      if (d !== shape.length) throw new SmeltError(`array: ragged nested arrays: a scalar at depth ${d}, expected ${shape.length}`);
      flat.push(x);
    } else {
      throw new SmeltError(`array: expected numbers, booleans or arrays of them, got ${typeof x}`);
    }
  };
  walk(data, 0);
  if (dt !== undefined && isInteger(dt)) for (const v of flat) checkConstant("array", v, dt);
  const type = dt ?? (floatRows ? "float32" : inferDType(flat));
  const n = new Node("data", [], shape, type);
  n.data = upload("array", shape, type, encode(type, flat));
  return new Tensor(n);
}

function fromTypedArray(data: ArrayBufferView, dtype: DType | undefined): Tensor {
  const natural = typedArrayDType("array", data);
  const type = dtype ?? natural;
  const values = data as unknown as ArrayLike<number>;
  const shape = [values.length];
  let src: ArrayLike<number>;
  if (type === "float16" && natural === "float16") src = new Uint16Array(data.buffer, data.byteOffset, values.length);
  // Typed-array stores round floats and truncate-and-wrap integers, exactly encode's conversions.
  else if (type !== "float16" && type !== "bfloat16" && type !== "bool") src = values;
  else src = encode(type, values);
  const n = new Node("data", [], shape, type);
  n.data = upload("array", shape, type, src);
  return new Tensor(n);
}

/**
 * A tensor of the given shape and dtype whose storage is exactly these bytes (little-endian, row
 * major): float16 and bfloat16 as their bit patterns, bool as bytes of 0 or 1. One copy into the
 * device buffer; what weight loaders read from a file.
 */
export function fromBytes(bytes: ArrayBuffer | ArrayBufferView, shape: readonly number[], dtype: DType): Tensor {
  const dt = parseDType("fromBytes", dtype);
  const s = checkShape("fromBytes", shape);
  let u8: Uint8Array;
  if (bytes instanceof ArrayBuffer) u8 = new Uint8Array(bytes);
  else if (ArrayBuffer.isView(bytes)) u8 = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  else throw new SmeltError(`fromBytes: bytes must be an ArrayBuffer or a typed array, got ${bytes === null ? "null" : typeof bytes}`);
  const want = shapeSize(s) * itemsize(dt);
  if (u8.byteLength !== want)
    throw new SmeltError(`fromBytes: shape [${s}] of ${dt} needs ${want} bytes, got ${u8.byteLength}`);
  if (dt === "bool" && u8.some((b) => b > 1)) throw new SmeltError("fromBytes: bool bytes must be 0 or 1");
  const n = new Node("data", [], s, dt);
  n.data = upload("fromBytes", s, dt, u8, Uint8Array);
  return new Tensor(n);
}

/**
 * The one place host values enter device storage: a native set() of src into a view of the new
 * buffer, which converts element types when src's type is not the view's.
 */
function upload(op: string, shape: number[], dtype: DType, src: ArrayLike<number>, view: TypedArrayConstructor = storageFor(dtype)): Data {
  const bytes = shapeSize(shape) * itemsize(dtype);
  const storage = memory.allocate(bytes, op);
  const count = bytes / view.BYTES_PER_ELEMENT;
  if (storage.buffer.device.limits.hostVisible) (storage.buffer.view(view as never, 0, count) as Uint8Array).set(src);
  else {
    // Memory the CPU cannot see (a discrete GPU): converted on the host, then one copy across.
    const staged = new (view as unknown as new (n: number) => Uint8Array)(count);
    staged.set(src);
    storage.buffer.write(staged);
  }
  return { storage, strides: contiguousStrides(shape), offset: 0 };
}

export function full(shape: readonly number[], value: Scalar, dtype?: DType): Tensor {
  const s = checkShape("full", shape);
  if (typeof value !== "number" && typeof value !== "boolean")
    throw new SmeltError(`full: value must be a number or a boolean, got ${value === null ? "null" : typeof value}`);
  const dt = dtype ? parseDType("full", dtype) : defaultDTypeOf(value);
  return new Tensor(new Node("scalar", [], s, dt, { value: checkConstant("full", value, dt) }));
}
export const zeros = (shape: readonly number[], dtype: DType = "float32") => full(shape, 0, dtype);
export const ones = (shape: readonly number[], dtype: DType = "float32") => full(shape, 1, dtype);
export const zerosLike = (x: Tensor) => full(x.shape, 0, x.dtype);
export const onesLike = (x: Tensor) => full(x.shape, 1, x.dtype);

/** arange(stop), arange(start, stop, step?), as NumPy. */
export function arange(a: number, b?: number, step = 1, dtype?: DType): Tensor {
  const [start, stop] = b === undefined ? [0, a] : [a, b];
  if (step === 0 || !Number.isFinite(step)) throw new SmeltError(`arange: step must be a finite non-zero number, got ${step}`);
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const dt = dtype ?? ([start, stop, step].every(Number.isInteger) ? "int32" : "float32");
  return new Tensor(new Node("arange", [], [n], parseDType("arange", dt), { start, step }));
}
export function linspace(start: number, stop: number, num = 50, dtype: DType = "float32"): Tensor {
  if (!Number.isInteger(num) || num < 0) throw new SmeltError(`linspace: num must be a non-negative integer, got ${num}`);
  const dt = parseDType("linspace", dtype);
  const step = num > 1 ? (stop - start) / (num - 1) : 0;
  return composite(() => {
    const ramp = new Tensor(new Node("arange", [], [num], "float32", { start, step }));
    if (num < 2) return astype(ramp, dt);
    // start + i * step in float32 can miss stop by a few ulps; NumPy and MLX end exactly on it.
    return astype(where(equal(arange(num), num - 1), stop, ramp), dt);
  });
}
export function eye(n: number, m?: number, k = 0, dtype: DType = "float32"): Tensor {
  const s = checkShape("eye", [n, m ?? n]);
  return new Tensor(new Node("eye", [], s, parseDType("eye", dtype), { k }));
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

function nodeOf(op: string, x: TensorLike, like?: DType): Node {
  if (x instanceof Tensor) return x.node(op);
  if (typeof x !== "number" && typeof x !== "boolean")
    throw new SmeltError(`${op}: expected a tensor or a number, got ${x === null ? "null" : typeof x}`);
  const dt = like ? scalarResultType(like, x) : defaultDTypeOf(x);
  return new Node("scalar", [], [], dt, { value: checkConstant(op, x, dt) });
}

function cast(n: Node, dtype: DType): Node {
  return n.dtype === dtype ? n : new Node("cast", [n], n.shape, dtype);
}

type Restride = (strides: readonly number[], offset: number) => ViewMap;

/** Whether n is computed in row-major order from the start of its storage: its views' maps then locate their data too. */
function rowMajor(n: Node): boolean {
  const d = n.data;
  return d !== null && d.offset === 0 && isRowContiguous(n.shape, d.strides);
}

/** The index map `plan` gives over n's row-major layout. */
function mapOf<M extends ViewMap>(n: Node, plan: (strides: readonly number[], offset: number) => M, direct: boolean): M {
  return plan(direct ? n.data!.strides : contiguousStrides(n.shape), 0);
}

/**
 * View v (of map `map`) of n keeps n as its input whether or not n is computed (a backward pass
 * walks through it); over computed data it is computed at once: the same storage at the strides
 * `plan` gives over n's (the map's own when `direct`).
 */
function restride<V extends Node>(v: V, n: Node, plan: Restride, map: ViewMap, direct: boolean): V {
  const d = n.data;
  if (d) {
    const p = direct ? map : plan(d.strides, d.offset);
    v.data = { storage: d.storage.retain(), strides: p.strides, offset: p.offset };
  }
  return v;
}

function broadcastNode(op: string, n: Node, shape: number[]): Node {
  if (sameShape(n.shape, shape)) return n;
  // A scalar has the same value everywhere: give it the shape instead of a view.
  if (n.op === "scalar" && !n.data && n.tensors === 0 && n.consumers === 0) return new Node("scalar", [], shape, n.dtype, attrsOf(n, "scalar"));
  broadcastShapes(op, n.shape, shape);
  const lead = shape.length - n.shape.length;
  const plan: Restride = (strides, offset) => ({
    strides: shape.map((_, i) => (i < lead || n.shape[i - lead] === 1 ? 0 : strides[i - lead]!)),
    offset,
  });
  const direct = rowMajor(n);
  const map = mapOf(n, plan, direct);
  return restride(new Node("broadcast", [n], shape, n.dtype, map), n, plan, map, direct);
}

function wrap(n: Node): Tensor {
  return new Tensor(n);
}

// ---------------------------------------------------------------------------------------------
// elementwise
// ---------------------------------------------------------------------------------------------

function unary(op: Exclude<UnaryOp, "nanToNum">, x: TensorLike): Tensor {
  let n = nodeOf(op, x);
  const info = OPS[op];
  if (info.floatOnly && !isFloating(n.dtype)) n = cast(n, "float32");
  if (info.noBool && n.dtype === "bool") throw new SmeltError(`${op}: not defined for bool tensors; cast with astype first`);
  return wrap(new Node(op, [n], n.shape, info.predicate ? "bool" : n.dtype));
}

const ORDER: Partial<Record<BinaryOp, (x: number, y: number) => boolean>> = {
  equal: (x, y) => x === y, notEqual: (x, y) => x !== y, less: (x, y) => x < y,
  lessEqual: (x, y) => x <= y, greater: (x, y) => x > y, greaterEqual: (x, y) => x >= y,
};

/**
 * An integer tensor compared with an integer its dtype cannot hold: every element compares the
 * same way as the nearest end of the range, so the result is a constant (NumPy 2 answers these
 * comparisons too, where arithmetic with the scalar raises).
 */
function outOfRangeCompare(op: BinaryOp, t: Node, scalar: TensorLike, tensorFirst: boolean): Tensor | undefined {
  const range = integerRange(t.dtype);
  const cmp = ORDER[op];
  if (!cmp || !range || typeof scalar !== "number" || !Number.isInteger(scalar)) return undefined;
  if (scalar >= range[0] && scalar <= range[1]) return undefined;
  const end = scalar < range[0] ? range[0] : range[1];
  return full(t.shape, tensorFirst ? cmp(end, scalar) : cmp(scalar, end), "bool");
}

function binary(op: BinaryOp, a: TensorLike, b: TensorLike): Tensor {
  const an = a instanceof Tensor ? a.node(op) : undefined;
  const bn = b instanceof Tensor ? b.node(op) : undefined;
  const constant = an && !bn ? outOfRangeCompare(op, an, b, true) : bn && !an ? outOfRangeCompare(op, bn, a, false) : undefined;
  if (constant) return constant;
  let x = an ?? nodeOf(op, a, bn?.dtype);
  let y = bn ?? nodeOf(op, b, an?.dtype);
  let dt = an && bn ? promoteTypes(x.dtype, y.dtype) : an ? scalarResultType(x.dtype, b as Scalar) : bn ? scalarResultType(y.dtype, a as Scalar) : promoteTypes(x.dtype, y.dtype);
  if (op === "divide" && !isFloating(dt)) dt = "float32";
  if (dt === "bool" && (op === "add" || op === "multiply")) {
    // NumPy: bool + bool is logical or, bool * bool is logical and.
    return binary(op === "add" ? "logicalOr" : "logicalAnd", a, b);
  }
  if (dt === "bool" && !OPS[op].predicate && op !== "maximum" && op !== "minimum") dt = "int32";
  // Operands of one shape, the common case, share it with the result.
  const shape = sameShape(x.shape, y.shape) ? x.shape : broadcastShapes(op, x.shape, y.shape);
  x = broadcastNode(op, cast(x, dt), shape);
  y = broadcastNode(op, cast(y, dt), shape);
  const out = OPS[op].predicate ? "bool" : dt;
  return wrap(new Node(op, [x, y], shape, out));
}

export const add = (a: TensorLike, b: TensorLike) => binary("add", a, b);
export const subtract = (a: TensorLike, b: TensorLike) => binary("subtract", a, b);
export const multiply = (a: TensorLike, b: TensorLike) => binary("multiply", a, b);
export const divide = (a: TensorLike, b: TensorLike) => binary("divide", a, b);
export const floorDivide = (a: TensorLike, b: TensorLike) => binary("floorDivide", a, b);
export const remainder = (a: TensorLike, b: TensorLike) => binary("remainder", a, b);
export const power = (a: TensorLike, b: TensorLike) => binary("power", a, b);
export const maximum = (a: TensorLike, b: TensorLike) => binary("maximum", a, b);
export const minimum = (a: TensorLike, b: TensorLike) => binary("minimum", a, b);
export const equal = (a: TensorLike, b: TensorLike) => binary("equal", a, b);
export const notEqual = (a: TensorLike, b: TensorLike) => binary("notEqual", a, b);
export const less = (a: TensorLike, b: TensorLike) => binary("less", a, b);
export const lessEqual = (a: TensorLike, b: TensorLike) => binary("lessEqual", a, b);
export const greater = (a: TensorLike, b: TensorLike) => binary("greater", a, b);
export const greaterEqual = (a: TensorLike, b: TensorLike) => binary("greaterEqual", a, b);
export const logicalAnd = (a: TensorLike, b: TensorLike) => binary("logicalAnd", a, b);
export const logicalOr = (a: TensorLike, b: TensorLike) => binary("logicalOr", a, b);

export const negative = (x: TensorLike) => unary("negative", x);
export const abs = (x: TensorLike) => unary("abs", x);
export const sign = (x: TensorLike) => unary("sign", x);
export const square = (x: TensorLike) => unary("square", x);
export const sqrt = (x: TensorLike) => unary("sqrt", x);
export const rsqrt = (x: TensorLike) => unary("rsqrt", x);
export const exp = (x: TensorLike) => unary("exp", x);
export const expm1 = (x: TensorLike) => unary("expm1", x);
export const log = (x: TensorLike) => unary("log", x);
export const log1p = (x: TensorLike) => unary("log1p", x);
export const log2 = (x: TensorLike) => unary("log2", x);
export const log10 = (x: TensorLike) => unary("log10", x);
export const sin = (x: TensorLike) => unary("sin", x);
export const cos = (x: TensorLike) => unary("cos", x);
export const tan = (x: TensorLike) => unary("tan", x);
export const tanh = (x: TensorLike) => unary("tanh", x);
export const sigmoid = (x: TensorLike) => unary("sigmoid", x);
export const erf = (x: TensorLike) => unary("erf", x);
export const erfinv = (x: TensorLike) => unary("erfinv", x);
export const floor = (x: TensorLike) => unary("floor", x);
export const ceil = (x: TensorLike) => unary("ceil", x);
export const round = (x: TensorLike) => unary("round", x);
export const logicalNot = (x: TensorLike) => unary("logicalNot", x);
export const isnan = (x: TensorLike) => unary("isnan", x);
export const isinf = (x: TensorLike) => unary("isinf", x);
export const relu = (x: TensorLike) => unary("relu", x);
export const silu = (x: TensorLike) => unary("silu", x);
export const softplus = (x: TensorLike) => unary("softplus", x);
/** GELU; approximate: "tanh" uses the tanh form, "none" (default) the exact erf form. */
export const gelu = (x: TensorLike, approximate: "none" | "tanh" = "none") => unary(approximate === "tanh" ? "geluApprox" : "gelu", x);

export function nanToNum(x: TensorLike, nan = 0, posinf?: number, neginf?: number): Tensor {
  const n = nodeOf("nanToNum", x);
  if (!isFloating(n.dtype)) return x instanceof Tensor ? x : wrap(n);
  const max = n.dtype === "float16" ? 65504 : n.dtype === "bfloat16" ? 3.3895313892515355e38 : 3.4028234663852886e38;
  return wrap(new Node("nanToNum", [n], n.shape, n.dtype, { scalars: [nan, posinf ?? max, neginf ?? -max] }));
}

export function where(cond: TensorLike, a: TensorLike, b: TensorLike): Tensor {
  const c = cast(nodeOf("where", cond), "bool");
  const an = a instanceof Tensor ? a.node("where") : undefined;
  const bn = b instanceof Tensor ? b.node("where") : undefined;
  let x = an ?? nodeOf("where", a, bn?.dtype);
  let y = bn ?? nodeOf("where", b, an?.dtype);
  // A scalar branch is weak, as in binary ops: it adopts the tensor's dtype unless its kind does
  // not fit (an int tensor with 0.5 gives float32, not a truncated 0).
  const dt = an && !bn ? scalarResultType(x.dtype, b as Scalar) : bn && !an ? scalarResultType(y.dtype, a as Scalar) : promoteTypes(x.dtype, y.dtype);
  const shape = broadcastShapes("where", c.shape, x.shape, y.shape);
  x = broadcastNode("where", cast(x, dt), shape);
  y = broadcastNode("where", cast(y, dt), shape);
  return wrap(new Node("where", [broadcastNode("where", c, shape), x, y], shape, dt));
}

export function clip(x: TensorLike, lo: TensorLike | null, hi: TensorLike | null): Tensor {
  if (lo === null && hi === null) throw new SmeltError("clip: at least one of the bounds must be given");
  return composite(() => {
    let r = x instanceof Tensor ? x : array(x as Scalar);
    if (lo !== null) r = maximum(r, lo);
    if (hi !== null) r = minimum(r, hi);
    return r;
  });
}

export function astype(x: Tensor, dtype: DType): Tensor {
  const dt = parseDType("astype", dtype);
  return wrap(cast(x.node("astype"), dt));
}

// ---------------------------------------------------------------------------------------------
// reductions
// ---------------------------------------------------------------------------------------------

type Axes = number | readonly number[] | null | undefined;

function reduce(kind: ReduceKind, x: TensorLike, axes: Axes, keepdims: boolean, outType?: (d: DType) => DType): Tensor {
  const n = nodeOf(kind, x);
  const ax = normalizeAxes(kind, axes, n.shape.length);
  const dt = outType ? outType(n.dtype) : n.dtype;
  const shape = reducedShape(n.shape, ax, false);
  // sum and prod of int8, uint8 and bool accumulate in their int32 result, not in the narrow input type.
  const src = kind === "sum" || kind === "prod" ? cast(n, dt) : n;
  let r: Node = new Node("reduce", [src], shape, dt, { kind, axes: ax });
  if (keepdims) r = reshapeNode(r, reducedShape(n.shape, ax, true), { op: "expandDims", axes: ax });
  return wrap(r);
}
const sumType = (d: DType): DType => (d === "bool" || d === "int8" || d === "uint8" ? "int32" : d);

export const sum = (x: TensorLike, axis?: Axes, keepdims = false) => reduce("sum", x, axis, keepdims, sumType);
export const prod = (x: TensorLike, axis?: Axes, keepdims = false) => reduce("prod", x, axis, keepdims, sumType);
/** max, min, argmax and argmin have no identity: over a zero-size axis they throw, as NumPy and MLX do. */
function checkNonEmpty(kind: string, x: TensorLike, axes: Axes): void {
  const shape = x instanceof Tensor ? x.shape : [];
  for (const a of normalizeAxes(kind, axes, shape.length))
    if (shape[a] === 0) throw new SmeltError(`${kind}: cannot reduce over axis ${a} of zero-size shape [${shape}]: ${kind} has no identity`);
}
export function max(x: TensorLike, axis?: Axes, keepdims = false): Tensor {
  checkNonEmpty("max", x, axis);
  return reduce("max", x, axis, keepdims);
}
export function min(x: TensorLike, axis?: Axes, keepdims = false): Tensor {
  checkNonEmpty("min", x, axis);
  return reduce("min", x, axis, keepdims);
}
export const all = (x: TensorLike, axis?: Axes, keepdims = false) => reduce("all", x, axis, keepdims, () => "bool");
export const any = (x: TensorLike, axis?: Axes, keepdims = false) => reduce("any", x, axis, keepdims, () => "bool");

function argReduce(kind: "argmax" | "argmin", x: TensorLike, axis?: number, keepdims = false): Tensor {
  const n = nodeOf(kind, x);
  if (axis === undefined) {
    // Over the flattened array; keepdims keeps every axis as size 1 (NumPy, MLX).
    return composite(() => {
      const flat = argReduce(kind, reshape(x instanceof Tensor ? x : wrap(n), [-1]), 0, false);
      return keepdims ? reshape(flat, n.shape.map(() => 1)) : flat;
    });
  }
  const ax = normalizeAxis(kind, axis, n.shape.length);
  checkNonEmpty(kind, x, [ax]);
  return reduce(kind, x, [ax], keepdims, () => "uint32");
}
export const argmax = (x: TensorLike, axis?: number, keepdims = false) => argReduce("argmax", x, axis, keepdims);
export const argmin = (x: TensorLike, axis?: number, keepdims = false) => argReduce("argmin", x, axis, keepdims);

function reducedCount(x: Tensor, axis: Axes): number {
  return normalizeAxes("mean", axis, x.ndim).reduce((a, d) => a * x.shape[d]!, 1);
}
function asFloat(x: TensorLike): Tensor {
  const t = x instanceof Tensor ? x : array(x);
  return isFloating(t.dtype) ? t : astype(t, "float32");
}
/**
 * Runs a composite reduction of float16/bfloat16 input in float32 and rounds the result once, as
 * NumPy and PyTorch do: a float16 sum overflows at 65504 where the mean does not, and every
 * intermediate rounded to 8 or 11 bits would add its error. The casts fuse into the kernels.
 */
function inFloat32(op: string, x: TensorLike, axis: Axes, f: (t: Tensor) => Tensor): Tensor {
  return composite(() => {
    const t = asFloat(x);
    normalizeAxes(op, axis, t.ndim); // a bad axis is reported under this op's name, not a primitive's
    return t.dtype === "float32" ? f(t) : astype(f(astype(t, "float32")), t.dtype);
  });
}
export function mean(x: TensorLike, axis?: Axes, keepdims = false): Tensor {
  return inFloat32("mean", x, axis, (t) => divide(sum(t, axis, keepdims), reducedCount(t, axis)));
}
/** Variance with ddof degrees of freedom removed from the count (NumPy's ddof). */
export function variance(x: TensorLike, axis?: Axes, keepdims = false, ddof = 0): Tensor {
  return inFloat32("variance", x, axis, (t) => {
    const d = subtract(t, mean(t, axis, true));
    return divide(sum(multiply(d, d), axis, keepdims), Math.max(reducedCount(t, axis) - ddof, 0));
  });
}
export const std = (x: TensorLike, axis?: Axes, keepdims = false, ddof = 0) =>
  inFloat32("std", x, axis, (t) => sqrt(variance(t, axis, keepdims, ddof)));

/**
 * The max over axis, 0 where it is ±inf (so rows of -inf stay -inf, not NaN): the shift that keeps
 * exp in range. It is a gradient stop, as no result depends on it.
 */
function rowShift(t: Tensor, axis: Axes): Tensor {
  const m = reduce("max", t, axis, true); // not max(): an empty axis is fine here
  const shift = where(isinf(m), 0, m);
  gradientStops.add(shift.node("rowShift"));
  return shift;
}
/** x minus its row shift. */
function shifted(t: Tensor, axis: Axes): Tensor {
  return subtract(t, rowShift(t, axis));
}
export function logsumexp(x: TensorLike, axis?: Axes, keepdims = false): Tensor {
  return inFloat32("logsumexp", x, axis, (t) => {
    const safe = rowShift(t, axis);
    const s = add(log(sum(exp(subtract(t, safe)), axis, true)), safe);
    return keepdims ? s : squeeze(s, normalizeAxes("logsumexp", axis, t.ndim));
  });
}
export function softmax(x: TensorLike, axis: Axes = -1): Tensor {
  return inFloat32("softmax", x, axis, (t) => {
    // The max is a gradient stop: the result does not depend on it, so its gradient would be
    // zero at the cost of two more passes over the row. (Not rowShift, whose 0 for an infinite
    // max would turn a row holding +inf into NaN and zeros where PyTorch gives all NaN.)
    const m = reduce("max", t, axis, true);
    gradientStops.add(m.node("softmax"));
    const e = exp(subtract(t, m));
    return divide(e, sum(e, axis, true));
  });
}
/** (x - max) - log(sum(exp(x - max))): x - logsumexp(x) would lose the ulps of a large max. */
export function logSoftmax(x: TensorLike, axis: Axes = -1): Tensor {
  return inFloat32("logSoftmax", x, axis, (t) => {
    const z = shifted(t, axis);
    return subtract(z, log(sum(exp(z), axis, true)));
  });
}

function scan(kind: "sum" | "prod", x: TensorLike, axis?: number): Tensor {
  return composite(() => {
    let t = x instanceof Tensor ? x : array(x);
    if (axis === undefined) {
      t = reshape(t, [-1]);
      axis = 0;
    }
    const n = t.node(`cum${kind}`);
    const ax = normalizeAxis(`cum${kind}`, axis, n.shape.length);
    return wrap(new Node("scan", [n], n.shape, sumType(n.dtype), { kind, axis: ax }));
  });
}
export const cumsum = (x: TensorLike, axis?: number) => scan("sum", x, axis);
export const cumprod = (x: TensorLike, axis?: number) => scan("prod", x, axis);

// ---------------------------------------------------------------------------------------------
// shapes and views
// ---------------------------------------------------------------------------------------------

/** A reshape of n (squeeze or expandDims when given the axes): of row-major computed data, the same storage at once. */
function reshapeNode(n: Node, shape: number[], kind?: { op: "squeeze" | "expandDims"; axes: number[] }): Node {
  const v = kind ? new Node(kind.op, [n], shape, n.dtype, { axes: kind.axes }) : new Node("reshape", [n], shape, n.dtype);
  if (n.data && isRowContiguous(n.shape, n.data.strides))
    v.data = { storage: n.data.storage.retain(), strides: contiguousStrides(shape), offset: n.data.offset };
  return v;
}

export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const n = x.node("reshape");
  return wrap(reshapeNode(n, inferReshape("reshape", n.shape, checkReshapeArg(shape))));
}
function checkReshapeArg(shape: readonly number[]): number[] {
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < -1))
    throw new SmeltError(`reshape: shape must be an array of non-negative integers (one may be -1), got ${JSON.stringify(shape)}`);
  return [...shape];
}
export function flatten(x: Tensor, startAxis = 0, endAxis = -1): Tensor {
  const nd = x.ndim;
  if (nd === 0) return reshape(x, [1]);
  const s = normalizeAxis("flatten", startAxis, nd, "startAxis");
  const e = normalizeAxis("flatten", endAxis, nd, "endAxis");
  if (e < s) throw new SmeltError(`flatten: endAxis ${endAxis} comes before startAxis ${startAxis}`);
  const sh = x.shape;
  return reshape(x, [...sh.slice(0, s), sh.slice(s, e + 1).reduce((a, b) => a * b, 1), ...sh.slice(e + 1)]);
}
export function transpose(x: Tensor, axes?: readonly number[]): Tensor {
  const n = x.node("transpose");
  const perm = permuteShape("transpose", n.shape.length, axes);
  const shape = perm.map((p) => n.shape[p]!);
  const plan = (strides: readonly number[], offset: number) => ({ strides: perm.map((p) => strides[p]!), offset, axes: perm });
  const direct = rowMajor(n);
  const map = mapOf(n, plan, direct);
  return wrap(restride(new Node("permute", [n], shape, n.dtype, map), n, plan, map, direct));
}
export function swapaxes(x: Tensor, a: number, b: number): Tensor {
  const nd = x.ndim;
  const perm = [...Array(nd).keys()];
  const i = normalizeAxis("swapaxes", a, nd, "axis1"), j = normalizeAxis("swapaxes", b, nd, "axis2");
  [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  return transpose(x, perm);
}
export function moveaxis(x: Tensor, source: number, destination: number): Tensor {
  const nd = x.ndim;
  const s = normalizeAxis("moveaxis", source, nd, "source"), d = normalizeAxis("moveaxis", destination, nd, "destination");
  const perm = [...Array(nd).keys()].filter((k) => k !== s);
  perm.splice(d, 0, s);
  return transpose(x, perm);
}
export function expandDims(x: Tensor, axis: number | readonly number[]): Tensor {
  const axes = typeof axis === "number" ? [axis] : [...axis];
  const nd = x.ndim + axes.length;
  const norm = normalizeAxes("expandDims", axes, nd);
  const shape: number[] = [];
  let k = 0;
  const n = x.node("expandDims");
  for (let d = 0; d < nd; d++) shape.push(norm.includes(d) ? 1 : n.shape[k++]!);
  return wrap(reshapeNode(n, shape, { op: "expandDims", axes: norm }));
}
export function squeeze(x: Tensor, axis?: number | readonly number[]): Tensor {
  const sh = x.shape;
  const axes = axis === undefined ? sh.flatMap((d, i) => (d === 1 ? [i] : [])) : normalizeAxes("squeeze", axis, sh.length);
  for (const a of axes) if (sh[a] !== 1) throw new SmeltError(`squeeze: axis ${a} has size ${sh[a]}, only size-1 axes can be squeezed`);
  return wrap(reshapeNode(x.node("squeeze"), sh.filter((_, i) => !axes.includes(i)), { op: "squeeze", axes }));
}
export function broadcastTo(x: TensorLike, shape: readonly number[]): Tensor {
  const n = nodeOf("broadcastTo", x);
  const target = checkShape("broadcastTo", shape);
  const b = broadcastShapes("broadcastTo", n.shape, target);
  if (b.length !== target.length || b.some((d, i) => d !== target[i]))
    throw new SmeltError(`broadcastTo: shape [${n.shape}] cannot be broadcast to [${target}]`);
  return wrap(broadcastNode("broadcastTo", n, target));
}

/**
 * Basic indexing: x.slice("1:3, ::-1, None, ..., 0") or x.slice(1, {start: 0, stop: 4, step: 2}, null, "...").
 */
export function slice(x: Tensor, ...items: (IndexItem | string)[]): Tensor {
  const n = x.node("slice");
  const list: IndexItem[] =
    items.length === 1 && typeof items[0] === "string" && items[0] !== "..." ? parseSliceString("slice", items[0]) : (items as IndexItem[]);
  let shape: number[] = [];
  const plan: Restride = (strides, offset) => {
    const p = planIndex("slice", n.shape, strides, offset, list);
    shape = p.shape;
    return { strides: p.strides, offset: p.offset };
  };
  const direct = rowMajor(n);
  const map = mapOf(n, plan, direct);
  return wrap(restride(new Node("slice", [n], shape, n.dtype, map), n, plan, map, direct));
}

// ---------------------------------------------------------------------------------------------
// linear algebra
// ---------------------------------------------------------------------------------------------

export function matmul(a: Tensor, b: Tensor): Tensor {
  let x = a.node("matmul"), y = b.node("matmul");
  if (x.shape.length === 0 || y.shape.length === 0) throw new SmeltError("matmul: scalars are not allowed; use multiply");
  const vecA = x.shape.length === 1, vecB = y.shape.length === 1;
  if (vecA) x = reshapeNode(x, [1, x.shape[0]!], { op: "expandDims", axes: [0] });
  if (vecB) y = reshapeNode(y, [y.shape[0]!, 1], { op: "expandDims", axes: [1] });
  const K = x.shape[x.shape.length - 1]!;
  if (y.shape[y.shape.length - 2] !== K)
    throw new SmeltError(`matmul: shapes [${a.shape}] and [${b.shape}] do not match: ${K} columns against ${y.shape[y.shape.length - 2]} rows`);
  const batch = broadcastShapes("matmul", x.shape.slice(0, -2), y.shape.slice(0, -2));
  const dt = promoteTypes(x.dtype, y.dtype) === "bool" ? "int32" : promoteTypes(x.dtype, y.dtype);
  const shape = [...batch, x.shape[x.shape.length - 2]!, y.shape[y.shape.length - 1]!];
  let out: Node = new Node("matmul", [cast(x, dt), cast(y, dt)], shape, dt);
  if (vecA || vecB) {
    const dropped = [...(vecA ? [batch.length] : []), ...(vecB ? [shape.length - 1] : [])];
    out = reshapeNode(out, shape.filter((_, d) => !dropped.includes(d)), { op: "squeeze", axes: dropped });
  }
  return wrap(out);
}
export function addmm(c: TensorLike, a: Tensor, b: Tensor, alpha = 1, beta = 1): Tensor {
  return composite(() => {
    const ab = matmul(a, b);
    const cs = c instanceof Tensor ? c.shape : [];
    const out = broadcastShapes("addmm", cs, ab.shape);
    if (out.length !== ab.ndim || out.some((d, i) => d !== ab.shape[i]))
      throw new SmeltError(`addmm: c of shape [${cs}] does not broadcast to the product's shape [${ab.shape}]`);
    return add(multiply(ab, alpha), multiply(c, beta));
  });
}
export const outer = (a: Tensor, b: Tensor) => composite(() => multiply(reshape(a, [-1, 1]), reshape(b, [1, -1])));
/** Sum product over the last axes, of shape a.shape[:-1] + b.shape[:-1] (NumPy, MLX); a scalar multiplies. */
export function inner(a: Tensor, b: Tensor): Tensor {
  if (a.ndim === 0 || b.ndim === 0) return multiply(a, b);
  const K = a.shape[a.ndim - 1]!;
  if (b.shape[b.ndim - 1] !== K)
    throw new SmeltError(`inner: shapes [${a.shape}] and [${b.shape}] do not match: last axes of ${K} and ${b.shape[b.ndim - 1]}`);
  const lead = (t: Tensor) => t.shape.slice(0, -1);
  const rows = (t: Tensor) => lead(t).reduce((x, y) => x * y, 1);
  return composite(() => {
    const out = matmul(reshape(a, [rows(a), K]), transpose(reshape(b, [rows(b), K])));
    return reshape(out, [...lead(a), ...lead(b)]);
  });
}
