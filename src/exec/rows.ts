/**
 * Row fusion: a reduction over the trailing axes, its elementwise producers, and the elementwise
 * consumers that broadcast the reduced value back over the same rows, as one kernel with a
 * threadgroup per row. softmax, RMS norm, layer norm, logsumexp and cross-entropy written from
 * primitive ops each become a single kernel this way: every reduction of the row is computed in
 * turn (each pass may use the reductions before it), then the output is written.
 */
import { contiguousStrides, sameShape } from "../graph/shape.ts";
import { Node } from "../graph/node.ts";
import { attrsOf, OPS, type ReduceKind, viewMapOf } from "../graph/op.ts";
import { Builder, computeType, finish, isInline, type KernelPlan, readsOwnElement, storageType, store } from "./codegen.ts";

const CHUNK = 256; // elements a CPU thread computes before folding them (1 KiB of floats)
const PAIRWISE_BLOCK = 32; // strided elements a GPU thread folds in order before a pairwise push
const FOLDS: Partial<Record<ReduceKind, string>> = { sum: "smelt_fold_sum", prod: "smelt_fold_prod", max: "smelt_fold_max", min: "smelt_fold_min" };

/** A reduction over trailing axes that a row kernel can compute: float input, sum/prod/max/min. */
export function isRowReduce(n: Node): boolean {
  if (n.op !== "reduce" || n.data || !FOLDS[attrsOf(n, "reduce").kind]) return false;
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
  return partial;
}

export interface RowGroup {
  rowShape: number[];   // the shape the row passes walk: rows x row length
  trailing: number;     // how many trailing axes make a row
  reductions: Node[];   // in the order they must be computed
  broadcasts: Node[];   // views spreading a per-row value over the row: computed once per row
  perRow: boolean;      // the output has one element per row (else one per row element)
}

/** Every uncomputed reduction reachable from n through inline nodes and through the reductions' own inputs. */
function allReductions(n: Node): Node[] {
  const out: Node[] = [];
  const seen = new Set<Node>();
  const stack = [n];
  while (stack.length) {
    const x = stack.pop()!;
    if (seen.has(x) || (x.data && x !== n)) continue;
    seen.add(x);
    if (x.op === "reduce") out.push(x);
    if (x === n || x.op === "reduce" || isInline(x)) stack.push(...x.inputs);
  }
  return out;
}

/**
 * The row group that computes `out` together with the reductions it reads, or null when they do
 * not line up with rows (they are then computed by kernels of their own first). Inside a group
 * every node is computed either at a row element (index base + j) or once per row (index row):
 * the second kind are nodes with one element per row, which reach the row elements only through
 * a broadcast over the trailing axes.
 */
