/**
 * MSL for a group of graph nodes. Every kernel writes one output node; the nodes it computes
 * inline (elementwise ops, casts, generators, views) are emitted as expressions evaluated at the
 * output element's index, and computed nodes are loaded from their storage with index math.
 *
 * Nothing that changes between runs of the same graph shape appears in the source: shapes,
 * strides, offsets and scalars are read from the constant array P, so the source is the key of
 * the kernel cache and a training loop compiles each kernel once.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { SmeltError } from "../../errors.ts";
import { type DType, isFloating, isSigned } from "../../graph/dtype.ts";
import { contiguousStrides, sameShape } from "../../graph/shape.ts";
import type { Data, Node } from "../../graph/node.ts";
import { attrsOf, type ElementwiseOp, OPS, viewMapOf } from "../../graph/op.ts";
import { arangeInInts, matmulDepth, readFromMemory } from "../plan/inline.ts";
import { padSplits, splitOfInput } from "../plan/splits.ts";
import type { Dispatch } from "../plan/kernel.ts";
import type { Storage } from "../memory.ts";
import { elementwise, type Value } from "./elementwise.ts";

export const prelude = readFileSync(join(import.meta.dir, "../../../metal/prelude.metal"), "utf8");

const isFloatType = (d: DType) => d === "float32" || d === "float16" || d === "bfloat16";

/** The MSL type a dtype computes in, and the one its storage holds. */
export function computeType(d: DType): string {
  switch (d) {
    case "float32": return "float";
    case "float16": return "half";
    case "bfloat16": return "bfloat";
    case "int32": return "int";
    case "uint32": return "uint";
    case "int8": return "char";
    case "uint8": return "uchar";
    case "bool": return "bool";
  }
}

export function storageType(d: DType): string {
  return d === "bool" ? "uchar" : computeType(d);
}

/** A parameter holding a node's scalar attribute (OpInfo.scalars): which node, which value, as float or int. */
export interface ScalarArg {
  node: Node;
  attr: string;
  /** Position within an array attribute (nanToNum's), else 0. */
  index: number;
  slot: number;
  float: boolean;
}

/** A parameter holding a node's scalar attribute: the value at `place` among them (plans.ts scalarAt). */
export interface Bind {
  slot: number;
  node: Node;
  place: number;
  float: boolean;
}

/** The bytes of parameters (P) one dispatch may take: Metal's limit for setBytes. */
export const MAX_PARAM_BYTES = 4096;

/** An emitted kernel: its text and what it binds, ready to encode. */
export interface KernelCode {
  /** The kernel's MSL after the prelude (which every kernel gets): its structure, and cache key. */
  source: string;
  params: Uint32Array;
  /** The parameters that are nodes' scalar attributes, for a plan kept across evaluations to take new values. */
  args?: ScalarArg[];
  inputs: Data[];    // [[buffer(2 + i)]]
  /** A multi-output kernel's further outputs out1, out2..., in the slots after the inputs. */
  outputs?: Data[];
  dispatch: Dispatch;
  /** Kernels to run first, each writing its `out` (scratch memory this kernel reads): a matmul's packed operands. */
  packs?: { code: KernelCode; out: Storage }[];
  /**
   * Set on code that plans.ts keeps: every parameter that holds a scalar of this evaluation's
   * nodes, so that the code is the kept code with these bound (what a kept schedule replays).
   */
  binds?: Bind[];
  /**
   * A kernel of a library in metal/ (source is the library) rather than a generated one: the
   * function to run, bound as (key, out, params); the key is these words, or else inputs[0].
   */
  library?: { entry: string; key: Uint32Array | null };
}

