/**
 * The emitters of kernels of one thread per element or line (plan/kernel.ts PlainPlan): an
 * elementwise kernel, a reduction looping over its reduced elements, a scan, a scatter, and the
 * stream kernels of metal/random.metal; argsort's is sort.ts.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { DType } from "../../graph/dtype.ts";
import { contiguousStrides, isRowContiguous, sameShape } from "../../graph/shape.ts";
import { attrsOf, type ReduceKind } from "../../graph/op.ts";
import type { Node } from "../../graph/node.ts";
import { readsOwnElement } from "../plan/inline.ts";
import { finishedSum, type PlainPlan } from "../plan/kernel.ts";
import { Builder, computeType, ELEMENT_POSITION, finish, type KernelCode, storageType, store } from "./builder.ts";
import { argsortKernel } from "./sort.ts";
import { dequantizeKernel, quantizedMatmulKernel } from "./dequantize.ts";

/**
 * A kernel computing every element of `out` (and of the nodes `also`, into out1, out2...) from
 * their inline producers; a producer they share is computed once per element.
 */
function elementwiseKernel({ out, also, perThread, run, dispatch }: PlainPlan): KernelCode {
  const b = new Builder(out);
  if (perThread === 1) {
    const v = b.emit(out, "int(gid)");
    b.line(`out0[gid] = ${store(out, v)};`);
    also.forEach((m, i) => b.line(`out${i + 1}[gid] = ${store(m, b.emit(m, "int(gid)"))};`));
    return finish(b, out, ELEMENT_POSITION, dispatch, also);
  }
  const outs = [out, ...also];
  if (run) return runKernel(b, outs, perThread, dispatch);
  if (perThread % VECTOR === 0) return vectorKernel(b, outs, perThread / VECTOR, dispatch);
  // Every element's loads before any store: a store may alias a later element's input, so the
  // compiler could not move those loads above it, and the thread would wait for each in turn.
  const at = Array.from({ length: perThread }, (_, e) => (e === 0 ? "int(gid)" : `int(gid + ${e}u * grid_threads)`));
  const values = at.map((i) => outs.map((m) => store(m, b.emit(m, i))));
  at.forEach((i, e) => outs.forEach((_, k) => b.line(`out${k}[${i}] = ${values[e]![k]};`)));
  return finish(b, out, PER_THREAD_POSITION, dispatch, also);
}

/**
 * An elementwise kernel whose threads each compute a run of R consecutive elements along the last
 * axis (R divides it): the index is divided once per run, and the run is a loop whose index math
 * is affine in the loop counter (rowIndex splits indices into the run's row and j), so what
 * depends on the row only (an inline matmul's row of A) is loaded once and the rest are strided
 * loads the CPU's compiler vectorizes. The trip count is a parameter: a constant one is unrolled,
 * and the thread loop around it then vectorizes over threads, gathering every load. Values go
 * to an array first, as in elementwiseKernel, so no store can alias a later element's loads.
 */
function runKernel(b: Builder, outs: readonly Node[], R: number, dispatch: PlainPlan["dispatch"]): KernelCode {
  const [out, ...also] = outs as [Node, ...Node[]];
  b.line(`int rb = int(gid) * ${R};`);
  const [row, j0] = b.divmod("rb", out.shape[out.shape.length - 1]!, "c");
  outs.forEach((m, k) => b.line(`${storageType(m.dtype)} r${k}[${R}];`));
  const n = b.int(R);
  b.line(`for (int e = 0; e < ${n}; ++e) {`);
  b.scoped(() => {
    b.line("int ri = rb + e;");
    b.rowIndex = { idx: "ri", row, j: `(${j0} + e)`, shape: out.shape, trailing: 1, run: { base: j0, e: "e", length: R } };
    const values = outs.map((m) => store(m, b.emit(m, "ri")));
    b.rowIndex = null;
    outs.forEach((_, k) => b.line(`r${k}[e] = ${values[k]};`));
  });
  b.line("}");
  outs.forEach((_, k) => b.line(`for (int e = 0; e < ${n}; ++e) out${k}[rb + e] = r${k}[e];`));
  return finish(b, out, ELEMENT_POSITION, dispatch, also);
}

