import { describe, expect, test } from "bun:test";
import { dev, kernelFile, read, uniformInt } from "./helpers.ts";

const kernel = kernelFile("scan.metal");

/** Exclusive prefix sum of x on the device in one command buffer: blocks, block totals, offsets. */
function deviceScan(x: Int32Array, tg: number) {
  const n = x.length;
  const blocks = Math.ceil(n / tg);
  if (blocks > 1024) throw new Error("the block totals must fit one threadgroup");
  const tg2 = Math.ceil(blocks / 32) * 32;
  const y = dev.buffer(new Int32Array(n));
  const sums = dev.buffer(new Int32Array(blocks));
  const offsets = dev.buffer(new Int32Array(blocks));
  const total = dev.buffer(new Int32Array(1));
  const cmd = dev.commandBuffer();
  cmd.dispatchThreadgroups(kernel("scan_blocks"), {
    args: [dev.buffer(x), y, sums, new Uint32Array([n])],
    threadgroups: [blocks, 1, 1],
    threadgroup: [tg, 1, 1],
  });
  cmd.barrier();
  cmd.dispatchThreadgroups(kernel("scan_blocks"), {
    args: [sums, offsets, total, new Uint32Array([blocks])],
    threadgroups: [1, 1, 1],
    threadgroup: [tg2, 1, 1],
  });
  cmd.barrier();
  // A non-uniform grid of n threads in threadgroups of tg: threadgroup g is block g.
  cmd.dispatchThreads(kernel("scan_add_offsets"), { args: [y, offsets], grid: [n, 1, 1], threadgroup: [tg, 1, 1] });
  cmd.commit();
  cmd.wait();
  return { y: read(y, Int32Array), sums: read(sums, Int32Array), total: read(total, Int32Array)[0]! };
}

function firstMismatch(got: ArrayLike<number>, want: ArrayLike<number>): string {
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) return `[${i}]: got ${got[i]}, expected ${want[i]}`;
  }
  return "none";
}

describe("scan.metal: simd_prefix_exclusive_sum + threadgroup memory, three passes", () => {
  // 1024 threads (32 SIMD-groups), 256, 96, and 100 (every block ends in a 4-lane SIMD-group).
  for (const [n, tg] of [
    [5000, 256],
    [1000, 1024],
    [4321, 96],
    [3333, 100],
    [1, 64],
  ]) {
    test(`exclusive scan of ${n} ints, threadgroup ${tg}`, () => {
      const x = uniformInt(n!, -500, 1000, n! + tg!);
      const { y, sums, total } = deviceScan(x, tg!);
      const want = new Int32Array(n!);
      for (let i = 1; i < n!; i++) want[i] = want[i - 1]! + x[i - 1]!;
      const blockSums = Array.from({ length: Math.ceil(n! / tg!) }, (_, b) =>
        x.subarray(b * tg!, (b + 1) * tg!).reduce((a, v) => a + v, 0),
      );
      expect(Array.from(sums)).toEqual(blockSums);
      expect(total).toBe(x.reduce((a, v) => a + v, 0));
      expect(firstMismatch(y, want)).toBe("none");
    });
  }
});