interface Memo {
  idx: string;
  v: string;
  next: Memo | undefined;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * A flat index idx over shape split into its row (the leading axes) and its position j along the
 * trailing ones; run, where j moves in runs: j = base + e, base a multiple of length, 0 <= e < length.
 */
export interface RowSplit {
  idx: string;
  row: string;
  j: string;
  shape: readonly number[];
  trailing: number;
  run?: { base: string; e: string; length: number };
}

export class Builder {
  readonly params: number[] = [];
  readonly args: ScalarArg[] = [];
  /** The node the kernel computes: it has memory already, but the kernel writes it, never reads it. */
  constructor(private readonly root: Node) {}

  /** Whether this kernel reads n from memory (plan/inline.ts readFromMemory). */
  computed(n: Node): boolean {
    return readFromMemory(n, this.root);
  }
  readonly leaves: Node[] = [];
  private lines: string[] = [];
  private vars = 0;
  /** The values computed so far: per node, its (index, variable) pairs, newest first. */
  private memo = new Map<Node, Memo>();
  /** The divisions of indices done so far, by "index/divisor": views of one shape over one index share them. */
  private divisions = new Map<string, [q: string, r: string]>();
  private indent = "  ";

  int(v: number): string {
    this.params.push(v | 0);
    return `int(P[${this.params.length - 1}])`;
  }
  float(v: number): string {
    f32[0] = v;
    this.params.push(u32[0]!);
    return `as_type<float>(P[${this.params.length - 1}])`;
  }
  /** A parameter holding scalar attribute attr (element index of an array one) of node n. */
  arg(n: Node, attr: string, index = 0, float: boolean): string {
    const a = (n.attrs as Record<string, number | number[]>)[attr]!;
    const v = typeof a === "number" ? a : a[index]!;
    this.args.push({ node: n, attr, index, slot: this.params.length, float });
    return float ? this.float(v) : this.int(v);
  }
  fresh(prefix = "v"): string {
    return `${prefix}${this.vars++}`;
  }
  currentIndent(): string {
    return this.indent;
  }
  line(s: string): void {
    this.lines.push(this.indent + s);
  }
  scoped<T>(body: () => T): T {
    const saved = this.memo, divisions = this.divisions, splits = this.splits;
    this.memo = new Map(saved);
    this.divisions = new Map(divisions);
    this.splits = new Map(splits);
    const indent = this.indent;
    this.indent += "  ";
    try {
      return body();
    } finally {
      this.memo = saved;
      this.divisions = divisions;
      this.splits = splits;
      this.indent = indent;
    }
  }
  text(): string {
    return this.lines.join("\n");
  }
  /** The lines so far, which are then cleared (to put them in a function of their own). */
  takeLines(): string {
    const t = this.text();
    this.lines = [];
    return t;
  }

  /** Multi-index of the flat (row-major) index idx over shape: one int per dimension. */
  unflatten(shape: readonly number[], idx: string): string[] {
    if (shape.length === 0) return [];
    if (shape.length === 1) return [idx];
    const out: string[] = new Array(shape.length);
    let rest = idx;
    for (let d = shape.length - 1; d > 0; d--) [rest, out[d]] = this.divmod(rest, shape[d]!, "i");
    out[0] = rest;
    return out;
  }

  /**
   * Variables holding the quotient and remainder of index idx (0 <= idx < 2^31) by d, divided
   * through d's magic numbers: kernels divide indices by shapes for every element, and a hardware
   * integer division costs several times a multiply and a shift (and keeps a CPU loop scalar).
   */
  divmod(idx: string, d: number, prefix = "w"): [q: string, r: string] {
    const key = `${idx}/${d}`;
    const done = this.divisions.get(key);
    if (done) return done;
    const [m, s] = divisionMagic(d);
    const q = this.fresh("q"), r = this.fresh(prefix);
    this.params.push(m, s);
    const p = this.params.length;
    this.line(`int ${q} = smelt_udiv(${idx}, P[${p - 2}], P[${p - 1}]); int ${r} = ${idx} - ${q} * ${this.int(d)};`);
    this.divisions.set(key, [q, r]);
    return [q, r];
  }

