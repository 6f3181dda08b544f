/**
 * Gradient rules: for each op, the cotangent of one input given the cotangent of the node. Every
 * rule is written with the public ops, so the backward pass is an ordinary lazy graph (fused and
 * scheduled like a forward one) and is itself differentiable (grad of grad, jvp as the vjp of a
 * vjp). The table is keyed by Op: an op added to src/graph/op.ts without an entry here is a type
 * error. "none" marks ops whose result carries no gradient to their inputs (comparisons,
 * generators, data, random streams).
 */
import { SmeltError } from "../errors.ts";
import type { Node } from "../graph/node.ts";
import { attrsOf, type Op, viewMapOf } from "../graph/op.ts";
import { contiguousStrides } from "../graph/shape.ts";
import * as ops from "../tensor/ops.ts";
import { pad, putAlongAxis, scatterAdd, takeAlongAxis } from "../tensor/ops-structure.ts";
import { floatWeight, keepFloat } from "../tensor/quantized.ts";
import { Tensor } from "../tensor/tensor.ts";

/** What a rule sees of one node: its inputs and value as tensors, and its cotangent. */
export interface Ctx {
  readonly node: Node;
  /** Input i as a tensor (float32 when the node is a float16/bfloat16 elementwise op). */
  x(i: number): Tensor;
  /** The node's own value, same convention. */
  y(): Tensor;
  /** The cotangent of the node, of its shape. */
  readonly ct: Tensor;
}
/** The cotangent of input i (null: none flows there); the caller casts it to the input's dtype. */
export type Rule = (c: Ctx, i: number) => Tensor | null;

const { add, subtract, multiply, divide, negative, where, equal, greater, less, sum, reshape } = ops;
const zeros = (c: Ctx, i: number) => ops.zerosLike(c.x(i));

/** A full slice on the axes before `axis`, then `item` on it. */
function along(axis: number, item: ops.Scalar | { start?: number | null; stop?: number | null; step?: number | null }): never[] {
  return [...Array.from({ length: axis }, () => ({})), item] as never[];
}
const reverse = (t: Tensor, axis: number) => ops.slice(t, ...along(axis, { step: -1 }));

/** g summed over the axes broadcasting added or stretched from size 1, back to `shape`. */
export function unbroadcast(g: Tensor, shape: readonly number[]): Tensor {
  const lead = g.ndim - shape.length;
  const axes: number[] = [];
  for (let d = 0; d < g.ndim; d++) if (d < lead || (shape[d - lead] === 1 && g.shape[d] !== 1)) axes.push(d);
  if (axes.length === 0 && lead === 0) return g;
  // Only leading axes (a bias or weight gradient summed over rows): the sum has the shape already,
  // and a reshape of a reduction would cost a copy kernel of its own.
  if (axes.every((d) => d < lead)) return sum(g, axes);
  return reshape(sum(g, axes, true), shape);
}

/** The scatter-add of ct at ids along `axis` into a zero tensor of `shape`: the takes' gradient. */
function scatterInto(shape: readonly number[], ids: Tensor, ct: Tensor, axis: number): Tensor {
  return scatterAdd(ops.zeros([...shape], ct.dtype), ids, ct, axis);
}

/**
 * The gradient of a basic-index view (any ranges, steps, integers and new axes over a
 * row-major base): the cotangent spread back over the base with zeros between and around it.
 * The view's map is decoded into, per base axis, the first element and the step: axes of size
 * 1 contribute nothing but the offset, and an axis of stride s with two or more elements can
 * only come from the base axis whose contiguous stride c has c <= |s| < c * size.
 */
