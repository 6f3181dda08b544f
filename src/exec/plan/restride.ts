/**
 * A view's strides over memory that is not row-major: a matmul reads a transpose of a transpose
 * (the backward pass's W from a forward's W^T), or a slice of a slice (attention's keys: the live
 * positions of a KV cache's buffer, with a head axis inserted), in place rather than a kernel
 * copying it.
 */
import { contiguousStrides } from "../../graph/shape.ts";
import { attrsOf } from "../../graph/op.ts";
import type { Node } from "../../graph/node.ts";

/**
 * The strides and offset at which view n reads its base, whose memory is at `strides` and
 * `offset`; null for a view whose index map is over the base's row-major order only (a slice).
 */
export function restrideView(n: Node, strides: readonly number[], offset: number): { strides: number[]; offset: number } | null {
  if (n.op === "permute") return { strides: attrsOf(n, "permute").axes.map((a) => strides[a]!), offset };
  if (n.op === "broadcast") {
    const base = n.inputs[0]!.shape;
    const lead = n.shape.length - base.length;
    return { strides: n.shape.map((_, i) => (i < lead || base[i - lead] === 1 ? 0 : strides[i - lead]!)), offset };
  }
  if (n.op === "slice") return restrideSlice(n.shape, n.inputs[0]!.shape, attrsOf(n, "slice"), strides, offset);
  return null;
}

/**
 * A basic slice's map is over its base's row-major order: each of its axes of more than one
 * element steps along one base axis, by a multiple of that axis's row-major stride smaller than
 * the next one's, and its offset is the row-major index of its first element. Taken apart axis
 * by axis, the same steps go over the base's actual strides.
 */
function restrideSlice(
  shape: readonly number[],
  base: readonly number[],
  map: { strides: readonly number[]; offset: number },
  strides: readonly number[],
  offset: number,
): { strides: number[]; offset: number } | null {
  const rowMajor = contiguousStrides(base);
  let rest = map.offset, at = offset;
  base.forEach((d, j) => {
    if (d === 1) return;
    const i = Math.floor(rest / rowMajor[j]!);
    rest -= i * rowMajor[j]!;
    at += i * strides[j]!;
  });
  if (rest !== 0) return null;
  const out: number[] = [];
  for (let k = 0; k < map.strides.length; k++) {
    const s = map.strides[k]!;
    if (s === 0 || shape[k] === 1) {
      out.push(0);
      continue;
    }
    // The base axis it steps along: the one whose row-major stride is the largest not above |s|.
    let j = -1;
    base.forEach((d, a) => {
      if (d > 1 && rowMajor[a]! <= Math.abs(s) && (j < 0 || rowMajor[a]! > rowMajor[j]!)) j = a;
    });
    if (j < 0 || s % rowMajor[j]! !== 0) return null;
    out.push((s / rowMajor[j]!) * strides[j]!);
  }
  return { strides: out, offset: at };
}
