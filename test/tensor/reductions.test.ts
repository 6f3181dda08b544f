import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import {
  type DType,
  type Layout,
  type Ref,
  type Tol,
  both,
  check,
  expectClose,
  input,
  inDType,
  randint,
  randn,
  reduceRef,
  ref,
  sizeOf,
  uniform,
  unravel,
} from "./helpers.ts";

setDefaultTimeout(120_000);

type Axes = number | number[] | undefined;
const axesList = (a: Axes): number[] | undefined => (a === undefined ? undefined : typeof a === "number" ? [a] : a);

// ---------------------------------------------------------------------------------------------
// references
// ---------------------------------------------------------------------------------------------

const nanMax = (xs: number[]) => (xs.some(Number.isNaN) ? NaN : Math.max(...xs));
const nanMin = (xs: number[]) => (xs.some(Number.isNaN) ? NaN : Math.min(...xs));
const sumOf = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
function argBest(xs: number[], better: (a: number, b: number) => boolean): number {
  const nan = xs.findIndex(Number.isNaN);
  if (nan >= 0) return nan;
  let k = 0;
  for (let i = 1; i < xs.length; i++) if (better(xs[i]!, xs[k]!)) k = i;
  return k;
}
function lse(xs: number[]): number {
  const m = nanMax(xs);
  if (Number.isNaN(m)) return NaN;
  if (!Number.isFinite(m)) return xs.length === 0 ? -Infinity : m;
  return m + Math.log(sumOf(xs.map((x) => Math.exp(x - m))));
}
function variance(xs: number[], ddof: number): number {
  const m = sumOf(xs) / xs.length;
  return sumOf(xs.map((x) => (x - m) ** 2)) / Math.max(xs.length - ddof, 0);
}

interface Reduction {
  name: string;
  f: (x: sm.Tensor, axis: Axes, keepdims: boolean) => sm.Tensor;
  r: (xs: number[]) => number;
  out: (d: DType) => DType;
  /** slack for summation order: a multiple of eps times the sum of |x| over the reduced values */
  sums?: number;
  rtol?: number;
}
const same = (d: DType) => d;
const floaty = (d: DType): DType => (d.startsWith("float") || d === "bfloat16" ? d : "float32");
const REDUCTIONS: Reduction[] = [
  { name: "sum", f: (x, a, k) => sm.sum(x, a, k), r: sumOf, out: same, sums: 2 },
  { name: "mean", f: (x, a, k) => sm.mean(x, a, k), r: (xs) => sumOf(xs) / xs.length, out: floaty, sums: 2 },
  { name: "prod", f: (x, a, k) => sm.prod(x, a, k), r: (xs) => xs.reduce((a, b) => a * b, 1), out: same, rtol: 2 ** -18 },
  { name: "max", f: (x, a, k) => sm.max(x, a, k), r: nanMax, out: same },
  { name: "min", f: (x, a, k) => sm.min(x, a, k), r: nanMin, out: same },
  { name: "logsumexp", f: (x, a, k) => sm.logsumexp(x, a, k), r: lse, out: floaty, rtol: 2 ** -20 },
  { name: "variance", f: (x, a, k) => sm.variance(x, a, k), r: (xs) => variance(xs, 0), out: floaty, rtol: 2 ** -18 },
  { name: "variance ddof=1", f: (x, a, k) => sm.variance(x, a, k, 1), r: (xs) => variance(xs, 1), out: floaty, rtol: 2 ** -18 },
  { name: "std", f: (x, a, k) => sm.std(x, a, k), r: (xs) => Math.sqrt(variance(xs, 0)), out: floaty, rtol: 2 ** -18 },
  { name: "std ddof=1", f: (x, a, k) => sm.std(x, a, k, 1), r: (xs) => Math.sqrt(variance(xs, 1)), out: floaty, rtol: 2 ** -18 },
  { name: "all", f: (x, a, k) => sm.all(x, a, k), r: (xs) => Number(xs.every((v) => v !== 0)), out: () => "bool" },
  { name: "any", f: (x, a, k) => sm.any(x, a, k), r: (xs) => Number(xs.some((v) => v !== 0)), out: () => "bool" },
];

