/**
 * dequantize: float32 values from GGML quantized blocks (src/graph/quant.ts), one thread per
 * value. Each thread reads the few bytes its value depends on (the block's scales and its quant),
 * so no thread waits on another and the kernel needs no threadgroup memory. The formulas follow
 * GGML's reference dequantization, with its float32 operations in the same order.
 */
import type { Node } from "../graph/node.ts";
import { attrsOf } from "../graph/op.ts";
import { QUANT_BLOCKS } from "../graph/quant.ts";
import { Builder, finish, type KernelPlan } from "./codegen.ts";

export function dequantizeKernel(out: Node): KernelPlan {
  const blocks = out.inputs[0]!;
  const format = attrsOf(out, "dequantize").format;
  const { elements, bytes } = QUANT_BLOCKS[format];
  const b = new Builder(out);
  b.line(`int blk = int(gid) / ${elements}; int j = int(gid) - blk * ${elements};`);
  b.line(`int base = blk * ${bytes};`);
  // The byte at offset k (an int expression) of this thread's block, as an int 0..255.
  const byte = (k: string | number) => `int(${b.emit(blocks, `(base + ${k})`)})`;
  const half = (k: number) => `float(as_type<half>(ushort(${byte(k)} | (${byte(k + 1)} << 8))))`;
  const signed = (v: string) => `(${v} - ((${v} & 128) << 1))`;
  let value: string;
  switch (format) {
    case "Q8_0":
      b.line(`int q = ${byte("2 + j")};`);
      value = `${half(0)} * float(${signed("q")})`;
      break;
    case "Q4_0":
      b.line(`int q = ${byte("2 + (j & 15)")};`);
      value = `${half(0)} * float((j < 16 ? (q & 15) : (q >> 4)) - 8)`;
      break;
    case "Q4_1":
      b.line(`int q = ${byte("4 + (j & 15)")};`);
      value = `${half(0)} * float(j < 16 ? (q & 15) : (q >> 4)) + ${half(2)}`;
      break;
    case "Q4_K": {
      // Eight sub-blocks of 32 values; sub-block s has a 6-bit scale and min packed in bytes 4..15.
      b.line("int g = j / 64; int l = j % 64; int s = 2 * g + l / 32;");
      b.line(`int q = ${byte("16 + 32 * g + (l & 31)")};`);
      b.line("int nib = l < 32 ? (q & 15) : (q >> 4);");
      b.line(`int s0 = ${byte("4 + s")}; int s4 = ${byte("4 + s + 4")}; int sm4 = ${byte("4 + (s >= 4 ? s - 4 : 0)")};`);
      b.line("int sc = s < 4 ? (s0 & 63) : ((s4 & 15) | ((sm4 >> 6) << 4));");
      b.line("int mn = s < 4 ? (s4 & 63) : ((s4 >> 4) | ((s0 >> 6) << 4));");
      value = `(${half(0)} * float(sc)) * float(nib) - ${half(2)} * float(mn)`;
      break;
    }
    case "Q6_K": {
      // Two halves of 128 values; quarter t of a half takes its low 4 bits from the low or high
      // nibbles of 32 bytes of ql, its top 2 bits from bits 2t..2t+1 of qh, its scale per 16 values.
      b.line("int h = j / 128; int r = j % 128; int t = r / 32; int l = r % 32;");
      b.line(`int ql = ${byte("64 * h + l + (t & 1) * 32")};`);
      b.line(`int qh = ${byte("128 + 32 * h + l")};`);
      b.line(`int sc = ${byte("192 + 8 * h + l / 16 + 2 * t")};`);
      b.line("int q = ((t < 2 ? (ql & 15) : (ql >> 4)) | (((qh >> (2 * t)) & 3) << 4)) - 32;");
      value = `(${half(208)} * float(${signed("sc")})) * float(q)`;
      break;
    }
  }
  b.line(`out0[gid] = ${value};`);
  return finish(b, out, out.size);
}
