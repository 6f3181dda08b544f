/**
 * Index splits through views. A kernel that knows its element's flat index as a row and a
 * position j along the last axis (a run of elements, a matmul's epilogue) can often know the
 * element it reads of a view's or reshape's input the same way: the input's row then depends on
 * the row alone (computed once per run) and its position is j plus a constant, so loads along a
 * run are consecutive rather than divided out element by element. These are the rules, as pure
 * functions of shapes, shared by the planner (whether a kernel's reads all split: plan/kernel.ts)
 * and the code that emits them (emit/builder.ts).
 *
 * `run` is the length of the runs j moves in (j = base + e, base a multiple of run, 0 <= e <
 * run), or 0 where j is any position: some maps need runs that never cross an input row.
 */
import type { Node } from "../../graph/node.ts";
import { OPS, viewMapOf } from "../../graph/op.ts";

/** How the split (row, j) of an element maps onto its input's, and the input's run length. */
export type SplitMap =
  /** Input rows as long as the output's: the same row and position. */
  | { kind: "same"; run: number }
  /** Input rows `factor` output rows long: row / factor, position (row % factor) * width + j. */
  | { kind: "fold"; factor: number; width: number; run: number }
  /** Output rows `factor` input rows long (runs needed): row * factor + base / width, position base % width + e. */
  | { kind: "unfold"; factor: number; width: number; run: number }
  /** A view moving whole input rows: rowOffset + sum of the output's row indices times rowStrides, position shift + j. */
  | { kind: "view"; rowStrides: number[]; rowOffset: number; shift: number; run: number };

const last = (shape: readonly number[]) => shape[shape.length - 1]!;

/** The split map of a reshape from shape `input` to `out`, or null. */
export function reshapeSplit(out: readonly number[], input: readonly number[], run: number): SplitMap | null {
  if (!out.length || !input.length) return null;
  const lo = last(out), li = last(input);
  if (lo === 0 || li === 0) return null;
  if (li === lo) return { kind: "same", run };
  if (li % lo === 0) return { kind: "fold", factor: li / lo, width: lo, run: run && lo % run === 0 ? run : 0 };
  if (lo % li === 0 && run && li % run === 0) return { kind: "unfold", factor: lo / li, width: li, run };
  return null;
}

/**
 * The split map of a strided view (permute, slice, broadcast) of shape `out` over `input`: the
 * view must keep the last axis at unit stride inside one input row and move whole input rows
 * along the other axes.
 */
export function viewSplit(out: readonly number[], map: { strides: readonly number[]; offset: number }, input: readonly number[], run: number): SplitMap | null {
  if (!out.length || !input.length) return null;
  const li = last(input), d = out.length - 1;
  if (map.strides[d] !== 1 || li === 0) return null;
  const shift = ((map.offset % li) + li) % li;
  if (shift + out[d]! > li) return null;
  const rowStrides: number[] = [];
  for (let k = 0; k < d; k++) {
    const s = out[k] === 1 ? 0 : map.strides[k]!;
    if (s % li !== 0) return null;
    rowStrides.push(s / li);
  }
  return { kind: "view", rowStrides, rowOffset: (map.offset - shift) / li, shift, run: run && shift % run === 0 ? run : 0 };
}

/**
 * Whether a constant pad (attrs.before per axis) of `input` to shape `out` keeps runs whole: the
 * padding along the last axis a multiple of the run, so each run is all padding or all input,
 * and the input's row is found from the output's row alone (the reads of the gradient of a slice).
 */
export function padSplits(out: readonly number[], before: readonly number[], input: readonly number[], run: number): boolean {
  if (!out.length || !run) return false;
  const li = last(input);
  return li > 0 && li % run === 0 && before[out.length - 1]! % run === 0;
}

/** The split map from view or reshape n to its input, or null; n must be one. */
export function splitOfInput(n: Node, run: number): SplitMap | null {
  const x = n.inputs[0]!;
  return OPS[n.op].kind === "view" ? viewSplit(n.shape, viewMapOf(n), x.shape, run) : reshapeSplit(n.shape, x.shape, run);
}
