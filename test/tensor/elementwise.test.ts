import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import {
  type DType,
  FLOATS,
  type Layout,
  type Tol,
  both,
  check,
  expectClose,
  expectSmeltError,
  expectSameValues,
  cpow,
  erf,
  erfinv,
  gelu,
  geluTanh,
  input,
  inDType,
  map1,
  mapN,
  pyDivmod,
  randint,
  ref,
  rint,
  roundTo,
  sigmoid,
  softplus,
  uniform,
} from "./helpers.ts";

setDefaultTimeout(120_000);

const SHAPE = [7, 13];
const N = 91;
// Values every float op meets at its edges: signed zeros, tiny and huge magnitudes, NaN and ±inf.
const SPECIAL = [NaN, Infinity, -Infinity, 0, -0, 1e-7, -1e-7, 1e-30, 0.5, -0.5, 1, -1, 2.5, -2.5, 30, -30, 80, -80, 100, -100];

interface Unary {
  name: string;
  f: (x: sm.Tensor) => sm.Tensor;
  r: (x: number) => number;
  lo: number;
  hi: number;
  /** extra tolerance from the inputs (e.g. cancellation) */
  tol?: (dtype: DType, xs: number[]) => Tol;
  ulps?: number;
}
// Ops whose value cancels for some inputs get slack proportional to |x| times float32's epsilon:
// float math runs in float32 for every float dtype.
const cancel = (k: number) => (_d: DType, xs: number[]) => ({ atolAt: (i: number) => k * Math.abs(xs[i]!) * 2 ** -24 });

const UNARY: Unary[] = [
  { name: "negative", f: sm.negative, r: (x) => -x, lo: -5, hi: 5, ulps: 0 },
  { name: "abs", f: sm.abs, r: Math.abs, lo: -5, hi: 5, ulps: 0 },
  // MLX, PyTorch and Metal agree that sign(NaN) is 0 (NumPy says NaN).
  { name: "sign", f: sm.sign, r: (x) => (Number.isNaN(x) ? 0 : Math.sign(x)), lo: -2, hi: 2, ulps: 0 },
  { name: "square", f: sm.square, r: (x) => x * x, lo: -5, hi: 5, ulps: 0 },
  { name: "sqrt", f: sm.sqrt, r: Math.sqrt, lo: 0, hi: 50, ulps: 0 },
  { name: "rsqrt", f: sm.rsqrt, r: (x) => 1 / Math.sqrt(x), lo: 0.01, hi: 50, ulps: 2 },
  { name: "exp", f: sm.exp, r: Math.exp, lo: -8, hi: 8 },
  { name: "expm1", f: sm.expm1, r: Math.expm1, lo: -3, hi: 3 },
  { name: "log", f: sm.log, r: Math.log, lo: 0.001, hi: 50, ulps: 2 },
  { name: "log1p", f: sm.log1p, r: Math.log1p, lo: -0.9, hi: 5 },
  { name: "log2", f: sm.log2, r: Math.log2, lo: 0.001, hi: 50, ulps: 2 },
  { name: "sin", f: sm.sin, r: Math.sin, lo: -4, hi: 4 },
  { name: "cos", f: sm.cos, r: Math.cos, lo: -4, hi: 4 },
  { name: "tan", f: sm.tan, r: Math.tan, lo: -1.4, hi: 1.4 },
  { name: "tanh", f: sm.tanh, r: Math.tanh, lo: -5, hi: 5 },
  { name: "sigmoid", f: sm.sigmoid, r: sigmoid, lo: -10, hi: 10 },
  { name: "erf", f: sm.erf, r: erf, lo: -3, hi: 3, ulps: 2 },
  { name: "erfinv", f: sm.erfinv, r: erfinv, lo: -0.999, hi: 0.999, ulps: 4 },
  { name: "floor", f: sm.floor, r: Math.floor, lo: -5, hi: 5, ulps: 0 },
  { name: "ceil", f: sm.ceil, r: Math.ceil, lo: -5, hi: 5, ulps: 0 },
  { name: "round", f: sm.round, r: rint, lo: -5, hi: 5, ulps: 0 },
  // relu is maximum(x, 0): NaN stays NaN (MLX and PyTorch).
  { name: "relu", f: sm.relu, r: (x) => (Number.isNaN(x) ? NaN : Math.max(x, 0)), lo: -5, hi: 5, ulps: 0 },
  { name: "gelu", f: (x) => sm.gelu(x), r: gelu, lo: -6, hi: 6, tol: cancel(4) },
  { name: "gelu tanh", f: (x) => sm.gelu(x, "tanh"), r: geluTanh, lo: -6, hi: 6, tol: cancel(4) },
  // silu(x) for x < -87 is x times a subnormal exp(x): exact only to within the subnormal spacing.
  { name: "silu", f: sm.silu, r: (x) => x * sigmoid(x), lo: -10, hi: 10, tol: () => ({ atol: 2 ** -126 }) },
  { name: "softplus", f: sm.softplus, r: softplus, lo: -20, hi: 20 },
];

function unaryCase(u: Unary, dtype: DType, shape: number[], xs: number[], layout: Layout = "contiguous") {
  const want = map1(ref(shape, xs), u.r);
  const tol = { ...(u.tol?.(dtype, xs) ?? {}), ulps: dtype === "float32" ? (u.ulps ?? 4) : Math.min(u.ulps ?? 1, 1) };
  check(() => u.f(input(shape, xs, dtype, layout)), want, dtype, tol, `${u.name} ${layout} [${shape}]`);
}