  /** Offset + sum(index_d * stride_d), in elements. */
  /**
   * In a row or matmul kernel: the index expression of the element being computed, and its parts
   * (the row, and the position j within it), so that index math splits along them without dividing.
   */
  get rowIndex(): RowSplit | null {
    return this.#rowIndex;
  }
  set rowIndex(r: RowSplit | null) {
    this.#rowIndex = r;
    this.splits = new Map();
  }
  #rowIndex: RowSplit | null = null;
  /**
   * Further splits found from rowIndex's through views and reshapes (splitInput), by index and
   * shape, in the scope whose lines declare their variables.
   */
  private splits = new Map<string, RowSplit>();

  /** The split of flat index idx over shape into its row and position: rowIndex's, or one found from it. */
  private splitOf(idx: string, shape: readonly number[]): RowSplit | null {
    const r = this.#rowIndex;
    if (!r) return null;
    if (r.idx === idx && sameShape(shape, r.shape)) return r;
    return this.splits.get(`${idx}|${shape}`) ?? null;
  }

  /**
   * Where the element at idx of view or reshape n is split, the element `at` of its input (the
   * same index for a reshape) is too, by plan/splits.ts's rules: the input's row is computed from
   * n's row alone.
   */
  private splitInput(n: Node, idx: string, at: string): void {
    const s = this.splitOf(idx, n.shape);
    if (!s || s.trailing !== 1) return;
    const map = splitOfInput(n, s.run?.length ?? 0);
    if (!map) return;
    const x = n.inputs[0]!;
    const put = (row: string, j: string, run: RowSplit["run"]): void => {
      this.splits.set(`${at}|${x.shape}`, { idx: at, row, j, shape: x.shape, trailing: 1, ...(run && map.run ? { run } : {}) });
    };
    switch (map.kind) {
      case "same":
        return put(s.row, s.j, s.run);
      case "fold": {
        const [q, r] = this.divmod(s.row, map.factor, "h");
        const base = `(${r} * ${this.int(map.width)} + ${s.run?.base ?? s.j})`;
        return put(q, s.run ? `(${base} + ${s.run.e})` : base, s.run && { base, e: s.run.e, length: s.run.length });
      }
      case "unfold": {
        const run = s.run!;
        const [q, r] = this.divmod(run.base, map.width, "h");
        const row = this.fresh("r");
        this.line(`int ${row} = ${s.row} * ${this.int(map.factor)} + ${q};`);
        return put(row, `(${r} + ${run.e})`, { base: r, e: run.e, length: run.length });
      }
      case "view": {
        const ids = this.unflatten(n.shape.slice(0, -1), s.row);
        const terms = [this.int(map.rowOffset)];
        map.rowStrides.forEach((st, k) => st !== 0 && terms.push(`${ids[k]} * ${this.int(st)}`));
        const row = this.fresh("r");
        this.line(`int ${row} = ${terms.join(" + ")};`);
        if (!map.shift) return put(row, s.j, s.run);
        const shift = this.int(map.shift);
        return put(row, `(${shift} + ${s.j})`, s.run && { base: `(${shift} + ${s.run.base})`, e: s.run.e, length: s.run.length });
      }
    }
  }


  /**
   * In a row kernel whose threads keep their row elements in registers (emit/rows.ts): the
   * arrays, one per input and index expression, that hold element `t` of this thread's steps.
   * A load at the row's index in the body of a pass (indent `body`) reads its array once a pass
   * before filled it; in a pass that fills (`fill`: every pass but the last) the first load
   * stores into it. The arrays are declared at line `at`.
   */
  rowRegisters: { idx: string; steps: number; body: string; fill: boolean; at: number; indent: string; arrays: Map<string, string> } | null = null;

  /** The place for declarations before everything emitted after this call (rowRegisters.at). */
  declarations(): { at: number; indent: string } {
    return { at: this.lines.length, indent: this.indent };
  }

