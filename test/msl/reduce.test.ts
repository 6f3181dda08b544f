import { describe, expect, test } from "bun:test";
import { dev, expectClose, kernelFile, read, sm, uniform, uniformInt } from "./helpers.ts";

const kernel = kernelFile("reduce.metal");

/**
 * Sums x on the device: pass 1 with `groups` threadgroups of `tg` threads writes one partial per
 * threadgroup, a barrier, then pass 2 with one threadgroup sums the partials. One command buffer.
 */
function deviceSum<T extends Int32Array | Float32Array>(
  name: string,
  x: T,
  ctor: sm.TypedArrayConstructor<T>,
  groups: number,
  tg: number,
  tg2: number,
) {
  const partial = dev.buffer(4 * groups);
  const total = dev.buffer(4);
  const pipe = kernel(name);
  const cmd = dev.commandBuffer();
  // [[threadgroup(0)]] holds one value per SIMD-group: 4 bytes each, rounded up to 16.
  const scratch = (threads: number) => [Math.ceil((4 * Math.ceil(threads / 32)) / 16) * 16];
  cmd.dispatchThreadgroups(pipe, {
    args: [dev.buffer(x), partial, new Uint32Array([x.length])],
    threadgroups: [groups, 1, 1],
    threadgroup: [tg, 1, 1],
    threadgroupMemory: scratch(tg),
  });
  cmd.barrier();
  cmd.dispatchThreadgroups(pipe, {
    args: [partial, total, new Uint32Array([groups])],
    threadgroups: [1, 1, 1],
    threadgroup: [tg2, 1, 1],
    threadgroupMemory: scratch(tg2),
  });
  cmd.commit();
  cmd.wait();
  return { partials: read(partial, ctor), total: read(total, ctor)[0]! };
}

/** What threadgroup g of a grid-stride loop over n elements adds up. */
function partialsOf(x: ArrayLike<number>, groups: number, tg: number): number[] {
  const out = new Array<number>(groups).fill(0);
  for (let i = 0; i < x.length; i++) out[Math.floor(i / tg) % groups]! += x[i]!;
  return out;
}

describe("reduce.metal", () => {
  // Threadgroups of 1024 (32 SIMD-groups), 256, 100 (a partial SIMD-group in each), and 20.
  for (const [n, groups, tg, tg2] of [
    [100000, 16, 1024, 32],
    [5000, 7, 256, 7],
    [1234, 5, 100, 64],
    [37, 3, 20, 3],
  ]) {
    test(`reduce_sum_i32: two-level threadgroup reduction, n=${n}, ${groups} threadgroups of ${tg}`, () => {
      const x = uniformInt(n!, -1000, 1000, n!);
      const { partials, total } = deviceSum("reduce_sum_i32", x, Int32Array, groups!, tg!, tg2!);
      expect(Array.from(partials)).toEqual(partialsOf(x, groups!, tg!));
      expect(total).toBe(x.reduce((a, b) => a + b, 0));
    });
  }

  test("reduce_sum_f32: n=100003, 8 threadgroups of 512, within float32 summation error", () => {
    const n = 100003;
    const x = uniform(n, -1, 1, 7);
    const { partials, total } = deviceSum("reduce_sum_f32", x, Float32Array, 8, 512, 32);
    const absSum = x.reduce((a, b) => a + Math.abs(b), 0);
    // Any summation order is within n * eps * sum|x| of the exact sum; real orders do far better.
    const bound = 1e-6 * absSum;
    expectClose("partials", partials, partialsOf(x, 8, 512), { atol: bound });
    expectClose("total", [total], [x.reduce((a, b) => a + b, 0)], { atol: bound });
  });

  for (const [rows, cols, tg] of [
    [6, 1000, 256],
    [5, 37, 64],
    [3, 4096, 1024],
  ]) {
    test(`softmax_rows: ${rows} rows of ${cols}, threadgroup ${tg} (max and sum reductions, -inf and large inputs)`, () => {
      const x = uniform(rows! * cols!, -10, 10, rows! * 100 + cols!);
      x[0] = -Infinity; // row 0: one -inf entry gets probability 0
      x[1] = -Infinity;
      for (let c = 0; c < cols!; c++) x[cols! + c] = 1000 + (c % 7); // row 1: exp would overflow without the max
      x[2 * cols! + 5] = 60; // row 2: one dominant entry
      const y = dev.buffer(new Float32Array(rows! * cols!));
      const cmd = dev.commandBuffer();
      cmd.dispatchThreadgroups(kernel("softmax_rows"), {
        args: [dev.buffer(x), y, new Uint32Array([cols!])],
        threadgroups: [rows!, 1, 1],
        threadgroup: [tg!, 1, 1],
      });
      cmd.commit();
      cmd.wait();
      const want: number[] = [];
      for (let r = 0; r < rows!; r++) {
        const row = Array.from(x.subarray(r * cols!, (r + 1) * cols!));
        const m = Math.max(...row);
        const e = row.map((v) => Math.exp(v - m));
        const s = e.reduce((a, b) => a + b, 0);
        want.push(...e.map((v) => v / s));
      }
      expectClose("softmax", read(y, Float32Array), want, {
        rtol: 2e-5,
        atol: 1e-9,
        label: (i) => `row ${Math.floor(i / cols!)} col ${i % cols!} x=${x[i]}`,
      });
    });
  }
});
