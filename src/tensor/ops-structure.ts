/**
 * Ops that rearrange elements: joining (concatenate, stack), splitting, padding, repeating (tile,
 * repeat) and integer indexing (take, takeAlongAxis, putAlongAxis, scatterAdd, gather). Splits are views;
 * tile and repeat are reshapes of broadcasts; concatenation, padding and the takes are index math
 * inside the kernel that consumes them (src/exec/emit/builder.ts); putAlongAxis and scatterAdd are
 * kernels of their own.
 * No elements are copied on the host (indices given as numbers are uploaded as an int32 tensor).
 */
import { SmeltError } from "../errors.ts";
import { type DType, isFloating, isInteger, promoteTypes } from "../graph/dtype.ts";
import { Node } from "../graph/node.ts";
import { add, array, broadcastTo, expandDims, full, reshape, slice, type Scalar } from "./ops.ts";
import { broadcastShapes, checkSize, normalizeAxis, shapeSize } from "../graph/shape.ts";
import { composite, Tensor } from "./tensor.ts";

/** Integers known on the host: a number or nested arrays of them. */
export type HostIndices = number | readonly HostIndices[];
export type Indices = Tensor | HostIndices;
type Nested = Scalar | readonly Nested[];

const fmt = (s: readonly number[]) => `[${s.join(", ")}]`;

function describe(v: unknown): string {
  if (v === null) return "null";
  if (v instanceof Tensor) return `a tensor of shape ${fmt(v.shape)}`;
  if (Array.isArray(v)) return JSON.stringify(v);
  return typeof v === "number" ? String(v) : typeof v;
}

function tensorNode(op: string, x: unknown, what: string): Node {
  if (!(x instanceof Tensor)) throw new SmeltError(`${op}: ${what} must be a Tensor, got ${describe(x)}`);
  return x.node(op);
}

function castNode(n: Node, dtype: DType): Node {
  return n.dtype === dtype ? n : new Node("cast", [n], n.shape, dtype);
}

function checkCount(op: string, what: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new SmeltError(`${op}: ${what} must be a non-negative integer, got ${describe(v)}`);
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// joining and splitting
// ---------------------------------------------------------------------------------------------

// One concat kernel reads at most this many inputs: Metal binds 31 buffers, and a wider join is
// built as a tree whose inner joins the scheduler can give kernels of their own.
const MAX_JOIN = 16;

function concatNodes(parts: Node[], axis: number): Node {
  if (parts.length > MAX_JOIN) {
    const groups: Node[] = [];
    for (let i = 0; i < parts.length; i += MAX_JOIN) groups.push(concatNodes(parts.slice(i, i + MAX_JOIN), axis));
    return concatNodes(groups, axis);
  }
  const shape = [...parts[0]!.shape];
  shape[axis] = parts.reduce((a, p) => a + p.shape[axis]!, 0);
  return new Node("concat", parts, shape, parts[0]!.dtype, { axis });
}

function tensorList(op: string, xs: unknown): Node[] {
  if (!Array.isArray(xs) || xs.length === 0) throw new SmeltError(`${op}: expected a non-empty array of tensors, got ${describe(xs)}`);
  return xs.map((x, i) => tensorNode(op, x, `xs[${i}]`));
}

/** Joins tensors along an existing axis; all other axes must match. The dtype is their promotion. */
export function concatenate(xs: readonly Tensor[], axis = 0): Tensor {
  const op = "concatenate";
  const nodes = tensorList(op, xs);
  const first = nodes[0]!.shape;
  if (first.length === 0) throw new SmeltError(`${op}: zero-dimensional tensors cannot be concatenated; use stack`);
  const ax = normalizeAxis(op, axis, first.length);
  nodes.forEach((n, i) => {
    if (n.shape.length !== first.length || n.shape.some((d, k) => k !== ax && d !== first[k])) {
      throw new SmeltError(`${op}: all tensors must have the same shape except on axis ${ax}: xs[0] has shape ${fmt(first)}, xs[${i}] has ${fmt(n.shape)}`);
    }
  });
  const dtype = nodes.map((n) => n.dtype).reduce(promoteTypes);
  const shape = [...first];
  shape[ax] = nodes.reduce((a, n) => a + n.shape[ax]!, 0);
  checkSize(op, shape);
  if (shapeSize(shape) === 0) return full(shape, 0, dtype);
  // Inputs empty along the axis contribute nothing (and a kernel branch for them would be dead).
  return new Tensor(concatNodes(nodes.filter((n) => n.size > 0).map((n) => castNode(n, dtype)), ax));
}

/** Joins tensors of one shape along a new axis. */
export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  const op = "stack";
  const nodes = tensorList(op, xs);
  const first = nodes[0]!.shape;
  nodes.forEach((n, i) => {
    if (n.shape.length !== first.length || n.shape.some((d, k) => d !== first[k])) {
      throw new SmeltError(`${op}: all tensors must have the same shape: xs[0] has shape ${fmt(first)}, xs[${i}] has ${fmt(n.shape)}`);
    }
  });
  const ax = normalizeAxis(op, axis, first.length + 1);
  checkSize(op, [...first.slice(0, ax), nodes.length, ...first.slice(ax)]);
  return composite(() => concatenate(xs.map((x) => expandDims(x, ax)), ax));
}

