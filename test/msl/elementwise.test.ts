import { describe, expect, test } from "bun:test";
import { dev, expectClose, expectEqual, kernelFile, read, runThreads, ulp32, uniform } from "./helpers.ts";

const kernel = kernelFile("elementwise.metal");
const SENTINEL = 12345.5;

describe("elementwise.metal", () => {
  test("pipelines report Metal's SIMD width and threadgroup limit", () => {
    const pipe = kernel("axpb_f4");
    expect(pipe.threadExecutionWidth).toBe(32);
    expect(pipe.maxThreadsPerThreadgroup).toBeGreaterThanOrEqual(256);
    expect(pipe.maxThreadsPerThreadgroup).toBeLessThanOrEqual(1024);
  });

  // Grids of 1000 float4 (not a multiple of 256), a single thread, and one past a threadgroup.
  for (const [n4, tg] of [
    [1000, 256],
    [1, 256],
    [257, 256],
    [4096, 1024],
  ] as const) {
    test(`axpb_f4: out = a * s + b over ${n4} float4, threadgroup ${tg}; nothing written past the grid`, () => {
      const n = n4 * 4;
      const a = uniform(n, -8, 8, 11 + n4);
      const b = uniform(n, -8, 8, 12 + n4);
      if (n >= 8) {
        a.set([Infinity, -Infinity, NaN, 3, Infinity, 0, -0, 1e30], 0);
        b.set([1, 5, 2, NaN, -Infinity, -0, -0, 1e30], 0);
      }
      const s = -1.5;
      const pad = 16 * 4;
      const out = dev.buffer(new Float32Array(n + pad).fill(SENTINEL));
      runThreads(kernel("axpb_f4"), [dev.buffer(a), dev.buffer(b), out, new Float32Array([s])], [n4, 1, 1], [tg, 1, 1]);
      const got = read(out, Float32Array);
      const want = Array.from(a, (x, i) => Math.fround(x * s + b[i]!));
      // A fused multiply-add and a rounded product differ by at most half an ulp of the product.
      expectClose("a * s + b", got.subarray(0, n), want, {
        ulps: 1,
        signedZero: true,
        tolAt: (i) => ulp32(a[i]! * s) + ulp32(want[i]!),
        label: (i) => `a=${a[i]} b=${b[i]}`,
      });
      expectEqual("words past the grid", got.subarray(n), new Float32Array(pad).fill(SENTINEL));
    });
  }

  test("sub_mul_f32 has no bounds check: a 1000-thread grid of 256-thread groups writes 1000 words", () => {
    const n = 1000;
    const a = uniform(n, -100, 100, 3);
    const b = uniform(n, -100, 100, 4);
    const out = dev.buffer(new Float32Array(n + 300).fill(SENTINEL));
    runThreads(kernel("sub_mul_f32"), [dev.buffer(a), dev.buffer(b), out], [n, 1, 1], [256, 1, 1]);
    const got = read(out, Float32Array);
    const want = Array.from(a, (x, i) => Math.fround(Math.fround(x - b[i]!) * b[i]!));
    expectClose("(a - b) * b", got.subarray(0, n), want, { ulps: 0 });
    expectEqual("words past the grid", got.subarray(n), new Float32Array(300).fill(SENTINEL));
  });
});
