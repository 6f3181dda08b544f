// writeSlice (src/tensor/write.ts): src written over a range of one axis of dst, in dst's memory;
// and slices of strided views read in place (plan/restride.ts), as attention reads a KV cache.
import { expect, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { unwritten, writeSlice } from "../../src/tensor/write.ts";
import { errorMessage } from "../expect-error.ts";

/** Values that differ at every index, exactly representable in float32. */
const values = (n: number, base: number) => Array.from({ length: n }, (_, i) => base + i * 0.25);
const evaluated = (shape: number[], base: number) => {
  const t = sm.array(values(shape.reduce((a, b) => a * b, 1), base)).reshape(shape);
  t.eval();
  return t;
};

/** dst with src's elements written at [start, start + span) of axis, in float64, row-major. */
function reference(dst: number[], dstShape: number[], src: number[], srcShape: number[], axis: number, start: number): number[] {
  const out = [...dst];
  const inner = dstShape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const span = srcShape[axis]!, len = dstShape[axis]!;
  src.forEach((v, i) => {
    const w = i % inner, r = Math.floor(i / inner), t = r % span, o = Math.floor(r / span);
    out[(o * len + start + t) * inner + w] = v;
  });
  return out;
}

const cases: [axis: number, srcShape: number[]][] = [[0, [1, 3, 4]], [1, [2, 2, 4]], [2, [2, 3, 1]]];
for (const [axis, srcShape] of cases) {
  test(`writes src over axis ${axis} and leaves the rest of dst`, () => {
    const shape = [2, 3, 4];
    const dst = evaluated(shape, 1);
    const n = srcShape.reduce((a, b) => a * b, 1);
    const want = reference(dst.toArray() as number[], shape, values(n, 100), srcShape, axis, 1);
    const src = sm.array(values(n, 100)).reshape(srcShape);
    expect(writeSlice(dst, src, axis, 1).toArray()).toEqual(want);
  });
}

test("writes into dst's memory: no new buffer, and a later write sees the earlier one", () => {
  const dst = evaluated([2, 6, 3], 0);
  const a = evaluated([2, 2, 3], 50);
  const b = evaluated([2, 1, 3], 80);
  const before = sm.stats().bytesAllocated;
  const once = writeSlice(dst, a, 1, 0);
  once.eval();
  expect(sm.stats().bytesAllocated).toBe(before);
  const twice = writeSlice(once, b, 1, 2);
  const got = twice.toArray();
  const want = reference(reference(values(36, 0), [2, 6, 3], values(12, 50), [2, 2, 3], 1, 0), [2, 6, 3], values(6, 80), [2, 1, 3], 1, 2);
  expect(got).toEqual(want);
  expect(sm.stats().bytesAllocated).toBe(before);
});

test("writes into unwritten memory, chained in one evaluation, lazy and eager alike", () => {
  const run = () => {
    const buffer = unwritten([3, 4], "float32");
    const first = writeSlice(buffer, sm.array(values(8, 1)).reshape([2, 4]), 0, 0);
    // src computed in the write's own kernel (an elementwise op of it)
    const second = writeSlice(first, sm.array(values(4, 9)).reshape([1, 4]).mul(2), 0, 2);
    return second.toArray();
  };
  const want = [...values(8, 1), ...values(4, 9).map((v) => v * 2)];
  expect(run()).toEqual(want);
  expect(sm.eager(run)).toEqual(want);
});

test("bad arguments are SmeltErrors at the call", () => {
  const dst = evaluated([2, 4], 0);
  const src = evaluated([1, 4], 0);
  expect(errorMessage(() => writeSlice(dst.add(1), src, 0, 0))).toContain("writeSlice: dst must be evaluated and contiguous");
  expect(errorMessage(() => writeSlice(dst.slice({}, { stop: 2 }), src.slice({}, { stop: 2 }), 0, 0))).toContain("writeSlice: dst must be evaluated and contiguous");
  expect(errorMessage(() => writeSlice(dst, src.astype("int32"), 0, 0))).toContain("writeSlice: src must have dst's dtype float32, got int32");
  expect(errorMessage(() => writeSlice(dst, evaluated([1, 3], 0), 0, 0))).toContain("writeSlice: src [1,3] must match dst [2,4] on every axis but 0");
  expect(errorMessage(() => writeSlice(dst, src, 0, 2))).toContain("writeSlice: positions [2, 3) of axis 0 are outside dst's 2");
  expect(errorMessage(() => writeSlice(dst, src, 2, 0))).toContain("writeSlice: axis must be an axis of dst [2,4], got 2");
});

test("a matmul reads a new axis of a row range of a write's result in place, as attention reads a cache", () => {
  const buffer = evaluated([2, 10, 4], 0);
  const w = evaluated([4, 3], 1);
  const src = evaluated([2, 1, 4], 60);
  sm.resetStats();
  const written = writeSlice(buffer, src, 1, 6);
  const rows = written.slice({}, { start: 2, stop: 7 }); // [2, 5, 4], rows 40 elements apart
  const y = sm.matmul(rows.slice({}, null), w); // [2, 1, 5, 3]
  y.eval();
  // the write and the matmul: no kernel copies the view first
  expect(sm.stats().kernelsDispatched).toBe(2);
  // toArray() is flat, row-major
  const A = reference(values(80, 0), [2, 10, 4], values(8, 60), [2, 1, 4], 1, 6), W = w.toArray() as number[];
  const want: number[] = [];
  for (let b = 0; b < 2; b++)
    for (let i = 2; i < 7; i++)
      for (let j = 0; j < 3; j++) want.push([0, 1, 2, 3].reduce((s, k) => s + A[(b * 10 + i) * 4 + k]! * W[k * 3 + j]!, 0));
  expect(y.shape).toEqual([2, 1, 5, 3]);
  const got = y.toArray() as number[];
  expect(got.length).toBe(want.length);
  got.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThan(1e-4));
});