/**
 * Views of consecutive parts of x along axis. A number n cuts it into n equal parts (the axis
 * size must divide by n); an array gives the cut points, Python-slice style: [2, 5] gives
 * x[:2], x[2:5], x[5:] (negative points count from the end, points past the end clamp).
 */
export function split(x: Tensor, indicesOrSections: number | readonly number[], axis = 0): Tensor[] {
  const op = "split";
  const n = tensorNode(op, x, "x");
  if (n.shape.length === 0) throw new SmeltError(`${op}: a zero-dimensional tensor cannot be split`);
  const ax = normalizeAxis(op, axis, n.shape.length);
  const len = n.shape[ax]!;
  let cuts: number[];
  if (typeof indicesOrSections === "number") {
    const parts = indicesOrSections;
    if (!Number.isSafeInteger(parts) || parts <= 0) throw new SmeltError(`${op}: the number of sections must be a positive integer, got ${parts}`);
    if (len % parts !== 0) throw new SmeltError(`${op}: axis ${ax} of size ${len} cannot be split into ${parts} equal sections`);
    cuts = Array.from({ length: parts - 1 }, (_, i) => ((i + 1) * len) / parts);
  } else if (Array.isArray(indicesOrSections)) {
    for (const c of indicesOrSections) {
      if (typeof c !== "number" || !Number.isSafeInteger(c)) throw new SmeltError(`${op}: split points must be integers, got ${describe(indicesOrSections)}`);
    }
    cuts = [...indicesOrSections];
  } else {
    throw new SmeltError(`${op}: indicesOrSections must be a number of sections or an array of split points, got ${describe(indicesOrSections)}`);
  }
  const lead = Array.from({ length: ax }, () => ({}));
  const edges: (number | null)[] = [null, ...cuts, null];
  return edges.slice(1).map((stop, i) => slice(x, ...lead, { start: edges[i]!, stop }));
}

// ---------------------------------------------------------------------------------------------
// padding and repetition
// ---------------------------------------------------------------------------------------------

/** n on both sides of every axis, [before, after] on every axis, or one pair per axis. */
export type PadWidth = number | readonly [number, number] | readonly (readonly [number, number])[];