const PER_THREAD_POSITION = [...ELEMENT_POSITION, "uint grid_threads [[threads_per_grid]]"];
/** Elements of one vector access, and the vector types of the dtypes that have one of 16 or 8 bytes. */
const VECTOR = 4;
const VECTOR_TYPE: Partial<Record<DType, string>> = { float32: "float4", float16: "half4", int32: "int4", uint32: "uint4" };

/**
 * An elementwise kernel whose threads each compute `runs` runs of 4 consecutive elements, the
 * runs a grid apart. An input read at the element's own index (through elementwise ops and casts
 * only, contiguous, at an offset of whole vectors) is loaded a run at a time, and outputs are
 * stored so: a GPU thread then moves 16 bytes per memory instruction rather than 4, which is what
 * keeps enough bytes in flight to approach a copy's bandwidth. Other inputs (views, broadcasts)
 * are loaded an element at a time at the same indices.
 */
function vectorKernel(b: Builder, outs: readonly Node[], runs: number, dispatch: PlainPlan["dispatch"]): KernelCode {
  const [out, ...also] = outs as [Node, ...Node[]];
  const direct = directLeaves(b, outs).map((leaf) => {
    const i = b.leaf(leaf);
    return { leaf, V: VECTOR_TYPE[leaf.dtype]!, base: leaf.data!.offset === 0 ? `in${i}` : `(in${i} + ${b.int(leaf.data!.offset)})` };
  });
  const at: { q: string; idx: string[] }[] = [];
  for (let r = 0; r < runs; r++) {
    const q = b.fresh("q");
    b.line(`int ${q} = ${r === 0 ? "int(gid)" : `int(gid + ${r}u * grid_threads)`};`);
    const idx = Array.from({ length: VECTOR }, (_, e) => (e === 0 ? `${q} * ${VECTOR}` : `(${q} * ${VECTOR} + ${e})`));
    at.push({ q, idx });
    // Every run's loads before any store, as in elementwiseKernel.
    for (const { leaf, V, base } of direct) {
      const v = b.fresh("l");
      b.line(`${V} ${v} = ((device const ${V}*)${base})[${q}];`);
      idx.forEach((x, e) => b.bind(leaf, x, `${v}.${"xyzw"[e]}`));
    }
  }
  const values = at.map(({ idx }) => idx.map((x) => outs.map((m) => store(m, b.emit(m, x)))));
  at.forEach(({ q, idx }, r) => {
    outs.forEach((m, k) => {
      const V = VECTOR_TYPE[m.dtype];
      if (V) b.line(`((device ${V}*)out${k})[${q}] = ${V}(${idx.map((_, e) => values[r]![e]![k]).join(", ")});`);
      else idx.forEach((x, e) => b.line(`out${k}[${x}] = ${values[r]![e]![k]};`));
    });
  });
  return finish(b, out, PER_THREAD_POSITION, dispatch, also);
}

/**
 * The inputs the kernel reads at each element's own index, contiguous from an offset of whole
 * vectors, in a dtype with a vector type: found through the elementwise ops and casts it
 * computes, the way emit() will reach them.
 */
function directLeaves(b: Builder, outs: readonly Node[]): Node[] {
  const found: Node[] = [];
  const seen = new Set<Node>();
  const stack = [...outs];
  const shape = outs[0]!.shape;
  while (stack.length) {
    const n = stack.pop()!;
    for (const x of n.inputs) {
      if (seen.has(x)) continue;
      seen.add(x);
      if (b.computed(x)) {
        const d = x.data!;
        const contiguous = sameShape(x.shape, shape) && isRowContiguous(x.shape, d.strides);
        if (VECTOR_TYPE[x.dtype] && contiguous && d.offset % VECTOR === 0) found.push(x);
      } else if (readsOwnElement(x)) {
        stack.push(x);
      }
    }
  }
  return found;
}

/** Elements a reduction thread folds in order before a pairwise combine (see reduceKernel). */
const REDUCE_BLOCK = 16;

/**
 * One thread per output element, looping over the reduced elements of the (inline) input; with
 * `also` (float sums over the same axes of inputs of one shape: a multi-output kernel), one loop
 * folds every input, each into its own accumulator and output. An output that finishes a sum
 * (plan/kernel.ts finishedSum) is computed from it at the end.
 */