  affine(shape: readonly number[], strides: readonly number[], offset: number, idx: string): string {
    if (strides.every((s, d) => s === 0 || shape[d] === 1)) return this.int(offset);  // one element, broadcast
    const contiguous = strides.every((s, d) => s === contiguousStrides(shape)[d] || shape[d] === 1);
    if (contiguous) return offset === 0 ? idx : `(${this.int(offset)} + ${idx})`;
    const ids = this.indices(shape, idx);
    const terms = [this.int(offset)];
    // A unit stride is written as such: a CPU's compiler then sees consecutive loads where the
    // index moves along that axis (a run), where a stride in a parameter made them gathers.
    ids.forEach((v, d) => {
      if (strides[d] === 1 && shape[d] !== 1) terms.push(v);
      else if (strides[d] !== 0 && shape[d] !== 1) terms.push(`${v} * ${this.int(strides[d]!)}`);
    });
    return `(${terms.join(" + ")})`;
  }

  /** The multi-index of flat index idx over shape, split along its row and position where they are known. */
  indices(shape: readonly number[], idx: string): string[] {
    const r = this.splitOf(idx, shape);
    return r
      ? [...this.unflatten(shape.slice(0, shape.length - r.trailing), r.row), ...this.unflatten(shape.slice(shape.length - r.trailing), r.j)]
      : this.unflatten(shape, idx);
  }

  leaf(n: Node): number {
    let i = this.leaves.indexOf(n);
    if (i < 0) {
      i = this.leaves.length;
      this.leaves.push(n);
    }
    return i;
  }

  /** Nodes whose value the kernel has in a variable already, whatever the index (row reductions). */
  readonly fixed = new Map<Node, string>();

  /** The variable holding node n's element at flat index idx (an int expression). */
  emit(n: Node, idx: string): string {
    if (this.fixed.size) {
      const f = this.fixed.get(n);
      if (f) return f;
    }
    // A scalar is the same at every index: one variable (and parameter) for all of a thread's elements.
    const at = n.op === "scalar" && !this.computed(n) ? "" : idx;
    for (let m = this.memo.get(n); m; m = m.next) if (m.idx === at) return m.v;
    const v = this.compute(n, at);
    this.bind(n, at, v);
    return v;
  }
  /** Records that variable v holds n's element at idx, for the rest of the current scope. */
  bind(n: Node, idx: string, v: string): void {
    // A new head: a scope's copy of the map gets it, the list the enclosing scope sees stays.
    this.memo.set(n, { idx, v, next: this.memo.get(n) });
  }

