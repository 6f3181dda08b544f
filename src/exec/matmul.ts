/**
 * Matmul kernels with fused epilogues: the elementwise ops that consume a matmul's output at the
 * same element (bias, scale, activation, residual add, a low-rank product added in) are computed
 * in the matmul kernel as each output element is finished (metal/matmul.metal's epi.store).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Node } from "../tensor/node.ts";
import { Builder, isInline, type KernelPlan, matmulDepth, readsOwnElement, storageType, store } from "./codegen.ts";

const library = readFileSync(join(import.meta.dir, "../../metal/matmul.metal"), "utf8");

/**
 * simd: tiles of simdgroup_matrix products (GPUs); dot: an element per thread (small M); block
 * (B's rows contiguous) and column (any strides): for CPUs.
 */
export type MatmulVariant = "simd" | "dot" | "block" | "column";

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
  const reaches = (x: Node): boolean => x === main || (isInline(x) && x.inputs.some(reaches));
  const aligned = (x: Node): boolean => {
    if (x === main || x.data) return true;
    if (!reaches(x)) return true;
    if (!isInline(x) || !readsOwnElement(x) || !same(x.shape, main.shape)) return false;
    return x.inputs.every(aligned);
  };
  return aligned(n) ? main : null;
}

/** The kernel computing `out` as the epilogue of matmul `main` (out may be main itself). */
export function matmulKernel(out: Node, main: Node, variant: MatmulVariant): KernelPlan {
  const b = new Builder(out);
  const [A, B] = main.inputs as [Node, Node];
  const nd = main.shape.length;
  const M = main.shape[nd - 2]!, N = main.shape[nd - 1]!, K = matmulDepth(main);
  const batchShape = main.shape.slice(0, nd - 2);
  const batches = batchShape.reduce((x, y) => x * y, 1);

  // The epilogue: out's element at (batch, i, j), with the product's value in acc.
  b.fixed.set(main, "acc");
  const Mp = b.int(M), Np = b.int(N);
  b.line(`int idx = (batch * ${Mp} + i) * ${Np} + j;`);
  b.line(`out0[idx] = ${store(out, b.emit(out, "idx"))};`);
  const epilogue = b.takeLines();

  // The kernel: this thread's batch, operand offsets and the library call.
  const ai = b.leaf(A), bi = b.leaf(B);
  b.line(`int batch = int(${variant === "simd" ? "tg.z" : "gid.z"});`);
  const ids = b.unflatten(batchShape, "batch");
  const offset = (x: Node, which: number) => {
    const d = x.data!;
    const lead = batchShape.length - (x.shape.length - 2);
    const terms = [b.int(d.offset)];
    for (let k = 0; k < x.shape.length - 2; k++) if (x.shape[k] !== 1) terms.push(`${ids[lead + k]} * ${b.int(d.strides[k]!)}`);
    void which;
    return terms.join(" + ");
  };
  const sa = A.data!.strides, sb = B.data!.strides;
  const strides = `${b.int(sa[sa.length - 2]!)}, ${b.int(sa[sa.length - 1]!)}, ${b.int(sb[sb.length - 2]!)}, ${b.int(sb[sb.length - 1]!)}`;
  b.line(`device const auto* a = in${ai} + (${offset(A, 0)});`);
  b.line(`device const auto* bm = in${bi} + (${offset(B, 1)});`);
  const members = ["constant uint* P;", `device ${storageType(out.dtype)}* out0;`];
  const init = ["P", "out0"];
  b.leaves.forEach((l, i) => {
    members.push(`device const ${storageType(l.dtype)}* in${i};`);
    init.push(`in${i}`);
  });
  b.line(`Epilogue epi{${init.join(", ")}, batch};`);
  let position: string[];
  let dispatch: KernelPlan["dispatch"];
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
  } else if (variant === "block") {
    b.line(`smelt_mm_block(a, bm, ${Mp}, ${Np}, ${b.int(K)}, ${b.int(sa[sa.length - 2]!)}, ${b.int(sa[sa.length - 1]!)}, ${b.int(sb[sb.length - 2]!)}, int(gid.y) * 6, int(gid.x) * 16, epi);`);
    position = ["uint3 gid [[thread_position_in_grid]]"];
    // 4 column blocks by 16 row blocks: a threadgroup shares 64 columns of B and 96 rows of A
    dispatch = { threadgroups: false, size: [Math.ceil(N / 16), Math.ceil(M / 6), batches], group: [Math.min(Math.ceil(N / 16), 4), Math.min(Math.ceil(M / 6), 16), 1] };
  } else {
    b.line(`smelt_mm_column(a, bm, ${Mp}, ${b.int(K)}, ${strides}, int(gid.y) * 8, int(gid.x), epi);`);
    position = ["uint3 gid [[thread_position_in_grid]]"];
    dispatch = { threadgroups: false, size: [N, Math.ceil(M / 8), batches], group: [Math.min(N, 64), 1, 1] };
  }
  const args = [`constant uint* P [[buffer(0)]]`, `device ${storageType(out.dtype)}* out0 [[buffer(1)]]`];
  b.leaves.forEach((l, i) => args.push(`device const ${storageType(l.dtype)}* in${i} [[buffer(${i + 2})]]`));
  args.push(...position);
  const source =
    `${library}\n` +
    `struct Epilogue {\n  ${members.join("\n  ")}\n  int batch;\n  void store(float acc, int i, int j) const {\n${epilogue}\n  }\n};\n\n` +
    `kernel void k(${args.join(",\n              ")}) {\n${b.text()}\n}\n`;
  if (b.params.length === 0) b.params.push(0);
  const empty = M === 0 || N === 0 || batches === 0;
  if (empty) dispatch = { threadgroups: false, size: [0, 1, 1], group: [1, 1, 1] };
  return { source, params: Uint32Array.from(b.params, (x) => x >>> 0), inputs: b.leaves.map((l) => l.data!), dispatch };
}