function sliceGrad(ct: Tensor, node: Node): Tensor {
  const base = node.inputs[0]!.shape;
  const { strides, offset } = viewMapOf(node);
  if (node.size === 0 || base.includes(0)) return ops.zeros(base, ct.dtype);
  const cs = contiguousStrides(base);
  const first: number[] = base.map(() => 0);
  let rest = offset;
  for (let a = 0; a < base.length; a++) {
    if (base[a] === 1) continue;
    first[a] = Math.floor(rest / cs[a]!);
    rest -= first[a]! * cs[a]!;
  }
  const span: number[] = base.map(() => 1);
  const kept = node.shape.flatMap((d, k) => (d > 1 ? [k] : []));
  let g = reshape(ct, kept.map((k) => node.shape[k]!));
  let prev = -1;
  kept.forEach((k, j) => {
    const s = strides[k]!, count = node.shape[k]!;
    const a = base.findIndex((b, i) => b > 1 && cs[i]! <= Math.abs(s) && Math.abs(s) < cs[i]! * b);
    const step = Math.abs(s) / (cs[a] ?? 1);
    if (a <= prev || !Number.isInteger(step)) throw new Error(`slice gradient: cannot decode the view map [${strides}] over [${base}]`);
    prev = a;
    if (s < 0) {
      g = reverse(g, j);
      first[a] = first[a]! - (count - 1) * step;
    }
    if (step > 1) {
      // Each element followed by step - 1 zeros, the last ones cut.
      const shape = g.shape;
      g = ops.expandDims(g, j + 1);
      g = pad1(g, j + 1, 0, step - 1);
      g = reshape(g, [...shape.slice(0, j), count * step, ...shape.slice(j + 1)]);
      g = ops.slice(g, ...along(j, { stop: (count - 1) * step + 1 }));
    }
    span[a] = (count - 1) * step + 1;
  });
  g = reshape(g, span);
  return pad(g, base.map((b, a) => [first[a]!, b - first[a]! - span[a]!] as [number, number]));
}
function pad1(t: Tensor, axis: number, before: number, after: number): Tensor {
  return pad(t, t.shape.map((_, d) => (d === axis ? [before, after] : [0, 0]) as [number, number]));
}

/** Products of all other elements along the last axis, zeros included: exclusive products from both sides. */
function othersProduct(t: Tensor): Tensor {
  const last = t.ndim - 1;
  const exclusive = (u: Tensor) => ops.slice(ops.cumprod(pad(u, u.shape.map((_, d) => (d === last ? [1, 0] : [0, 0]) as [number, number]), 1), last), "...", { stop: -1 });
  return multiply(exclusive(t), reverse(exclusive(reverse(t, last)), last));
}

function reduceRule(c: Ctx): Tensor | null {
  const { kind, axes } = attrsOf(c.node, "reduce");
  const x = c.x(0);
  const keep = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const ct = reshape(c.ct, keep);
  switch (kind) {
    case "sum":
      return ops.broadcastTo(ct, x.shape);
    case "max":
    case "min": {
      // Ties share the gradient evenly, as PyTorch's amax/amin.
      const hit = ops.astype(equal(x, reshape(c.y(), keep)), x.dtype);
      return divide(multiply(hit, ct), sum(hit, axes, true));
    }
    case "prod": {
      const kept = x.shape.flatMap((_, i) => (axes.includes(i) ? [] : [i]));
      const perm = [...kept, ...axes];
      const inv = perm.map((_, i) => perm.indexOf(i));
      const lines = reshape(ops.transpose(x, perm), [...kept.map((i) => x.shape[i]!), -1]);
      const g = multiply(othersProduct(lines), reshape(c.ct, [...kept.map((i) => x.shape[i]!), 1]));
      return ops.transpose(reshape(g, perm.map((i) => x.shape[i]!)), inv);
    }
    default:
      return null; // argmax, argmin, all, any: integer and bool results
  }
}

function scanRule(c: Ctx): Tensor {
  const { kind, axis } = attrsOf(c.node, "scan");
  const suffix = (t: Tensor) => reverse(ops.cumsum(reverse(t, axis), axis), axis);
  if (kind === "sum") return suffix(c.ct);
  // d y_k / d x_i = y_k / x_i for k >= i while x_i is not zero. At the first zero of a line the
  // products without it are recomputed; past it every product holds that zero.
  const x = c.x(0), y = c.y();
  const zero = equal(x, 0);
  const firstZero = ops.logicalAnd(zero, equal(ops.cumsum(ops.astype(zero, "int32"), axis), 1));
  const regular = divide(suffix(multiply(c.ct, y)), where(zero, 1, x));
  const without = suffix(multiply(c.ct, ops.cumprod(where(firstZero, 1, x), axis)));
  return where(zero, where(firstZero, without, 0), regular);
}

/**
 * A float32 tensor's node as x * s with s a constant (a scalar node, or a view of one): x and s,
 * else null. The backward of s * (x @ A) @ B has such a cotangent.
 */