/** Reference and tolerance of reduction `red` of x over `axes`. */
function expected(red: Reduction, x: Ref, axes: Axes, keepdims: boolean, dtype: DType): { want: Ref; tol: Tol & { modes?: Tol } } {
  const want = reduceRef(x, axesList(axes), keepdims, red.r);
  const absSums = reduceRef(x, axesList(axes), keepdims, (xs) => sumOf(xs.map(Math.abs)) * xs.length).data;
  const eps = 2 ** -24;
  const tol: Tol & { modes?: Tol } = { ulps: dtype === "float32" ? 2 : 1, rtol: red.rtol ?? 0 };
  if (red.sums) tol.atolAt = (i) => red.sums! * eps * absSums[i]!;
  // A row-fused reduction sums in a different order than a plain one.
  tol.modes = { ulps: 2, rtol: red.rtol ?? 0, atolAt: red.sums ? (i) => 2 * red.sums! * eps * absSums[i]! : undefined };
  return { want, tol };
}

function reductionCase(red: Reduction, dtype: DType, shape: number[], xs: number[], axes: Axes, keepdims: boolean, layout: Layout = "contiguous") {
  const { want, tol } = expected(red, ref(shape, xs), axes, keepdims, dtype);
  const label = `${red.name} [${shape}] axis=${JSON.stringify(axes)} keepdims=${keepdims} ${layout}`;
  check(() => red.f(input(shape, xs, dtype, layout), axes, keepdims), want, red.out(dtype), tol, label);
}

const SHAPE = [3, 5, 7];
const AXES: Axes[] = [undefined, 0, 1, -1, [0, 2], [1, 2], [0, 1, 2], [-3, -2]];
// Composite reductions (several kernels eagerly) run on one axis set of each kind: all axes, a
// leading axis, the trailing axis (a row kernel when fused), and a non-trailing pair.
const COMPOSITE = new Set(["mean", "logsumexp", "variance", "variance ddof=1", "std", "std ddof=1"]);
const AXES_SHORT: Axes[] = [undefined, 0, -1, [0, 2]];

describe("reductions over every axis set, keepdims, float32", () => {
  for (const red of REDUCTIONS) {
    test(`${red.name}`, () => {
      const xs = inDType("float32", red.name === "prod" ? uniform(105, 0.5, 1.6, 3) : randn(105, 3));
      (COMPOSITE.has(red.name) ? AXES_SHORT : AXES).forEach((axes, i) => reductionCase(red, "float32", SHAPE, xs, axes, i % 2 === 0));
      // size-1 axes, and the same reduction kept and dropped
      const ys = xs.slice(0, 24);
      reductionCase(red, "float32", [4, 1, 6], ys, 1, true);
      reductionCase(red, "float32", [4, 1, 6], ys, [0, 1], false);
      reductionCase(red, "float32", [4, 1, 6], ys, -1, false);
      // a 0-d input
      reductionCase(red, "float32", [], [xs[0]!], undefined, false);
    });
  }
});

describe("reductions of non-contiguous inputs", () => {
  const picks = REDUCTIONS.filter((r) => ["sum", "max", "logsumexp", "variance"].includes(r.name));
  for (const red of picks) {
    for (const layout of ["transposed", "strided", "lazyTransposed"] as Layout[]) {
      test(`${red.name} of a ${layout} input`, () => {
        const xs = inDType("float32", randn(91, 4));
        for (const axes of [undefined, 0, -1] as Axes[]) reductionCase(red, "float32", [7, 13], xs, axes, false, layout);
      });
    }
  }
  test("sum of a broadcast input counts each broadcast element", () => {
    const xs = [1.5, 2, 3];
    check(() => sm.sum(sm.broadcastTo(sm.array(xs), [4, 3]), 0), ref([3], [6, 8, 12]), "float32", { ulps: 0 });
    check(() => sm.sum(sm.broadcastTo(sm.array(xs), [4, 3])), ref([], [26]), "float32", { ulps: 0 });
    check(() => sm.sum(sm.broadcastTo(sm.array([1, 2, 3], "int32"), [4, 3]), 1), ref([4], [6, 6, 6, 6]), "int32");
    check(() => sm.mean(sm.broadcastTo(sm.array([[1.5], [3]]), [2, 5]), -1), ref([2], [1.5, 3]), "float32", { ulps: 0 });
  });
});