test("a matmul reads slices of a transpose computed with it (steps, reversed, a new axis) in place", () => {
  const a = evaluated([6, 5], 1);
  const w = evaluated([6, 2], 3);
  const A = a.toArray() as number[], W = w.toArray() as number[];
  // t = (2a)ᵀ [5, 6]: 2a gets a kernel of the matmul's evaluation, and t lies column-major in it
  const T = (r: number, c: number) => 2 * A[c * 5 + r]!;
  // rows of t: start, step, count; columns likewise (all 6 for the matmul's depth, maybe reversed)
  const cases: { rows: [number, number, number]; cols: [number, number]; lead: boolean }[] = [
    { rows: [1, 1, 3], cols: [0, 1], lead: false },
    { rows: [0, 2, 3], cols: [5, -1], lead: false },
    { rows: [4, -3, 2], cols: [0, 1], lead: true },
  ];
  for (const { rows: [r0, rs, rn], cols: [c0, cs], lead } of cases) {
    const stop = r0 + rs * rn;
    const rowRange = stop < 0 ? { start: r0, step: rs } : { start: r0, stop, step: rs };
    const colRange = cs > 0 ? {} : { step: -1 };
    const s = sm.transpose(a.mul(2)).slice(...(lead ? [null, rowRange, colRange] : [rowRange, colRange]));
    sm.resetStats();
    const y = sm.matmul(s, w);
    y.eval();
    // 2a and the matmul: no kernel copies the slice first
    expect(sm.stats().kernelsDispatched).toBe(2);
    const want: number[] = [];
    for (let i = 0; i < rn; i++)
      for (let j = 0; j < 2; j++) want.push([0, 1, 2, 3, 4, 5].reduce((acc, k) => acc + T(r0 + i * rs, c0 + k * cs) * W[k * 2 + j]!, 0));
    expect(y.shape).toEqual(lead ? [1, rn, 2] : [rn, 2]);
    (y.toArray() as number[]).forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThan(1e-3));
  }
});

test("a gradient through writeSlice is refused with a SmeltError naming it, not a silent zero", () => {
  const dst = unwritten([2, 6], "float32");
  const src = evaluated([2, 3], 1);
  const through = (s: sm.Tensor) => writeSlice(dst, s, 1, 0).slice({}, { stop: 3 }).sum();
  expect(errorMessage(() => sm.grad(through)(src))).toMatch(/writeSlice.*no gradient/);
});
