// Pipelines report their SIMD width (threadExecutionWidth); every Apple GPU has 32, other Metal
// GPUs may not. The engine fits each dispatch to the width its pipeline reports.
import { expect, test } from "bun:test";
import type { KernelCode } from "../../src/exec/emit/builder.ts";
import { fitGroup } from "../../src/exec/realize.ts";
import type { Pipeline } from "../../src/runtime/resources.ts";

type Dispatch = KernelCode["dispatch"];
const pipeline = (threadExecutionWidth: number, maxThreadsPerThreadgroup = 1024) =>
  ({ threadExecutionWidth, maxThreadsPerThreadgroup }) as Pipeline;
const row: Dispatch = { threadgroups: true, size: [7, 1, 1], group: [1024, 1, 1] };
const simdMatmul: Dispatch = { threadgroups: true, size: [4, 4, 1], group: [128, 1, 1] };
const elementwise: Dispatch = { threadgroups: false, size: [4096, 1, 1], group: [256, 1, 1] };

test("a row kernel takes at most width * width threads, so one SIMD group folds every group's partial", () => {
  expect(fitGroup(row, pipeline(32), true)).toEqual([1024, 1, 1]); // Apple GPUs: as planned
  expect(fitGroup(row, pipeline(64), true)).toEqual([1024, 1, 1]); // 16 groups
  expect(fitGroup(row, pipeline(16), true)).toEqual([256, 1, 1]); // 16 groups of 16
  expect(fitGroup(row, pipeline(8), true)).toEqual([64, 1, 1]);
  expect(fitGroup(row, pipeline(16, 128), true)).toEqual([128, 1, 1]); // the pipeline's limit is lower still
  // Never more groups than partial[32] holds (emit/rows.ts), nor than one SIMD group can fold.
  for (const w of [4, 8, 16, 32, 64, 128]) {
    const [threads] = fitGroup(row, pipeline(w), true)!;
    const groups = Math.ceil(threads / w);
    expect(groups).toBeLessThanOrEqual(Math.min(32, w));
  }
});

test("the simdgroup matmul runs only on SIMD groups of 32; the dot matmul and kernels dispatched by threads take any width", () => {
  expect(fitGroup(simdMatmul, pipeline(32), false)).toEqual([128, 1, 1]);
  expect(fitGroup(simdMatmul, pipeline(16), false)).toBeNull(); // planned again as the dot kernel
  expect(fitGroup(simdMatmul, pipeline(64), false)).toBeNull();
  // The dot matmul numbers its threads itself: any width, any multiple of 32 threads.
  const dot: Dispatch = { threadgroups: true, size: [3, 8, 1], group: [256, 1, 1], anyWidth: true };
  for (const w of [16, 32, 64]) expect(fitGroup(dot, pipeline(w), false)).toEqual([256, 1, 1]);
  expect(fitGroup(dot, pipeline(32, 100), false)).toEqual([96, 1, 1]);
  expect(fitGroup(dot, pipeline(32, 16), false)).toBeNull();
  expect(fitGroup(elementwise, pipeline(16), false)).toEqual([256, 1, 1]);
  expect(fitGroup(elementwise, pipeline(64), false)).toEqual([256, 1, 1]);
});