describe("reductions in float16 and bfloat16 (accumulated in float32, rounded once)", () => {
  const picks = REDUCTIONS.filter((r) => ["sum", "mean", "max", "min", "logsumexp", "variance", "std"].includes(r.name));
  for (const dtype of ["float16", "bfloat16"] as DType[]) {
    for (const red of picks) {
      test(`${red.name} ${dtype}`, () => {
        const xs = inDType(dtype, randn(105, 5));
        for (const axes of [1, -1] as Axes[]) reductionCase(red, dtype, SHAPE, xs, axes, false);
      });
    }
  }
  test("float16 sum and mean do not overflow where float32 accumulation does not", () => {
    const xs = new Array(2000).fill(100);
    check(() => sm.mean(sm.array(xs, "float16")), ref([], [100]), "float16", { ulps: 0 });
    check(() => sm.sum(sm.array(xs, "float16")), ref([], [Infinity]), "float16");
    check(() => sm.variance(sm.array(xs, "float16")), ref([], [0]), "float16", { ulps: 0 });
  });
});

describe("reductions of integers and bool", () => {
  test("sum of int8, uint8 and bool accumulates in int32 (no wrapping in the narrow type)", () => {
    check(() => sm.sum(sm.array([100, 100, 100, -50], "int8")), ref([], [250]), "int32");
    check(() => sm.sum(sm.array([200, 200, 255], "uint8")), ref([], [655]), "int32");
    check(() => sm.sum(sm.array([true, true, true, false, true])), ref([], [4]), "int32");
    check(() => sm.sum(sm.array([[true, false], [true, true]]), 0), ref([2], [2, 1]), "int32");
    check(() => sm.prod(sm.array([100, 3, -2], "int8")), ref([], [-600]), "int32");
    check(() => sm.cumsum(sm.array([100, 100, 100], "int8")), ref([3], [100, 200, 300]), "int32");
  });
  test("sum, prod, max, min, argmax, argmin of int32 and uint32 over axes", () => {
    const xs = randint(105, -1000, 1000, 6);
    for (const red of REDUCTIONS.filter((r) => ["sum", "max", "min"].includes(r.name))) {
      for (const axes of [undefined, 1, [0, 2]] as Axes[]) reductionCase(red, "int32", SHAPE, xs, axes, false);
    }
    const us = [0, 4294967295, 2147483648, 7, 4294967294, 1];
    check(() => sm.max(sm.array(us, "uint32")), ref([], [4294967295]), "uint32");
    check(() => sm.min(sm.array(us, "uint32").reshape([2, 3]), 1), ref([2], [0, 1]), "uint32");
    check(() => sm.argmax(sm.array(us, "uint32")), ref([], [1]), "uint32");
    check(() => sm.max(sm.array([-128, 127, 0], "int8")), ref([], [127]), "int8");
    check(() => sm.min(sm.array([200, 3, 255], "uint8")), ref([], [3]), "uint8");
    check(() => sm.prod(sm.array([2, 3, 4, -1], "int32").reshape([2, 2]), 0), ref([2], [8, -3]), "int32");
  });
  test("mean, variance, std and logsumexp of integers compute in float32", () => {
    check(() => sm.mean(sm.array([1, 2, 4], "int32")), ref([], [7 / 3]), "float32");
    check(() => sm.variance(sm.array([1, 2, 4], "uint8"), undefined, false, 1), ref([], [variance([1, 2, 4], 1)]), "float32");
    check(() => sm.std(sm.array([true, false])), ref([], [0.5]), "float32");
    check(() => sm.logsumexp(sm.array([1, 2], "int8")), ref([], [lse([1, 2])]), "float32");
  });
  test("all and any of floats (NaN is true), ints and bool, over axes", () => {
    const xs = [0, 1, NaN, 0, 0, 0, 2, -0, 3];
    for (const red of REDUCTIONS.filter((r) => r.name === "all" || r.name === "any")) {
      for (const axes of [undefined, 0, 1] as Axes[]) {
        reductionCase(red, "float32", [3, 3], xs, axes, false);
        reductionCase(red, "int8", [3, 3], xs.map((x) => (Number.isNaN(x) ? 5 : x)), axes, true);
      }
      check(() => red.f(sm.array([[true, true], [false, true]]), 0, false), ref([2], red.name === "all" ? [0, 1] : [1, 1]), "bool");
    }
  });
});

