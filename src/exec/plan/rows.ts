/**
 * Row fusion: a reduction over the trailing axes, its elementwise producers, and the elementwise
 * consumers that broadcast the reduced value back over the same rows, as one kernel with a
 * threadgroup per row. softmax, RMS norm, layer norm, logsumexp and cross-entropy written from
 * primitive ops each become a single kernel this way: every reduction of the row is computed in
 * turn (each pass may use the reductions before it), then the output is written. This decides
 * the groups and each one's kernel (RowPlan); emit/rows.ts writes it.
 *
 * A row kernel may also write column partial sums (columnPartial): the first stage of a sum over
 * the rows of something it computes at each row element (a norm's weight gradient, the sum of
 * the cotangent times the normalized row). Its threadgroups then take a block of rows each and
 * add each column over the block, so the summed values are never written out, nor read back.
 */
import { isFloating } from "../../graph/dtype.ts";
import { contiguousStrides, sameShape } from "../../graph/shape.ts";
import { Node } from "../../graph/node.ts";
import { attrsOf, OPS, type ReduceKind, viewMapOf } from "../../graph/op.ts";
import { isInline, readFromMemory, readsOwnElement } from "./inline.ts";
import type { Dispatch } from "./kernel.ts";

/** The reductions a row kernel folds (each a pairwise fold of metal/prelude.metal). */
export type RowReduceKind = "sum" | "prod" | "max" | "min";
const ROW_KINDS: Record<ReduceKind, boolean> = { sum: true, prod: true, max: true, min: true, all: false, any: false, argmax: false, argmin: false };

/** A reduction over trailing axes that a row kernel can compute: float input, sum/prod/max/min. */
export function isRowReduce(n: Node): boolean {
  if (n.op !== "reduce" || n.data || !ROW_KINDS[attrsOf(n, "reduce").kind]) return false;
  const input = n.inputs[0]!;
  const nd = input.shape.length;
  const axes = attrsOf(n, "reduce").axes;
  if (!input.dtype.startsWith("float") && input.dtype !== "bfloat16") return false;
  if (axes.length === 0 || nd === 0) return false;
  return axes.every((a, i) => a === nd - axes.length + i) && rowLength(input.shape, axes.length) > 0;
}

function rowLength(shape: readonly number[], trailing: number): number {
  return shape.slice(shape.length - trailing).reduce((a, b) => a * b, 1);
}

/** Uncomputed reductions that n's kernel would have to read (reached through inline nodes). */
export function pendingReductions(n: Node): Node[] {
  const out: Node[] = [];
  const seen = new Set<Node>();
  const stack = [...n.inputs];
  while (stack.length) {
    const x = stack.pop()!;
    if (seen.has(x) || x.data) continue;
    seen.add(x);
    if (x.op === "reduce") out.push(x);
    else if (isInline(x)) stack.push(...x.inputs);
  }
  return out;
}

// A reduction of a single row this long is split in two stages; into at most MAX_PARTS parts.
const SPLIT_ROW = 1 << 16;
const MAX_PARTS = 256;

/**
 * A reduction to a single value over n >= SPLIT_ROW elements, with nothing else to reduce in its
 * input, rewired as two stages: the input is reshaped to [parts, n / parts] and reduced per part
 * (a row kernel of `parts` rows, which a GPU or the host's cores run in parallel), and r then
 * folds the parts. One thread would otherwise walk the whole row. Returns the partials (which
 * must be computed before r), or null when r is not such a reduction or n has no power-of-two
 * divisor of at least 16 to split it by. Partials of float16 and bfloat16 are kept in float32.
 */
export function splitRow(r: Node): Node | null {
  if (!isRowReduce(r)) return null;
  const input = r.inputs[0]!;
  const trailing = attrsOf(r, "reduce").axes.length;
  const n = input.size;
  if (n < SPLIT_ROW || rowLength(input.shape, trailing) !== n) return null;
  if (input.op === "reduce" || pendingReductions(input).length) return null;
  let parts = MAX_PARTS;
  while (parts >= 16 && n % parts !== 0) parts >>= 1;
  if (parts < 16) return null;
  const dtype = input.dtype === "float32" ? r.dtype : "float32";
  const partial = new Node("reduce", [new Node("reshape", [input], [parts, n / parts], input.dtype)], [parts], dtype, { kind: attrsOf(r, "reduce").kind, axes: [1] });
  // The partials along r's first reduced axis (the others 1), so that r's axes stay as they are.
  const first = input.shape.length - trailing;
  r.inputs = [new Node("reshape", [partial], input.shape.map((_, d) => (d === first ? parts : 1)), dtype)];
  input.consumers--; // read by the partials now, not by r
  partial.schedConsumers = partial.inputs[0]!.schedConsumers = r.inputs[0]!.schedConsumers = 1;
  return partial;
}