export function rowGroup(out: Node): RowGroup | null {
  if (!isInline(out) && out.op !== "reduce") return null; // a scan or a scatter has its own kernel
  const reductions = allReductions(out);
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
    if (n.data && n !== out) return true;
    const known = checked.get(n);
    if (known !== undefined) return known;
    let ok: boolean;
    if (n.op === "reduce") {
      ok = rowConstant(n.shape) && visit(n.inputs[0]!, false);
    } else if (n !== out && !isInline(n)) {
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
  const perRow = isPerRow(out.shape) && rowConstant(out.shape);
  if (!perRow && !sameShape(out.shape, rowShape)) return null;
  if (!visit(out, perRow)) return null;
  // Reductions in dependency order: each after the ones its input reads.
  const order: Node[] = [];
  const placed = new Set<Node>();
  const place = (r: Node) => {
    if (placed.has(r)) return;
    placed.add(r);
    for (const d of allReductions(r)) if (d !== r) place(d);
    order.push(r);
  };
  for (const r of reductions) if (r !== out) place(r);
  return { rowShape: [...rowShape], trailing, reductions: order, broadcasts, perRow };
}

/** Whether out's element reads e's element at the same index, through elementwise ops. */
function readsAt(out: Node, e: Node, b: Builder): boolean {
  const seen = new Set<Node>();
  const stack = [out];
  while (stack.length) {
    const x = stack.pop()!;
    if (x === e) return true;
    if (seen.has(x) || b.computed(x) || !readsOwnElement(x)) continue;
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

/** The kernel of a row group: one threadgroup of `threads` threads per row. */
export function rowKernel(out: Node, g: RowGroup, threads: number): KernelPlan {
  const b = new Builder(out);
  const n = rowLength(g.rowShape, g.trailing);
  const rows = g.rowShape.reduce((a, x) => a * x, 1) / n;
  const len = b.int(n);
  b.line("threadgroup float partial[32];");
  b.line(`int base = int(row) * ${len};`);
  b.rowIndex = { idx: "(base + j)", row: "int(row)", j: "j", shape: g.rowShape, trailing: g.trailing };
  // Per-row values (a mean, an rsqrt of a variance) are computed once per row, as soon as the
  // reductions they read are known, instead of at every element.
  const known = new Set<Node>();
  const pending = [...g.broadcasts];
  const group = new Set(g.reductions);
  // The group's reductions a per-row value reads (whatever memory they may have by now).
  const reads = (v: Node): Node[] => {
    const out: Node[] = [];
    const seen = new Set<Node>();
    const stack = [v.inputs[0]!];
    while (stack.length) {
      const x = stack.pop()!;
      if (seen.has(x)) continue;
      seen.add(x);
      if (group.has(x)) out.push(x);
      else if (!b.computed(x)) stack.push(...x.inputs);
    }
    return out;
  };
  const hoist = () => {
    for (let i = 0; i < pending.length; ) {
      const v = pending[i]!;
      if (reads(v).every((r) => known.has(r))) {
        b.fixed.set(v, b.emit(v.inputs[0]!, "int(row)"));
        pending.splice(i, 1);
      } else i++;
    }
  };
  const serial = threads === 1;
  if (serial) b.line(`float chunk[${CHUNK}];`);
  // Where the output reads the last reduction's input at its own element (softmax: e / sum(e),
  // e = exp(x - max)), a CPU thread writes that input to the output in the reduction's pass and
  // reads it back for the output, instead of computing it twice. The output's storage, float,
  // holds any float dtype exactly. (GPU threads recompute it: cheaper there than memory.)
  const last = g.reductions[g.reductions.length - 1];
  const e = last?.inputs[0];
  const spilled = serial && !g.perRow && e && storageType(out.dtype) === "float" && !b.computed(e) && readsAt(out, e, b) ? e : null;
  // A CPU thread's pass over the row: chunks of elements computed into a small array (a loop the
  // compiler vectorizes), each then consumed by use().
  const pass = (f: () => string, use: (v: string) => void, spill = false) => {
    b.line(`for (int j0 = 0; j0 < ${len}; j0 += ${CHUNK}) {`);
    b.scoped(() => {
      b.line(`int n = min(${CHUNK}, ${len} - j0);`);
      b.line("for (int c = 0; c < n; ++c) {");
      b.scoped(() => {
        b.line("int j = j0 + c;");
        b.line(`chunk[c] = float(${f()});`);
        if (spill) b.line("out0[base + j] = chunk[c];");
      });
      b.line("}");
      use("chunk[c]");
    });
    b.line("}");
  };
  // Every fold is pairwise (metal/prelude.metal): a CPU thread pushes its eight lanes at the end of
  // each chunk (smelt_pairwise_push8), a GPU thread the result of each PAIRWISE_BLOCK of its
  // strided elements (smelt_pairwise_push); the threads' results then meet in a tree (smelt_row_fold).
  const fold = (r: Node): string => {
    hoist();
    const acc = b.fresh("acc");
    const Op = FOLDS[attrsOf(r, "reduce").kind]!;
    const id = `${Op}::identity()`;
    if (serial) {
      // Eight running results (independent lanes the compiler can vectorize), pushed as they are
      // at the end of each chunk; the last chunk's elements past a multiple of 8 go to rest.
      b.line(`float ${acc}_level[32 * 8];`);
      b.line(`uint ${acc}_count = 0;`);
      b.line(`float ${acc}_rest = ${id};`);
      pass(
        () => b.emit(r.inputs[0]!, "(base + j)"),
        (v) => {
          b.line(`float lanes[8] = {${Array(8).fill(id).join(", ")}};`);
          b.line("int c = 0;");
          b.line(`for (; c + 8 <= n; c += 8) for (int u = 0; u < 8; ++u) lanes[u] = ${Op}::combine(lanes[u], chunk[c + u]);`);
          b.line(`for (; c < n; ++c) ${acc}_rest = ${Op}::combine(${acc}_rest, ${v});`);
          b.line(`smelt_pairwise_push8<${Op}>(${acc}_level, ${acc}_count, lanes);`);
        },
        spilled !== null && r === last,
      );
      b.line(`float ${acc}_total = ${Op}::combine(smelt_pairwise_total8<${Op}>(${acc}_level, ${acc}_count), ${acc}_rest);`);
    } else {
      b.line(`float ${acc}_level[32];`);
      b.line(`uint ${acc}_count = 0;`);
      b.line(`for (int j0 = int(tid); j0 < ${len}; j0 += int(tpg) * ${PAIRWISE_BLOCK}) {`);
      b.scoped(() => {
        b.line(`float block = ${Op}::identity();`);
        b.line(`for (int j = j0, t = 0; t < ${PAIRWISE_BLOCK} && j < ${len}; ++t, j += int(tpg)) {`);
        b.scoped(() => b.line(`block = ${Op}::combine(block, float(${b.emit(r.inputs[0]!, "(base + j)")}));`));
        b.line("}");
        b.line(`smelt_pairwise_push<${Op}>(${acc}_level, ${acc}_count, block);`);
      });
      b.line("}");
      b.line(`float ${acc}_total = smelt_pairwise_total<${Op}>(${acc}_level, ${acc}_count);`);
    }
    b.line(`float ${acc} = smelt_row_fold<${Op}>(${acc}_total, partial, lane, sg, nsg);`);
    return acc;
  };
  for (const r of g.reductions) {
    b.fixed.set(r, `${computeType(r.dtype)}(${fold(r)})`);
    known.add(r);
  }
  hoist();
  if (g.perRow) {
    const v = out.op === "reduce" ? `${computeType(out.dtype)}(${fold(out)})` : b.emit(out, "int(row)");
    b.line(`if (tid == 0) out0[row] = ${store(out, v)};`);
  } else {
    b.line(`for (int j = int(tid); j < ${len}; j += ${serial ? "1" : "int(tpg)"}) {`);
    b.scoped(() => {
      if (spilled) {
        const T = computeType(spilled.dtype), s = b.fresh();
        b.line(`${T} ${s} = ${T}(out0[base + j]);`);
        b.bind(spilled, "(base + j)", s);
      }
      const v = b.emit(out, "(base + j)");
      b.line(`out0[base + j] = ${store(out, v)};`);
    });
    b.line("}");
  }
  return finish(b, out, rows * threads, threads);
}