describe("NaN, inf and empty reductions", () => {
  test("NaN propagates through sum, max, min, logsumexp; argmax and argmin pick the first NaN", () => {
    const xs = [1, NaN, 3, -Infinity, 2, 5, NaN, 0];
    check(() => sm.sum(sm.array(xs).reshape([2, 4]), 1), ref([2], [NaN, NaN]), "float32");
    check(() => sm.max(sm.array([1, 5, 2, NaN, -1, 3]).reshape([2, 3]), 1), ref([2], [5, NaN]), "float32");
    check(() => sm.min(sm.array([1, 5, NaN, 7, -1, 3]).reshape([2, 3]), 1), ref([2], [NaN, -1]), "float32");
    check(() => sm.argmax(sm.array(xs)), ref([], [1]), "uint32");
    check(() => sm.argmin(sm.array(xs).reshape([2, 4]), 1), ref([2], [1, 2]), "uint32");
    check(() => sm.logsumexp(sm.array([0, NaN])), ref([], [NaN]), "float32");
  });
  test("logsumexp handles rows of -inf, +inf and large values", () => {
    const rows = [[-Infinity, -Infinity], [Infinity, 1], [1000, 1000], [-1000, -1001], [-Infinity, 0]];
    check(() => sm.logsumexp(sm.array(rows), 1), ref([5], rows.map(lse)), "float32", { ulps: 2 });
    check(() => sm.logsumexp(sm.array(rows), 0), ref([2], [0, 1].map((c) => lse(rows.map((r) => r[c]!)))), "float32");
  });
  test("max, min and inf: ties and ±inf", () => {
    check(() => sm.max(sm.array([-Infinity, -Infinity])), ref([], [-Infinity]), "float32");
    check(() => sm.argmax(sm.array([3, 7, 7, 1])), ref([], [1]), "uint32");
    check(() => sm.argmin(sm.array([3, 1, 7, 1])), ref([], [1]), "uint32");
    check(() => sm.argmax(sm.array([-Infinity, -Infinity])), ref([], [0]), "uint32");
  });
  test("sum, prod, mean, all, any, logsumexp over a zero-size axis give their identities", () => {
    const z = () => sm.zeros([2, 0, 3]);
    check(() => sm.sum(z(), 1), ref([2, 3], [0, 0, 0, 0, 0, 0]), "float32");
    check(() => sm.prod(z(), [1, 2]), ref([2], [1, 1]), "float32");
    check(() => sm.mean(z(), 1), ref([2, 3], new Array(6).fill(NaN)), "float32");
    check(() => sm.all(z(), 1), ref([2, 3], new Array(6).fill(1)), "bool");
    check(() => sm.any(z()), ref([], [0]), "bool");
    check(() => sm.logsumexp(z(), 1), ref([2, 3], new Array(6).fill(-Infinity)), "float32");
    check(() => sm.sum(sm.zeros([0], "int32")), ref([], [0]), "int32");
  });
  test("reductions whose output is empty", () => {
    check(() => sm.sum(sm.zeros([2, 0, 3]), 2), ref([2, 0], []), "float32");
    check(() => sm.max(sm.zeros([0, 4]), 1, true), ref([0, 1], []), "float32");
    check(() => sm.argmax(sm.zeros([0, 4]), 1), ref([0], []), "uint32");
  });
  test("max, min, argmax and argmin of a zero-size axis throw (no identity), at the call", () => {
    for (const f of [sm.max, sm.min]) {
      expect(() => f(sm.zeros([3, 0]), 1)).toThrow(sm.SmeltError);
      expect(() => f(sm.zeros([0]))).toThrow(/zero-size/);
    }
    for (const f of [sm.argmax, sm.argmin]) {
      expect(() => f(sm.zeros([3, 0]), 1)).toThrow(sm.SmeltError);
      expect(() => f(sm.zeros([0]))).toThrow(/zero-size/);
    }
  });
});