// A reduction over leading axes of at least this many rows is split in two stages.
const SPLIT_COLUMNS = 1024;

/**
 * A sum over the leading axes of a float input (a weight gradient summed over rows) with at
 * least SPLIT_COLUMNS rows, rewired as two stages: the rows are cut into P parts
 * (P about the square root of the row count, a power of two that divides it), each part's
 * columns reduced by a thread of its own, and r then folds the P partials per column. One thread
 * per column would otherwise walk every row. Returns the partials (to compute before r), or null
 * when r is no such reduction. Partials of float16 and bfloat16 are kept in float32.
 */
export function splitColumns(r: Node): Node | null {
  if (r.op !== "reduce" || r.data) return null;
  const { kind, axes } = attrsOf(r, "reduce");
  const input = r.inputs[0]!;
  // Only sums: the graph stays rewired, and a max's gradient splits among ties per part.
  if (kind !== "sum") return null;
  if (!input.dtype.startsWith("float") && input.dtype !== "bfloat16") return null;
  const k = axes.length;
  if (k === 0 || k === input.shape.length || !axes.every((a, i) => a === i)) return null;
  const rows = input.shape.slice(0, k).reduce((a, b) => a * b, 1);
  if (rows < SPLIT_COLUMNS) return null;
  let parts = 1;
  while (parts * parts < rows) parts *= 2;
  while (parts > 256 || (parts >= 16 && rows % parts !== 0)) parts >>= 1;
  if (parts < 16) return null;
  const rest = input.shape.slice(k);
  const dtype = input.dtype === "float32" ? r.dtype : "float32";
  const split = new Node("reshape", [input], [parts, rows / parts, ...rest], input.dtype);
  const partial = new Node("reduce", [split], [parts, ...rest], dtype, { kind, axes: [1] });
  r.inputs = [new Node("reshape", [partial], [parts, ...Array<number>(k - 1).fill(1), ...rest], dtype)];
  input.consumers--; // read by the partials now, not by r
  split.schedConsumers = partial.schedConsumers = r.inputs[0]!.schedConsumers = 1;
  return partial;
}

/**
 * The node of the row shape whose columns p sums over blocks of rows, when p is a partial of
 * splitColumns (a sum over axis 1 of x reshaped to [blocks, rows per block, ...row]); else null.
 */
export function columnPartial(p: Node): Node | null {
  if (p.op !== "reduce") return null;
  const { kind, axes } = attrsOf(p, "reduce");
  const split = p.inputs[0]!;
  if (kind !== "sum" || axes.length !== 1 || axes[0] !== 1 || split.op !== "reshape" || split.shape.length < 3) return null;
  const x = split.inputs[0]!;
  const row = split.shape.slice(2);
  if (!x.dtype.startsWith("float") && x.dtype !== "bfloat16") return null;
  return row.length < x.shape.length && sameShape(x.shape.slice(x.shape.length - row.length), row) ? x : null;
}

export interface RowGroup {
  rowShape: number[];   // the shape the row passes walk: rows x row length
  trailing: number;     // how many trailing axes make a row
  reductions: Node[];   // in the order they must be computed
  broadcasts: Node[];   // views spreading a per-row value over the row: computed once per row
  perRow: boolean;      // the output has one element per row (else one per row element)
  sums: Node[];         // outputs that are column partials (columnPartial), one row per block
  blocks: number;       // threadgroups: one per block of rows (the rows, without sums)
}

/**
 * Every uncomputed reduction reachable from n through inline nodes and through the reductions' own
 * inputs, and through `outs` (the outputs of one kernel, which have memory already).
 */
function allReductions(n: Node, outs: ReadonlySet<Node> = new Set()): Node[] {
  const out: Node[] = [];
  const seen = new Set<Node>();
  const stack = [n];
  while (stack.length) {
    const x = stack.pop()!;
    const own = x === n || outs.has(x);
    if (seen.has(x) || (x.data && !own)) continue;
    seen.add(x);
    if (x.op === "reduce") out.push(x);
    if (own || x.op === "reduce" || isInline(x)) stack.push(...x.inputs);
  }
  return out;
}

