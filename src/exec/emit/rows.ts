/**
 * The MSL of a row kernel (plan/rows.ts): every reduction of the row folded in turn, each pass
 * able to use the reductions before it and the per-row values they give, then the output. With
 * column partials, a threadgroup does this for each row of its block, and each thread adds its
 * columns into the block's partials as it goes: a thread keeps the same columns on every row, so
 * it alone reads and writes them.
 */
import type { Node } from "../../graph/node.ts";
import { attrsOf } from "../../graph/op.ts";
import { columnPartial, PAIRWISE_BLOCK, type RowPlan, type RowReduceKind } from "../plan/rows.ts";
import { Builder, computeType, finish, type KernelCode, ROW_POSITION, store } from "./builder.ts";

const CHUNK = 256; // elements a CPU thread computes before folding them (1 KiB of floats)
const FOLDS: Record<RowReduceKind, string> = { sum: "smelt_fold_sum", prod: "smelt_fold_prod", max: "smelt_fold_max", min: "smelt_fold_min" };

/** The code of a row kernel: one threadgroup of `threads` threads per row, or per block of rows. */
export function emitRows(plan: RowPlan): KernelCode {
  const { out, also, group: g, rowLength, rows } = plan;
  const b = new Builder(out);
  const len = b.int(rowLength);
  // One thread per row has the row's results itself: no meeting of threads, so no barrier, and a
  // CPU runs the kernel as a plain loop rather than as fibers.
  if (plan.threads > 1) b.line("threadgroup float partial[32];");
  if (g.sums.length === 0) {
    emitRow(b, plan, "int(row)", len);
  } else {
    // Rows of a block in order: the partials' first row stores, the others add.
    const per = b.int(rows / g.blocks);
    b.line(`for (int br = 0; br < ${per}; ++br) {`);
    b.scoped(() => {
      b.line(`int brow = int(row) * ${per} + br;`);
      emitRow(b, plan, "brow", len);
    });
    b.line("}");
  }
  return finish(b, out, ROW_POSITION, plan.dispatch, also);
}

/** The body of one row: its reductions, then its outputs (row is its index, an int expression). */
function emitRow(b: Builder, { out, also, group: g, threads, spill: spilled, steps }: RowPlan, row: string, len: string): void {
  b.line(`int base = ${row} * ${len};`);
  b.rowIndex = { idx: "(base + j)", row, j: "j", shape: g.rowShape, trailing: g.trailing };
  // Each thread's elements j = tid + t * tpg, t < steps (the whole threadgroup covers the row):
  // body() runs in the pass's scope, where loads at the row's index go through rowRegisters.
  const stepped = (body: () => void, fill = true) => {
    b.line(`for (int t = 0; t < ${steps}; ++t) {`);
    b.scoped(() => {
      b.line("int j = int(tid) + t * int(tpg);");
      b.line(`if (j < ${len}) {`);
      b.scoped(() => {
        const r = b.rowRegisters!;
        const outer = r.body;
        r.body = b.currentIndent();
        r.fill = fill;
        body();
        r.body = outer;
      });
      b.line("}");
    });
    b.line("}");
  };
  if (steps) b.rowRegisters = { idx: "(base + j)", steps, body: "", fill: true, ...b.declarations(), arrays: new Map() };
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
        b.fixed.set(v, b.emit(v.inputs[0]!, row));
        pending.splice(i, 1);
      } else i++;
    }
  };
  const serial = threads === 1;
  if (serial) b.line(`float chunk[${CHUNK}];`);
  // The last reduction's pass writes the value the output reads back (RowPlan.spill).
  const last = g.reductions[g.reductions.length - 1];
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
    const Op = FOLDS[attrsOf(r, "reduce").kind as RowReduceKind];
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
    } else if (steps) {
      // One block of at most PAIRWISE_BLOCK elements per thread, in the loop's order: what the
      // loop below computes for such a row, with no pairwise levels to keep.
      const keep = spilled !== null && r === last;
      if (keep) b.line(`float spill[${steps}];`);
      b.line(`float ${acc}_total = ${id};`);
      b.line(`if (int(tid) < ${len}) {`);
      b.scoped(() => {
        b.line(`float block = ${id};`);
        stepped(() => {
          const v = b.emit(r.inputs[0]!, "(base + j)");
          if (keep) b.line(`spill[t] = float(${v});`);
          b.line(`block = ${Op}::combine(block, float(${v}));`);
        });
        b.line(`${acc}_total = ${Op}::combine(block, ${id});`);
      });
      b.line("}");
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
    b.line(serial ? `float ${acc} = ${acc}_total;` : `float ${acc} = smelt_row_fold<${Op}>(${acc}_total, partial, lane, sg, nsg);`);
    return acc;
  };
  for (const r of g.reductions) {
    b.fixed.set(r, `${computeType(r.dtype)}(${fold(r)})`);
    known.add(r);
  }
  hoist();
  if (g.perRow) {
    const v = out.op === "reduce" ? `${computeType(out.dtype)}(${fold(out)})` : b.emit(out, row);
    b.line(`if (tid == 0) out0[${row}] = ${store(out, v)};`);
  } else {
    const outputs = () => {
      if (spilled) {
        const T = computeType(spilled.dtype), s = b.fresh();
        b.line(`${T} ${s} = ${T}(${steps ? "spill[t]" : "out0[base + j]"});`);
        b.bind(spilled, "(base + j)", s);
      }
      [out, ...also].forEach((m, i) => {
        if (!g.sums.includes(m)) return b.line(`out${i}[base + j] = ${store(m, b.emit(m, "(base + j)"))};`);
        const v = b.emit(columnPartial(m)!, "(base + j)");
        const at = `int(row) * ${len} + j`;
        b.line(`out${i}[${at}] = ${store(m, `(br == 0 ? 0.0f : float(out${i}[${at}])) + float(${v})`)};`);
      });
    };
    // The last pass: nothing reads what it loads afterwards.
    if (steps) return stepped(outputs, false);
    b.line(`for (int j = int(tid); j < ${len}; j += ${serial ? "1" : "int(tpg)"}) {`);
    b.scoped(outputs);
    b.line("}");
  }
}