describe("argmax and argmin", () => {
  test("over each axis, keepdims, negative axes, layouts", () => {
    const xs = inDType("float32", randn(105, 8));
    for (const [name, f, better] of [["argmax", sm.argmax, (a: number, b: number) => a > b], ["argmin", sm.argmin, (a: number, b: number) => a < b]] as const) {
      for (const [axis, keepdims] of [[0, false], [1, true], [-1, false], [2, true]] as [number, boolean][]) {
        const want = reduceRef(ref(SHAPE, xs), [axis], keepdims, (v) => argBest(v, better));
        check(() => f(input(SHAPE, xs, "float32", axis === 2 ? "transposed" : "contiguous"), axis, keepdims), want, "uint32", {}, `${name} ${axis}`);
      }
      check(() => f(sm.array(xs).reshape(SHAPE)), ref([], [argBest(xs, better)]), "uint32", {}, name);
      check(() => f(sm.array(inDType("float16", xs)).astype("float16").reshape([15, 7]), 0), reduceRef(ref([15, 7], inDType("float16", xs)), [0], false, (v) => argBest(v, better)), "uint32");
      check(() => f(sm.array(randint(12, -5, 5, 9), "int8").reshape([3, 4]), 1), reduceRef(ref([3, 4], randint(12, -5, 5, 9)), [1], false, (v) => argBest(v, better)), "uint32");
    }
  });
  test("argmax with no axis and keepdims gives a shape of ones, as NumPy and MLX", () => {
    const r = both(() => sm.argmax(sm.array([[1, 9, 3], [4, 5, 6]]), undefined, true));
    expect(r.shape).toEqual([1, 1]);
    expect(r.values).toEqual([1]);
    expect(both(() => sm.argmin(sm.array([[1, 9, 3], [4, 0, 6]]), undefined, true)).shape).toEqual([1, 1]);
  });
});

// ---------------------------------------------------------------------------------------------
// scans
// ---------------------------------------------------------------------------------------------

function scanRef(x: Ref, axis: number | undefined, f: (a: number, b: number) => number, init: number): Ref {
  if (axis === undefined) {
    let acc = init;
    return ref([x.data.length], x.data.map((v) => (acc = f(acc, v))));
  }
  const ax = axis < 0 ? axis + x.shape.length : axis;
  const data = x.data.slice();
  const stride = sizeOf(x.shape.slice(ax + 1));
  for (let i = 0; i < data.length; i++) {
    const idx = unravel(i, x.shape);
    if (idx[ax]! > 0) data[i] = f(data[i - stride]!, x.data[i]!);
    else data[i] = f(init, x.data[i]!);
  }
  return ref(x.shape, data);
}

