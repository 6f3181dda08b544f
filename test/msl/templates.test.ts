import { describe, test } from "bun:test";
import {
  bf16Bits,
  bf16Value,
  dev,
  expectClose,
  expectEqual,
  f16Bits,
  fromF16,
  kernelFile,
  read,
  runThreads,
  toF16,
  ulp32,
  uniform,
  uniformInt,
} from "./helpers.ts";

const kernel = kernelFile("templates.metal");

describe("templates.metal: [[host_name]] instantiations", () => {
  test("scale_f32: y = x * 1.5 - 0.25 (n = 1000, threadgroup 256)", () => {
    const x = uniform(1000, -50, 50, 1);
    x.set([0, -0, 3.4e38, -1e-30], 0);
    const y = dev.buffer(new Float32Array(1000));
    runThreads(kernel("scale_f32"), [dev.buffer(x), y, new Float32Array([1.5, -0.25])], [1000, 1, 1], [256, 1, 1]);
    const want = Array.from(x, (v) => Math.fround(v * 1.5 - 0.25));
    expectClose("scale_f32", read(y, Float32Array), want, {
      ulps: 1,
      tolAt: (i) => ulp32(x[i]! * 1.5) + ulp32(want[i]!),
      label: (i) => `x=${x[i]}`,
    });
  });

  test("scale_f16: y = half(x * 2 + 0.5), overflowing to inf past 65504", () => {
    const xs = [0, 1, -1, 0.25, 65504, -65504, 32751, 32752, 1e-5, -1e-5, 1000.5, 2047, -2047.5, 0.1, 3.14159, 60000];
    const x = toF16(xs);
    const y = dev.buffer(new Uint16Array(xs.length));
    runThreads(kernel("scale_f16"), [dev.buffer(x), y, new Float32Array([2, 0.5])], [xs.length, 1, 1], [8, 1, 1]);
    // x is a half, so x * 2 + 0.5 is exact in float: the only rounding is the one to half.
    const want = Array.from(fromF16(x), (v) => f16Bits(v * 2 + 0.5));
    expectEqual("scale_f16 bits", read(y, Uint16Array), want, { label: (i) => `x=${xs[i]}` });
  });

  test("scale_bf16: y = bfloat(x * 2 + 0.5), ties to even", () => {
    const xs = [0, 1, -1, 100, 100.5, 127.75, -3.5, 1e-3, 3e38, -2.5e38, 0.33203125, 256.5];
    const x = new Uint16Array(xs.map((v) => bf16Bits(Math.fround(v))));
    const y = dev.buffer(new Uint16Array(xs.length));
    runThreads(kernel("scale_bf16"), [dev.buffer(x), y, new Float32Array([2, 0.5])], [xs.length, 1, 1], [4, 1, 1]);
    const want = Array.from(x, (bits) => bf16Bits(Math.fround(bf16Value(bits) * 2 + 0.5)));
    expectEqual("scale_bf16 bits", read(y, Uint16Array), want, { label: (i) => `x=${bf16Value(x[i]!)}` });
  });

  test("scale_i32: y = int(x * 0.5 + 0.25), truncated toward zero", () => {
    const x = uniformInt(777, -100000, 100000, 5);
    x.set([-3, 3, -1, 0, 1, -2], 0);
    const y = dev.buffer(new Int32Array(777));
    runThreads(kernel("scale_i32"), [dev.buffer(x), y, new Float32Array([0.5, 0.25])], [777, 1, 1], [64, 1, 1]);
    expectEqual("scale_i32", read(y, Int32Array), Int32Array.from(x, (v) => Math.trunc(v * 0.5 + 0.25)));
  });

  test("window_sum<int, 3> and window_sum<uint, 8> (uint sums wrap)", () => {
    const n = 333;
    const xi = uniformInt(n * 3, -1000, 1000, 7);
    const yi = dev.buffer(new Int32Array(n));
    runThreads(kernel("window_sum_i32_3"), [dev.buffer(xi), yi], [n, 1, 1], [64, 1, 1]);
    expectEqual(
      "window_sum_i32_3",
      read(yi, Int32Array),
      Array.from({ length: n }, (_, i) => xi[3 * i]! + xi[3 * i + 1]! + xi[3 * i + 2]!),
    );

    const xu = new Uint32Array(n * 8);
    for (let i = 0; i < xu.length; i++) xu[i] = (0xfffffff0 - i * 2654435761) >>> 0;
    const yu = dev.buffer(new Uint32Array(n));
    runThreads(kernel("window_sum_u32_8"), [dev.buffer(xu), yu], [n, 1, 1], [32, 1, 1]);
    const want = Array.from({ length: n }, (_, i) => {
      let s = 0;
      for (let k = 0; k < 8; k++) s = (s + xu[8 * i + k]!) >>> 0;
      return s;
    });
    expectEqual("window_sum_u32_8", read(yu, Uint32Array), want);
  });
});