/**
 * The row group that computes `out` (and the nodes `also`, outputs of out's shape that the same
 * kernel writes) together with the reductions they read, or null when they do not line up with
 * rows (they are then computed by kernels of their own first). Inside a group every node is
 * computed either at a row element (index base + j) or once per row (index row): the second kind
 * are nodes with one element per row, which reach the row elements only through a broadcast over
 * the trailing axes.
 */
export function rowGroup(out: Node, also: readonly Node[] = []): RowGroup | null {
  // A scan or a scatter has its own kernel. (Outputs merged once scheduled have memory already.)
  if (out.op !== "reduce" && !(out.data ? OPS[out.op].inline : isInline(out))) return null;
  const outs = new Set([out, ...also]);
  // Column partials: the kernel computes what they sum (read from memory if computed before).
  const summed = new Map<Node, Node>();
  for (const o of outs) {
    const x = columnPartial(o);
    if (x) summed.set(o, x);
  }
  const elementOuts = [...outs].filter((o) => !summed.has(o));
  const computes = [...elementOuts, ...[...summed.values()].filter((x) => outs.has(x) || !readFromMemory(x, out))];
  const reductions = [...new Set(computes.flatMap((o) => allReductions(o, outs)))];
  if (reductions.length === 0 || !reductions.every(isRowReduce)) return null;
  const first = reductions[0]!;
  const rowShape = first.inputs[0]!.shape;
  const trailing = attrsOf(first, "reduce").axes.length;
  if (!reductions.every((r) => sameShape(r.inputs[0]!.shape, rowShape) && attrsOf(r, "reduce").axes.length === trailing)) return null;
  const elements = rowShape.reduce((a, b) => a * b, 1);
  const rows = elements / rowLength(rowShape, trailing);
  const isPerRow = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1) === rows;
  // A shape with one element per row that lines up with the rows: the leading axes, then ones.
  const rowConstant = (shape: readonly number[]) =>
    isPerRow(shape) &&
    (shape.length === rowShape.length - trailing
      ? sameShape(shape, rowShape.slice(0, rowShape.length - trailing))
      : shape.length === rowShape.length && shape.every((d, i) => (i < rowShape.length - trailing ? d === rowShape[i] : d === 1)));
  const checked = new Map<Node, boolean>();
  const broadcasts: Node[] = [];
  const visit = (n: Node, perRow: boolean): boolean => {
    // Read from memory. Once out has its place (merging kernels), a node that a later kernel
    // writes is computed here too, as the emitter will.
    if (n.data && !outs.has(n) && (out.schedOrder < 0 || n.schedOrder < out.schedOrder)) return true;
    const known = checked.get(n);
    if (known !== undefined) return known;
    let ok: boolean;
    if (n.op === "reduce") {
      ok = rowConstant(n.shape) && visit(n.inputs[0]!, false);
    } else if (!outs.has(n) && !isInline(n)) {
      ok = false;
    } else if (perRow ? !rowConstant(n.shape) : !sameShape(n.shape, rowShape) && OPS[n.op].kind !== "reshape") {
      ok = false;
    } else if (OPS[n.op].kind === "reshape") {
      const i = n.inputs[0]!;
      ok = perRow ? rowConstant(i.shape) && visit(i, true) : sameShape(i.shape, rowShape) ? visit(i, false) : noReductions(i);
    } else if (OPS[n.op].kind === "view") {
      if (!perRow && isRowBroadcast(n, rowShape, trailing)) {
        ok = visit(n.inputs[0]!, true);
        broadcasts.push(n);
      } else {
        ok = noReductions(n);
      }
    } else if (!readsOwnElement(n)) {
      ok = noReductions(n); // other elements than its own: a row value would be the wrong row's
    } else {
      ok = n.inputs.every((i) => visit(i, perRow));
    }
    checked.set(n, ok);
    return ok;
  };
  const [main, ...others] = elementOuts;
  const perRow = main !== undefined && isPerRow(main.shape) && rowConstant(main.shape);
  if (main && !perRow && !sameShape(main.shape, rowShape)) return null;
  if (main && !visit(main, perRow)) return null;
  if ((others.length || summed.size) && perRow) return null;
  if (!others.every((m) => sameShape(m.shape, rowShape) && visit(m, false))) return null;
  // Every partial sums blocks of the same rows, read at the row's elements.
  let blocks = rows;
  for (const [p, x] of summed) {
    if (blocks !== rows && p.shape[0] !== blocks) return null;
    blocks = p.shape[0]!;
    if (!sameShape(x.shape, rowShape) || p.shape.length - 1 !== trailing || !visit(x, false)) return null;
  }
  // Reductions in dependency order: each after the ones its input reads.
  const order: Node[] = [];
  const placed = new Set<Node>();
  const place = (r: Node) => {
    if (placed.has(r)) return;
    placed.add(r);
    for (const d of allReductions(r, outs)) if (d !== r) place(d);
    order.push(r);
  };
  for (const r of reductions) if (!outs.has(r)) place(r);
  return { rowShape: [...rowShape], trailing, reductions: order, broadcasts, perRow, sums: [...summed.keys()], blocks };
}