describe("cumsum and cumprod", () => {
  const add = (a: number, b: number) => a + b, mul = (a: number, b: number) => a * b;
  for (const [name, f, r, init] of [["cumsum", sm.cumsum, add, 0], ["cumprod", sm.cumprod, mul, 1]] as const) {
    test(`${name} float32 along each axis, flattened, and on non-contiguous inputs`, () => {
      const xs = inDType("float32", name === "cumsum" ? randn(105, 10) : uniform(105, 0.6, 1.5, 10));
      // A running sum's error grows with the number of terms and the magnitudes it went through.
      const tolFor = (shape: number[], axis: number | undefined) => {
        const prefix = scanRef(ref(shape, xs.slice(0, sizeOf(shape)).map(Math.abs)), axis, r, init).data;
        return { ulps: 4, rtol: 2 ** -19, atolAt: name === "cumsum" ? (i: number) => 2 ** -24 * 105 * prefix[i]! : undefined };
      };
      for (const axis of [0, 1, 2, -1, undefined]) {
        check(() => f(sm.array(xs).reshape(SHAPE), axis), scanRef(ref(SHAPE, xs), axis, r, init), "float32", tolFor(SHAPE, axis), `${name} ${axis}`);
      }
      const tol = tolFor([7, 13], 1);
      for (const layout of ["transposed", "strided", "lazyTransposed"] as Layout[]) {
        check(() => f(input([7, 13], xs.slice(0, 91), "float32", layout), 1), scanRef(ref([7, 13], xs.slice(0, 91)), 1, r, init), "float32", tol, `${name} ${layout}`);
      }
      check(() => f(sm.zeros([3, 0]), 1), ref([3, 0], []), "float32");
      check(() => f(sm.array([2, NaN, 3, Infinity])), scanRef(ref([4], [2, NaN, 3, Infinity]), 0, r, init), "float32");
    });
    test(`${name} of float16, bfloat16, int32, int8 and bool`, () => {
      for (const dtype of ["float16", "bfloat16"] as DType[]) {
        const xs = inDType(dtype, uniform(40, 0.5, 1.5, 11));
        // Each output rounds the float32 running value once.
        const want = scanRef(ref([5, 8], xs), 1, r, init);
        const got = both(() => f(sm.array(xs, dtype).reshape([5, 8]), 1));
        expect(got.dtype).toBe(dtype);
        expectClose(got.values, want.data, dtype, { ulps: 1 }, `${name} ${dtype}`);
      }
      const is = randint(20, -4, 5, 12);
      check(() => f(sm.array(is, "int32").reshape([4, 5]), 0), scanRef(ref([4, 5], is), 0, r, init), "int32");
      check(() => f(sm.array(is, "int8"), 0), scanRef(ref([20], is), 0, r, init), "int32");
      check(() => f(sm.array([true, false, true, true])), scanRef(ref([4], [1, 0, 1, 1]), 0, r, init), "int32");
    });
  }
});

// ---------------------------------------------------------------------------------------------
// softmax and logSoftmax
// ---------------------------------------------------------------------------------------------

function softmaxRef(x: Ref, axes: number[], log: boolean): Ref {
  const l = reduceRef(x, axes, true, lse);
  const nd = x.shape.length;
  const norm = axes.map((a) => (a < 0 ? a + nd : a));
  return ref(x.shape, x.data.map((v, i) => {
    const idx = unravel(i, x.shape).map((k, d) => (norm.includes(d) ? 0 : k));
    let at = 0;
    for (let d = 0; d < nd; d++) at = at * l.shape[d]! + idx[d]!;
    const z = v - l.data[at]!;
    return log ? z : Math.exp(z);
  }));
}