  private compute(n: Node, idx: string): string {
    const T = computeType(n.dtype);
    const v = this.fresh();
    if (this.computed(n)) {
      const i = this.leaf(n);
      const at = this.affine(n.shape, n.data!.strides, n.data!.offset, idx);
      const r = this.rowRegisters;
      if (r && idx === r.idx && this.indent === r.body) {
        const key = `${i} ${at}`;
        const array = r.arrays.get(key);
        if (array) {
          this.line(`${T} ${v} = ${array}[t];`);
          return v;
        }
        if (!r.fill) {
          this.line(`${T} ${v} = ${T}(in${i}[${at}]);`);
          return v;
        }
        const name = `row${r.arrays.size}`;
        r.arrays.set(key, name);
        this.lines.splice(r.at++, 0, `${r.indent}${T} ${name}[${r.steps}];`);
        this.line(`${T} ${v} = ${T}(in${i}[${at}]);`);
        this.line(`${name}[t] = ${v};`);
        return v;
      }
      this.line(`${T} ${v} = ${T}(in${i}[${at}]);`);
      return v;
    }
    switch (n.op) {
      case "scalar": {
        // Integers pass as their 32 bits: a float would lose everything past 2^24.
        this.line(`${T} ${v} = ${T}(${this.arg(n, "value", 0, isFloatType(n.dtype))});`);
        return v;
      }
      case "arange": {
        if (arangeInInts(n))
          this.line(`${T} ${v} = ${T}(${this.arg(n, "start", 0, false)} + ${idx} * ${this.arg(n, "step", 0, false)});`);
        else this.line(`${T} ${v} = ${T}(${this.arg(n, "start", 0, true)} + float(${idx}) * ${this.arg(n, "step", 0, true)});`);
        return v;
      }
      case "eye": {
        const [r, c] = this.unflatten(n.shape, idx);
        this.line(`${T} ${v} = ${T}(${c} - ${r} == ${this.arg(n, "k", 0, false)});`);
        return v;
      }
      case "cast": {
        const x = this.emit(n.inputs[0]!, idx);
        this.line(`${T} ${v} = ${T}(${x});`);
        return v;
      }
      case "reshape":
      case "squeeze":
      case "expandDims":
        this.splitInput(n, idx, idx);
        return this.emit(n.inputs[0]!, idx);
      case "matmul": {
        const ids = this.indices(n.shape, idx);
        const nb = n.shape.length - 2;
        const o = matmulOffsets(this, n, ids.slice(0, nb), ids[nb]!, ids[nb + 1]!);
        const [A, B] = n.inputs as [Node, Node];
        const ai = this.leaf(A), bi = this.leaf(B);
        const acc = this.fresh("dot");
        // Unrolled (the contraction is short, INLINE_MATMUL_DEPTH at most): a loop inside the
        // kernel's element loop keeps a CPU's compiler from vectorizing that loop over elements.
        const pa = this.fresh("pa"), pb = this.fresh("pb"), sak = this.fresh("sa"), sbk = this.fresh("sb");
        this.line(`float ${acc} = 0.0f; int ${pa} = ${o.a}, ${pb} = ${o.b}, ${sak} = ${o.sak}, ${sbk} = ${o.sbk};`);
        for (let k = 0; k < matmulDepth(n); k++) {
          const at = (p: string, s: string) => (k === 0 ? p : `${p} + ${k} * ${s}`);
          this.line(`${acc} = fma(float(in${ai}[${at(pa, sak)}]), float(in${bi}[${at(pb, sbk)}]), ${acc});`);
        }
        this.line(`${T} ${v} = ${T}(${acc});`);
        return v;
      }
      case "broadcast":
      case "permute":
      case "slice": {
        const map = viewMapOf(n);
        const at = this.affine(n.shape, map.strides, map.offset, idx);
        const j = this.fresh("j");
        this.line(`int ${j} = ${at};`);
        this.splitInput(n, idx, j);
        return this.emit(n.inputs[0]!, j);
      }
      case "concat":
        return this.concat(n, idx, v);
      case "pad":
        return this.pad(n, idx, v);
      case "take":
      case "takeAlong":
        return this.take(n, idx);
    }
    const op = OPS[n.op].kind === "elementwise" ? elementwise[n.op as ElementwiseOp] : undefined;
    // The scheduler gives every other op a kernel of its own before a consumer's kernel reads it.
    if (!op) throw new SmeltError(`eval: internal error: ${n.op} (shape [${n.shape}]) reached codegen as an inline op; please report it`);
    const args: Value[] = n.inputs.map((x) => ({ v: this.emit(x, idx), dtype: x.dtype }));
    const scalars = n.op === "nanToNum" ? [0, 1, 2].map((i) => this.arg(n, "scalars", i, true)) : [];
    this.line(`${T} ${v} = ${T}(${op(args, n.dtype, scalars)});`);
    return v;
  }