describe("unary float ops against float64", () => {
  for (const u of UNARY) {
    for (const dtype of FLOATS) {
      test(`${u.name} ${dtype}: 7x13, sizes 0 and 1, specials`, () => {
        const xs = inDType(dtype, uniform(N, u.lo, u.hi, u.name.length * 7 + 1));
        unaryCase(u, dtype, SHAPE, xs);
        unaryCase(u, dtype, [0, 5], []);
        unaryCase(u, dtype, [1, 1, 3], xs.slice(0, 3));
        // A 0-d input is loaded at a constant index: a kernel of its own, so float32 only.
        if (dtype === "float32" && ["exp", "gelu", "abs", "round"].includes(u.name)) unaryCase(u, dtype, [], [xs[5]!]);
        unaryCase(u, dtype, [SPECIAL.length], inDType(dtype, SPECIAL));
      });
    }
  }
});

describe("unary ops on non-contiguous inputs", () => {
  // Views are index math in the load, shared by every op: a few ops cover it.
  const picks = UNARY.filter((u) => ["exp", "gelu", "abs", "erfinv"].includes(u.name));
  for (const u of picks) {
    for (const layout of ["transposed", "strided", "lazyTransposed"] as Layout[]) {
      test(`${u.name} ${layout}`, () => {
        const xs = inDType("float32", uniform(N, u.lo, u.hi, 3));
        unaryCase(u, "float32", SHAPE, xs, layout);
        if (u.name === "exp") unaryCase(u, "float32", [3, 1, 4], xs.slice(0, 12), layout);
        unaryCase(u, "float32", [2, 0, 3], [], layout);
      });
    }
    test(`${u.name} bfloat16 transposed, float16 strided`, () => {
      unaryCase(u, "bfloat16", SHAPE, inDType("bfloat16", uniform(N, u.lo, u.hi, 4)), "transposed");
      unaryCase(u, "float16", [5, 6], inDType("float16", uniform(30, u.lo, u.hi, 5)), "strided");
    });
  }
});

describe("unary ops: precise cases", () => {
  test("round is half to even; floor and ceil keep signed zeros", () => {
    const r = both(() => sm.round(sm.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.4999998, -0.4])));
    expect(r.values).toEqual([0, 2, 2, -0, -2, -2, 3, -0]);
    expect(Object.is(r.values[3], -0)).toBe(true);
    expect(both(() => sm.floor(sm.array([-0.5, 0.5, -0]))).values).toEqual([-1, 0, -0]);
    expect(both(() => sm.ceil(sm.array([-0.5, 0.5]))).values).toEqual([-0, 1]);
  });
  test("erf is faithful around its branch points and in the tails", () => {
    const xs = inDType("float32", [0.4999, 0.5, 0.5001, 0.92, 0.927734375, 0.93, 1e-4, -1e-4, 2, 3.5, 4, -4, 6, 10]);
    check(() => sm.erf(sm.array(xs)), map1(ref([xs.length], xs), erf), "float32", { ulps: 2 });
  });
  test("erfinv near ±1 and at the edges of its domain", () => {
    const xs = inDType("float32", [0.9999, -0.9999, 0.99999, 1 - 2 ** -20, 1e-6, 0.1, 1, -1, 1.5, -2, NaN]);
    check(() => sm.erfinv(sm.array(xs)), map1(ref([xs.length], xs), erfinv), "float32", { ulps: 4 });
  });
  test("expm1 and log1p keep relative accuracy near 0", () => {
    const xs = inDType("float32", [1e-10, -1e-10, 1e-5, -1e-5, 0.01, -0.01, 3e-8]);
    check(() => sm.expm1(sm.array(xs)), map1(ref([7], xs), Math.expm1), "float32", { ulps: 2 });
    check(() => sm.log1p(sm.array(xs)), map1(ref([7], xs), Math.log1p), "float32", { ulps: 2 });
    check(() => sm.log1p(sm.array([-1, -2, Infinity])), ref([3], [-Infinity, NaN, Infinity]), "float32");
  });
  test("sigmoid, silu and softplus do not overflow for large |x|", () => {
    const xs = [-200, -100, -88, 88, 100, 200];
    check(() => sm.sigmoid(sm.array(xs)), map1(ref([6], xs), sigmoid), "float32");
    check(() => sm.softplus(sm.array(xs)), map1(ref([6], xs), softplus), "float32");
    check(() => sm.silu(sm.array(xs)), map1(ref([6], xs), (x) => x * sigmoid(x)), "float32", { atol: 2 ** -126 });
  });
  test("float-only ops promote integer and bool inputs to float32", () => {
    check(() => sm.sqrt(sm.array([4, 9, 2], "int32")), ref([3], [2, 3, Math.SQRT2]), "float32", { ulps: 0 });
    check(() => sm.exp(sm.array([true, false])), ref([2], [Math.E, 1]), "float32");
    check(() => sm.sigmoid(sm.array([0, 200], "uint8")), ref([2], [0.5, sigmoid(200)]), "float32");
    check(() => sm.erf(sm.array([1, -1], "int8")), ref([2], [erf(1), erf(-1)]), "float32", { ulps: 2 });
  });
});

