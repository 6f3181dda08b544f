// quantizedMatmul's two paths, on every quantized type and shapes that are not multiples of any
// tile: few rows of x (the kernel that dequantizes as it reads) and DEQUANTIZE_ROWS rows or more
// (the weight dequantized once, then the tiled matmul), against a float64 product in JS over the
// dequantize kernel's values; the gradient with respect to x on both paths.
import { describe, expect, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { QUANT_BLOCKS } from "../../src/graph/quant.ts";
import { plainPlan, QUANT_GROUP } from "../../src/exec/plan/kernel.ts";
import { DEQUANTIZE_ROWS } from "../../src/tensor/quantized.ts";
import { matmulNT64 } from "./helpers.ts";

let state = 20261206;
const next = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0);
const inputs = (n: number) => Array.from({ length: n }, () => next() / 2 ** 31 - 1);

// float16 bit patterns of small scales (0.0156 .. 0.1): random bytes would give inf and NaN.
const SCALES = [0x2400, 0x2a00, 0x2c00, 0x2e66, 0xa800];
// Byte offsets of each format's float16 scales within a block.
const SCALE_AT: Record<sm.QuantFormat, number[]> = { Q8_0: [0], Q4_0: [0], Q4_1: [0, 2], Q4_K: [0, 2], Q6_K: [208] };

function randomWeight(format: sm.QuantFormat, N: number, K: number): sm.QuantizedTensor {
  const { elements, bytes } = QUANT_BLOCKS[format];
  const blocks = (N * K) / elements;
  const data = new Uint8Array(blocks * bytes);
  for (let i = 0; i < data.length; i++) data[i] = next() & 255;
  for (let b = 0; b < blocks; b++) {
    for (const at of SCALE_AT[format]) {
      const h = SCALES[next() % SCALES.length]!;
      data[b * bytes + at] = h & 255;
      data[b * bytes + at + 1] = h >> 8;
    }
  }
  return sm.QuantizedTensor.fromBytes(data, [N, K], format);
}


const FORMATS: sm.QuantFormat[] = ["Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"];

describe("quantizedMatmul paths on every quantized type", () => {
  for (const format of FORMATS) {
    test(format, () => {
      const per = QUANT_BLOCKS[format].elements;
      const N = 37, K = per === 32 ? 3 * per : 2 * per;
      const w = randomWeight(format, N, K);
      const wv = w.dequantize().toArray() as number[];
      expect(wv.every(Number.isFinite)).toBe(true);
      // The in-kernel path with one row, with fewer rows than a thread takes (3), and with
      // batched rows that leave a thread a partial group (2 x 9 = 8 + 8 + 2); then the
      // dequantized path.
      for (const lead of [[1], [3], [2, 9], [DEQUANTIZE_ROWS + 3]]) {
        const rows = lead.reduce((a, d) => a * d, 1);
        expect(rows >= DEQUANTIZE_ROWS).toBe(lead[0] === DEQUANTIZE_ROWS + 3);
        const xs = inputs(rows * K);
        const got = sm.quantizedMatmul(sm.array(xs).reshape([...lead, K]), w);
        expect(got.shape).toEqual([...lead, N]);
        const g = got.toArray() as number[];
        const { want, scale } = matmulNT64(xs, wv, rows, N, K);
        let e = 0;
        for (let i = 0; i < want.length; i++) e = Math.max(e, Math.abs(g[i]! - want[i]!) / Math.max(scale[i]!, 1e-30));
        expect(e).toBeLessThan(1e-5);
      }
      w.dispose();
    }, 120_000);
  }

  test("float16 x keeps its dtype on both paths", () => {
    const w = randomWeight("Q4_1", 5, 64);
    const wv = w.dequantize().toArray() as number[];
    for (const rows of [2, DEQUANTIZE_ROWS + 1]) {
      const xs = inputs(rows * 64).map((v) => Math.round(v * 64) / 64);
      const got = sm.quantizedMatmul(sm.array(xs).reshape([rows, 64]).astype("float16"), w);
      expect(got.dtype).toBe("float16");
      const g = got.toArray() as number[];
      const { want } = matmulNT64(xs, wv, rows, 5, 64);
      for (let i = 0; i < want.length; i++) expect(Math.abs(g[i]! - want[i]!)).toBeLessThan(2e-3 * (1 + Math.abs(want[i]!)));
    }
  }, 120_000);

  test("gradient with respect to x on both paths: the cotangent times the dequantized weight", () => {
    const N = 7, K = 256;
    const w = randomWeight("Q4_K", N, K);
    const wv = w.dequantize().toArray() as number[];
    for (const rows of [2, DEQUANTIZE_ROWS + 1]) {
      const cs = inputs(rows * N);
      const c = sm.array(cs).reshape([rows, N]);
      const x = sm.array(inputs(rows * K)).reshape([rows, K]);
      const dx = (sm.grad((t: sm.Tensor) => sm.sum(sm.multiply(sm.quantizedMatmul(t, w), c)))(x) as sm.Tensor).toArray() as number[];
      for (let m = 0; m < rows; m++) {
        for (let k = 0; k < K; k++) {
          let want = 0, scale = 0;
          for (let n = 0; n < N; n++) {
            want += cs[m * N + n]! * wv[n * K + k]!;
            scale += Math.abs(cs[m * N + n]! * wv[n * K + k]!);
          }
          expect(Math.abs(dx[m * K + k]! - want)).toBeLessThanOrEqual(1e-5 * scale + 1e-7);
        }
      }
    }
  }, 120_000);

  test("the dequantized path's float weight is freed with its product", () => {
    const w = randomWeight("Q4_0", 64, 128);
    const x = sm.array(inputs(DEQUANTIZE_ROWS * 128)).reshape([DEQUANTIZE_ROWS, 128]);
    sm.eval(x);
    const before = sm.stats().bytesAllocated;
    const y = sm.quantizedMatmul(x, w);
    sm.eval(y);
    expect(sm.stats().bytesAllocated - before).toBe(DEQUANTIZE_ROWS * 64 * 4);
    y.dispose();
    expect(sm.stats().bytesAllocated).toBe(before);
  });

  test("the weight's blocks have no gradient: asking for one is an error at grad", () => {
    const w = randomWeight("Q8_0", 2, 32);
    const x = sm.ones([1, 32]);
    const f = (b: sm.Tensor) => sm.sum(sm.quantizedMatmul(x, sm.QuantizedTensor.fromBlocks(b, [2, 32], "Q8_0")));
    expect(() => sm.grad(f)(w.blocks)).toThrow(/grad: argument 0 has dtype uint8/);
  });
});

describe("quantizedMatmul dispatch", () => {
  // A decoding step's projections have a few hundred weight rows: threadgroups of 256 would make
  // one or two groups, and the host backend runs a group on one core.
  test("a single x row is split into SIMD-group sized threadgroups", () => {
    const w = randomWeight("Q4_1", 192, 64);
    const x = sm.array(inputs(64), "float32").reshape([1, 64]);
    const y = sm.quantizedMatmul(x, w);
    const plan = plainPlan(y.node("test"));
    expect(plan.dispatch.size[0]).toBe(192);
    expect(plan.dispatch.group[0]).toBe(QUANT_GROUP);
    expect(plan.dispatch.size[0] / plan.dispatch.group[0]).toBeGreaterThanOrEqual(6);
  });
});
