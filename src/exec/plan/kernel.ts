/**
 * What a kernel is, as plain data: which node it writes, what it computes along the way (a row
 * group, a matmul's epilogue and layout, the kernels packing its operands) and how it is
 * dispatched. Planners (this folder) decide it from the graph and the schedule; an emitter
 * (emit/) writes its text, so a second target differs only there.
 */
import type { Node } from "../../graph/node.ts";
import { attrsOf, type KernelOp, OPS } from "../../graph/op.ts";
import { QUANT_BLOCKS } from "../../graph/quant.ts";
import type { MatmulPlan } from "./matmul.ts";
import { isFloating } from "../../graph/dtype.ts";
import { sameShape } from "../../graph/shape.ts";
import { readFromMemory, readsOwnElement } from "./inline.ts";
import { padSplits, splitOfInput } from "./splits.ts";
import { pendingReductions, type RowPlan } from "./rows.ts";
import type { Target } from "../../runtime/target.ts";

/** dispatchThreads(size) or, with threadgroups, dispatchThreadgroups(size), in groups of `group`. */
export interface Dispatch {
  threadgroups: boolean;
  size: [number, number, number];
  group: [number, number, number];
  /** The kernel needs its whole threadgroup (a row kernel whose threads cover the row in a fixed number of steps). */
  whole?: boolean;
  /**
   * A threadgroup kernel that numbers its threads itself, whatever the SIMD width, and takes any
   * multiple of 32 threads (the dot matmul).
   */
  anyWidth?: boolean;
}

/** A grid of `threads` threads, in threadgroups of up to 256. */
export function threadDispatch(threads: number): Dispatch {
  return { threadgroups: false, size: [threads, 1, 1], group: [Math.max(1, Math.min(256, threads)), 1, 1] };
}

/**
 * A kernel of one thread per element of `out` (elementwise: out and its inline producers; reduce:
 * a loop over the reduced elements), per line along an axis (scan, putAlong, scatterAdd, argsort), or per
 * Threefry block (random, a kernel of metal/random.metal).
 */
export interface PlainPlan {
  kind: "elementwise" | KernelOp;
  out: Node;
  /**
   * Further nodes an elementwise kernel writes (a multi-output kernel): of out's shape, each
   * stored at the thread's element, their shared producers computed once.
   */
  also: readonly Node[];
  /**
   * Elements of out each thread of an elementwise kernel computes: gid, gid + threads, ... or,
   * with `run`, perThread consecutive elements along out's last axis.
   */
  perThread: number;
  run: boolean;
  /**
   * The quantized kernels' layout for a CPU, whose compiler vectorizes a thread's loops:
   * quantizedMatmul over several rows of x sums each row in 16 vector lanes (on a GPU, in one
   * scalar sum: 16 per row would spill its registers), and dequantize gives each thread a whole
   * block (on a GPU, a value, so that neighbouring threads write neighbouring values).
   */
  cpu: boolean;
  dispatch: Dispatch;
}

export type Plan = PlainPlan | RowPlan | MatmulPlan;

/** The lines along `axis` of out's shape: the product of the other axes. */
function lines(out: Node, axis: number): number {
  let p = 1;
  for (let d = 0; d < out.shape.length; d++) if (d !== axis) p *= out.shape[d]!;
  return p;
}

/**
 * Rows of x each quantizedMatmul thread multiplies by its weight row: every weight it
 * dequantizes serves that many rows, and their sums are independent chains. At most 8, and as
 * even as the blocks of rows allow (9 rows: 5 and 4, not 8 and a block of 1 that costs as much).
 */
export function quantRowsPerThread(out: Node): number {
  const rows = out.size / out.shape[out.shape.length - 1]!;
  if (rows <= 1) return 1;
  return Math.ceil(rows / Math.ceil(rows / 8));
}

/** Threads per threadgroup of quantizedMatmul. */
export const QUANT_GROUP = 32;

const threads: Record<PlainPlan["kind"], (out: Node, cpu: boolean) => number> = {
  elementwise: (out) => out.size,
  reduce: (out) => out.size,
  scan: (out) => lines(out, attrsOf(out, "scan").axis),
  argsort: (out) => lines(out, attrsOf(out, "argsort").axis),
  putAlong: (out) => {
    const size = out.shape[attrsOf(out, "putAlong").axis]!;
    return size === 0 ? 0 : out.size / size;
  },
  scatterAdd: (out) => {
    const size = out.shape[attrsOf(out, "scatterAdd").axis]!;
    return size === 0 ? 0 : out.size / size;
  },
  random: (out) => Math.ceil(out.size / 2),
  dequantize: (out, cpu) => (cpu ? out.size / QUANT_BLOCKS[attrsOf(out, "dequantize").format].elements : out.size),
  writeSlice: (out) => out.inputs[1]!.size,
  quantizedMatmul: (out) => {
    const N = out.shape[out.shape.length - 1]!;
    return N === 0 ? 0 : N * Math.ceil(out.size / N / quantRowsPerThread(out));
  },
};

/**
 * The kernel computing `out` (and the nodes `also`, elementwise only) from its inline producers,
 * or out's own kernel (reduce, scan, ...).
 */