  /**
   * concat along attrs.axis: the coordinate on the axis picks the input, and only that input is
   * computed, inside its branch: computing the others would read them out of bounds.
   */
  private concat(n: Node, idx: string, v: string): string {
    const axis = attrsOf(n, "concat").axis;
    const inner = this.int(n.shape.slice(axis + 1).reduce((a, d) => a * d, 1));
    const [outer, w] = this.divmod(idx, n.shape.slice(axis + 1).reduce((a, d) => a * d, 1));
    const [o, c] = this.divmod(outer, n.shape[axis]!, "c");
    this.line(`${computeType(n.dtype)} ${v};`);
    let start = 0;
    n.inputs.forEach((x, k) => {
      const size = x.shape[axis]!;
      const last = k === n.inputs.length - 1;
      const open = last ? (k === 0 ? "{" : "} else {") : `${k === 0 ? "if" : "} else if"} (${c} < ${this.int(start + size)}) {`;
      this.line(open);
      this.scoped(() => {
        const j = this.fresh("j");
        this.line(`int ${j} = (${o} * ${this.int(size)} + ${c} - ${this.int(start)}) * ${inner} + ${w};`);
        this.line(`${v} = ${this.emit(x, j)};`);
      });
      start += size;
    });
    this.line("}");
    return v;
  }

  /**
   * Constant padding along a run that is all padding or all input (padSplits): whether it is input,
   * and where in the input, follow from the row and the run's base alone, so the run's loads are
   * consecutive. A run of padding reads the input's first elements, and drops them.
   */
  private padRun(n: Node, s: RowSplit, v: string): string {
    const x = n.inputs[0]!, run = s.run!;
    const { before } = attrsOf(n, "pad");
    const T = computeType(n.dtype);
    const last = n.shape.length - 1, li = x.shape[last]!;
    const rowStrides = contiguousStrides(x.shape.slice(0, last));
    const inside: string[] = [], row: string[] = ["0"];
    this.unflatten(n.shape.slice(0, last), s.row).forEach((id, d) => {
      const c = this.fresh("s");
      this.line(`int ${c} = ${id} - ${this.int(before[d]!)};`);
      inside.push(`uint(${c}) < uint(${this.int(x.shape[d]!)})`);
      row.push(`${c} * ${this.int(rowStrides[d]!)}`);
    });
    const c = this.fresh("s");
    this.line(`int ${c} = ${run.base} - ${this.int(before[last]!)};`);
    inside.push(`uint(${c}) < uint(${this.int(li)})`);
    const ok = this.fresh("inside"), r = this.fresh("r"), base = this.fresh("b"), j = this.fresh("j");
    // Tested without branches and zeroed by a product, not a select: through either the
    // compiler no longer sees the run's index as the counter plus a constant, and gathers.
    this.line(`bool ${ok} = ${inside.map((c) => `(${c})`).join(" & ")};`);
    this.line(`int ${r} = (${row.join(" + ")}) * int(${ok});`);
    this.line(`int ${base} = ${c} * int(${ok});`);
    this.line(`int ${j} = ${r} * ${this.int(li)} + ${base} + ${run.e};`);
    this.splits.set(`${j}|${x.shape}`, { idx: j, row: r, j: `(${base} + ${run.e})`, shape: x.shape, trailing: 1, run: { base, e: run.e, length: run.length } });
    const xv = this.emit(x, j);
    this.line(`${v} = ${ok} ? ${T}(${xv}) : ${v};`);
    return v;
  }

  /** Constant padding: coordinates outside the input (attrs.before of it per axis) give attrs.value. */
  private pad(n: Node, idx: string, v: string): string {
    const x = n.inputs[0]!;
    const { before } = attrsOf(n, "pad");
    const T = computeType(n.dtype);
    // Integers go as int so that values past 2^24 survive; uint32 ones wrap back in T(int).
    this.line(`${T} ${v} = ${T}(${this.arg(n, "value", 0, isFloating(n.dtype))});`);
    const split = this.splitOf(idx, n.shape);
    if (split?.run && split.trailing === 1 && x.size && padSplits(n.shape, before, x.shape, split.run.length)) return this.padRun(n, split, v);
    const strides = contiguousStrides(x.shape);
    const inside: string[] = [];
    const at: string[] = ["0"];
    this.indices(n.shape, idx).forEach((id, d) => {
      const s = this.fresh("s");
      this.line(`int ${s} = ${id} - ${this.int(before[d]!)};`);
      inside.push(`uint(${s}) < uint(${this.int(x.shape[d]!)})`);
      at.push(`${s} * ${this.int(strides[d]!)}`);
    });
    if (x.size === 0) return v;
    // Branch-free: x is computed at its first element where the index is padding, and the
    // padding value selected. A branch around x's loads keeps a CPU's compiler from vectorizing
    // the element loop (a slice's gradient is a pad, and attention's q, k, v sum three of them).
    const ok = this.fresh("inside"), j = this.fresh("j");
    this.line(`bool ${ok} = ${inside.join(" && ") || "true"};`);
    this.line(`int ${j} = ${ok} ? ${at.join(" + ")} : 0;`);
    const xv = this.emit(x, j);
    this.line(`${v} = ${ok} ? ${T}(${xv}) : ${v};`);
    return v;
  }