function reduceKernel({ out, also, dispatch }: PlainPlan): KernelCode {
  const outs = [out, ...also];
  const sums = outs.map((o) => finishedSum(o)!);
  const input = sums[0]!.inputs[0]!;
  const { axes, kind } = attrsOf(sums[0]!, "reduce");
  const kept = input.shape.map((_, d) => d).filter((d) => !axes.includes(d));
  const strides = contiguousStrides(input.shape);
  const b = new Builder(out);
  const keptShape = kept.map((d) => input.shape[d]!);
  const redShape = axes.map((d) => input.shape[d]!);
  const outIds = b.unflatten(keptShape, "int(gid)");
  const base = b.fresh("base");
  b.line(`int ${base} = ${["0", ...outIds.map((v, i) => `${v} * ${b.int(strides[kept[i]!]!)}`)].join(" + ")};`);
  const count = b.int(redShape.reduce((a, x) => a * x, 1));
  const accs = outs.map(() => b.fresh("acc"));
  const arg = b.fresh("arg");
  const T = computeType(input.dtype);
  const A = kind === "all" || kind === "any" ? "bool" : input.dtype.startsWith("float") || input.dtype === "bfloat16" ? "float" : T;
  const init: Record<ReduceKind, string> = {
    sum: `${A}(0)`, prod: `${A}(1)`, all: "true", any: "false",
    max: A === "float" ? "-INFINITY" : `metal::numeric_limits<${A}>::lowest()`,
    min: A === "float" ? "INFINITY" : `metal::numeric_limits<${A}>::max()`,
    argmax: A === "float" ? "-INFINITY" : `metal::numeric_limits<${A}>::lowest()`,
    argmin: A === "float" ? "INFINITY" : `metal::numeric_limits<${A}>::max()`,
  };
  // Float sums are pairwise: blocks of REDUCE_BLOCK elements added in order, their results combined
  // as in smelt_pairwise_push. Every rounding of a product is relative to the whole product, so
  // no order helps it; the other kinds are exact in any order. A sum of one block at most is that
  // block's loop alone (the same additions; the levels cost more than a few elements do).
  const reduced = redShape.reduce((a, x) => a * x, 1);
  const pairwise = A === "float" && kind === "sum" && reduced > REDUCE_BLOCK ? "smelt_fold_sum" : null;
  for (const acc of accs) b.line(`${A} ${acc} = ${init[kind]};`);
  b.line(`int ${arg} = 0;`);
  if (pairwise) {
    for (const acc of accs) {
      b.line(`float ${acc}_level[32];`);
      b.line(`uint ${acc}_count = 0;`);
    }
    b.line(`for (int r0 = 0; r0 < ${count}; r0 += ${REDUCE_BLOCK}) {`);
    for (const acc of accs) b.line(`  ${acc} = ${init[kind]};`);
    b.line(`  for (int r = r0; r < min(r0 + ${REDUCE_BLOCK}, ${count}); ++r) {`);
  } else {
    b.line(`for (int r = 0; r < ${count}; ++r) {`);
  }
  b.scoped(() => {
    const redIds = b.unflatten(redShape, "r");
    const at = b.fresh("at");
    b.line(`int ${at} = ${[base, ...redIds.map((v, i) => `${v} * ${b.int(strides[axes[i]!]!)}`)].join(" + ")};`);
    sums.forEach((o, k) => {
      const x = b.emit(o.inputs[0]!, at);
      const acc = accs[k]!;
      const isFloat = A === "float";
      switch (kind) {
        case "sum": b.line(`${acc} += ${A}(${x});`); break;
        case "prod": b.line(`${acc} *= ${A}(${x});`); break;
        case "all": b.line(`${acc} = ${acc} && bool(${x});`); break;
        case "any": b.line(`${acc} = ${acc} || bool(${x});`); break;
        case "max": b.line(isFloat ? `${acc} = smelt_fmax(${acc}, float(${x}));` : `${acc} = max(${acc}, ${A}(${x}));`); break;
        case "min": b.line(isFloat ? `${acc} = smelt_fmin(${acc}, float(${x}));` : `${acc} = min(${acc}, ${A}(${x}));`); break;
        case "argmax":
        case "argmin": {
          const better = kind === "argmax" ? ">" : "<";
          const nan = isFloat ? ` || (isnan(float(${x})) && !isnan(${acc}))` : "";
          b.line(`if ((${A}(${x}) ${better} ${acc}${isFloat ? ` && !isnan(${acc})` : ""})${nan} || r == 0) { ${acc} = ${A}(${x}); ${arg} = r; }`);
          break;
        }
      }
    });
  });
  b.line("}");
  if (pairwise) {
    for (const acc of accs) b.line(`  smelt_pairwise_push<${pairwise}>(${acc}_level, ${acc}_count, ${acc});`);
    b.line("}");
    for (const acc of accs) b.line(`${acc} = smelt_pairwise_total<${pairwise}>(${acc}_level, ${acc}_count);`);
  }
  outs.forEach((o, k) => {
    const result = kind === "argmax" || kind === "argmin" ? arg : accs[k]!;
    const sum = sums[k]!;
    if (sum === o) return b.line(`out${k}[gid] = ${store(o, `${computeType(o.dtype)}(${result})`)};`);
    const T = computeType(sum.dtype), v = b.fresh();
    b.line(`${T} ${v} = ${T}(${result});`);
    b.bind(sum, "int(gid)", v);
    b.line(`out${k}[gid] = ${store(o, b.emit(o, "int(gid)"))};`);
  });
  return finish(b, out, ELEMENT_POSITION, dispatch, also);
}