function padPairs(op: string, padWidth: unknown, ndim: number): [number, number][] {
  const bad = () =>
    new SmeltError(`${op}: padWidth must be a number, a [before, after] pair, or ${ndim} such pairs (one per axis), got ${describe(padWidth)}`);
  let pairs: unknown[];
  if (typeof padWidth === "number") pairs = Array(ndim).fill([padWidth, padWidth]);
  else if (!Array.isArray(padWidth)) throw bad();
  else if (padWidth.length === 2 && padWidth.every((p) => typeof p === "number")) pairs = Array(ndim).fill(padWidth);
  else if (padWidth.length === ndim || padWidth.length === 1) pairs = padWidth.length === ndim ? padWidth : Array(ndim).fill(padWidth[0]);
  else throw bad();
  return pairs.map((p, d) => {
    if (!Array.isArray(p) || p.length !== 2) throw bad();
    return [checkCount(op, `the padding before axis ${d}`, p[0]), checkCount(op, `the padding after axis ${d}`, p[1])];
  });
}

/** Constant padding: padWidth elements of value before and after each axis (NumPy's pad, mode "constant"). */
export function pad(x: Tensor, padWidth: PadWidth, value: Scalar = 0): Tensor {
  const op = "pad";
  const n = tensorNode(op, x, "x");
  if (typeof value !== "number" && typeof value !== "boolean") throw new SmeltError(`${op}: value must be a number or a boolean, got ${describe(value)}`);
  const pairs = padPairs(op, padWidth, n.shape.length);
  const shape = n.shape.map((d, i) => d + pairs[i]![0] + pairs[i]![1]);
  return new Tensor(new Node("pad", [n], shape, n.dtype, { before: pairs.map((p) => p[0]), value: Number(value) }));
}

/**
 * x repeated reps[i] times along axis i (NumPy's tile): reps shorter than x.ndim is padded with
 * leading 1s, longer adds leading axes to x. A reshape of a broadcast: no copy of x is made.
 */
export function tile(x: Tensor, reps: number | readonly number[]): Tensor {
  const op = "tile";
  const n = tensorNode(op, x, "x");
  const r = typeof reps === "number" ? [reps] : Array.isArray(reps) ? [...reps] : null;
  if (!r) throw new SmeltError(`${op}: reps must be a number or an array of numbers, got ${describe(reps)}`);
  r.forEach((v, i) => checkCount(op, `reps[${i}]`, v));
  const nd = Math.max(n.shape.length, r.length);
  const shape = [...Array(nd - n.shape.length).fill(1), ...n.shape] as number[];
  const times = [...Array(nd - r.length).fill(1), ...r] as number[];
  checkSize(op, shape.map((d, i) => d * times[i]!));
  return composite(() => {
    const lifted = reshape(x, shape.flatMap((d) => [1, d]));
    const wide = broadcastTo(lifted, shape.flatMap((d, i) => [times[i]!, d]));
    return reshape(wide, shape.map((d, i) => d * times[i]!));
  });
}

/**
 * Each element repeated `repeats` times along axis, next to itself ([a, b] -> [a, a, b, b]); with
 * no axis, over the flattened tensor. A reshape of a broadcast: no copy of x is made.
 */
export function repeat(x: Tensor, repeats: number, axis?: number): Tensor {
  const op = "repeat";
  const n = tensorNode(op, x, "x");
  const times = checkCount(op, "repeats", repeats);
  checkSize(op, [n.size * times]);
  return composite(() => {
    const src = axis === undefined ? reshape(x, [-1]) : x;
    const ax = axis === undefined ? 0 : normalizeAxis(op, axis, n.shape.length);
    const s = src.shape;
    const lifted = reshape(src, [...s.slice(0, ax + 1), 1, ...s.slice(ax + 1)]);
    const wide = broadcastTo(lifted, [...s.slice(0, ax + 1), times, ...s.slice(ax + 1)]);
    return reshape(wide, [...s.slice(0, ax), s[ax]! * times, ...s.slice(ax + 1)]);
  });
}

// ---------------------------------------------------------------------------------------------
// integer indexing
// ---------------------------------------------------------------------------------------------

/**
 * The index tensor of a take: host indices are checked against the axis here (negatives from the
 * end allowed, as in NumPy) and become int32; a tensor must hold integers. Tensor indices cannot be
 * checked without waiting for the device, so the kernels clamp them into the axis (see
 * Builder.axisIndex in src/exec/emit/builder.ts).
 */
