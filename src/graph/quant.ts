/**
 * The layouts of GGML's quantized formats: a row of a weight is a run of blocks, each holding
 * `elements` consecutive values in `bytes` bytes (float16 scales, then packed quants).
 */
import type { QuantFormat } from "./op.ts";

export interface QuantBlock {
  elements: number;
  bytes: number;
}

export const QUANT_BLOCKS: Readonly<Record<QuantFormat, QuantBlock>> = {
  Q8_0: { elements: 32, bytes: 34 },   // d, 32 int8
  Q4_0: { elements: 32, bytes: 18 },   // d, 16 bytes of 4-bit pairs (q - 8)
  Q4_1: { elements: 32, bytes: 20 },   // d, m, 16 bytes of 4-bit pairs
  Q4_K: { elements: 256, bytes: 144 }, // d, dmin, 12 bytes of 6-bit scales and mins, 128 bytes of 4-bit pairs
  Q6_K: { elements: 256, bytes: 210 }, // 128 bytes low 4 bits, 64 bytes high 2 bits, 16 int8 scales, d
};

/** Bytes of the blocks holding `size` values (a multiple of the block's elements). */
export function quantBytes(format: QuantFormat, size: number): number {
  const b = QUANT_BLOCKS[format];
  return (size / b.elements) * b.bytes;
}