describe("softmax and logSoftmax", () => {
  for (const [name, f, log] of [["softmax", sm.softmax, false], ["logSoftmax", sm.logSoftmax, true]] as const) {
    test(`${name} over the last axis, the first, and two axes; float32`, () => {
      const xs = inDType("float32", randn(105, 13).map((x) => 3 * x));
      const tol = { ulps: 4, atol: log ? 2 ** -20 : 2 ** -26, modes: { ulps: 4, atol: 2 ** -20 } };
      for (const axes of [[-1], [0], [1, 2]]) {
        check(() => f(sm.array(xs).reshape(SHAPE), axes.length === 1 ? axes[0] : axes), softmaxRef(ref(SHAPE, xs), axes, log), "float32", tol, `${name} ${axes}`);
      }
      check(() => f(input([7, 13], xs.slice(0, 91), "float32", "transposed")), softmaxRef(ref([7, 13], xs.slice(0, 91)), [-1], log), "float32", tol);
    });
    test(`${name}: -inf entries, huge logits, one element per row; float16 and bfloat16`, () => {
      const rows = [[-Infinity, 0, 1], [1000, 999, -1000], [-1e30, 5, 5], [0, 0, 0]];
      const flat = rows.flat();
      check(() => f(sm.array(rows)), softmaxRef(ref([4, 3], flat), [-1], log), "float32", { ulps: 4, modes: { ulps: 4 } });
      check(() => f(sm.array([[3], [-2]])), ref([2, 1], log ? [0, 0] : [1, 1]), "float32", { ulps: 1 });
      for (const dtype of ["float16", "bfloat16"] as DType[]) {
        const xs = inDType(dtype, randn(40, 14));
        check(() => f(sm.array(xs, dtype).reshape([5, 8])), softmaxRef(ref([5, 8], xs), [-1], log), dtype, { ulps: 2, atol: log ? 0 : 2 ** -14, modes: { ulps: 1 } });
      }
    });
  }
  test("softmax rows sum to 1 and a row of -inf gives NaN (as PyTorch)", () => {
    const xs = inDType("float32", randn(65, 15));
    const s = both(() => sm.sum(sm.softmax(sm.array(xs).reshape([5, 13])), -1), "", { ulps: 8 });
    expectClose(s.values, [1, 1, 1, 1, 1], "float32", { ulps: 8 });
    check(() => sm.softmax(sm.array([[-Infinity, -Infinity]])), ref([1, 2], [NaN, NaN]), "float32");
  });
  test("softmax of integers is float32", () => {
    check(() => sm.softmax(sm.array([0, 0], "int32")), ref([2], [0.5, 0.5]), "float32", { ulps: 0 });
  });
});

describe("method forms", () => {
  test("x.sum, x.mean, x.var, x.std, x.max, x.argmax, x.cumsum and x.logsumexp match the functions", () => {
    const xs = inDType("float32", randn(15, 16));
    const x = () => sm.array(xs).reshape([3, 5]);
    const pairs: [() => sm.Tensor, () => sm.Tensor][] = [
      [() => x().sum(1), () => sm.sum(x(), 1)],
      [() => x().mean(0, true), () => sm.mean(x(), 0, true)],
      [() => x().var(1, false, 1), () => sm.variance(x(), 1, false, 1)],
      [() => x().std(), () => sm.std(x())],
      [() => x().max(-1), () => sm.max(x(), -1)],
      [() => x().argmax(0), () => sm.argmax(x(), 0)],
      [() => x().cumsum(1), () => sm.cumsum(x(), 1)],
      [() => x().logsumexp(1), () => sm.logsumexp(x(), 1)],
      [() => x().prod(0), () => sm.prod(x(), 0)],
      [() => x().min(), () => sm.min(x())],
      [() => x().argmin(1), () => sm.argmin(x(), 1)],
      [() => x().all(), () => sm.all(x())],
      [() => x().any(0), () => sm.any(x(), 0)],
      [() => x().cumprod(0), () => sm.cumprod(x(), 0)],
    ];
    for (const [m, f] of pairs) {
      const a = both(m, "method", { ulps: 2 }), b = both(f, "function", { ulps: 2 });
      expect(a.shape).toEqual(b.shape);
      expect(a.values).toEqual(b.values);
    }
  });
});

describe("row fusion read through a gather", () => {
  // A node computed by a later kernel of the same evaluation (here the max, wanted by another
  // consumer) must be computed inline by earlier kernels, not read from memory not yet written.
  test("takeAlongAxis of a row-fused logSoftmax", () => {
    const rows = [[1, 2, 3], [4, 5, 9], [0, 0, 7]];
    const want = [[0, 2], [1, 0], [2, 1]].map(([r, c]) => rows[r!]![c!]! - lse(rows[r!]!));
    check(() => sm.takeAlongAxis(sm.logSoftmax(sm.array(rows, "float32"), -1), sm.array([[2], [0], [1]], "int32"), -1), ref([3, 1], want), "float32", { ulps: 4 });
  });
});
