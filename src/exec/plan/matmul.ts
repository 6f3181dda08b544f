/**
 * Matmul kernels with fused epilogues: the elementwise ops that consume a matmul's output at the
 * same element (bias, scale, activation, residual add, a low-rank product added in) are computed
 * in the matmul kernel as each output element is finished (metal/matmul.metal's epi.store). This
 * decides which node a matmul kernel computes, the product's layout, the kernels packing its
 * operands and the grid of each variant; emit/matmul.ts writes them.
 */
import { SmeltError } from "../../errors.ts";
import type { MatmulLayout } from "../../runtime/target.ts";
import type { Node } from "../../graph/node.ts";
import type { DType } from "../../graph/dtype.ts";
import type { Storage } from "../memory.ts";
import { isInline, matmulDepth, readsOwnElement } from "./inline.ts";
import type { Dispatch } from "./kernel.ts";

/**
 * simd: tiles of simdgroup_matrix products (GPUs with float matrix hardware); block: a block of C
 * per thread in registers (other GPUs); skinny: a SIMD-group per row of C (GPUs, B of 16 columns
 * or fewer); dot: an element per thread (small M); panel
 * (B copied into panels first, into memory the scheduler provides), narrow (the panel kernel's
 * blocks with B read in place, for B of 16 columns or fewer) and column (in place, for small M):
 * for CPUs.
 */
export type MatmulVariant = MatmulLayout | "lanes" | "run";

/**
 * The column variant for few rows, where the operands' layout allows a better one: lanes where A
 * and B both run along k (q kᵀ while decoding), run where B's rows are contiguous (weights times
 * V). Column's 8 rows per thread would be 7 repeats of one, each a sum that waits on every add.
 */
function refineColumn(main: Node, { M, N, K }: MatmulShape): MatmulVariant {
  if (M > 8) return "column";
  const [A, B] = main.inputs as [Node, Node];
  const sa = A.data!.strides, sb = B.data!.strides;
  if (K >= 16 && sa[sa.length - 1] === 1 && sb[sb.length - 2] === 1) return "lanes";
  if (N >= 16 && sb[sb.length - 1] === 1) return "run";
  return "column";
}

/** Uncomputed matmuls too long to inline that n's kernel would read (through inline nodes). */
export function pendingMatmuls(n: Node): Node[] {
  const out: Node[] = [];
  const seen = new Set<Node>();
  const stack = [n];
  while (stack.length) {
    const x = stack.pop()!;
    if (seen.has(x) || x.data) continue;
    seen.add(x);
    if (x.op === "matmul" && !isInline(x)) out.push(x);
    else if (x === n || isInline(x)) stack.push(...x.inputs);
  }
  return out;
}