/** Whether out's element reads e's element at the same index, through elementwise ops. */
function readsAt(out: Node, e: Node): boolean {
  const seen = new Set<Node>();
  const stack = [out];
  while (stack.length) {
    const x = stack.pop()!;
    if (x === e) return true;
    if (seen.has(x) || readFromMemory(x, out) || !readsOwnElement(x)) continue;
    seen.add(x);
    stack.push(...x.inputs);
  }
  return false;
}

function noReductions(n: Node): boolean {
  return pendingReductions(n).length === 0 && !(n.op === "reduce" && !n.data);
}

/** A view that spreads one value per row over the row's elements (keepdims, then broadcast). */
function isRowBroadcast(v: Node, rowShape: readonly number[], trailing: number): boolean {
  const map = viewMapOf(v);
  if (!sameShape(v.shape, rowShape) || map.offset !== 0) return false;
  const src = v.inputs[0]!;
  if (src.shape.length !== rowShape.length) return false;
  const cs = contiguousStrides(src.shape);
  const strides = map.strides;
  return rowShape.every((d, i) =>
    i >= rowShape.length - trailing ? src.shape[i] === 1 && (strides[i] === 0 || d === 1) : src.shape[i] === d && (strides[i] === cs[i] || d === 1),
  );
}

/** The kernel of a row group: a threadgroup of `threads` threads per row, or per block of rows. */
export interface RowPlan {
  kind: "rows";
  out: Node;
  /** Further nodes of the row's shape the kernel writes (a multi-output kernel), out1, out2... */
  also: readonly Node[];
  group: RowGroup;
  threads: number;
  /** Elements per row, and rows. */
  rowLength: number;
  rows: number;
  /**
   * The last reduction's input that out reads at its own element (softmax: e / sum(e), e =
   * exp(x - max)), computed once: a CPU thread (threads 1) writes it to the output in the
   * reduction's pass and reads it back for the output (the output's storage, float32, holds any
   * float dtype exactly); GPU threads with steps keep it in registers. Null where neither applies
   * (a GPU thread looping over its row recomputes it: cheaper there than memory).
   */
  spill: Node | null;
  /**
   * GPU threads (threads > 1) that cover the row in this many steps each, at most maxSteps: each
   * thread keeps the row elements it loads in registers for the later passes, which then read no
   * memory, and its loads are issued together, not one per loop trip. 0: a loop over the row.
   */
  steps: number;
  dispatch: Dispatch;
}

/**
 * Strided elements a GPU thread folds in order before a pairwise push (emit/rows.ts). Steps stay
 * within one such block, so a thread folds them exactly as the loop over the row does.
 */
export const PAIRWISE_BLOCK = 32;

/** The row kernel's plan, with at most maxSteps (and PAIRWISE_BLOCK) steps per thread (RowPlan.steps; 0: the loop). */
export function planRows(out: Node, group: RowGroup, threads: number, also: readonly Node[] = [], maxSteps = 0): RowPlan {
  const n = rowLength(group.rowShape, group.trailing);
  const rows = group.rowShape.reduce((a, x) => a * x, 1) / n;
  const e = group.reductions[group.reductions.length - 1]?.inputs[0];
  // A block of rows per threadgroup (column partials) keeps the loop.
  const steps = threads > 1 && group.sums.length === 0 && Math.ceil(n / threads) <= Math.min(maxSteps, PAIRWISE_BLOCK) ? Math.ceil(n / threads) : 0;
  const shared = !group.perRow && !group.sums.includes(out) && e && !readFromMemory(e, out) && readsAt(out, e);
  const spill = shared && ((threads === 1 && out.dtype === "float32") || (steps > 0 && isFloating(e.dtype))) ? e : null;
  const dispatch: Dispatch = { threadgroups: true, size: [group.blocks, 1, 1], group: [threads, 1, 1], ...(steps ? { whole: true } : {}) };
  return { kind: "rows", out, also, group, threads, rowLength: n, rows, spill, steps, dispatch };
}