function scaled(t: Tensor): [Node, number] | null {
  const n = t.node("grad");
  // A computed cotangent (eager mode) costs no kernel to read, and its inputs may be gone.
  if (n.op !== "multiply" || n.data || n.dtype !== "float32") return null;
  const constant = (x: Node): number | null => {
    while (!x.data && (x.op === "broadcast" || x.op === "reshape" || x.op === "expandDims")) x = x.inputs[0]!;
    return x.op === "scalar" && !x.data ? attrsOf(x, "scalar").value : null;
  };
  for (const k of [0, 1]) {
    const s = constant(n.inputs[k]!), x = n.inputs[1 - k]!;
    if (s !== null && x.dtype === "float32" && x.shape.length === n.shape.length) return [x, s];
  }
  return null;
}

function matmulRule(c: Ctx, i: number): Tensor {
  const a = c.x(0), b = c.x(1);
  const t = (u: Tensor) => ops.swapaxes(u, -1, -2);
  // A matmul reads its operands from memory, so a scaled cotangent would be a kernel of its own:
  // the scale goes after the product instead, into the matmul kernel's epilogue.
  const s = scaled(c.ct);
  const ct = s ? new Tensor(s[0]) : c.ct;
  const scale = (p: Tensor) => (s ? multiply(p, s[1]) : p);
  if (i === 0) return unbroadcast(scale(ops.matmul(ct, t(b))), a.shape);
  // A matrix shared by every batch of a (x [.., M, K] @ W [K, N]): its gradient is one product
  // with the batches as more rows of K, not a product per batch summed afterwards.
  if (b.ndim === 2 && a.ndim > 2) {
    const [K, N] = b.shape as [number, number];
    return scale(ops.matmul(t(reshape(a, [-1, K])), reshape(ct, [-1, N])));
  }
  // b a transposed view (attention's keys): its gradient is computed in the layout of what was
  // transposed, ct^T @ a, and handed over as a view, which the permute's rule then undoes; as
  // a^T @ ct it would be written transposed and every later kernel would read it across rows.
  if (transposedView(b)) {
    const bt = [...b.shape.slice(0, -2), b.shape[b.ndim - 1]!, b.shape[b.ndim - 2]!];
    return t(unbroadcast(scale(ops.matmul(t(ct), a)), bt));
  }
  return unbroadcast(scale(ops.matmul(t(a), ct)), b.shape);
}

/** Whether x is an uncomputed view swapping the last two axes of its input. */
function transposedView(x: Tensor): boolean {
  const n = x.node("grad");
  if (n.op !== "permute" || n.data) return false;
  const axes = attrsOf(n, "permute").axes, d = axes.length;
  return d >= 2 && axes.every((p, i) => p === (i === d - 1 ? d - 2 : i === d - 2 ? d - 1 : i));
}

function putAlongRule(c: Ctx, i: number): Tensor | null {
  const { axis } = attrsOf(c.node, "putAlong");
  const ids = c.x(1);
  if (i === 0) return putAlongAxis(c.ct, ids, ops.zeros([], c.ct.dtype), axis);
  if (i === 1) return null;
  // Of duplicate indices on a line the last one along the axis is written: only its value gets the gradient.
  const lane = ops.broadcastTo(reshape(ops.arange(ids.shape[axis]!), ids.shape.map((d, k) => (k === axis ? d : 1))), ids.shape);
  const writer = takeAlongAxis(putAlongAxis(ops.full(c.node.shape, -1, "int32"), ids, lane, axis), ids, axis);
  return where(equal(writer, lane), takeAlongAxis(c.ct, ids, axis), 0);
}

const SQRT_PI = Math.sqrt(Math.PI);

