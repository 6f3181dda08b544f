import { describe, expect, test } from "bun:test";
import { bitsF32, dev, f32Bits, kernelFile, read, runThreads, uniform, uniformInt } from "./helpers.ts";

const kernel = kernelFile("atomics.metal");

describe("atomics.metal (memory_order_relaxed)", () => {
  test("atomics_device: fetch_add/max/min, atomic_float add, exchange, compare-exchange loop, load/store", () => {
    const n = 1000;
    const vals = uniformInt(n, -1000, 1000, 121);
    vals[17] = 1000;
    vals[400] = -1000;
    const hist = dev.buffer(new Uint32Array(16));
    const extremes = dev.buffer(new Int32Array([-2147483648, 2147483647]));
    const fsum = dev.buffer(new Float32Array(1));
    const slot = dev.buffer(new Uint32Array([0]));
    const prev = dev.buffer(new Uint32Array(n));
    const counters = dev.buffer(new Uint32Array(3));
    runThreads(
      kernel("atomics_device"),
      [dev.buffer(vals), hist, extremes, fsum, slot, prev, counters, new Uint32Array([n])],
      [n, 1, 1],
      [256, 1, 1],
    );

    const wantHist = new Array<number>(16).fill(0);
    for (const v of vals) wantHist[(v >>> 0) & 15]!++;
    expect(Array.from(read(hist, Uint32Array))).toEqual(wantHist);
    expect(Array.from(read(extremes, Int32Array))).toEqual([1000, -1000]);
    // Multiples of 0.25 below 2^20 in magnitude: every partial sum is exact, in any order.
    expect(read(fsum, Float32Array)[0]).toBe(vals.reduce((a, v) => a + v * 0.25, 0));

    // Exchange: the values each thread got back, plus the final one, are the initial 0 and
    // every thread's i + 1, each exactly once.
    const seen = [...Array.from(read(prev, Uint32Array)), read(slot, Uint32Array)[0]!].sort((a, b) => a - b);
    expect(seen).toEqual(Array.from({ length: n + 1 }, (_, i) => i));

    expect(Array.from(read(counters, Uint32Array))).toEqual([2 * n, n - 1, 0xc0ffee]);
  });

  test("atomics_threadgroup: threadgroup atomic_int/atomic_uint declared in the kernel, 1000 threads in groups of 256", () => {
    const n = 1000;
    const tg = 256;
    const vals = uniformInt(n, -5000, 5000, 131);
    const groups = Math.ceil(n / tg);
    const out = dev.buffer(new Int32Array(6 * groups).fill(-1));
    runThreads(kernel("atomics_threadgroup"), [dev.buffer(vals), out], [n, 1, 1], [tg, 1, 1]);
    const want: number[] = [];
    for (let g = 0; g < groups; g++) {
      const v = Array.from(vals.subarray(g * tg, Math.min(n, (g + 1) * tg)));
      want.push(v.length, v.reduce((a, b) => a + b, 0), Math.max(...v), Math.min(...v), 3 * v.length);
      want.push(v.reduce((a, b) => a | (b & 0xff), 0));
    }
    expect(Array.from(read(out, Int32Array))).toEqual(want);
  });

  test("atomic_max_f32: compare-exchange loop on float bits, negative values and -inf start", () => {
    for (const [n, lo, hi] of [
      [777, -100, -3],
      [2048, -1, 1],
    ] as const) {
      const x = uniform(n, lo, hi, n);
      const out = dev.buffer(new Uint32Array([f32Bits(-Infinity)]));
      runThreads(kernel("atomic_max_f32"), [dev.buffer(x), out], [n, 1, 1], [128, 1, 1]);
      expect(bitsF32(read(out, Uint32Array)[0]!)).toBe(Math.max(...x));
    }
  });
});
