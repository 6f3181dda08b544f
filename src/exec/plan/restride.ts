/**
 * A view's strides over memory that is not row-major: a matmul reads a transpose of a transpose
 * (the backward pass's W from a forward's W^T) in place, rather than a kernel copying it.
 */
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
  return null;
}
