import { describe, setDefaultTimeout, test } from "bun:test";
import fc from "fast-check";
import * as sm from "../../src/index.ts";
import { check, inDType, mapN, permuteRef, randn, reduceRef, ref, sizeOf, sliceIndices, takeRef } from "./helpers.ts";

setDefaultTimeout(120_000);

// Fixed seeds: the same shapes every run, so the host backend's kernel cache serves them after
// the first; a failure reports its seed and path, and fast-check shrinks it.
const RUNS = { numRuns: 25, seed: 20261122 };

/** Two shapes that broadcast: each dim of each side is the shared dim or 1, some leading dims dropped. */
const broadcastPair = fc
  .array(fc.integer({ min: 0, max: 4 }), { minLength: 0, maxLength: 4 })
  .chain((dims) =>
    fc.tuple(
      fc.constant(dims),
      fc.array(fc.boolean(), { minLength: dims.length, maxLength: dims.length }),
      fc.array(fc.boolean(), { minLength: dims.length, maxLength: dims.length }),
      fc.integer({ min: 0, max: dims.length }),
      fc.integer({ min: 0, max: dims.length }),
    ),
  )
  .map(([dims, oneA, oneB, dropA, dropB]) => [
    dims.map((d, i) => (oneA[i] ? 1 : d)).slice(dropA),
    dims.map((d, i) => (oneB[i] ? 1 : d)).slice(dropB),
  ] as [number[], number[]]);

describe("properties", () => {
  test("add and multiply of random broadcastable shapes equal the float64 reference", () => {
    let seed = 1;
    fc.assert(
      fc.property(broadcastPair, fc.constantFrom("add", "multiply"), ([sa, sb], op) => {
        const xs = inDType("float32", randn(sizeOf(sa), seed++)), ys = inDType("float32", randn(sizeOf(sb), seed++));
        const f = op === "add" ? sm.add : sm.multiply;
        const want = mapN([ref(sa, xs), ref(sb, ys)], op === "add" ? (a, b) => a + b : (a, b) => a * b);
        check(() => f(sm.array(xs).reshape(sa), sm.array(ys).reshape(sb)), want, "float32", { ulps: 0 }, `${op} [${sa}] [${sb}]`);
      }),
      RUNS,
    );
  });

  const viewCase = fc
    .array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 4 })
    .chain((shape) =>
      fc.tuple(
        fc.constant(shape),
        fc.shuffledSubarray([...shape.keys()], { minLength: shape.length, maxLength: shape.length }),
        fc.tuple(
          ...shape.map((d) =>
            fc.tuple(
              fc.option(fc.integer({ min: -d - 2, max: d + 2 }), { nil: null }),
              fc.option(fc.integer({ min: -d - 2, max: d + 2 }), { nil: null }),
              fc.integer({ min: -3, max: 3 }).filter((s) => s !== 0),
            ),
          ),
        ),
        fc.boolean(),
      ),
    );

  test("random transposes then slices of random arrays equal a brute-force reference", () => {
    let seed = 100;
    fc.assert(
      fc.property(viewCase, ([shape, perm, slices, lazy]) => {
        const xs = inDType("float32", randn(sizeOf(shape), seed++));
        const t = permuteRef(ref(shape, xs), perm);
        const want = takeRef(t, slices.map(([a, b, s], k) => sliceIndices(t.shape[k]!, a, b, s)));
        const build = () => {
          let x = sm.array(xs).reshape(shape);
          if (lazy) x = sm.where(true, x, x);
          return sm.transpose(x, perm).slice(...slices.map(([start, stop, step]) => ({ start, stop, step })));
        };
        const label = `[${shape}] perm [${perm}] slices ${JSON.stringify(slices)} lazy=${lazy}`;
        check(build, want, "float32", { ulps: 0 }, label);
        check(() => sm.negative(build()), { shape: want.shape, data: want.data.map((v) => -v) }, "float32", { ulps: 0 }, label);
      }),
      RUNS,
    );
  });

  const reductionCase = fc
    .array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 4 })
    .chain((shape) =>
      fc.tuple(
        fc.constant(shape),
        fc.subarray([...shape.keys()], { minLength: 1 }),
        fc.boolean(),
        fc.constantFrom("sum", "max", "min", "mean", "prod"),
      ),
    );

  test("reductions over random axis sets equal the float64 reference", () => {
    let seed = 300;
    const refs: Record<string, (xs: number[]) => number> = {
      sum: (xs) => xs.reduce((a, b) => a + b, 0),
      mean: (xs) => xs.reduce((a, b) => a + b, 0) / xs.length,
      prod: (xs) => xs.reduce((a, b) => a * b, 1),
      max: (xs) => Math.max(...xs),
      min: (xs) => Math.min(...xs),
    };
    fc.assert(
      fc.property(reductionCase, ([shape, axes, keepdims, op]) => {
        const xs = inDType("float32", randn(sizeOf(shape), seed++).map((v) => (op === "prod" ? 1 + v / 4 : v)));
        const want = reduceRef(ref(shape, xs), axes, keepdims, refs[op]!);
        const absSum = reduceRef(ref(shape, xs), axes, keepdims, (v) => v.reduce((a, b) => a + Math.abs(b), 0) * v.length).data;
        const f = (sm as unknown as Record<string, (x: sm.Tensor, a: number[], k: boolean) => sm.Tensor>)[op]!;
        const tol = { ulps: 2, rtol: op === "prod" ? 2 ** -18 : 0, atolAt: (i: number) => 2 ** -23 * absSum[i]! };
        check(() => f(sm.array(xs).reshape(shape), axes, keepdims), want, "float32", { ...tol, modes: tol }, `${op} [${shape}] axes [${axes}] keepdims=${keepdims}`);
      }),
      RUNS,
    );
  });
});