const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * The matmul whose kernel can compute n as its epilogue: n reads it only element for element
 * (through elementwise ops of the product's shape) and reads no other long matmul.
 */
export function epilogueOf(n: Node): Node | null {
  const mms = pendingMatmuls(n);
  if (mms.length !== 1) return null;
  const main = mms[0]!;
  // A kernel of its own (a reduction, a scan) reads the product at other elements than its own:
  // pendingMatmuls walks into its inputs, but no matmul kernel can compute it.
  if (n !== main && !isInline(n)) return null;
  const reaches = (x: Node): boolean => x === main || (isInline(x) && x.inputs.some(reaches));
  const aligned = (x: Node): boolean => {
    if (x === main || x.data) return true;
    if (!reaches(x)) return true;
    if (!isInline(x) || !readsOwnElement(x) || !same(x.shape, main.shape)) return false;
    return x.inputs.every(aligned);
  };
  return aligned(n) ? main : null;
}

const product = (xs: readonly number[]) => xs.reduce((x, y) => x * y, 1);

/**
 * A matmul's shape as its kernel sees it. When B is one matrix for every batch and A's batches
 * follow each other at its row stride (x [8, 128, 2048] @ W [2048, 2048]), the batches are just
 * more rows of a single product: M grows and no batch axes are left.
 */
export interface MatmulShape {
  M: number;
  N: number;
  K: number;
  /** The batch axes the kernel walks (none when they fold into rows). */
  batchShape: number[];
  batches: number;
  /** Whether A's batches fold into rows of one product. */
  folded: boolean;
}
function layoutOf(main: Node): MatmulShape {
  const [A, B] = main.inputs as [Node, Node];
  const nd = main.shape.length;
  const M = main.shape[nd - 2]!, N = main.shape[nd - 1]!, K = matmulDepth(main);
  const batchShape = main.shape.slice(0, nd - 2);
  const batches = product(batchShape);
  const folds = () => {
    const a = A.data!, r = A.shape.length - 2;
    if (product(A.shape.slice(0, r)) !== batches) return false;
    let next = M * a.strides[r]!;
    for (let d = r - 1; d >= 0; d--) {
      if (A.shape[d] === 1) continue;
      if (a.strides[d] !== next) return false;
      next *= A.shape[d]!;
    }
    return true;
  };
  if (batches > 1 && product(B.shape.slice(0, -2)) === 1 && folds()) return { M: M * batches, N, K, batchShape: [], batches: 1, folded: true };
  return { M, N, K, batchShape, batches, folded: false };
}

/**
 * A second product summed into `main` in out's epilogue: sum = main + scale * (A2 @ B2), as in a
 * LoRA forward x@W + s (x@A) @ B. The panel kernel runs it as K2 more steps of the same register
 * blocks (A2's columns after A's, against scale * B2's rows read in place), instead of a dot
 * product per output element. Only in float32 (the sum is then the same one, in another order),
 * for single matrices or batches that fold into rows, and for a constant scale.
 */
export interface SummedProduct {
  sum: Node;
  product: Node;
  /** The scalar node scaling the second product, or null for 1. */
  scale: Node | null;
}
export function summedProduct(out: Node, main: Node): SummedProduct | null {
  const lm = layoutOf(main);
  if (main.dtype !== "float32" || (lm.batches > 1 && !lm.folded)) return null;
  const fits = (p: Node): boolean => {
    if (p.op !== "matmul" || p.data || !isInline(p) || p.dtype !== "float32" || !same(p.shape, main.shape)) return false;
    if (!p.inputs.every((x) => x.data)) return false;
    const lp = layoutOf(p);
    return lp.M === lm.M && (lp.batches === 1 || lp.folded) && product(p.inputs[1]!.shape.slice(0, -2)) === 1;
  };
  const constant = (x: Node) => (x.op === "scalar" && !x.data ? x : null);
  const term = (t: Node): { product: Node; scale: Node | null } | null => {
    if (fits(t)) return { product: t, scale: null };
    if (t.op !== "multiply" || t.data || t.dtype !== "float32") return null;
    const [p, q] = t.inputs as [Node, Node];
    const c = constant(q) ?? constant(p);
    const m = constant(q) !== null ? p : q;
    return c !== null && fits(m) ? { product: m, scale: c } : null;
  };
  // the add that reads main, among the inline nodes of out's epilogue
  const seen = new Set<Node>();
  const stack = [out];
  while (stack.length) {
    const x = stack.pop()!;
    if (seen.has(x) || x === main || (x !== out && (x.data || !isInline(x)))) continue;
    seen.add(x);
    if (x.op === "add" && x.dtype === "float32") {
      const [p, q] = x.inputs as [Node, Node];
      const t = p === main ? term(q) : q === main ? term(p) : null;
      if (t) return { sum: x, ...t };
    }
    stack.push(...x.inputs);
  }
  return null;
}

/** What the panels of B are kept under beside B's memory (Storage.derive): they depend on its layout there. */
export function panelKey(B: Node): string {
  const d = B.data!;
  return panelKeyOf(B.dtype, d.offset, d.strides, B.shape);
}
export const panelKeyOf = (dtype: DType, offset: number, strides: readonly number[], shape: readonly number[]): string =>
  `panels ${dtype} ${offset} ${strides} ${shape}`;

/** Bytes of the panels the "panel" variant copies B of matmul m into: 16 columns by K floats each, per batch of B. */
export function panelBytes(m: Node): number {
  const { N, K, folded } = layoutOf(m);
  return (folded ? 1 : product(m.inputs[1]!.shape.slice(0, -2))) * Math.ceil(N / 16) * K * 16 * 4;
}

/**
 * Memory of the panel variant: B's panels (to be filled by this evaluation unless they were kept
 * from an earlier one), and the summed product the scheduler found.
 */
export interface Panels {
  b: Storage;
  fill: boolean;
  summed: SummedProduct | null;
  /** The B storage keeping b, when this evaluation fills it for later ones. */
  keeper: Storage | null;
}

/**
 * The kernel copying scale * B (a matmul's second operand, `batches` of it) into the panels in
 * `out`: a thread per 16 rows of one panel of one batch of B.
 */
export interface PackPlan {
  kind: "pack";
  B: Node;
  batches: number;
  N: number;
  /** The scalar node scaling B, or null for 1. */
  scale: Node | null;
  out: Storage;
  dispatch: Dispatch;
}

function planPack(B: Node, batches: number, N: number, scale: Node | null, out: Storage): PackPlan {
  const K = B.shape[B.shape.length - 2]!;
  const count = Math.ceil(N / 16), chunks = Math.ceil(K / 16);
  // Threads take the panels of the same rows one after another (x fastest), reading B's rows in order.
  const dispatch: Dispatch = { threadgroups: false, size: [count, chunks, batches], group: [Math.min(count, 16), Math.min(chunks, 4), 1] };
  return { kind: "pack", B, batches, N, scale, out, dispatch };
}

/** The kernel computing `out` as the epilogue of matmul `main` (out may be main itself). */
export interface MatmulPlan {
  kind: "matmul";
  out: Node;
  main: Node;
  variant: MatmulVariant;
  shape: MatmulShape;
  /** The panel variant's memory; null for the others. */
  panels: Panels | null;
  /** The kernels filling the panels, run before this one. */
  packs: PackPlan[];
  dispatch: Dispatch;
}

/**
 * The block variant's TM (a TM x TM block of C per thread, 256 threads a tile of 16TM x 16TM):
 * 8 where there are tiles of 128 x 128 enough to fill a GPU, else 4, four times as many tiles.
 */
export function blockSize(M: number, N: number, batches: number): 4 | 8 {
  return Math.ceil(M / 128) * Math.ceil(N / 128) * batches >= 64 ? 8 : 4;
}

/** Stretches of K a dot variant's threadgroup splits a column's sum into, at most (32 threads each). */
export const DOT_SPLITS = 8;

/**
 * The dot variant's stretches of K: enough that each thread sums about 64 k or fewer. Its kernel
 * takes as many as its threadgroup has SIMD-sized slices, so a pipeline that allows fewer threads
 * gets fewer (realize.ts fitGroup).
 */
function dotSplits(K: number): number {
  return Math.min(DOT_SPLITS, Math.max(1, Math.ceil(K / 64)));
}

/** Rows of C per threadgroup of the skinny variant (one SIMD-group of 32 threads each). */
export const SKINNY_ROWS = 4;

export function planMatmul(out: Node, main: Node, planned: MatmulVariant, panels: Panels | null): MatmulPlan {
  const shape = layoutOf(main);
  const { M, N, batches, folded } = shape;
  const variant = planned === "column" ? refineColumn(main, shape) : planned;
  const packs: PackPlan[] = [];
  let dispatch: Dispatch;
  if (variant === "simd") {
    dispatch = { threadgroups: true, size: [Math.ceil(N / 32), Math.ceil(M / 32), batches], group: [128, 1, 1] };
  } else if (variant === "block") {
    const tile = 16 * blockSize(M, N, batches);
    dispatch = { threadgroups: true, size: [Math.ceil(N / tile), Math.ceil(M / tile), batches], group: [256, 1, 1] };
  } else if (variant === "dot") {
    dispatch = { threadgroups: true, size: [Math.ceil(N / 32), M, batches], group: [32 * dotSplits(shape.K), 1, 1], anyWidth: true };
  } else if (variant === "skinny") {
    // SKINNY_ROWS SIMD-groups of 32 per threadgroup, a row each; where SIMD-groups are narrower
    // (the host's), the threadgroup has more of them and the rows past M return at once.
    dispatch = { threadgroups: true, size: [Math.ceil(M / SKINNY_ROWS), 1, batches], group: [32 * SKINNY_ROWS, 1, 1] };
  } else if (variant === "panel" || variant === "narrow") {
    if (variant === "panel") {
      if (!panels) throw new SmeltError("eval: internal error: a panel matmul kernel was planned without memory for its panels; please report it");
      const B = main.inputs[1]!;
      if (panels.fill) packs.push(planPack(B, folded ? 1 : product(B.shape.slice(0, -2)), N, null, panels.b));
    }
    // Threads walk down the rows of one panel (x fastest): a threadgroup of 8 x 16 shares 48 rows
    // of A and each panel of B stays in cache while its 8 blocks use it. Threadgroups are what the
    // host spreads over its cores, so a small product gets narrower ones, at least 16 of them.
    const rows = Math.ceil(M / 6), cols = Math.ceil(N / 16);
    const gx = Math.ceil(rows / Math.ceil(rows / 8)); // at most 8, the row groups about equal
    // At most 16 panels, the panel groups about equal too (36 panels as 12, 12 and 12, not 16, 16 and 4).
    let gy = Math.ceil(cols / Math.ceil(cols / 16));
    while (gy > 1 && Math.ceil(rows / gx) * Math.ceil(cols / gy) * batches < 16) gy >>= 1;
    dispatch = { threadgroups: false, size: [rows, cols, batches], group: [gx, gy, 1] };
  } else if (variant === "lanes") {
    dispatch = { threadgroups: false, size: [N, M, batches], group: [Math.min(N, 64), 1, 1] };
  } else if (variant === "run") {
    const runs = Math.ceil(N / 16);
    dispatch = { threadgroups: false, size: [runs, M, batches], group: [Math.min(runs, 16), 1, 1] };
  } else {
    dispatch = { threadgroups: false, size: [N, Math.ceil(M / 8), batches], group: [Math.min(N, 64), 1, 1] };
  }
  if (M === 0 || N === 0 || batches === 0) return { kind: "matmul", out, main, variant, shape, panels, packs: [], dispatch: { threadgroups: false, size: [0, 1, 1], group: [1, 1, 1] } };
  return { kind: "matmul", out, main, variant, shape, panels, packs, dispatch };
}
