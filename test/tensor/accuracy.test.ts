/**
 * Float32 reductions accumulate pairwise, so their error grows like log n: at 2^24 elements every
 * reduction family stays within 1e-6 (relative) of float64, in each kernel layout (one CPU thread
 * per row, a GPU threadgroup per row, one thread per output element).
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { rng, roundTo } from "./helpers.ts";

setDefaultTimeout(300_000);

const N = 1 << 24;
const f01 = Math.fround(0.1);
const relErr = (got: number, want: number) => Math.abs(got - want) / Math.abs(want);

// Row kernels run as the host runs them (a thread per row) and as a GPU would (256 threads a row).
const LAYOUTS = [undefined, "256"] as const;
const saved = process.env.SMELT_ROW_THREADS;
afterEach(() => {
  if (saved === undefined) delete process.env.SMELT_ROW_THREADS;
  else process.env.SMELT_ROW_THREADS = saved;
});
const layout = (threads: string | undefined) => {
  if (threads === undefined) delete process.env.SMELT_ROW_THREADS;
  else process.env.SMELT_ROW_THREADS = threads;
};

/** 2^24 uniform values in [0, 1) as float32, and their float64 sum. */
const values = (() => {
  const r = rng(24);
  const xs = new Float32Array(N);
  let sum = 0;
  for (let i = 0; i < N; i++) {
    xs[i] = r();
    sum += xs[i]!;
  }
  return { xs, sum };
})();

describe("sums of 2^24 float32 elements are within 1e-6 of float64", () => {
  for (const threads of LAYOUTS) {
    const where = threads ? `${threads} threads a row` : "one thread a row";
    test(`the issue's mean of full([2^24], 0.1) (${where})`, () => {
      layout(threads);
      const got = sm.full([N], 0.1).mean().item() as number;
      expect(relErr(got, f01)).toBeLessThanOrEqual(1e-6);
      expect(relErr(sm.eager(() => sm.full([N], 0.1).mean().item() as number), f01)).toBeLessThanOrEqual(1e-6);
    });
    test(`sum, mean, variance and logsumexp of uniform values (${where})`, () => {
      layout(threads);
      const { xs, sum } = values;
      const mean = sum / N;
      let sq = 0, se = 0;
      for (let i = 0; i < N; i++) {
        sq += (xs[i]! - mean) ** 2;
        se += Math.exp(xs[i]!);
      }
      const x = sm.array(xs);
      expect(relErr(x.sum().item() as number, sum)).toBeLessThanOrEqual(1e-6);
      expect(relErr(x.mean().item() as number, mean)).toBeLessThanOrEqual(1e-6);
      expect(relErr(sm.variance(x).item() as number, sq / N)).toBeLessThanOrEqual(1e-6);
      expect(relErr(sm.logsumexp(x).item() as number, Math.log(se))).toBeLessThanOrEqual(1e-6);
      x.dispose();
    });
  }

  test("the issue's column sums of full([2^20, 4], 0.1), and of 2^24 rows", () => {
    for (const got of sm.full([1 << 20, 4], 0.1).sum(0).toArray() as number[]) expect(relErr(got, f01 * 2 ** 20)).toBeLessThanOrEqual(1e-6);
    const { xs, sum } = values;
    const cols = sm.array(xs).reshape([N, 1]).sum(0).item() as number;
    expect(relErr(cols, sum)).toBeLessThanOrEqual(1e-6);
  });

  test("a reduction over a leading and a trailing axis (one thread per output element)", () => {
    const { xs, sum } = values;
    const want = [0, 0];
    for (let i = 0; i < N; i++) want[(i >> 1) & 1]! += xs[i]!;
    const got = sm.array(xs).reshape([N / 4, 2, 2]).sum([0, 2]).toArray() as number[];
    expect(relErr(got[0]!, want[0]!)).toBeLessThanOrEqual(1e-6);
    expect(relErr(got[1]!, want[1]!)).toBeLessThanOrEqual(1e-6);
    expect(relErr(got[0]! + got[1]!, sum)).toBeLessThanOrEqual(1e-6);
  });

  test("float16 and bfloat16 means round the float64 mean of their values once", () => {
    for (const dtype of ["float16", "bfloat16"] as const) {
      const v = roundTo(dtype, 0.1);
      const got = sm.full([N], 0.1, dtype).mean().item() as number;
      expect(got).toBe(roundTo(dtype, v));
      const cols = sm.full([1 << 20, 2], 0.01, dtype).mean(0).toArray() as number[];
      for (const c of cols) expect(c).toBe(roundTo(dtype, roundTo(dtype, 0.01)));
    }
  });

  test("prod, max, min and argmax keep their meaning over long rows and columns", () => {
    const { xs } = values;
    let max = -Infinity, min = Infinity, arg = 0;
    for (let i = 0; i < N; i++) {
      if (xs[i]! > max) [max, arg] = [xs[i]!, i];
      min = Math.min(min, xs[i]!);
    }
    const x = sm.array(xs);
    expect(x.max().item()).toBe(max);
    expect(x.min().item()).toBe(min);
    expect(x.argmax().item()).toBe(arg);
    expect(x.reshape([N, 1]).max(0).item()).toBe(max);
    // A product of 4096 factors near 1, in both layouts of a reduction. Each rounding of a product
    // is relative to all of it, whatever the order: its error grows like sqrt(n) ulps at best.
    const factors = Float32Array.from({ length: 4096 }, (_, i) => 1 + ((i % 7) - 3) * 1e-3);
    const want = factors.reduce((p, f) => p * f, 1);
    expect(relErr(sm.array(factors).prod().item() as number, want)).toBeLessThanOrEqual(2e-5);
    expect(relErr(sm.array(factors).reshape([4096, 1]).prod(0).item() as number, want)).toBeLessThanOrEqual(2e-5);
    x.dispose();
  });
});

describe("a single value from a long row is a two-stage reduction", () => {
  const kernels = (f: () => number) => {
    sm.resetStats();
    const v = f();
    return { v, kernels: sm.stats().kernelsDispatched };
  };

  test("sum, mean and max of 2^24 elements: partials, then the final fold", () => {
    const { xs, sum } = values;
    const x = sm.array(xs);
    for (const mode of ["lazy", "eager"] as const) {
      const run = (f: () => number) => kernels(() => (mode === "lazy" ? f() : sm.eager(f)));
      const s = run(() => x.sum().item() as number);
      expect(s.kernels).toBe(2);
      expect(relErr(s.v, sum)).toBeLessThanOrEqual(1e-6);
      const m = run(() => x.mean().item() as number);
      expect(relErr(m.v, sum / N)).toBeLessThanOrEqual(1e-6);
      let max = -Infinity;
      for (let i = 0; i < N; i += 1) max = Math.max(max, xs[i]!);
      const mx = run(() => x.reshape([4096, 4096]).max().item() as number);
      expect(mx.kernels).toBe(2);
      expect(mx.v).toBe(max);
    }
    expect(kernels(() => x.mean().item() as number).kernels).toBe(2);
    x.dispose();
  });

  test("a bfloat16 sum is split too; a row with no divisor to split by stays one kernel", () => {
    const b = kernels(() => sm.full([1 << 20], 0.5, "bfloat16").sum().item() as number);
    expect(b).toEqual({ v: 2 ** 19, kernels: 2 });
    const prime = 65537;
    const p = kernels(() => sm.full([prime], 0.25).sum().item() as number);
    expect(p).toEqual({ v: prime / 4, kernels: 1 });
  });
});
