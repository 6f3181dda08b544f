/**
 * The MSL of a matmul kernel (plan/matmul.ts): a call into metal/matmul.metal for the planned
 * variant, with the epilogue (out's element from the product's, at (batch, i, j)) as the store
 * method of a struct the library calls, and the kernels packing B into panels.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Data, Node } from "../../graph/node.ts";
import type { DType } from "../../graph/dtype.ts";
import { matmulDepth } from "../plan/inline.ts";
import { blockSize, DOT_SPLITS, type MatmulPlan, type PackPlan } from "../plan/matmul.ts";
import { Builder, buffers, type KernelCode, signature, store } from "./builder.ts";

const library = readFileSync(join(import.meta.dir, "../../../metal/matmul.metal"), "utf8");

/** The code of a matmul kernel, with the code of the kernels filling its panels. */
export function emitMatmul(p: MatmulPlan): KernelCode {
  const { out, main, variant, panels } = p;
  const b = new Builder(out);
  const [A, B] = main.inputs as [Node, Node];
  const { M, N, K, batchShape, folded } = p.shape;
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
  // The panel variant reads B's panels alone: B itself is not bound (a weight's float form may
  // have given its buffer back, tensor/quantized.ts keepFloat).
  const ai = b.leaf(A), bi = variant === "panel" ? -1 : b.leaf(B);
  const a2 = summed ? b.leaf(summed.product.inputs[0]!) : -1;
  const b2 = summed ? b.leaf(summed.product.inputs[1]!) : -1;
  // The batch is the grid's third axis, of threadgroups or of threads as the plan dispatches.
  b.line(`int batch = int(${p.dispatch.threadgroups ? "tg.z" : "gid.z"});`);
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
  const leafTypes = b.leaves.map((l) => l.dtype);
  const members = buffers(out.dtype, leafTypes);
  b.line(`Epilogue epi{${members.map((m) => m.name).join(", ")}, batch};`);
  const inputs: Data[] = b.leaves.map((l) => l.data!);
  const scratch: string[] = [];
  let position: string[];
  if (variant === "simd") {
    b.line("threadgroup float As[512];");
    b.line("threadgroup float Bs[512];");
    b.line("threadgroup float Cs[1024];");
    b.line(`smelt_mm_simd(a, bm, ${Mp}, ${Np}, ${b.int(K)}, ${strides}, epi, As, Bs, Cs, tg.xy, tid, sg);`);
    position = ["uint3 tg [[threadgroup_position_in_grid]]", "uint tid [[thread_index_in_threadgroup]]", "uint sg [[simdgroup_index_in_threadgroup]]"];
  } else if (variant === "block") {
    const tm = blockSize(M, N, p.shape.batches);
    // Declared as float4s: the kernel reads them as float4s, which need 16-byte alignment.
    const vectors = (2 * 8 * (16 * tm + 4)) / 4;
    b.line(`threadgroup float4 As[${vectors}];`);
    b.line(`threadgroup float4 Bs[${vectors}];`);
    const va = vectorAligned(A, "a"), vb = vectorAligned(B, "b");
    b.line(`smelt_mm_block<${tm}, ${va}, ${vb}>(a, bm, ${Mp}, ${Np}, ${b.int(K)}, ${strides}, epi, (threadgroup float*)As, (threadgroup float*)Bs, tg.xy, tid);`);
    position = ["uint3 tg [[threadgroup_position_in_grid]]", "uint tid [[thread_index_in_threadgroup]]"];
  } else if (variant === "skinny") {
    b.line(`smelt_mm_skinny(a, bm, ${Mp}, ${Np}, ${b.int(K)}, ${strides}, int(tg.x * nsg + sg), lane, width, epi);`);
    position = [
      "uint3 tg [[threadgroup_position_in_grid]]", "uint sg [[simdgroup_index_in_threadgroup]]", "uint nsg [[simdgroups_per_threadgroup]]",
      "uint lane [[thread_index_in_simdgroup]]", "uint width [[threads_per_simdgroup]]",
    ];
  } else if (variant === "dot") {
    b.line(`threadgroup float part[${32 * DOT_SPLITS}];`);
    b.line(`smelt_mm_dot(a, bm, ${Np}, ${b.int(K)}, ${strides}, int(tg.y), int(tg.x) * 32, tid, tpg, epi, part);`);
    position = ["uint3 tg [[threadgroup_position_in_grid]]", "uint tid [[thread_index_in_threadgroup]]", "uint tpg [[threads_per_threadgroup]]"];
  } else if (variant === "panel") {
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
    scratch.push("device const float* pk");
    inputs.push({ storage: panels!.b, strides: [], offset: 0 });
    let second = `a, 0, 0, 0, a, 0, 0, 0.0f`;
    if (summed) {
      const [A2, B2] = summed.product.inputs as [Node, Node];
      const s2 = A2.data!.strides, K2 = b.int(matmulDepth(summed.product));
      const t2 = B2.data!.strides;
      b.line(`device const auto* a2 = in${a2} + ${b.int(A2.data!.offset)};`);
      b.line(`device const auto* b2 = in${b2} + ${b.int(B2.data!.offset)};`);
      const scale = summed.scale ? b.arg(summed.scale, "value", 0, true) : b.float(1);
      second = `a2, ${b.int(s2[s2.length - 2]!)}, ${b.int(s2[s2.length - 1]!)}, ${K2}, b2, ${b.int(t2[t2.length - 2]!)}, ${b.int(t2[t2.length - 1]!)}, ${scale}`;
    }
    b.line(`smelt_mm_panel(a, ${sam}, ${sak}, ${Kp}, panel, ${second}, ${Mp}, ${Np}, int(gid.x) * 6, int(gid.y) * 16, epi);`);
    position = ["uint3 gid [[thread_position_in_grid]]"];
  } else if (variant === "narrow") {
    if (N <= 8) b.line(`smelt_mm_narrow8(a, bm, ${Mp}, ${Np}, ${b.int(K)}, ${strides}, int(gid.x) * 6, epi);`);
    else b.line(`smelt_mm_narrow(a, bm, ${Mp}, ${Np}, ${b.int(K)}, ${strides}, int(gid.x) * 6, int(gid.y) * 16, epi);`);
    position = ["uint3 gid [[thread_position_in_grid]]"];
  } else if (variant === "lanes") {
    b.line(`smelt_mm_lanes(a, bm, ${b.int(K)}, ${sam}, ${b.int(sb[sb.length - 1]!)}, int(gid.y), int(gid.x), epi);`);
    position = ["uint3 gid [[thread_position_in_grid]]"];
  } else if (variant === "run") {
    b.line(`smelt_mm_run(a, bm, ${Np}, ${b.int(K)}, ${sam}, ${sak}, ${b.int(sb[sb.length - 2]!)}, int(gid.y), int(gid.x) * 16, epi);`);
    position = ["uint3 gid [[thread_position_in_grid]]"];
  } else {
    b.line(`smelt_mm_column(a, bm, ${Mp}, ${b.int(K)}, ${strides}, int(gid.y) * 8, int(gid.x), epi);`);
    position = ["uint3 gid [[thread_position_in_grid]]"];
  }
  const source =
    `${library}\n` +
    `struct Epilogue {\n  ${members.map((m) => `${m.decl};`).join("\n  ")}\n  int batch;\n  void store(float acc, int i, int j) const {\n${epilogue}\n  }\n};\n\n` +
    `${signature(out.dtype, leafTypes, position, scratch)}${b.text()}\n}\n`;
  if (b.params.length === 0) b.params.push(0);
  const code: KernelCode = { source, params: Uint32Array.from(b.params, (x) => x >>> 0), args: b.args, inputs, dispatch: p.dispatch };
  if (p.packs.length) code.packs = p.packs.map((k) => ({ code: emitPack(k), out: k.out }));
  return code;
}

