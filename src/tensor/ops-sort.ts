/**
 * Ordering: argsort is a kernel of its own (src/exec/emit/sort.ts, one thread per line along the axis);
 * sort and topk gather through its indices, so the gather fuses into whatever reads them.
 */
import { SmeltError } from "../errors.ts";
import { Node } from "../graph/node.ts";
import { full, reshape, slice, type TensorLike } from "./ops.ts";
import { takeAlongAxis } from "./ops-structure.ts";
import { normalizeAxis } from "../graph/shape.ts";
import { composite, Tensor } from "./tensor.ts";

function asTensor(op: string, x: TensorLike): Tensor {
  if (x instanceof Tensor) return x;
  throw new SmeltError(`${op}: expected a tensor, got ${x === null ? "null" : typeof x}`);
}

/** The tensor and axis an ordering op works on: axis null flattens first (NumPy, MLX). */
function line(op: string, a: TensorLike, axis: number | null): [Tensor, number] {
  const t = asTensor(op, a);
  if (axis === null) return [reshape(t, [-1]), 0];
  if (t.ndim === 0) throw new SmeltError(`${op}: a zero-dimensional tensor has no axis ${axis}; pass axis null`);
  return [t, normalizeAxis(op, axis, t.ndim)];
}

/**
 * The indices (uint32) that sort a along axis, ascending. Stable: equal elements keep their order;
 * NaN sorts after everything, as in NumPy. axis null sorts the flattened tensor.
 */
export function argsort(a: TensorLike, axis: number | null = -1): Tensor {
  return composite(() => {
    const [t, ax] = line("argsort", a, axis);
    if (t.size === 0) return full(t.shape, 0, "uint32");
    const n = t.node("argsort");
    return new Tensor(new Node("argsort", [n], n.shape, "uint32", { axis: ax }));
  });
}

/** a sorted ascending along axis (stable, NaN last); axis null sorts the flattened tensor. */
export function sort(a: TensorLike, axis: number | null = -1): Tensor {
  return composite(() => {
    const [t, ax] = line("sort", a, axis);
    return takeAlongAxis(t, argsort(t, ax), ax);
  });
}

/**
 * The k largest elements along axis, in descending order (MLX leaves them unordered; PyTorch's
 * sorted=True order is given here). NaN counts as the largest; of equal elements the later one
 * comes first. k may be 0 up to the axis length; axis null works on the flattened tensor.
 */
export function topk(a: TensorLike, k: number, axis: number | null = -1): Tensor {
  return composite(() => {
    const [t, ax] = line("topk", a, axis);
    const len = t.shape[ax]!;
    if (typeof k !== "number" || !Number.isInteger(k) || k < 0 || k > len)
      throw new SmeltError(`topk: k must be an integer from 0 to ${len} (the size of axis ${ax}), got ${String(k)}`);
    const lead = Array.from({ length: ax }, () => ({}));
    const last = slice(argsort(t, ax), ...lead, { start: -1, stop: k === len ? null : -k - 1, step: -1 });
    return takeAlongAxis(t, last, ax);
  });
}