export function plainPlan(out: Node, also: readonly Node[] = [], { per: perThread, run }: PerThread = ONE, cpu = false): PlainPlan {
  const kind = OPS[out.op].kind === "kernel" ? (out.op as KernelOp) : finishedSum(out) ? "reduce" : "elementwise";
  const dispatch = threadDispatch(threads[kind](out, cpu) / perThread);
  // A decoding step's matmuls have a few hundred weight rows, a thread each: groups of one SIMD
  // group leave enough of them to spread over every core (the host runs a group on one core).
  if (kind === "quantizedMatmul") dispatch.group[0] = Math.min(dispatch.group[0], QUANT_GROUP);
  return { kind, out, also, perThread, run, cpu, dispatch };
}

/** Whether r is a float sum over leading axes (a weight gradient summed over rows). */
export function isLeadingSum(r: Node): boolean {
  if (r.op !== "reduce") return false;
  const { kind, axes } = attrsOf(r, "reduce");
  const input = r.inputs[0]!;
  return kind === "sum" && isFloating(input.dtype) && axes.length < input.shape.length && axes.every((a, k) => a === k);
}

/**
 * The float sum that elementwise `out` finishes at each of its elements (a weight gradient cast
 * to the weight's dtype, or added to a gradient from before): a sum over leading axes, of out's
 * shape, read through ops at their own element only, and not computed before out's kernel, which
 * is then the sum's kernel, computing out from each sum rather than storing it. Null when out
 * reads no such sum, or another reduction too. Of a sum itself (any reduction), that one.
 */
export function finishedSum(out: Node): Node | null {
  if (out.op === "reduce") return out;
  if (!readsOwnElement(out)) return null;
  let sum: Node | null = null;
  const seen = new Set<Node>();
  const stack = [out];
  while (stack.length) {
    const x = stack.pop()!;
    for (const i of x.inputs) {
      // While scheduling (out has no memory yet) every node with memory is read.
      if (seen.has(i) || (i.data && (!out.data || readFromMemory(i, out)))) continue;
      seen.add(i);
      if (i.op === "reduce") {
        if ((sum && sum !== i) || !isLeadingSum(i) || !sameShape(i.shape, out.shape)) return null;
        sum = i;
      } else if (readsOwnElement(i) && sameShape(i.shape, out.shape)) {
        stack.push(i);
      } else if (pendingReductions(i).length) {
        return null;
      }
    }
  }
  return sum;
}

/** Elements per thread of an elementwise kernel, and whether they are a run along the last axis. */
export interface PerThread {
  per: number;
  run: boolean;
}
export const ONE: PerThread = { per: 1, run: false };

/**
 * Elements per thread of the kernel computing out on target (Target.elementwise): 1 but for large
 * elementwise kernels, and on a CPU for kernels that compute an inline matmul at their own
 * element. Such a thread's elements share the matmul's row of A, loaded once, and read B along
 * the run; one thread per element read both through gathers (indices divided per element).
 */
export function elementsPerThread(target: Pick<Target, "elementwise">, out: Node): PerThread {
  const { perThread, from, run } = target.elementwise;
  const runs = run > 1 && (out.shape[out.shape.length - 1] ?? 1) % run === 0;
  const many = perThread > 1 && out.size >= from && out.size % perThread === 0;
  // An elementwise node that finishes a sum is that sum's kernel, of one thread per element.
  if ((!runs && !many) || OPS[out.op].kind === "kernel" || finishedSum(out)) return ONE;
  if (runs && (inlineMatmulAtElement(out) || runsThroughViews(out, run))) return { per: run, run: true };
  return many ? { per: perThread, run: false } : ONE;
}

/**
 * Whether out's kernel reads something through views or reshapes (attention heads split or
 * merged, the halves rotary embeddings swap, a slice's gradient padded) and, along runs of R,
 * every one of them splits (plan/splits.ts): per element their index math divides, and the CPU's
 * compiler gathers each load; along a run it is affine in the counter. Joins and gathers keep one
 * element per thread.
 */
function runsThroughViews(out: Node, R: number): boolean {
  let views = false;
  const seen = new Map<Node, number[]>();
  const stack: [Node, number][] = [[out, R]];
  while (stack.length) {
    const [n, run] = stack.pop()!;
    const runs = seen.get(n) ?? [];
    if (runs.includes(run)) continue;
    seen.set(n, [...runs, run]);
    if (n !== out && readFromMemory(n, out)) continue;
    const kind = OPS[n.op].kind;
    if (kind === "view" || kind === "reshape") {
      const map = splitOfInput(n, run);
      if (!map) return false;
      views ||= map.kind !== "same" || !sameShape(n.shape, n.inputs[0]!.shape);
      stack.push([n.inputs[0]!, map.run]);
    } else if (n.op === "pad") {
      if (!padSplits(n.shape, attrsOf(n, "pad").before, n.inputs[0]!.shape, run)) return false;
      views = true;
      stack.push([n.inputs[0]!, run]);
    } else if (readsOwnElement(n) || n.op === "matmul" || n.op === "scalar") {
      for (const x of n.inputs) stack.push([x, run]);
    } else if (n !== out) return false;
  }
  return views;
}

/** Whether out's kernel computes an inline matmul of out's shape, reached through elementwise ops and casts. */
function inlineMatmulAtElement(out: Node): boolean {
  const stack = [out];
  const seen = new Set<Node>();
  while (stack.length) {
    const n = stack.pop()!;
    for (const x of n.inputs) {
      if (seen.has(x) || readFromMemory(x, out) || !sameShape(x.shape, out.shape)) continue;
      seen.add(x);
      if (x.op === "matmul") return true;
      if (readsOwnElement(x)) stack.push(x);
    }
  }
  return false;
}
