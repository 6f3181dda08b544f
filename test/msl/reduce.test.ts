import { describe, expect, test } from "bun:test";
import { dev, expectClose, kernelFile, read, uniform, uniformInt } from "./helpers.ts";

const kernel = kernelFile("reduce.metal");

/**
 * Sums x on the device: pass 1 with `groups` threadgroups of `tg` threads writes one partial per
 * threadgroup, a barrier, then pass 2 with one threadgroup sums the partials. One command buffer.
 */
function deviceSum(name: string, x: Int32Array | Float32Array, groups: number, tg: number, tg2: number) {
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
  return { partial, total };
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
      const { partial, total } = deviceSum("reduce_sum_i32", x, groups!, tg!, tg2!);
      expect(Array.from(read(partial, Int32Array))).toEqual(partialsOf(x, groups!, tg!));
      expect(read(total, Int32Array)[0]).toBe(x.reduce((a, b) => a + b, 0));
    });
  }

  test("reduce_sum_f32: n=100003, 8 threadgroups of 512, within float32 summation error", () => {
    const n = 100003;
    const x = uniform(n, -1, 1, 7);
    const { partial, total } = deviceSum("reduce_sum_f32", x, 8, 512, 32);
    const absSum = x.reduce((a, b) => a + Math.abs(b), 0);
    // Any summation order is within n * eps * sum|x| of the exact sum; real orders do far better.
    const bound = 1e-6 * absSum;
    expectClose("partials", read(partial, Float32Array), partialsOf(x, 8, 512), { atol: bound });
    expectClose("total", read(total, Float32Array), [x.reduce((a, b) => a + b, 0)], { atol: bound });
  });
});
