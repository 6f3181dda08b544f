/**
 * Ops of MLX's core set built from other ops: triangular masks, flips and rolls (views and joins),
 * closeness tests and the reciprocal. Each checks its own arguments, so errors name it.
 */
import { SmeltError } from "../errors.ts";
import { isFloating, promoteTypes } from "../graph/dtype.ts";
import {
  abs, add, all, arange, astype, divide, equal, full, isinf, isnan, lessEqual, logicalAnd, logicalNot, logicalOr,
  multiply, reshape, slice, subtract, where, type TensorLike,
} from "./ops.ts";
import { concatenate } from "./ops-structure.ts";
import { normalizeAxes, normalizeAxis } from "../graph/shape.ts";
import { composite, Tensor } from "./tensor.ts";

function tensorArg(op: string, x: unknown, what = "x"): Tensor {
  if (x instanceof Tensor) return x;
  throw new SmeltError(`${op}: ${what} must be a Tensor, got ${x === null ? "null" : typeof x}`);
}
function intArg(op: string, v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v)) throw new SmeltError(`${op}: ${what} must be an integer, got ${String(v)}`);
  return v;
}

/** Keeps the elements of the last two axes where (column - row) compares with k; zeros elsewhere. */
function triangle(op: "tril" | "triu", x: Tensor, k: number): Tensor {
  return composite(() => {
    const t = tensorArg(op, x);
    intArg(op, k, "k");
    if (t.ndim < 2) throw new SmeltError(`${op}: x must have at least 2 axes, got shape [${t.shape}]`);
    const [rows, cols] = t.shape.slice(-2) as [number, number];
    const offset = subtract(reshape(arange(cols), [1, cols]), reshape(arange(rows), [rows, 1]));
    const keep = op === "tril" ? lessEqual(offset, k) : lessEqual(k, offset);
    return where(keep, t, full([], 0, t.dtype));
  });
}
/** The lower triangle of the last two axes: elements on and below diagonal k (k > 0 above the main one). */
export const tril = (x: Tensor, k = 0) => triangle("tril", x, k);
/** The upper triangle of the last two axes: elements on and above diagonal k. */
export const triu = (x: Tensor, k = 0) => triangle("triu", x, k);

/** x reversed along the given axes (all when none are given), as NumPy's flip; a view. */
export function flip(x: Tensor, axes?: number | readonly number[] | null): Tensor {
  return composite(() => {
    const t = tensorArg("flip", x);
    const ax = normalizeAxes("flip", axes, t.ndim);
    return slice(t, ...t.shape.map((_, d) => (ax.includes(d) ? { step: -1 } : {})));
  });
}

/**
 * Elements shifted by shift places along axis, those pushed off the end coming back at the start
 * (NumPy's roll). shift and axis may be arrays of the same length; with no axis the tensor is
 * flattened, rolled and given its shape back.
 */
export function roll(x: Tensor, shift: number | readonly number[], axis?: number | readonly number[]): Tensor {
  return composite(() => {
    const op = "roll";
    const t = tensorArg(op, x);
    const shifts = typeof shift === "number" ? [shift] : Array.isArray(shift) ? [...shift] : null;
    if (!shifts || shifts.length === 0) throw new SmeltError(`${op}: shift must be an integer or a non-empty array of integers, got ${String(shift)}`);
    shifts.forEach((s, i) => intArg(op, s, `shift[${i}]`));
    if (axis === undefined) {
      if (shifts.length !== 1) throw new SmeltError(`${op}: without an axis, shift must be one integer, got ${shifts.length}`);
      return reshape(roll(reshape(t, [-1]), shifts[0]!, 0), t.shape);
    }
    const axes = typeof axis === "number" ? [axis] : [...axis];
    if (axes.length !== shifts.length && shifts.length !== 1)
      throw new SmeltError(`${op}: shift and axis must have the same length, got ${shifts.length} and ${axes.length}`);
    let r = t;
    axes.forEach((a, i) => {
      const d = normalizeAxis(op, a, t.ndim);
      const n = t.shape[d]!;
      const s = n === 0 ? 0 : ((shifts[shifts.length === 1 ? 0 : i]! % n) + n) % n;
      if (s === 0) return;
      const lead = Array.from({ length: d }, () => ({}));
      r = concatenate([slice(r, ...lead, { start: n - s }), slice(r, ...lead, { stop: n - s })], d);
    });
    return r;
  });
}

/**
 * Elementwise |a - b| <= atol + rtol * |b| (NumPy's and MLX's isclose, not symmetric in a and b),
 * computed in float32 (or the operands' float type); infinities are close only to themselves and
 * NaN to nothing unless equalNan.
 */
export function isclose(a: TensorLike, b: TensorLike, rtol = 1e-5, atol = 1e-8, equalNan = false): Tensor {
  return composite(() => {
    const op = "isclose";
    for (const [v, what] of [[rtol, "rtol"], [atol, "atol"]] as const)
      if (typeof v !== "number" || !(v >= 0)) throw new SmeltError(`${op}: ${what} must be a non-negative number, got ${String(v)}`);
    const dt = (x: TensorLike) => (x instanceof Tensor ? x.dtype : "float32");
    if (!(a instanceof Tensor) && !(b instanceof Tensor)) throw new SmeltError(`${op}: at least one of a and b must be a Tensor`);
    const common = promoteTypes(dt(a), dt(b));
    const f = isFloating(common) ? common : "float32";
    const x = a instanceof Tensor ? astype(a, f) : a;
    const y = b instanceof Tensor ? astype(b, f) : b;
    const finite = (v: TensorLike) => logicalNot(logicalOr(isnan(v), isinf(v)));
    const near = lessEqual(abs(subtract(x, y)), add(multiply(abs(y), rtol), atol));
    let close = logicalOr(equal(x, y), logicalAnd(logicalAnd(finite(x), finite(y)), near));
    if (equalNan) close = logicalOr(close, logicalAnd(isnan(x), isnan(y)));
    return close;
  });
}

/** Whether every element of a is close to b (isclose), as a bool scalar tensor, as MLX's allclose. */
export function allclose(a: TensorLike, b: TensorLike, rtol = 1e-5, atol = 1e-8, equalNan = false): Tensor {
  return composite(() => {
    return all(isclose(a, b, rtol, atol, equalNan));
  });
}

/** 1 / x; integer and bool inputs give float32, as divide does. */
export function reciprocal(x: TensorLike): Tensor {
  if (!(x instanceof Tensor) && typeof x !== "number") throw new SmeltError(`reciprocal: expected a tensor or a number, got ${typeof x}`);
  return divide(1, x);
}