describe("unary ops on integers and bool", () => {
  const I32 = [0, 1, -1, 7, -7, 2 ** 31 - 1, -(2 ** 31) + 1, 46340, -46340, 12345];
  const I8 = [0, 1, -1, 127, -128, -127, 11, -12];
  const U8 = [0, 1, 255, 128, 127, 16];
  const U32 = [0, 1, 2 ** 32 - 1, 2 ** 31, 65535];
  const cases: [DType, number[]][] = [["int32", I32], ["int8", I8], ["uint8", U8], ["uint32", U32]];
  for (const [dtype, xs] of cases) {
    test(`negative, abs, sign, square, floor, ceil, round, relu: ${dtype}`, () => {
      const sq = (x: number) => (dtype === "int32" && Math.abs(x) > 46340 ? null : x * x);
      const t = () => sm.array(xs, dtype);
      check(() => sm.negative(t()), map1(ref([xs.length], xs), (x) => -x), dtype);
      check(() => sm.abs(t()), map1(ref([xs.length], xs), Math.abs), dtype);
      check(() => sm.sign(t()), map1(ref([xs.length], xs), Math.sign), dtype);
      // int32 overflow is undefined in C; only squares that fit are checked.
      const fits = xs.filter((x) => sq(x) !== null);
      const wrapSq = (x: number) => Number((BigInt(x) * BigInt(x)) % 2n ** 32n);
      check(() => sm.square(sm.array(fits, dtype)), map1(ref([fits.length], fits), (x) => (dtype === "uint32" ? wrapSq(x) : x * x)), dtype);
      for (const f of [sm.floor, sm.ceil, sm.round]) check(() => f(t()), ref([xs.length], xs), dtype);
      check(() => sm.relu(t()), map1(ref([xs.length], xs), (x) => Math.max(x, 0)), dtype);
    });
  }
  test("negative, abs, sign and square reject bool", () => {
    for (const f of [sm.negative, sm.abs, sm.sign, sm.square]) {
      expect(() => f(sm.array([true]))).toThrow(sm.SmeltError);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// binary
// ---------------------------------------------------------------------------------------------

interface Binary {
  name: string;
  f: (a: sm.TensorLike, b: sm.TensorLike) => sm.Tensor;
  r: (a: number, b: number) => number;
  ulps: number;
  a: [number, number];
  b: [number, number];
}
const BINARY: Binary[] = [
  // +, -, *, / are correctly rounded in every float dtype (float32 holds a 16-bit type's exact
  // result to within one rounding that cannot change the final one).
  { name: "add", f: sm.add, r: (a, b) => a + b, ulps: 0, a: [-10, 10], b: [-10, 10] },
  { name: "subtract", f: sm.subtract, r: (a, b) => a - b, ulps: 0, a: [-10, 10], b: [-10, 10] },
  { name: "multiply", f: sm.multiply, r: (a, b) => a * b, ulps: 0, a: [-10, 10], b: [-10, 10] },
  { name: "divide", f: sm.divide, r: (a, b) => a / b, ulps: 0, a: [-10, 10], b: [0.5, 4] },
  { name: "floorDivide", f: sm.floorDivide, r: (a, b) => pyDivmod(a, b)[0], ulps: 0, a: [-20, 20], b: [-4, 4] },
  { name: "remainder", f: sm.remainder, r: (a, b) => pyDivmod(a, b)[1], ulps: 1, a: [-20, 20], b: [-4, 4] },
  { name: "power", f: sm.power, r: cpow, ulps: 4, a: [0.1, 4], b: [-3, 3] },
  { name: "maximum", f: sm.maximum, r: (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.max(a, b)), ulps: 0, a: [-5, 5], b: [-5, 5] },
  { name: "minimum", f: sm.minimum, r: (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : Math.min(a, b)), ulps: 0, a: [-5, 5], b: [-5, 5] },
];
const SPECIAL_PAIRS: [number, number][] = [
  [NaN, 1], [1, NaN], [Infinity, 1], [-Infinity, 2], [1, Infinity], [-1, -Infinity], [Infinity, Infinity], [Infinity, -Infinity],
  [0, 0], [-0, 0], [5, 0], [-5, 0], [0, -0], [1, 0.1], [-7, 2], [7, -2], [-7, -2], [6, 3], [-6, 3], [0.5, -0.25],
  [-2, 3], [-2, 2], [-2, -1], [-2, 0.5], [-8, 1 / 3], [2, 0.5], [0, -1], [-0, 3], [1, NaN], [NaN, 0], [-1, Infinity], [3, -2],
];
// Broadcasting from the left, the right, both sides, scalars, and size 0 and 1.
const BROADCASTS: [number[], number[]][] = [
  [[7, 13], [7, 13]],
  [[7, 13], [13]],
  [[13], [7, 13]],
  [[7, 1], [1, 13]],
  [[1, 13], [7, 1]],
  [[2, 1, 13], [7, 1]],
  [[], [7, 13]],
  [[7, 13], []],
  [[0, 13], [1, 13]],
  [[3, 1], [0]],
  [[1], [1, 1, 1]],
];

function binaryCase(op: Binary, dtype: DType, sa: number[], sb: number[], seed: number, la: Layout = "contiguous", lb: Layout = "contiguous") {
  const size = (s: number[]) => s.reduce((x, y) => x * y, 1);
  const xs = inDType(dtype, uniform(size(sa), op.a[0], op.a[1], seed));
  let ys = inDType(dtype, uniform(size(sb), op.b[0], op.b[1], seed + 1));
  if (op.name === "floorDivide" || op.name === "remainder") ys = ys.map((y) => (Math.abs(y) < 0.25 ? 1.5 : y));
  const want = mapN([ref(sa, xs), ref(sb, ys)], op.r);
  const tol = { ulps: dtype === "float32" ? op.ulps : Math.min(op.ulps, 1) };
  check(() => op.f(input(sa, xs, dtype, la), input(sb, ys, dtype, lb)), want, dtype, tol, `${op.name} [${sa}]x[${sb}] ${la}/${lb}`);
}

describe("binary float ops against float64", () => {
  for (const op of BINARY) {
    for (const dtype of FLOATS) {
      test(`${op.name} ${dtype}: same shape, row/column broadcast, specials`, () => {
        binaryCase(op, dtype, [7, 13], [7, 13], 11);
        if (dtype === "float32") binaryCase(op, dtype, [7, 1], [1, 13], 12);
        const a = inDType(dtype, SPECIAL_PAIRS.map((p) => p[0]));
        const b = inDType(dtype, SPECIAL_PAIRS.map((p) => p[1]));
        check(() => op.f(sm.array(a, dtype), sm.array(b, dtype)), mapN([ref([a.length], a), ref([b.length], b)], op.r), dtype, { ulps: op.ulps }, `${op.name} specials`);
      });
    }
  }
  test("floorDivide and remainder agree: a == b * floorDivide(a, b) + remainder(a, b)", () => {
    const a = inDType("float32", uniform(200, -50, 50, 5));
    const b = inDType("float32", uniform(200, 0.05, 3, 6)).map((x, i) => (i % 2 ? -x : x));
    const q = both(() => sm.floorDivide(sm.array(a), sm.array(b))).values as number[];
    const r = both(() => sm.remainder(sm.array(a), sm.array(b))).values as number[];
    for (let i = 0; i < a.length; i++) {
      expect(Number.isInteger(q[i]!)).toBe(true);
      expect(Math.abs(b[i]! * q[i]! + r[i]! - a[i]!)).toBeLessThanOrEqual(Math.abs(a[i]!) * 2 ** -21);
      if (r[i] !== 0) expect(Math.sign(r[i]!)).toBe(Math.sign(b[i]!));
      expect(Math.abs(r[i]!)).toBeLessThan(Math.abs(b[i]!));
    }
  });
  test("1 // 0.1 is 9 and 1 % 0.1 is 0.1 - eps, as in Python, NumPy and PyTorch", () => {
    expect(both(() => sm.floorDivide(sm.array([1]), 0.1)).values).toEqual([9]);
    expect(both(() => sm.remainder(sm.array([1]), 0.1)).values[0]).toBeCloseTo(0.1, 6);
  });
  test("power with a negative base and integral exponent", () => {
    const a = [-2, -2, -2, -3, -0.5, -1, -1, -Infinity, -Infinity, -2];
    // 2^24 + 2 is even and 2^24 - 1 odd, both exact in float32.
    const b = [2, 3, -1, 0, -3, 2 ** 24 - 1, 2 ** 24 + 2, 3, 2, 0.5];
    check(() => sm.power(sm.array(a), sm.array(b)), mapN([ref([10], a), ref([10], b)], cpow), "float32", { ulps: 1 });
  });
});

describe("binary ops: broadcasting and layouts", () => {
  const add = BINARY[0]!, mul = BINARY[2]!, sub = BINARY[1]!;
  test("add: broadcasting from every side, size 0 and 1, scalars", () => {
    BROADCASTS.forEach(([sa, sb], i) => binaryCase(add, "float32", sa, sb, 100 + i));
  });
  test("subtract: broadcasting from every side (order matters)", () => {
    BROADCASTS.forEach(([sa, sb], i) => binaryCase(sub, "float32", sa, sb, 200 + i));
  });
  for (const [la, lb] of [["transposed", "contiguous"], ["strided", "transposed"], ["lazyTransposed", "strided"], ["contiguous", "lazyTransposed"]] as [Layout, Layout][]) {
    test(`multiply on ${la} x ${lb} inputs, with and without broadcasting`, () => {
      binaryCase(mul, "float32", [7, 13], [7, 13], 31, la, lb);
      binaryCase(mul, "float32", [7, 13], [1, 13], 32, la, lb);
      binaryCase(mul, "float32", [2, 3, 4], [3, 1], 33, la, lb);
    });
  }
  test("an input broadcast by broadcastTo, then used with a transposed one", () => {
    const xs = inDType("float32", uniform(13, -1, 1, 41)), ys = inDType("float32", uniform(91, -1, 1, 42));
    const yT = ref([13, 7], Array.from({ length: 91 }, (_, i) => ys[(i % 7) * 13 + Math.floor(i / 7)]!));
    const want = mapN([ref([13, 1], xs), yT], (a, b) => a - b);
    check(() => sm.subtract(sm.broadcastTo(sm.array(xs).reshape([13, 1]), [13, 7]), sm.array(ys).reshape([7, 13]).T), want, "float32", { ulps: 0 });
  });
});

describe("binary ops on integers", () => {
  const idiv = (a: number, b: number) => (b === 0 ? 0 : Math.floor(a / b));
  const imod = (a: number, b: number) => (b === 0 ? 0 : a - b * Math.floor(a / b));
  const ipow = (a: number, b: number) => (b < 0 ? (a === 1 ? 1 : a === -1 ? (b % 2 ? -1 : 1) : 0) : a ** b);
  const ops: [string, (a: sm.TensorLike, b: sm.TensorLike) => sm.Tensor, (a: number, b: number) => number][] = [
    ["add", sm.add, (a, b) => a + b],
    ["subtract", sm.subtract, (a, b) => a - b],
    ["multiply", sm.multiply, (a, b) => a * b],
    ["floorDivide", sm.floorDivide, idiv],
    ["remainder", sm.remainder, imod],
    ["maximum", sm.maximum, Math.max],
    ["minimum", sm.minimum, Math.min],
  ];
  const ranges: Record<string, [number, number]> = { int32: [-1000, 1000], int8: [-128, 128], uint8: [0, 256], uint32: [0, 5000] };
  for (const dtype of ["int32", "int8", "uint8", "uint32"] as DType[]) {
    test(`add subtract multiply floorDivide remainder maximum minimum: ${dtype} (wrapping, division by 0 gives 0)`, () => {
      const [lo, hi] = ranges[dtype]!;
      const a = randint(60, lo, hi, 7), b = randint(60, lo, hi, 8).map((x, i) => (i % 10 === 0 ? 0 : i % 10 === 1 ? -3 : x));
      const bb = b.map((x) => roundTo(dtype, x));
      for (const [name, f, r] of ops) {
        // uint32 arithmetic wraps modulo 2^32, which float64 cannot be trusted with for products.
        const want = mapN([ref([6, 10], a), ref([6, 10], bb)], (x, y) => roundTo(dtype, r(x, y)));
        if (dtype === "uint32" && name === "multiply") want.data = a.map((x, i) => Number((BigInt(x) * BigInt(bb[i]!)) % 2n ** 32n));
        check(() => f(sm.array(a, dtype).reshape([6, 10]), sm.array(bb, dtype).reshape([6, 10])), want, dtype, {}, `${name} ${dtype}`);
      }
    });
  }
  test("integer power, including negative exponents (0 unless the base is ±1)", () => {
    const a = [2, -2, 3, -3, 0, 1, -1, 5, 2, -1, 1, 0];
    const b = [10, 3, 4, 5, 0, -4, -3, 2, -1, -2, 7, 3];
    check(() => sm.power(sm.array(a, "int32"), sm.array(b, "int32")), mapN([ref([12], a), ref([12], b)], ipow), "int32");
    check(() => sm.power(sm.array([2, 3, -2], "int8"), 3), ref([3], [8, 27, -8]), "int8");
    check(() => sm.power(sm.array([2, 3], "uint8"), sm.array([7, 5], "uint8")), ref([2], [128, 243]), "uint8");
  });
  test("divide of integers is true division in float32", () => {
    check(() => sm.divide(sm.array([7, -7, 1], "int32"), sm.array([2, 2, 3], "int32")), ref([3], [3.5, -3.5, 1 / 3]), "float32", { ulps: 0 });
    check(() => sm.divide(sm.array([1, 0]), 0), ref([2], [Infinity, NaN]), "float32");
  });
});

describe("comparisons and logic", () => {
  const a = [1, 2, NaN, Infinity, -Infinity, 0, -0, 3, NaN, 5];
  const b = [1, 3, 1, Infinity, 0, -0, 0, 2, NaN, -Infinity];
  const cmps: [string, (x: sm.TensorLike, y: sm.TensorLike) => sm.Tensor, (x: number, y: number) => boolean][] = [
    ["equal", sm.equal, (x, y) => x === y],
    ["notEqual", sm.notEqual, (x, y) => x !== y],
    ["less", sm.less, (x, y) => x < y],
    ["lessEqual", sm.lessEqual, (x, y) => x <= y],
    ["greater", sm.greater, (x, y) => x > y],
    ["greaterEqual", sm.greaterEqual, (x, y) => x >= y],
  ];
  for (const dtype of FLOATS) {
    test(`comparisons of ${dtype} with NaN, inf and signed zeros`, () => {
      for (const [name, f, r] of dtype === "float32" ? cmps : cmps.filter((c) => ["equal", "less"].includes(c[0]))) {
        check(() => f(sm.array(a, dtype), sm.array(b, dtype)), ref([10], a.map((x, i) => Number(r(x, b[i]!)))), "bool", {}, name);
      }
    });
  }
  test("comparisons of integers, broadcast and transposed, and against scalars", () => {
    const xs = randint(91, -5, 5, 3), ys = randint(13, -5, 5, 4);
    for (const [name, f, r] of cmps) {
      check(() => f(input([7, 13], xs, "int32", "transposed"), sm.array(ys, "int32")), mapN([ref([7, 13], xs), ref([13], ys)], (x, y) => Number(r(x, y))), "bool", {}, name);
      check(() => f(sm.array([0, 200, 255], "uint8"), 200), ref([3], [0, 200, 255].map((x) => Number(r(x, 200)))), "bool", {}, name);
      check(() => f(2, sm.array([1, 2, 3], "int8")), ref([3], [1, 2, 3].map((x) => Number(r(2, x)))), "bool", {}, name);
    }
  });
  test("logicalAnd, logicalOr, logicalNot on bool, numbers and NaN", () => {
    const p = [true, true, false, false], q = [true, false, true, false];
    check(() => sm.logicalAnd(sm.array(p), sm.array(q)), ref([4], [1, 0, 0, 0]), "bool");
    check(() => sm.logicalOr(sm.array(p), sm.array(q)), ref([4], [1, 1, 1, 0]), "bool");
    check(() => sm.logicalNot(sm.array(p)), ref([4], [0, 0, 1, 1]), "bool");
    // Nonzero (NaN included) is true, as in NumPy.
    check(() => sm.logicalAnd(sm.array([0, 2, NaN, -0]), sm.array([1, 1, 1, 1])), ref([4], [0, 1, 1, 0]), "bool");
    check(() => sm.logicalOr(sm.array([0, 0, 3], "int32"), sm.array([0, 5, 0], "uint8")), ref([3], [0, 1, 1]), "bool");
    check(() => sm.logicalNot(sm.array([0, 1, NaN, -0, Infinity])), ref([5], [1, 0, 0, 1, 0]), "bool");
    check(() => sm.logicalNot(sm.array([0, -3], "int8")), ref([2], [1, 0]), "bool");
    check(() => sm.logicalAnd(sm.array([[true], [false]]), sm.array([true, false, true])), ref([2, 3], [1, 0, 1, 0, 0, 0]), "bool");
  });
  test("isnan and isinf on floats, ints and bool", () => {
    const xs = [NaN, Infinity, -Infinity, 0, 1e38, -1, 65504];
    for (const dtype of FLOATS) {
      const v = inDType(dtype, xs);
      check(() => sm.isnan(sm.array(v, dtype)), ref([7], v.map((x) => Number(Number.isNaN(x)))), "bool");
      check(() => sm.isinf(sm.array(v, dtype)), ref([7], v.map((x) => Number(x === Infinity || x === -Infinity))), "bool");
    }
    check(() => sm.isnan(sm.array([1, 2], "int32")), ref([2], [0, 0]), "bool");
    check(() => sm.isinf(sm.array([true])), ref([1], [0]), "bool");
  });
});

describe("where, clip, nanToNum", () => {
  test("where with broadcasting from every argument, scalars, and a non-bool condition", () => {
    const c = [1, 0, 1, 0, 0, 1, 1], x = uniform(13, -1, 1, 9), y = uniform(7 * 13, -1, 1, 10);
    const want = mapN([ref([7, 1], c), ref([13], x), ref([7, 13], y)], (cc, a, b) => (cc ? a : b));
    check(() => sm.where(sm.array(c.map(Boolean)).reshape([7, 1]), sm.array(x), input([7, 13], y, "float32", "transposed")), want, "float32", { ulps: 0 });
    check(() => sm.where(sm.array([0, 2, NaN, -0]), 1, sm.array([5.5, 6, 7, 8])), ref([4], [5.5, 1, 1, 8]), "float32", { ulps: 0 });
    check(() => sm.where(sm.array([0, 2]), 1, sm.array([5, 6])), ref([2], [5, 1]), "int32");
    check(() => sm.where(sm.array([true, false]), sm.array([1, 2], "int8"), 100), ref([2], [1, 100]), "int8");
    check(() => sm.where(true, 1, 2.5), ref([], [1]), "float32");
  });
  test("where promotes a tensor with a scalar of another kind (int tensor, float scalar → float32)", () => {
    check(() => sm.where(sm.array([true, false]), sm.array([1, 2], "int32"), 0.5), ref([2], [1, 0.5]), "float32", { ulps: 0 });
    check(() => sm.where(sm.array([true, false]), 0.25, sm.array([1, 2], "uint8")), ref([2], [0.25, 2]), "float32", { ulps: 0 });
    check(() => sm.where(sm.array([false, true]), sm.array([1, 2], "float16"), sm.array([3, 4], "int32")), ref([2], [3, 2]), "float16");
  });
  test("clip with scalar bounds, tensor bounds, one bound, NaN", () => {
    const xs = [-3, -1, 0, 0.5, 2, 7, NaN, Infinity, -Infinity];
    const cl = (x: number, lo: number, hi: number) => (Number.isNaN(x) ? NaN : Math.min(Math.max(x, lo), hi));
    check(() => sm.clip(sm.array(xs), -1, 2), map1(ref([9], xs), (x) => cl(x, -1, 2)), "float32", { ulps: 0 });
    check(() => sm.clip(sm.array(xs), null, 0.5), map1(ref([9], xs), (x) => cl(x, -Infinity, 0.5)), "float32", { ulps: 0 });
    check(() => sm.clip(sm.array(xs), 0, null), map1(ref([9], xs), (x) => cl(x, 0, Infinity)), "float32", { ulps: 0 });
    const lo = sm.array([[-1], [0]]);
    check(() => sm.clip(sm.array([-5, 0.5, 5]), lo, sm.array([1, 1, 4])), ref([2, 3], [-1, 0.5, 4, 0, 0.5, 4]), "float32", { ulps: 0 });
    check(() => sm.clip(sm.array([-5, 100, 7], "int8"), 0, 10), ref([3], [0, 10, 7]), "int8");
    check(() => sm.clip(sm.array([1, 2], "bfloat16"), 1.5, 1.75), ref([2], [1.5, 1.75]), "bfloat16");
    expect(() => sm.clip(sm.array([1]), null, null)).toThrow(sm.SmeltError);
  });
  test("nanToNum: defaults are the dtype's finite extremes; custom values", () => {
    const xs = [NaN, Infinity, -Infinity, 1.5, -0];
    const max: Record<string, number> = { float32: 3.4028234663852886e38, float16: 65504, bfloat16: 3.3895313892515355e38 };
    for (const dtype of FLOATS) {
      check(() => sm.nanToNum(sm.array(xs, dtype)), ref([5], [0, max[dtype]!, -max[dtype]!, 1.5, -0]), dtype, { ulps: 0 });
      check(() => sm.nanToNum(sm.array(xs, dtype), 7, 8, -9), ref([5], [7, 8, -9, 1.5, 0]), dtype, { ulps: 0 });
    }
    check(() => sm.nanToNum(sm.array([3, -4], "int32")), ref([2], [3, -4]), "int32");
  });
});

describe("activation ops with NaN and inf", () => {
  test("relu, gelu, silu, softplus keep NaN; map ±inf to their limits", () => {
    const xs = [NaN, Infinity, -Infinity, -0, 0];
    check(() => sm.relu(sm.array(xs)), ref([5], [NaN, Infinity, 0, 0, 0]), "float32");
    check(() => sm.softplus(sm.array(xs)), ref([5], [NaN, Infinity, 0, Math.LN2, Math.LN2]), "float32");
    check(() => sm.gelu(sm.array([NaN, Infinity])), ref([2], [NaN, Infinity]), "float32");
    check(() => sm.gelu(sm.array([NaN, Infinity]), "tanh"), ref([2], [NaN, Infinity]), "float32");
    check(() => sm.silu(sm.array([NaN, Infinity])), ref([2], [NaN, Infinity]), "float32");
    check(() => sm.sigmoid(sm.array([NaN, Infinity, -Infinity])), ref([3], [NaN, 1, 0]), "float32");
  });
});

describe("dtype promotion of binary ops", () => {
  const cases: [DType, DType, DType][] = [
    ["int32", "float16", "float16"],
    ["uint8", "int8", "int32"],
    ["float16", "bfloat16", "float32"],
    ["uint32", "int32", "float32"],
    ["bool", "int8", "int8"],
    ["uint8", "uint32", "uint32"],
    ["bfloat16", "float32", "float32"],
  ];
  for (const [x, y, out] of cases) {
    test(`${x} + ${y} → ${out}`, () => {
      const a = sm.array([1, 0, 1], x), b = sm.array([2, 3, 100], y);
      check(() => sm.add(a, b), ref([3], [3, 3, 101]), out, { ulps: 0 });
      check(() => sm.add(b, a), ref([3], [3, 3, 101]), out, { ulps: 0 });
    });
  }
  test("scalars are weak: they take the tensor's dtype unless their kind does not fit", () => {
    check(() => sm.add(sm.array([100], "int8"), 100), ref([1], [-56]), "int8");
    check(() => sm.add(sm.array([1], "int8"), 1.5), ref([1], [2.5]), "float32");
    check(() => sm.multiply(sm.array([1000], "float16"), 100), ref([1], [Infinity]), "float16");
    check(() => sm.add(sm.array([1], "bfloat16"), 0.001), ref([1], [1]), "bfloat16");
    check(() => sm.add(sm.array([true]), 1), ref([1], [2]), "int32");
    check(() => sm.add(sm.array([true, false]), true), ref([2], [1, 1]), "bool");
    check(() => sm.multiply(sm.array([true, false]), sm.array([true, true])), ref([2], [1, 0]), "bool");
    check(() => sm.subtract(sm.array([true, false]), sm.array([true, true])), ref([2], [0, -1]), "int32");
    check(() => sm.add(2, 3.5), ref([], [5.5]), "float32");
  });
});

describe("fusion", () => {
  // Twelve elementwise ops over inputs broadcast from a column and a row.
  const chain = (x: sm.Tensor, y: sm.Tensor) => {
    let t = sm.add(x, y);
    t = sm.multiply(t, 0.5);
    t = sm.sin(t);
    t = sm.subtract(t, y);
    t = sm.exp(t);
    t = sm.maximum(t, x);
    t = sm.sqrt(t);
    t = sm.divide(t, 3);
    t = sm.tanh(t);
    t = sm.square(t);
    t = sm.add(t, x);
    return sm.sigmoid(t);
  };
  const chainRef = (x: number, y: number) => {
    let t = Math.exp(Math.sin((x + y) * 0.5) - y);
    t = Math.tanh(Math.sqrt(Math.max(t, x)) / 3);
    return sigmoid(t * t + x);
  };
  test("a 12-op chain on [64,1] and [1,128] inputs is 1 kernel lazily and 12 eagerly, with equal results", () => {
    const xs = inDType("float32", uniform(64, -2, 2, 51)), ys = inDType("float32", uniform(128, -2, 2, 52));
    const x = sm.array(xs).reshape([64, 1]).eval(), y = sm.array(ys).reshape([1, 128]).eval();

    sm.resetStats();
    const lazy = chain(x, y);
    expect(sm.stats().kernelsDispatched).toBe(0); // nothing runs until the result is read
    const lazyValues = lazy.toArray();
    expect(sm.stats().kernelsDispatched).toBe(1);
    expect(sm.stats().commandBuffers).toBe(1);

    sm.resetStats();
    const eagerValues = sm.eager(() => chain(x, y).toArray());
    expect(sm.stats().kernelsDispatched).toBe(12);

    expect(lazy.shape).toEqual([64, 128]);
    expect(lazyValues).toEqual(eagerValues);
    const want = mapN([ref([64, 1], xs), ref([1, 128], ys)], chainRef);
    expectClose(lazyValues as number[], want.data, "float32", { ulps: 16 });
  });
});

describe("errors at the call, before any evaluation", () => {
  /** The call throws a SmeltError naming the patterns, and nothing was dispatched. */
  function fails(fn: () => unknown, ...patterns: (string | RegExp)[]) {
    sm.resetStats();
    const e = expectSmeltError(fn, ...patterns);
    expect(sm.stats().kernelsDispatched).toBe(0);
    return e;
  }
  test("shape mismatches name the op and both shapes", () => {
    const a = sm.add(sm.zeros([2, 3]), 1), b = sm.zeros([4]);
    fails(() => sm.add(a, b), "add", "[2,3]", "[4]");
    fails(() => sm.multiply(b, a), "multiply", "[4]", "[2,3]");
    fails(() => sm.maximum(sm.zeros([2, 1, 3]), sm.zeros([2, 2])), "maximum", "[2,1,3]", "[2,2]");
    fails(() => sm.less(a, b), "less", "[2,3]");
    fails(() => sm.where(sm.zeros([2], "bool"), a, 0), "where", "[2]", "[2,3]");
    fails(() => sm.clip(a, sm.zeros([5]), null), "[2,3]", "[5]");
    fails(() => sm.subtract(sm.zeros([0]), sm.zeros([2])), "subtract", "[0]", "[2]");
  });
  test("bad axes name the op, the axis and the rank", () => {
    const x = sm.exp(sm.zeros([2, 3]));
    fails(() => sm.sum(x, 2), "sum", "axis 2", "2-D");
    fails(() => sm.max(x, -3), "max", "-3");
    fails(() => sm.sum(x, [0, -2]), "sum", "duplicate");
    fails(() => sm.argmax(x, 2), "argmax", "2");
    fails(() => sm.cumsum(x, 2), "cumsum", "2");
    fails(() => sm.cumprod(x, -3), "cumprod", "-3");
    fails(() => sm.all(x, 1.5 as never), "all", "1.5");
    fails(() => sm.mean(x, 2), "mean", "2");
    fails(() => sm.variance(x, 5), "variance", "5");
    fails(() => sm.std(x, [0, 0]), "std", "duplicate");
    fails(() => sm.logsumexp(x, 3), "logsumexp", "3");
    fails(() => sm.softmax(x, 2), "softmax", "2");
    fails(() => sm.logSoftmax(x, -3), "logSoftmax", "-3");
  });
  test("dtype errors name the op and the dtype", () => {
    fails(() => sm.negative(sm.array([true])), "negative", "bool");
    fails(() => sm.abs(sm.array([true])), "abs", "bool");
    fails(() => sm.astype(sm.zeros([2]), "float64" as never), "astype", "float64");
    fails(() => sm.zeros([2], "complex64" as never), "complex64");
    fails(() => sm.add(sm.zeros([2]), "1" as never), "add", "string");
  });
  test("NaN in data is not an error anywhere", () => {
    const x = sm.array([NaN, 1, NaN]);
    for (const f of [sm.sum, sm.max, sm.mean, sm.softmax, sm.logsumexp] as ((t: sm.Tensor) => sm.Tensor)[]) {
      expect(() => f(x).toArray()).not.toThrow();
    }
    expect(() => sm.matmul(x.reshape([1, 3]), x.reshape([3, 1])).toArray()).not.toThrow();
  });
});

describe("method forms", () => {
  test("binary and unary methods equal the functions", () => {
    const xs = inDType("float32", uniform(12, 0.5, 3, 61)), ys = inDType("float32", uniform(12, -2, 2, 62));
    const x = () => sm.array(xs).reshape([3, 4]), y = () => sm.array(ys).reshape([3, 4]);
    const pairs: [string, () => sm.Tensor, () => sm.Tensor][] = [
      ["add", () => x().add(y()), () => sm.add(x(), y())],
      ["sub", () => x().sub(2), () => sm.subtract(x(), 2)],
      ["mul", () => x().mul(y()), () => sm.multiply(x(), y())],
      ["div", () => x().div(y()), () => sm.divide(x(), y())],
      ["pow", () => x().pow(y()), () => sm.power(x(), y())],
      ["floorDiv", () => y().floorDiv(x()), () => sm.floorDivide(y(), x())],
      ["mod", () => y().mod(x()), () => sm.remainder(y(), x())],
      ["maximum", () => x().maximum(y()), () => sm.maximum(x(), y())],
      ["minimum", () => x().minimum(1), () => sm.minimum(x(), 1)],
      ["eq", () => x().eq(y()), () => sm.equal(x(), y())],
      ["ne", () => x().ne(y()), () => sm.notEqual(x(), y())],
      ["lt", () => x().lt(y()), () => sm.less(x(), y())],
      ["le", () => x().le(1), () => sm.lessEqual(x(), 1)],
      ["gt", () => x().gt(y()), () => sm.greater(x(), y())],
      ["ge", () => x().ge(y()), () => sm.greaterEqual(x(), y())],
      ["neg", () => y().neg(), () => sm.negative(y())],
      ["abs", () => y().abs(), () => sm.abs(y())],
      ["square", () => y().square(), () => sm.square(y())],
      ["sqrt", () => x().sqrt(), () => sm.sqrt(x())],
      ["rsqrt", () => x().rsqrt(), () => sm.rsqrt(x())],
      ["exp", () => y().exp(), () => sm.exp(y())],
      ["log", () => x().log(), () => sm.log(x())],
      ["sin", () => y().sin(), () => sm.sin(y())],
      ["cos", () => y().cos(), () => sm.cos(y())],
      ["tanh", () => y().tanh(), () => sm.tanh(y())],
      ["sigmoid", () => y().sigmoid(), () => sm.sigmoid(y())],
      ["relu", () => y().relu(), () => sm.relu(y())],
      ["astype", () => y().astype("int8"), () => sm.astype(y(), "int8")],
    ];
    for (const [name, m, f] of pairs) {
      const a = both(m, name), b = both(f, name);
      expect(a.dtype).toBe(b.dtype);
      expect(a.shape).toEqual(b.shape);
      expectSameValues(a.values, b.values, name);
    }
  });
});