/** Cumulative sum or product along one axis: one thread per line along the axis. */
function scanKernel({ out, dispatch }: PlainPlan): KernelCode {
  const input = out.inputs[0]!;
  const { axis, kind } = attrsOf(out, "scan");
  const b = new Builder(out);
  const strides = contiguousStrides(out.shape);
  const others = out.shape.map((_, d) => d).filter((d) => d !== axis);
  const ids = b.unflatten(others.map((d) => out.shape[d]!), "int(gid)");
  b.line(`int base = ${["0", ...ids.map((v, i) => `${v} * ${b.int(strides[others[i]!]!)}`)].join(" + ")};`);
  const A = out.dtype.includes("float") ? "float" : computeType(out.dtype);
  b.line(`${A} acc = ${A}(${kind === "sum" ? 0 : 1});`);
  b.line(`for (int t = 0; t < ${b.int(out.shape[axis]!)}; ++t) {`);
  b.scoped(() => {
    b.line(`int at = base + t * ${b.int(strides[axis]!)};`);
    const x = b.emit(input, "at");
    b.line(`acc ${kind === "sum" ? "+=" : "*="} ${A}(${x});`);
    b.line(`out0[at] = ${store(out, `${computeType(out.dtype)}(acc)`)};`);
  });
  b.line("}");
  return finish(b, out, ELEMENT_POSITION, dispatch);
}

/**
 * putAlongAxis (inputs: x, indices and values, both broadcast to x's shape with indices.shape[axis]
 * on the axis): one thread per line along the axis copies x's line, then writes the values in index
 * order. A line belongs to one thread, so of duplicate indices the last along the axis wins, on
 * every backend. Its inputs are computed before it (readsComputedInputs): loaded, not fused, so that
 * no row or epilogue planner takes this scatter for an op computed element by element.
 */
function putAlongKernel({ out, dispatch }: PlainPlan): KernelCode {
  const [x, indices, values] = out.inputs as [Node, Node, Node];
  const axis = attrsOf(out, "putAlong").axis;
  const b = new Builder(out);
  const size = out.shape[axis]!;
  const inner = b.int(out.shape.slice(axis + 1).reduce((a, d) => a * d, 1));
  const len = b.int(size);
  const span = b.int(indices.shape[axis]!);
  b.line(`int w = int(gid) % ${inner}; int o = int(gid) / ${inner};`);
  b.line(`for (int t = 0; t < ${len}; ++t) {`);
  b.scoped(() => {
    b.line(`int at = (o * ${len} + t) * ${inner} + w;`);
    b.line(`out0[at] = ${store(out, b.emit(x, "at"))};`);
  });
  b.line("}");
  b.line(`for (int t = 0; t < ${span}; ++t) {`);
  b.scoped(() => {
    b.line(`int from = (o * ${span} + t) * ${inner} + w;`);
    const k = b.axisIndex(b.emit(indices, "from"), indices.dtype, len);
    b.line(`out0[(o * ${len} + ${k}) * ${inner} + w] = ${store(out, b.emit(values, "from"))};`);
  });
  b.line("}");
  return finish(b, out, ELEMENT_POSITION, dispatch);
}