function indexTensor(op: string, indices: unknown, len: number, axis: number): Tensor {
  if (indices instanceof Tensor) {
    if (!isInteger(indices.dtype)) throw new SmeltError(`${op}: indices must be an integer tensor, got dtype ${indices.dtype}`);
    return indices;
  }
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) return v.forEach(walk);
    if (typeof v !== "number" || !Number.isSafeInteger(v)) throw new SmeltError(`${op}: indices must be integers, got ${describe(v)}`);
    if (v < -len || v >= len) throw new SmeltError(`${op}: index ${v} is out of bounds for axis ${axis} with size ${len}`);
  };
  walk(indices);
  return array(indices as Nested, "int32");
}

function checkNotEmpty(op: string, len: number, axis: number, indices: Tensor): void {
  if (len === 0 && indices.size > 0) throw new SmeltError(`${op}: axis ${axis} has size 0, so no index is in bounds`);
}

/**
 * Elements of x at the given indices along axis: the result has x.shape[:axis] + indices.shape +
 * x.shape[axis + 1:]. With no axis, x is flattened first. Negative indices count from the end.
 * Host indices (numbers, arrays) out of bounds throw here; those in a tensor are clamped into the
 * axis on the device (as MLX, which does not check on the device either).
 */
export function take(x: Tensor, indices: Indices, axis?: number): Tensor {
  const op = "take";
  const n = tensorNode(op, x, "x");
  return composite(() => {
    const src = axis === undefined ? reshape(x, [-1]) : x;
    const ax = axis === undefined ? 0 : normalizeAxis(op, axis, n.shape.length);
    const s = src.shape;
    const ids = indexTensor(op, indices, s[ax]!, ax);
    checkNotEmpty(op, s[ax]!, ax, ids);
    const shape = [...s.slice(0, ax), ...ids.shape, ...s.slice(ax + 1)];
    return new Tensor(new Node("take", [src.node(op), ids.node(op)], shape, src.dtype, { axis: ax }));
  });
}

/** Embedding lookup, as MLX users write it: exactly take(weights, ids, 0), rows of weights by id. */
export function gather(weights: Tensor, ids: Indices): Tensor {
  return take(weights, ids, 0);
}

/** The shape of x and indices broadcast against each other on every axis but ax, which gets indices' size. */
function alongShape(op: string, x: readonly number[], indices: readonly number[], ax: number): number[] {
  if (indices.length !== x.length) {
    throw new SmeltError(`${op}: indices must have as many axes as x (${x.length}), got shape ${fmt(indices)}`);
  }
  return x.map((d, k) => {
    const i = indices[k]!;
    if (k === ax || d === i || d === 1) return i;
    if (i === 1) return d;
    throw new SmeltError(`${op}: indices of shape ${fmt(indices)} do not broadcast against x of shape ${fmt(x)} on the axes other than ${ax}`);
  });
}

/**
 * out[..., i, ...] = x[..., indices[..., i, ...], ...] along axis (NumPy's take_along_axis): indices
 * has x's number of axes and broadcasts against x on the others. With no axis, both are flattened.
 * Negative indices count from the end; out-of-bounds ones are handled as in take.
 */
export function takeAlongAxis(x: Tensor, indices: Indices, axis?: number): Tensor {
  const op = "takeAlongAxis";
  const n = tensorNode(op, x, "x");
  return composite(() => {
    const src = axis === undefined ? reshape(x, [-1]) : x;
    const ax = axis === undefined ? 0 : normalizeAxis(op, axis, n.shape.length);
    const len = src.shape[ax]!;
    let ids = indexTensor(op, indices, len, ax);
    if (axis === undefined) ids = reshape(ids, [-1]);
    const shape = alongShape(op, src.shape, ids.shape, ax);
    checkNotEmpty(op, len, ax, ids);
    const from = [...shape];
    from[ax] = len;
    const xs = broadcastTo(src, from).node(op);
    return new Tensor(new Node("takeAlong", [xs, broadcastTo(ids, shape).node(op)], shape, src.dtype, { axis: ax }));
  });
}

