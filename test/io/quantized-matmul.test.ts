// sm.quantizedMatmul (x @ dequantize(W)^T, dequantizing inside the kernel) against a float64
// reference over the gguf package's dequantization, and against dequantize-then-matmul.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { errorMessage } from "../expect-error.ts";
import { modelPath, SMOLLM2_GGUF } from "../models.ts";
import { matmulNT64 } from "../tensor/helpers.ts";

const FIXTURES = join(import.meta.dir, "../fixtures/gguf");
const expected = JSON.parse(readFileSync(join(FIXTURES, "tiny.json"), "utf8")).tensors as Record<
  string,
  { type: string; shape: number[]; values: number[] }
>;
const g = sm.io.loadGGUF(join(FIXTURES, "tiny.gguf"));

/** Deterministic inputs in [-1, 1). */
function inputs(n: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 31) - 1);
}

/** Largest |got - want| relative to sum |x||w| of each output (the float32 accumulation's scale). */
function worst(got: number[], x: number[], w: number[], M: number, N: number, K: number): number {
  const { want, scale } = matmulNT64(x, w, M, N, K);
  return want.reduce((e, v, i) => Math.max(e, Math.abs(got[i]! - v) / Math.max(scale[i]!, 1e-30)), 0);
}

describe("quantizedMatmul on every quantized type", () => {
  for (const name of ["q8_0", "q4_0", "q4_1", "q4_k", "q6_k"]) {
    test(name, () => {
      const w = g.tensors[name] as sm.QuantizedTensor;
      const [N, K] = w.shape as [number, number];
      const M = 5;
      const xs = inputs(M * K, 7 + N);
      const x = sm.array(xs).reshape([M, K]);
      const got = sm.quantizedMatmul(x, w);
      expect(got.shape).toEqual([M, N]);
      expect(worst(got.toArray(), xs, expected[name]!.values, M, N, K)).toBeLessThan(1e-6);
      // The same as dequantize-then-matmul, up to float32 summation order.
      const viaFloat = sm.matmul(x, sm.transpose(w.dequantize())).toArray();
      const mine = got.toArray();
      for (let i = 0; i < mine.length; i++) expect(Math.abs(mine[i]! - viaFloat[i]!)).toBeLessThan(1e-4 * (1 + Math.abs(viaFloat[i]!)));
    });
  }

  test("every row count below the dequantizing threshold: rows per thread 1 to 8, blocks of rows uneven", () => {
    // 1 to 3 rows per thread sum in straight-line lanes, 4 to 8 in loops over rows and lanes
    // (q6_k a value at a time); 9 and 31 rows split into uneven blocks (5 + 4, 8 x 3 + 7).
    for (const name of ["q8_0", "q4_1", "q6_k"]) {
      const w = g.tensors[name] as sm.QuantizedTensor;
      const [N, K] = w.shape as [number, number];
      for (const M of [1, 3, 4, 9, 31]) {
        const xs = inputs(M * K, 3 * M + N);
        const got = sm.tidy(() => sm.quantizedMatmul(sm.array(xs).reshape([M, K]), w).toArray()) as number[];
        expect(got.length).toBe(M * N);
        expect(worst(got, xs, expected[name]!.values, M, N, K)).toBeLessThan(1e-6);
      }
    }
  }, 60_000);

  test("leading batch axes, a strided x, and a fused producer", () => {
    const w = g.tensors.q4_1 as sm.QuantizedTensor;
    const [N, K] = w.shape as [number, number];
    const xs = inputs(2 * 3 * K, 11);
    const base = sm.array(xs).reshape([2, 3, K]);
    const x = sm.multiply(sm.swapaxes(sm.swapaxes(base, 0, 1), 0, 1), 2); // a view and an op before it
    const got = sm.quantizedMatmul(x, w);
    expect(got.shape).toEqual([2, 3, N]);
    expect(worst(got.toArray(), xs.map((v) => 2 * v), expected.q4_1!.values, 6, N, K)).toBeLessThan(1e-6);
    const half = sm.quantizedMatmul(sm.astype(base, "float16"), w);
    expect(half.dtype).toBe("float16");
  });

  test("gradient with respect to x: the cotangent times the dequantized weight", () => {
    const w = g.tensors.q8_0 as sm.QuantizedTensor;
    const [N, K] = w.shape as [number, number];
    const x = sm.array(inputs(2 * K, 3)).reshape([2, K]);
    const dx = sm.grad((t: sm.Tensor) => sm.sum(sm.quantizedMatmul(t, w)))(x) as sm.Tensor;
    const wv = expected.q8_0!.values;
    const want = Array.from({ length: 2 * K }, (_, i) => {
      let s = 0;
      for (let n = 0; n < N; n++) s += wv[n * K + (i % K)]!;
      return s;
    });
    const got = dx.toArray();
    for (let i = 0; i < got.length; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThan(1e-5);
  });

  test("bad arguments", () => {
    const w = g.tensors.q4_0 as sm.QuantizedTensor;
    expect(errorMessage(() => sm.quantizedMatmul(sm.zeros([2, 63]), w))).toContain("x's last axis must be w's K = 64");
    expect(errorMessage(() => sm.quantizedMatmul(sm.zeros([2, 64], "int32"), w))).toContain("x must be floating-point");
    expect(errorMessage(() => sm.quantizedMatmul(sm.zeros([2, 64]), sm.zeros([2, 64]) as never))).toContain("w must be a QuantizedTensor");
    const three = sm.QuantizedTensor.fromBytes(new Uint8Array(2 * 2 * 18), [2, 2, 32], "Q4_0");
    expect(errorMessage(() => sm.quantizedMatmul(sm.zeros([1, 32]), three))).toContain("w must be 2-D");
  });
});

const model = modelPath(SMOLLM2_GGUF);
describe.skipIf(!model)(`quantizedMatmul on ${SMOLLM2_GGUF}`, () => {
  test("Q4_1 and Q8_0 weights against dequantize-then-matmul", () => {
    const { tensors } = sm.io.loadGGUF(model!);
    for (const name of ["blk.0.attn_q.weight", "blk.0.ffn_down.weight", "token_embd.weight"]) {
      const w = tensors[name] as sm.QuantizedTensor;
      const K = w.shape[1]!;
      const x = sm.array(inputs(3 * K, 5)).reshape([3, K]);
      const got = sm.quantizedMatmul(x, w).toArray();
      const want = sm.matmul(x, sm.transpose(w.dequantize())).toArray();
      let e = 0;
      for (let i = 0; i < got.length; i++) e = Math.max(e, Math.abs(got[i]! - want[i]!));
      expect(e).toBeLessThan(1e-4);
    }
    for (const t of Object.values(tensors)) t.dispose();
  }, 120_000);
});