/**
 * Scatter-add (inputs: indices and values of one shape, the result with the axis at its full
 * length): one thread per line along the axis zeroes its line, then adds the values in index
 * order. The work is the result's size plus the values' size, and each sum has one order on every
 * backend, so results are deterministic (no atomics). Its inputs are loaded, not fused, for the
 * reason putAlong's are.
 */
function scatterAddKernel({ out, dispatch }: PlainPlan): KernelCode {
  const [indices, values] = out.inputs as [Node, Node];
  const axis = attrsOf(out, "scatterAdd").axis;
  const b = new Builder(out);
  const T = computeType(out.dtype);
  const inner = b.int(out.shape.slice(axis + 1).reduce((a, d) => a * d, 1));
  const len = b.int(out.shape[axis]!);
  const span = b.int(values.shape[axis]!);
  b.line(`int w = int(gid) % ${inner}; int o = int(gid) / ${inner};`);
  b.line(`for (int t = 0; t < ${len}; ++t) out0[(o * ${len} + t) * ${inner} + w] = ${T}(0);`);
  b.line(`for (int t = 0; t < ${span}; ++t) {`);
  b.scoped(() => {
    b.line(`int from = (o * ${span} + t) * ${inner} + w;`);
    const k = b.axisIndex(b.emit(indices, "from"), indices.dtype, len);
    b.line(`int at = (o * ${len} + ${k}) * ${inner} + w;`);
    b.line(`out0[at] = out0[at] + ${T}(${b.emit(values, "from")});`);
  });
  b.line("}");
  return finish(b, out, ELEMENT_POSITION, dispatch);
}

/**
 * writeSlice (inputs: dst, src): one thread per element of src stores it at its place in dst,
 * whose memory is this node's (realize.ts gives it dst's storage), so dst's other elements are
 * neither read nor copied. start is an argument: a cache written a position further each step
 * reuses the kernel.
 */
function writeSliceKernel({ out, dispatch }: PlainPlan): KernelCode {
  const src = out.inputs[1]!;
  const { axis } = attrsOf(out, "writeSlice");
  const b = new Builder(out);
  const inner = b.int(out.shape.slice(axis + 1).reduce((a, d) => a * d, 1));
  const span = b.int(src.shape[axis]!);
  const len = b.int(out.shape[axis]!);
  const start = b.arg(out, "start", 0, false);
  b.line(`int w = int(gid) % ${inner}; int r = int(gid) / ${inner}; int t = r % ${span}; int o = r / ${span};`);
  b.line(`out0[(o * ${len} + ${start} + t) * ${inner} + w] = ${store(out, b.emit(src, "int(gid)"))};`);
  return finish(b, out, ELEMENT_POSITION, dispatch);
}

/** The emitter of each kind of plain kernel. */
const emitters: Record<PlainPlan["kind"], (p: PlainPlan) => KernelCode> = {
  elementwise: elementwiseKernel,
  reduce: reduceKernel,
  scan: scanKernel,
  putAlong: putAlongKernel,
  scatterAdd: scatterAddKernel,
  random: randomKernel,
  argsort: argsortKernel,
  dequantize: dequantizeKernel,
  quantizedMatmul: quantizedMatmulKernel,
  writeSlice: writeSliceKernel,
};

const randomLibrary = readFileSync(join(import.meta.dir, "../../../metal/random.metal"), "utf8");

/**
 * A stream kernel of metal/random.metal (docs/random.md, "Kernels"): one thread per Threefry
 * block, ceil(size / 2) of them, reading the key from host words or from the key node's memory.
 */
function randomKernel({ out, dispatch }: PlainPlan): KernelCode {
  const { kernel, params, key } = attrsOf(out, "random");
  return {
    source: randomLibrary,
    params: Uint32Array.from(params),
    inputs: key ? [] : [out.inputs[0]!.data!],
    dispatch,
    library: { entry: kernel, key: key ? Uint32Array.from(key) : null },
  };
}

/** The code of a plain kernel. */
export function emitPlain(p: PlainPlan): KernelCode {
  return emitters[p.kind](p);
}
