/**
 * Matmul kernels with fused epilogues: the elementwise ops that consume a matmul's output at the
 * same element (bias, scale, activation, residual add, a low-rank product added in) are computed
 * in the matmul kernel as each output element is finished (metal/matmul.metal's epi.store).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { SmeltError } from "../errors.ts";
import type { MatmulLayout } from "../runtime/target.ts";
import type { Data, Node } from "../graph/node.ts";
import { Builder, isInline, type KernelPlan, matmulDepth, readsOwnElement, storageType, store } from "./codegen.ts";
import type { Storage } from "./memory.ts";

const library = readFileSync(join(import.meta.dir, "../../metal/matmul.metal"), "utf8");

/**
 * simd: tiles of simdgroup_matrix products (GPUs); dot: an element per thread (small M); panel
 * (B copied into panels first, into memory the scheduler provides) and column (in place, for
 * small M): for CPUs.
 */
export type MatmulVariant = MatmulLayout;

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
function layoutOf(main: Node) {
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
 * blocks (A2's columns after A's, against panels of scale * B2), instead of a dot
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

/** Bytes of the panels the "panel" variant copies B of matmul m into: 16 columns by K floats each, per batch of B. */
export function panelBytes(m: Node): number {
  const { N, K, folded } = layoutOf(m);
  return (folded ? 1 : product(m.inputs[1]!.shape.slice(0, -2))) * Math.ceil(N / 16) * K * 16 * 4;
}

/**
 * Memory of the panel variant: B's panels (to be filled by this evaluation unless they were kept
 * from an earlier one), and the summed product the scheduler found with the panels of its B2.
 */
export interface Panels {
  b: Storage;
  fill: boolean;
  summed: (SummedProduct & { panels: Storage }) | null;
  /** The B storage keeping b, when this evaluation fills it for later ones. */
  keeper: Storage | null;
}

/**
 * The kernel computing `out` as the epilogue of matmul `main` (out may be main itself). The
 * panel variant comes with the kernels that fill its panels before it.
 */
export function matmulKernel(out: Node, main: Node, variant: MatmulVariant, panels: Panels | null = null): KernelPlan {
  const b = new Builder(out);
  const [A, B] = main.inputs as [Node, Node];
  const { M, N, K, batchShape, batches, folded } = layoutOf(main);
  const summed = panels?.summed ?? null;

  // The epilogue: out's element at (batch, i, j), with the product's value (or the sum) in acc.
  b.fixed.set(summed?.sum ?? main, "acc");
  const Mp = b.int(M), Np = b.int(N);
  b.line(`int row = batch * ${Mp} + i;`);
  b.line(`int idx = row * ${Np} + j;`);
  // inputs of the epilogue find their element from (row, j), dividing once per row at most
  b.rowIndex = { idx: "idx", row: "row", j: "j", shape: out.shape, trailing: 1 };
  b.line(`out0[idx] = ${store(out, b.emit(out, "idx"))};`);
  const epilogue = b.takeLines();

  // The kernel: this thread's batch, operand offsets and the library call.
  const ai = b.leaf(A), bi = b.leaf(B);
  const a2 = summed ? b.leaf(summed.product.inputs[0]!) : -1;
  b.line(`int batch = int(${variant === "simd" ? "tg.z" : "gid.z"});`);
  const ids = b.unflatten(batchShape, "batch");
  const offset = (x: Node) => {
    const d = x.data!;
    const lead = batchShape.length - (x.shape.length - 2);
    const terms = [b.int(d.offset)];
    if (!folded) for (let k = 0; k < x.shape.length - 2; k++) if (x.shape[k] !== 1) terms.push(`${ids[lead + k]} * ${b.int(d.strides[k]!)}`);
    return terms.join(" + ");
  };
  const sa = A.data!.strides, sb = B.data!.strides;
  const sam = b.int(sa[sa.length - 2]!), sak = b.int(sa[sa.length - 1]!);
  // the variants reading B in place take its strides; the panel variant reads panels instead
  const strides = variant === "panel" ? "" : `${sam}, ${sak}, ${b.int(sb[sb.length - 2]!)}, ${b.int(sb[sb.length - 1]!)}`;
  b.line(`device const auto* a = in${ai} + (${offset(A)});`);
  if (variant !== "panel") b.line(`device const auto* bm = in${bi} + (${offset(B)});`);
  const members = ["constant uint* P;", `device ${storageType(out.dtype)}* out0;`];
  const init = ["P", "out0"];
  b.leaves.forEach((l, i) => {
    members.push(`device const ${storageType(l.dtype)}* in${i};`);
    init.push(`in${i}`);
  });
  b.line(`Epilogue epi{${init.join(", ")}, batch};`);
  const args = [`constant uint* P [[buffer(0)]]`, `device ${storageType(out.dtype)}* out0 [[buffer(1)]]`];
  b.leaves.forEach((l, i) => args.push(`device const ${storageType(l.dtype)}* in${i} [[buffer(${i + 2})]]`));
  const inputs: Data[] = b.leaves.map((l) => l.data!);
  let position: string[];
  let dispatch: KernelPlan["dispatch"];
  const packs: NonNullable<KernelPlan["packs"]> = [];
  if (variant === "simd") {
    b.line("threadgroup float As[512];");
    b.line("threadgroup float Bs[512];");
    b.line("threadgroup float Cs[1024];");
    b.line(`smelt_mm_simd(a, bm, ${Mp}, ${Np}, ${b.int(K)}, ${strides}, epi, As, Bs, Cs, tg.xy, tid, sg);`);
    position = ["uint3 tg [[threadgroup_position_in_grid]]", "uint tid [[thread_index_in_threadgroup]]", "uint sg [[simdgroup_index_in_threadgroup]]"];
    dispatch = { threadgroups: true, size: [Math.ceil(N / 32), Math.ceil(M / 32), batches], group: [128, 1, 1] };
  } else if (variant === "dot") {
    b.line(`smelt_mm_dot(a, bm, ${b.int(K)}, ${strides}, int(gid.y), int(gid.x), epi);`);
    position = ["uint3 gid [[thread_position_in_grid]]"];
    dispatch = { threadgroups: false, size: [N, M, batches], group: [Math.min(N, 64), 1, 1] };
  } else if (variant === "panel") {
    if (!panels) throw new SmeltError("eval: internal error: a panel matmul kernel was planned without memory for its panels; please report it");
    // The panels of B's batch for this output batch (B's broadcast axes repeat one batch).
    const bBatch = B.shape.slice(0, -2);
    const lead = batchShape.length - bBatch.length;
    const terms = ["0"];
    let stride = 1;
    for (let k = bBatch.length - 1; k >= 0 && !folded; k--) {
      if (bBatch[k] !== 1) terms.push(`${ids[lead + k]} * ${b.int(stride)}`);
      stride *= bBatch[k]!;
    }
    const count = b.int(Math.ceil(N / 16)), Kp = b.int(K);
    b.line(`device const float* panel = pk + ((${terms.join(" + ")}) * ${count} + int(gid.y)) * ${Kp} * 16;`);
    args.push(`device const float* pk [[buffer(${inputs.length + 2})]]`);
    inputs.push({ storage: panels.b, strides: [], offset: 0 });
    if (panels.fill) packs.push({ plan: packKernel(main.inputs[1]!, folded ? 1 : product(bBatch), N, null), out: panels.b });
    let second = `a, 0, 0, 0, panel`;
    if (summed) {
      const [A2, B2] = summed.product.inputs as [Node, Node];
      const s2 = A2.data!.strides, K2 = b.int(matmulDepth(summed.product));
      b.line(`device const auto* a2 = in${a2} + ${b.int(A2.data!.offset)};`);
      b.line(`device const float* panel2 = pk2 + int(gid.y) * ${K2} * 16;`);
      args.push(`device const float* pk2 [[buffer(${inputs.length + 2})]]`);
      inputs.push({ storage: summed.panels, strides: [], offset: 0 });
      packs.push({ plan: packKernel(B2, 1, N, summed.scale), out: summed.panels });
      second = `a2, ${b.int(s2[s2.length - 2]!)}, ${b.int(s2[s2.length - 1]!)}, ${K2}, panel2`;
    }
    b.line(`smelt_mm_panel(a, ${sam}, ${sak}, ${Kp}, panel, ${second}, ${Mp}, ${Np}, int(gid.x) * 6, int(gid.y) * 16, epi);`);
    position = ["uint3 gid [[thread_position_in_grid]]"];
    // Threads walk down the rows of one panel (x fastest): a threadgroup of 8 x 16 shares 48 rows
    // of A and each panel of B stays in cache while its 8 blocks use it. Threadgroups are what the
    // host spreads over its cores, so a small product gets narrower ones, at least 16 of them.
    const rows = Math.ceil(M / 6), cols = Math.ceil(N / 16);
    const gx = Math.ceil(rows / Math.ceil(rows / 8)); // at most 8, the row groups about equal
    let gy = Math.min(cols, 16);
    while (gy > 1 && Math.ceil(rows / gx) * Math.ceil(cols / gy) * batches < 16) gy >>= 1;
    dispatch = { threadgroups: false, size: [rows, cols, batches], group: [gx, gy, 1] };
  } else {
    b.line(`smelt_mm_column(a, bm, ${Mp}, ${b.int(K)}, ${strides}, int(gid.y) * 8, int(gid.x), epi);`);
    position = ["uint3 gid [[thread_position_in_grid]]"];
    dispatch = { threadgroups: false, size: [N, Math.ceil(M / 8), batches], group: [Math.min(N, 64), 1, 1] };
  }
  args.push(...position);
  const source =
    `${library}\n` +
    `struct Epilogue {\n  ${members.join("\n  ")}\n  int batch;\n  void store(float acc, int i, int j) const {\n${epilogue}\n  }\n};\n\n` +
    `kernel void k(${args.join(",\n              ")}) {\n${b.text()}\n}\n`;
  if (b.params.length === 0) b.params.push(0);
  const empty = M === 0 || N === 0 || batches === 0;
  if (empty) dispatch = { threadgroups: false, size: [0, 1, 1], group: [1, 1, 1] };
  return { source, params: Uint32Array.from(b.params, (x) => x >>> 0), args: b.args, inputs, dispatch, ...(packs.length && !empty ? { packs } : {}) };
}

/** The kernel copying scale * B (a matmul's second operand) into panels: a thread per 16 rows of one panel of one batch of B. */
function packKernel(B: Node, batches: number, N: number, scale: Node | null): KernelPlan {
  const b = new Builder(B);
  const d = B.data!;
  const bBatch = B.shape.slice(0, -2);
  const ids = b.unflatten(bBatch, "int(gid.z)");
  const terms = [b.int(d.offset)];
  bBatch.forEach((n, k) => n !== 1 && terms.push(`${ids[k]} * ${b.int(d.strides[k]!)}`));
  const K = B.shape[B.shape.length - 2]!;
  const count = Math.ceil(N / 16), chunks = Math.ceil(K / 16);
  const Kp = b.int(K);
  b.line(`device float* panels = out0 + int(gid.z) * ${b.int(count)} * ${Kp} * 16;`);
  b.line(
    `smelt_mm_pack(in0 + (${terms.join(" + ")}), panels, ${b.int(N)}, ${Kp}, ${b.int(d.strides[B.shape.length - 2]!)}, ` +
      `${b.int(d.strides[B.shape.length - 1]!)}, int(gid.x), int(gid.y) * 16, ${scale ? b.arg(scale, "value", 0, true) : b.float(1)});`,
  );
  const source =
    `${library}\n` +
    `kernel void k(constant uint* P [[buffer(0)]],\n              device float* out0 [[buffer(1)]],\n` +
    `              device const ${storageType(B.dtype)}* in0 [[buffer(2)]],\n              uint3 gid [[thread_position_in_grid]]) {\n${b.text()}\n}\n`;
  // Threads take the panels of the same rows one after another (x fastest), reading B's rows in order.
  const dispatch: KernelPlan["dispatch"] = { threadgroups: false, size: [count, chunks, batches], group: [Math.min(count, 16), Math.min(chunks, 4), 1] };
  return { source, params: Uint32Array.from(b.params, (x) => x >>> 0), args: b.args, inputs: [d], dispatch };
}