/**
 * The checked arguments of putAlongAxis and scatterAdd: x (flattened when axis is undefined), the
 * axis, the indices broadcast to their full shape, and the values broadcast to it (as nodes).
 */
function alongArgs(op: string, x: Tensor, n: Node, indices: Indices, values: Tensor | Nested, axis: number | undefined) {
  const src = axis === undefined ? reshape(x, [-1]) : x;
  const ax = axis === undefined ? 0 : normalizeAxis(op, axis, n.shape.length);
  const s = src.shape;
  let ids = indexTensor(op, indices, s[ax]!, ax);
  if (axis === undefined) ids = reshape(ids, [-1]);
  const shape = alongShape(op, s, ids.shape, ax);
  if (shape.some((d, k) => k !== ax && d !== s[k])) {
    throw new SmeltError(`${op}: indices of shape ${fmt(ids.shape)} do not fit x of shape ${fmt(s)} on the axes other than ${ax}`);
  }
  checkNotEmpty(op, s[ax]!, ax, ids);
  const v = values instanceof Tensor ? values : array(values, n.dtype);
  const vshape = broadcastShapes(op, v.shape, shape);
  if (vshape.length !== shape.length || vshape.some((d, k) => d !== shape[k])) {
    throw new SmeltError(`${op}: values of shape ${fmt(v.shape)} cannot be broadcast to the indices' shape ${fmt(shape)}`);
  }
  return { src, ax, ids: broadcastTo(ids, shape).node(op), vals: broadcastTo(v, shape).node(op) };
}

/**
 * A copy of x with values written at indices along axis (NumPy's put_along_axis, without mutating
 * x). indices has x's number of axes, each of its other axes of x's size or 1; values broadcast to
 * indices' shape and are cast to x's dtype. With no axis, x and indices are flattened and the result
 * has x's shape. Of duplicate indices in one line along the axis, the last one along the axis wins,
 * on every backend (one GPU thread writes each line, in order). Negative indices count from the end;
 * out-of-bounds ones are handled as in take.
 */
export function putAlongAxis(x: Tensor, indices: Indices, values: Tensor | Nested, axis?: number): Tensor {
  const op = "putAlongAxis";
  const n = tensorNode(op, x, "x");
  return composite(() => {
    const { src, ax, ids, vals } = alongArgs(op, x, n, indices, values, axis);
    const out = new Tensor(new Node("putAlong", [src.node(op), ids, castNode(vals, n.dtype)], src.shape, n.dtype, { axis: ax }));
    return axis === undefined ? reshape(out, n.shape) : out;
  });
}

/**
 * x plus values added at indices along axis: out[..., indices[..., i, ...], ...] += values[..., i,
 * ...] (PyTorch's scatter_add, NumPy's add.at along one axis). Shapes as in putAlongAxis; values
 * broadcast to the indices' shape. Duplicate indices all add. Float sums accumulate in float32 in
 * the order of the indices along the axis, so results are the same on every backend and every run;
 * integer sums wrap in x's dtype. Negative indices count from the end; out-of-bounds ones are
 * handled as in take. The work is x's size plus the indices' size, however long the axis is.
 */
export function scatterAdd(x: Tensor, indices: Indices, values: Tensor | Nested, axis?: number): Tensor {
  const op = "scatterAdd";
  const n = tensorNode(op, x, "x");
  if (n.dtype === "bool") throw new SmeltError(`${op}: x must be numeric, got dtype bool`);
  return composite(() => {
    const { src, ax, ids, vals } = alongArgs(op, x, n, indices, values, axis);
    const acc: DType = isFloating(n.dtype) ? "float32" : n.dtype;
    const sums = new Node("scatterAdd", [ids, castNode(castNode(vals, n.dtype), acc)], src.shape, acc, { axis: ax });
    const out = add(src, new Tensor(castNode(sums, n.dtype)));
    return axis === undefined ? reshape(out, n.shape) : out;
  });
}