/** The dtypes metal/matmul.metal's smelt_mm_load4 reads. */
const VECTOR_LOADS = new Set<DType>(["float32", "float16", "bfloat16"]);

/**
 * Whether the block variant may move an operand 4 elements at a time: the stride along its tile
 * axis (rows of A, columns of B) or along k is 1 (the first one, as the kernel picks), and every
 * other offset, the batch strides included, is a multiple of 4, so that each 4-vector it reads is
 * aligned (buffers themselves are).
 */
function vectorAligned(x: Node, operand: "a" | "b"): boolean {
  if (!VECTOR_LOADS.has(x.dtype)) return false;
  const { offset, strides } = x.data!;
  const n = strides.length;
  const k = operand === "a" ? strides[n - 1]! : strides[n - 2]!;
  const across = operand === "a" ? strides[n - 2]! : strides[n - 1]!;
  const other = across === 1 ? k : k === 1 ? across : 1;
  return [offset, other, ...strides.slice(0, n - 2)].every((v) => v % 4 === 0);
}

/** The code of a kernel copying scale * B into panels. */
function emitPack({ B, N, scale, dispatch }: PackPlan): KernelCode {
  const b = new Builder(B);
  const d = B.data!;
  const bBatch = B.shape.slice(0, -2);
  const ids = b.unflatten(bBatch, "int(gid.z)");
  const terms = [b.int(d.offset)];
  bBatch.forEach((n, k) => n !== 1 && terms.push(`${ids[k]} * ${b.int(d.strides[k]!)}`));
  const K = B.shape[B.shape.length - 2]!;
  const count = Math.ceil(N / 16);
  const Kp = b.int(K);
  b.line(`device float* panels = out0 + int(gid.z) * ${b.int(count)} * ${Kp} * 16;`);
  b.line(
    `smelt_mm_pack(in0 + (${terms.join(" + ")}), panels, ${b.int(N)}, ${Kp}, ${b.int(d.strides[B.shape.length - 2]!)}, ` +
      `${b.int(d.strides[B.shape.length - 1]!)}, int(gid.x), int(gid.y) * 16, ${scale ? b.arg(scale, "value", 0, true) : b.float(1)});`,
  );
  const source = `${library}\n${signature("float32", [B.dtype], ["uint3 gid [[thread_position_in_grid]]"])}${b.text()}\n}\n`;
  return { source, params: Uint32Array.from(b.params, (x) => x >>> 0), args: b.args, inputs: [d], dispatch };
}
