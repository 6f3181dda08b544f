/**
 * writeSlice: dst with src written over a range of one axis, in dst's own memory. It is the one
 * op whose result shares its input's buffer: a KV cache grows by a position per decoding step,
 * and writing that position where it belongs costs the position, where a new tensor (concatenate)
 * copies every cached one each step. In return dst is consumed: after the write its memory holds
 * the result, so only the result may be read from then on.
 */
import { SmeltError } from "../errors.ts";
import { memory } from "../exec/memory.ts";
import { itemsize, type DType } from "../graph/dtype.ts";
import { Node } from "../graph/node.ts";
import { contiguousStrides, isRowContiguous } from "../graph/shape.ts";
import { Tensor } from "./tensor.ts";

/**
 * A tensor with memory but no values yet, for writeSlice to fill: allocating it runs no kernel.
 * Reading what no write has filled gives whatever the memory held.
 */
export function unwritten(shape: readonly number[], dtype: DType): Tensor {
  const n = new Node("data", [], [...shape], dtype);
  const storage = memory.allocate(n.size * itemsize(dtype), "writeSlice");
  n.data = { storage, strides: contiguousStrides(n.shape), offset: 0 };
  return new Tensor(n);
}

/**
 * dst (evaluated and contiguous, or another writeSlice's result) with src written at [start, start + src.shape[axis]) of `axis`; src
 * has dst's dtype and its shape on the other axes. The result is dst's memory: dst must not be
 * read again, except through the result.
 */
export function writeSlice(dst: Tensor, src: Tensor, axis: number, start: number): Tensor {
  const op = "writeSlice";
  if (!(dst instanceof Tensor) || !(src instanceof Tensor)) throw new SmeltError(`${op}: dst and src must be Tensors`);
  const d = dst.node(op), s = src.node(op);
  if (!Number.isInteger(axis) || axis < 0 || axis >= d.shape.length) throw new SmeltError(`${op}: axis must be an axis of dst [${d.shape}], got ${axis}`);
  if (s.dtype !== d.dtype) throw new SmeltError(`${op}: src must have dst's dtype ${d.dtype}, got ${s.dtype}`);
  if (s.shape.length !== d.shape.length || s.shape.some((n, i) => i !== axis && n !== d.shape[i]))
    throw new SmeltError(`${op}: src [${s.shape}] must match dst [${d.shape}] on every axis but ${axis}`);
  const span = s.shape[axis]!;
  if (!Number.isSafeInteger(start) || start < 0 || start + span > d.shape[axis]!)
    throw new SmeltError(`${op}: positions [${start}, ${start + span}) of axis ${axis} are outside dst's ${d.shape[axis]}`);
  // The kernel writes the buffer that is dst's memory: it must exist before the evaluation (or be
  // an earlier write's, which is its dst's), and hold dst's elements in order from its start.
  const pendingWrite = d.op === "writeSlice" && !d.data;
  if (!pendingWrite && (!d.data || !d.data.storage.bound || d.data.offset !== 0 || !isRowContiguous(d.shape, d.data.strides)))
    throw new SmeltError(`${op}: dst must be evaluated and contiguous (a tensor of its own, not a view)`);
  return new Tensor(new Node("writeSlice", [d, s], [...d.shape], d.dtype, { axis, start }));
}
