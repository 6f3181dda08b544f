/**
 * Which nodes a kernel computes itself and which it reads from memory: the fusion rules every
 * planner and emitter share.
 */
import { attrsOf, OPS } from "../../graph/op.ts";
import type { Node } from "../../graph/node.ts";

/**
 * A matmul with a contraction this short is computed inline, as a dot product per element, by the
 * kernel that reads it (LoRA's low-rank product, say); longer ones get a matmul kernel.
 */
export const INLINE_MATMUL_DEPTH = 32;
export function matmulDepth(n: Node): number {
  const a = n.inputs[0]!;
  return a.shape[a.shape.length - 1]!;
}

/** Whether n is computed inside the kernel of a consumer rather than by a kernel of its own. */
export function isInline(n: Node): boolean {
  if (n.data !== null) return false;
  if (n.op === "matmul") return matmulDepth(n) <= INLINE_MATMUL_DEPTH;
  return OPS[n.op].inline;
}

/**
 * Whether the kernel computing `out` reads n from memory: n was computed before this evaluation,
 * or by a kernel that runs before out's in it. A node computed by a later kernel of the same
 * evaluation (for another consumer) is computed by out's kernel inline, like any uncomputed node;
 * out itself has memory already, but its kernel writes it, never reads it.
 */
export function readFromMemory(n: Node, out: Node): boolean {
  return n.data !== null && n !== out && (n.schedOrder < 0 || n.schedOrder < out.schedOrder);
}

/**
 * Whether an inline node reads each input at its own element (elementwise ops, casts); views,
 * reshapes, joins, pads, gathers and inline matmuls read other elements, which matters to the
 * planners that hold a value fixed per row or per element (rows.ts, matmul.ts).
 */
export function readsOwnElement(n: Node): boolean {
  const kind = OPS[n.op].kind;
  return kind === "elementwise" || kind === "cast" || kind === "generator";
}

const isFloatType = (n: Node) => n.dtype === "float32" || n.dtype === "float16" || n.dtype === "bfloat16";

/**
 * Whether an arange computes in integers: an integer dtype with integer start and step (an
 * integer past 2^24 would lose bits in float). Part of the kernel's structure, not its arguments.
 */
export function arangeInInts(n: Node): boolean {
  const { start, step } = attrsOf(n, "arange");
  return !isFloatType(n) && Number.isInteger(start) && Number.isInteger(step);
}