  /**
   * take (inputs: x, indices; output x.shape[:axis] + indices.shape + x.shape[axis + 1:]) and
   * takeAlong (indices broadcast to the output's shape): the element of x at the loaded index.
   */
  private take(n: Node, idx: string): string {
    const [x, indices] = n.inputs as [Node, Node];
    const axis = n.op === "take" ? attrsOf(n, "take").axis : attrsOf(n, "takeAlong").axis;
    const inner = this.int(x.shape.slice(axis + 1).reduce((a, d) => a * d, 1));
    const len = this.int(x.shape[axis]!);
    const [outer, w] = this.divmod(idx, x.shape.slice(axis + 1).reduce((a, d) => a * d, 1));
    const [o, i] = this.divmod(outer, n.op === "take" ? indices.size : n.shape[axis]!, "t");
    const k = this.axisIndex(this.emit(indices, n.op === "take" ? i : idx), indices.dtype, len);
    const j = this.fresh("j");
    this.line(`int ${j} = (${o} * ${len} + ${k}) * ${inner} + ${w};`);
    return this.emit(x, j);
  }

  /**
   * An index loaded from a tensor, as a position on an axis of len elements: negatives count from
   * the end (NumPy), and whatever is still outside [0, len) is clamped into it, so that a bad index
   * on the device reads or writes a valid element instead of memory it does not own. len > 0.
   */
  axisIndex(raw: string, dtype: DType, len: string): string {
    const k = this.fresh("k");
    if (isSigned(dtype)) {
      this.line(`int ${k} = int(${raw}); ${k} = ${k} < 0 ? ${k} + ${len} : ${k}; ${k} = min(max(${k}, 0), ${len} - 1);`);
    } else {
      this.line(`int ${k} = int(min(uint(${raw}), uint(${len} - 1)));`);
    }
    return k;
  }
}

/** The position of a thread of a kernel of one thread per element or line. */
export const ELEMENT_POSITION = ["uint gid [[thread_position_in_grid]]"];
/** Row kernels (emit/rows.ts) take their position as a threadgroup and a thread within it. */
export const ROW_POSITION = [
  "uint row [[threadgroup_position_in_grid]]",
  "uint tid [[thread_position_in_threadgroup]]",
  "uint tpg [[threads_per_threadgroup]]",
  "uint lane [[thread_index_in_simdgroup]]",
  "uint sg [[simdgroup_index_in_threadgroup]]",
  "uint nsg [[simdgroups_per_threadgroup]]",
];

/**
 * The buffers of every generated kernel, in slot order: its parameters P, its output out0 and
 * its inputs in0, in1... (declarations without their [[buffer]] attribute).
 */
export function buffers(out: DType, inputs: readonly DType[]): { name: string; decl: string }[] {
  const all = [{ name: "P", decl: "constant uint* P" }, { name: "out0", decl: `device ${storageType(out)}* out0` }];
  inputs.forEach((d, i) => all.push({ name: `in${i}`, decl: `device const ${storageType(d)}* in${i}` }));
  return all;
}

/**
 * The signature of every generated kernel: buffers() in their slots, then `extra` buffers
 * (scratch memory such as a matmul's panels) in the slots after them, then the position
 * attributes the kernel reads.
 */
export function signature(out: DType, inputs: readonly DType[], position: readonly string[], extra: readonly string[] = []): string {
  const args = buffers(out, inputs).map((b, i) => `${b.decl} [[buffer(${i})]]`);
  extra.forEach((d, i) => args.push(`${d} [[buffer(${inputs.length + 2 + i})]]`));
  args.push(...position);
  return `kernel void k(${args.join(",\n              ")}) {\n`;
}

/**
 * The code of a kernel whose body b holds, with the given position and dispatch; `also` are the
 * further nodes it writes (out1, out2... after the inputs).
 */
export function finish(b: Builder, out: Node, position: readonly string[], dispatch: Dispatch, also: readonly Node[] = []): KernelCode {
  // No bounds check: the grid is exactly one thread per element (dispatchThreads), and a kernel
  // without one compiles to a loop that the host backend can vectorize.
  const extra = also.map((m, i) => `device ${storageType(m.dtype)}* out${i + 1}`);
  const source = `${signature(out.dtype, b.leaves.map((l) => l.dtype), position, extra)}${b.text()}\n}\n`;
  if (b.params.length === 0) b.params.push(0); // [[buffer(0)]] must be bound even when unused
  const code: KernelCode = { source, params: Uint32Array.from(b.params, (x) => x >>> 0), args: b.args, inputs: b.leaves.map((l) => l.data!), dispatch };
  if (also.length) code.outputs = also.map((m) => m.data!);
  return code;
}

/**
 * The value stored into `out`'s buffer. MSL 3.1 converts nothing to bfloat implicitly, so a
 * float result (a matmul's float accumulator, a float computation) is converted by name.
 */
export function store(out: Node, v: string): string {
  if (out.dtype === "bool") return `uchar(${v})`;
  return out.dtype === "bfloat16" ? `bfloat(${v})` : v;
}

/**
 * Offsets of row i of A and column j of B for output element (batch ids..., i, j) of matmul n:
 * operands are computed, at any strides, and broadcast over the batch axes.
 */
export function matmulOffsets(b: Builder, n: Node, batchIds: readonly string[], i: string, j: string) {
  const [A, B] = n.inputs as [Node, Node];
  const nb = n.shape.length - 2;
  const offset = (x: Node, inner: string, which: number) => {
    const d = x.data!;
    const lead = nb - (x.shape.length - 2);
    const terms = [b.int(d.offset)];
    for (let k = 0; k < x.shape.length - 2; k++) if (x.shape[k] !== 1) terms.push(`${batchIds[lead + k]} * ${b.int(d.strides[k]!)}`);
    terms.push(`${inner} * ${b.int(d.strides[x.shape.length - 2 + which]!)}`);
    return terms.join(" + ");
  };
  return {
    a: offset(A, i, 0), b: offset(B, j, 1),
    sak: b.int(A.data!.strides[A.shape.length - 1]!), sbk: b.int(B.data!.strides[B.shape.length - 2]!),
  };
}

const magics = new Map<number, [m: number, s: number]>();

/**
 * Magic numbers of division by d >= 1 for dividends 0 <= n < 2^31: n / d = (n * m) >> s, with
 * l = ceil(log2 d), s = 31 + l and m = floor(2^s / d) + 1, which fits 32 bits (Granlund and
 * Montgomery, "Division by invariant integers using multiplication", theorem 4.2). d = 0 (an
 * empty axis: no element is computed) gets zeros.
 */
export function divisionMagic(d: number): [m: number, s: number] {
  let v = magics.get(d);
  if (v) return v;
  if (d <= 0) v = [0, 0];
  else {
    const l = 32 - Math.clz32(d - 1);
    v = [Number((1n << BigInt(31 + l)) / BigInt(d)) + 1, 31 + l];
  }
  magics.set(d, v);
  return v;
}