export const RULES: Readonly<Record<Op, Rule | "none">> = {
  negative: (c) => negative(c.ct),
  abs: (c) => multiply(c.ct, ops.sign(c.x(0))),
  // Piecewise constant: zero wherever the derivative exists (PyTorch and MLX alike).
  sign: zeros, floor: zeros, ceil: zeros, round: zeros,
  square: (c) => multiply(c.ct, multiply(c.x(0), 2)),
  sqrt: (c) => divide(multiply(c.ct, 0.5), c.y()),
  rsqrt: (c) => multiply(multiply(c.ct, -0.5), divide(c.y(), c.x(0))),
  exp: (c) => multiply(c.ct, c.y()),
  expm1: (c) => multiply(c.ct, add(c.y(), 1)),
  log: (c) => divide(c.ct, c.x(0)),
  log1p: (c) => divide(c.ct, add(c.x(0), 1)),
  log2: (c) => divide(c.ct, multiply(c.x(0), Math.LN2)),
  log10: (c) => divide(c.ct, multiply(c.x(0), Math.LN10)),
  sin: (c) => multiply(c.ct, ops.cos(c.x(0))),
  cos: (c) => negative(multiply(c.ct, ops.sin(c.x(0)))),
  tan: (c) => multiply(c.ct, add(ops.square(c.y()), 1)),
  tanh: (c) => multiply(c.ct, subtract(1, ops.square(c.y()))),
  sigmoid: (c) => multiply(c.ct, multiply(c.y(), subtract(1, c.y()))),
  erf: (c) => multiply(c.ct, multiply(ops.exp(negative(ops.square(c.x(0)))), 2 / SQRT_PI)),
  erfinv: (c) => multiply(c.ct, multiply(ops.exp(ops.square(c.y())), SQRT_PI / 2)),
  relu: (c) => where(greater(c.x(0), 0), c.ct, 0),
  gelu: (c) => {
    const x = c.x(0);
    const cdf = multiply(add(ops.erf(multiply(x, Math.SQRT1_2)), 1), 0.5);
    const pdf = multiply(ops.exp(multiply(ops.square(x), -0.5)), 1 / Math.sqrt(2 * Math.PI));
    return multiply(c.ct, add(cdf, multiply(x, pdf)));
  },
  geluApprox: (c) => {
    const x = c.x(0), k = Math.sqrt(2 / Math.PI);
    const t = ops.tanh(multiply(add(x, multiply(ops.power(x, 3), 0.044715)), k));
    const du = multiply(add(multiply(ops.square(x), 3 * 0.044715), 1), k);
    return multiply(c.ct, add(multiply(add(t, 1), 0.5), multiply(multiply(x, 0.5), multiply(subtract(1, ops.square(t)), du))));
  },
  silu: (c) => {
    const x = c.x(0), s = ops.sigmoid(x);
    return multiply(c.ct, multiply(s, add(multiply(x, subtract(1, s)), 1)));
  },
  softplus: (c) => multiply(c.ct, ops.sigmoid(c.x(0))),
  nanToNum: (c) => where(ops.logicalOr(ops.isnan(c.x(0)), ops.isinf(c.x(0))), 0, c.ct),
  logicalNot: "none", isnan: "none", isinf: "none",

  add: (c) => c.ct,
  subtract: (c, i) => (i === 0 ? c.ct : negative(c.ct)),
  multiply: (c, i) => multiply(c.ct, c.x(1 - i)),
  divide: (c, i) => (i === 0 ? divide(c.ct, c.x(1)) : negative(divide(multiply(c.ct, c.y()), c.x(1)))),
  floorDivide: zeros,
  remainder: (c, i) => (i === 0 ? c.ct : negative(multiply(c.ct, ops.floorDivide(c.x(0), c.x(1))))),
  power: (c, i) => {
    const a = c.x(0), b = c.x(1);
    // As PyTorch: b = 0 gives no gradient to a (0 * 0^-1 would be NaN); a = 0 with b >= 0 none to b.
    if (i === 0) return where(equal(b, 0), 0, multiply(c.ct, multiply(b, ops.power(a, subtract(b, 1)))));
    return where(ops.logicalAnd(equal(a, 0), ops.greaterEqual(b, 0)), 0, multiply(c.ct, multiply(c.y(), ops.log(a))));
  },
  // Ties split the gradient evenly between the operands (PyTorch).
  maximum: (c, i) => tieRule(c, i, greater),
  minimum: (c, i) => tieRule(c, i, less),
  equal: "none", notEqual: "none", less: "none", lessEqual: "none", greater: "none", greaterEqual: "none",
  logicalAnd: "none", logicalOr: "none",
  where: (c, i) => (i === 0 ? null : i === 1 ? where(c.x(0), c.ct, 0) : where(c.x(0), 0, c.ct)),

  cast: (c) => c.ct, // the walker casts it back to the input's dtype
  scalar: "none", arange: "none", eye: "none", data: "none", random: "none",

  broadcast: (c) => unbroadcast(c.ct, c.node.inputs[0]!.shape),
  permute: (c) => {
    const axes = attrsOf(c.node, "permute").axes;
    // A cotangent that is this very permutation of a product (matmulRule's transposed operand):
    // undone, it is the product itself, not a view of a view read across rows.
    const n = c.ct.node("grad");
    if (n.op === "permute" && !n.data && attrsOf(n, "permute").axes.every((p, i) => p === axes[i])) return new Tensor(n.inputs[0]!);
    return ops.transpose(c.ct, axes.map((_, i) => axes.indexOf(i)));
  },
  slice: (c) => sliceGrad(c.ct, c.node),
  reshape: (c) => reshape(c.ct, c.node.inputs[0]!.shape),
  squeeze: (c) => reshape(c.ct, c.node.inputs[0]!.shape),
  expandDims: (c) => reshape(c.ct, c.node.inputs[0]!.shape),

  concat: (c, i) => {
    const { axis } = attrsOf(c.node, "concat");
    let start = 0;
    for (let k = 0; k < i; k++) start += c.node.inputs[k]!.shape[axis]!;
    return ops.slice(c.ct, ...along(axis, { start, stop: start + c.node.inputs[i]!.shape[axis]! }));
  },
  pad: (c) => {
    const { before } = attrsOf(c.node, "pad");
    const inner = c.node.inputs[0]!.shape;
    return ops.slice(c.ct, ...inner.map((d, a) => ({ start: before[a]!, stop: before[a]! + d })));
  },
  take: (c, i) => {
    if (i === 1) return null;
    const { axis } = attrsOf(c.node, "take");
    const x = c.node.inputs[0]!, ids = c.x(1);
    const lead = x.shape.slice(0, axis), tail = x.shape.slice(axis + 1);
    const flatIds = reshape(ids, [...lead.map(() => 1), ids.size, ...tail.map(() => 1)]);
    return scatterInto(x.shape, flatIds, reshape(c.ct, [...lead, ids.size, ...tail]), axis);
  },
  takeAlong: (c, i) => {
    if (i === 1) return null;
    const { axis } = attrsOf(c.node, "takeAlong");
    return scatterInto(c.node.inputs[0]!.shape, c.x(1), c.ct, axis);
  },

  matmul: matmulRule,
  reduce: (c) => reduceRule(c),
  scan: (c) => scanRule(c),
  putAlong: putAlongRule,
  scatterAdd: (c, i) => (i === 0 ? null : takeAlongAxis(c.ct, c.x(0), attrsOf(c.node, "scatterAdd").axis)),
  // Positions (uint32): sort and topk take their gradient through the takeAlong that reads them.
  argsort: "none",
  // Its input is the uint8 block storage of a quantized weight, which has no gradient.
  dequantize: "none",
  // A cache's in-place write (src/tensor/write.ts): nothing differentiates through a KV cache.
  // The KV cache's in-place write (src/tensor/write.ts): a gradient through it would have to
  // follow values the cache keeps across calls; refusing beats a silent zero for k and v.
  writeSlice: () => {
    throw new SmeltError("grad: writeSlice (the KV cache's in-place write) has no gradient; differentiate a forward pass without a cache");
  },
  // x's cotangent goes through the dequantized weight; the blocks get none.
  quantizedMatmul: (c, i) => {
    if (i === 1) return null;
    const { format } = attrsOf(c.node, "quantizedMatmul"), shape = [c.node.shape.at(-1)!, c.node.inputs[0]!.shape.at(-1)!];
    keepFloat(c.x(1), format, shape);
    const weight = floatWeight(c.x(1), format, shape, c.ct.dtype === "float32" ? { rows: c.ct.shape, transposed: false } : undefined);
    return ops.matmul(c.ct, weight);
  },
};

function tieRule(c: Ctx, i: number, wins: (a: Tensor, b: Tensor) => Tensor): Tensor {
  const self = c.x(i), other = c.x(1 - i);
  return where(wins(self, other), c.ct, where(equal(self, other), multiply(c.ct, 0.5), 0));
}
