import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { withTargetEnv } from "../../src/runtime/target.ts";
import {
  type DType,
  type Layout,
  type Ref,
  type Tol,
  check,
  expectSmeltError,
  input,
  inDType,
  mapN,
  matmulRef,
  randint,
  randn,
  ref,
  sizeOf,
} from "./helpers.ts";

setDefaultTimeout(120_000);

/** Reference of a @ b (NumPy's matmul rules for 1-D operands) and a tolerance from sum |a||b|. */
function expectedMatmul(sa: number[], xs: number[], sb: number[], ys: number[]): { want: Ref; tol: (d: DType) => Tol } {
  const A = ref(sa.length === 1 ? [1, sa[0]!] : sa, xs);
  const B = ref(sb.length === 1 ? [sb[0]!, 1] : sb, ys);
  const full = matmulRef(A, B);
  const abs = matmulRef(ref(A.shape, xs.map(Math.abs)), ref(B.shape, ys.map(Math.abs)));
  const K = A.shape[A.shape.length - 1]!;
  let shape = full.shape;
  if (sa.length === 1) shape = [...shape.slice(0, -2), shape[shape.length - 1]!];
  if (sb.length === 1) shape = shape.slice(0, -1);
  const want = ref(shape, full.data);
  // Products accumulate in float32 whatever the dtype; the result is rounded once.
  return { want, tol: (d) => ({ ulps: d === "float32" ? 2 : 1, atolAt: (i) => (K + 2) * 2 ** -24 * abs.data[i]! }) };
}

function matmulCase(sa: number[], sb: number[], dtype: DType = "float32", la: Layout = "contiguous", lb: Layout = "contiguous", seed = 1) {
  const xs = inDType(dtype, randn(sizeOf(sa), seed)), ys = inDType(dtype, randn(sizeOf(sb), seed + 1));
  const { want, tol } = expectedMatmul(sa, xs, sb, ys);
  check(() => sm.matmul(input(sa, xs, dtype, la), input(sb, ys, dtype, lb)), want, dtype, { ...tol(dtype), modes: tol(dtype) }, `matmul [${sa}]@[${sb}] ${la}/${lb} ${dtype}`);
}

describe("matmul", () => {
  test("2-D of odd sizes, short (inlined) and long contractions", () => {
    matmulCase([7, 13], [13, 5]);
    matmulCase([7, 45], [45, 9]);
    matmulCase([1, 1], [1, 1]);
    matmulCase([33, 3], [3, 17]);
    matmulCase([20, 70], [70, 20]);
  });
  test("batched, with batch dims broadcast from either side", () => {
    matmulCase([3, 7, 13], [3, 13, 5]);
    matmulCase([2, 1, 4, 6], [3, 6, 5]);
    matmulCase([4, 6], [2, 6, 3]);
    matmulCase([2, 5, 40], [40, 3]);
    matmulCase([1, 3, 40], [2, 1, 40, 6]);
  });
  test("transposed and strided operands, computed and lazy", () => {
    for (const [la, lb] of [["transposed", "contiguous"], ["contiguous", "transposed"], ["transposed", "transposed"], ["strided", "lazyTransposed"], ["lazyTransposed", "strided"]] as [Layout, Layout][]) {
      matmulCase([7, 13], [13, 5], "float32", la, lb, 3);
      matmulCase([6, 40], [40, 11], "float32", la, lb, 4);
      matmulCase([2, 3, 9], [2, 9, 4], "float32", la, lb, 5);
    }
  });
  test(".T and transpose() as written by users", () => {
    const a = inDType("float32", randn(91, 7)), b = inDType("float32", randn(65, 8));
    const { want, tol } = expectedMatmul([7, 13], a, [13, 5], b);
    // a is stored as [13, 7] and b as [5, 13]
    const aT = ref([13, 7], Array.from({ length: 91 }, (_, i) => a[(i % 7) * 13 + Math.floor(i / 7)]!));
    const bT = ref([5, 13], Array.from({ length: 65 }, (_, i) => b[(i % 13) * 5 + Math.floor(i / 13)]!));
    check(() => sm.matmul(sm.array(aT.data).reshape([13, 7]).T, sm.transpose(sm.array(bT.data).reshape([5, 13]))), want, "float32", tol("float32"));
    check(() => sm.array(aT.data).reshape([13, 7]).T.matmul(sm.array(bT.data).reshape([5, 13]).T), want, "float32", tol("float32"));
  });
  test("vector operands: 1-D on either side, both, and with batches", () => {
    matmulCase([13], [13, 5]);
    matmulCase([7, 13], [13]);
    matmulCase([13], [13]);
    matmulCase([2, 7, 13], [13]);
    matmulCase([13], [2, 13, 5]);
    matmulCase([40], [40]);
  });
  test("zero-size dimensions: K = 0 gives zeros; M, N or batch 0 give empty results", () => {
    check(() => sm.matmul(sm.zeros([3, 0]), sm.zeros([0, 4])), ref([3, 4], new Array(12).fill(0)), "float32");
    check(() => sm.matmul(sm.zeros([0, 5]), sm.ones([5, 4])), ref([0, 4], []), "float32");
    check(() => sm.matmul(sm.ones([3, 5]), sm.ones([5, 0])), ref([3, 0], []), "float32");
    check(() => sm.matmul(sm.ones([0, 3, 5]), sm.ones([5, 2])), ref([0, 3, 2], []), "float32");
    check(() => sm.matmul(sm.zeros([0]), sm.zeros([0])), ref([], [0]), "float32");
  });
  test("float16 and bfloat16 accumulate in float32 and round once", () => {
    for (const dtype of ["float16", "bfloat16"] as DType[]) {
      matmulCase([7, 13], [13, 5], dtype);
      matmulCase([2, 5, 40], [40, 6], dtype, "transposed", "contiguous");
    }
  });
  test("integer and bool operands; mixed dtypes promote", () => {
    const a = randint(12, -9, 9, 1), b = randint(20, -9, 9, 2);
    check(() => sm.matmul(sm.array(a, "int32").reshape([3, 4]), sm.array(b, "int32").reshape([4, 5])), matmulRef(ref([3, 4], a), ref([4, 5], b)), "int32");
    const p = [1, 0, 1, 1, 1, 0], q = [1, 1, 0, 1, 1, 1];
    check(() => sm.matmul(sm.array(p.map(Boolean)).reshape([2, 3]), sm.array(q.map(Boolean)).reshape([3, 2])), matmulRef(ref([2, 3], p), ref([3, 2], q)), "int32");
    const h = inDType("float16", randn(6, 3)), f = inDType("float32", randn(6, 4));
    const { want, tol } = expectedMatmul([2, 3], h, [3, 2], f);
    check(() => sm.matmul(sm.array(h, "float16").reshape([2, 3]), sm.array(f).reshape([3, 2])), want, "float32", tol("float32"));
  });
  test("NaN and inf propagate through the products", () => {
    const a = [1, NaN, 0, 1, Infinity, 0], b = [1, 2, 3, 4, 5, 6];
    check(() => sm.matmul(sm.array(a).reshape([2, 3]), sm.array(b).reshape([3, 2])), ref([2, 2], [NaN, NaN, Infinity, Infinity]), "float32");
  });
  test("matmul in every kernel variant of the host backend (SMELT_MATMUL)", () => {
    for (const v of ["simd", "dot", "block", "column"]) {
      withTargetEnv(sm.device(), { SMELT_MATMUL: v }, () => {
        matmulCase([2, 9, 40], [40, 10], "float32", "contiguous", "contiguous", 20);
        matmulCase([17, 35], [35, 9], "float32", "transposed", "strided", 21);
      });
    }
  });
});

describe("addmm, outer, inner", () => {
  test("addmm: alpha * a @ b + beta * c, with c broadcast, a scalar, or transposed", () => {
    const a = inDType("float32", randn(28, 1)), b = inDType("float32", randn(20, 2)), c = inDType("float32", randn(20, 3));
    const { want: ab, tol } = expectedMatmul([7, 4], a, [4, 5], b);
    const mk = (cs: number[], cv: number[], alpha: number, beta: number) => mapN([ab, ref(cs, cv)], (x, y) => alpha * x + beta * y);
    const A = () => sm.array(a).reshape([7, 4]), B = () => sm.array(b).reshape([4, 5]);
    const t = { ...tol("float32"), ulps: 4 };
    check(() => sm.addmm(sm.array(c.slice(0, 5)), A(), B()), mk([5], c.slice(0, 5), 1, 1), "float32", t);
    check(() => sm.addmm(sm.array(c.slice(0, 7)).reshape([7, 1]), A(), B(), 0.5, 2), mk([7, 1], c.slice(0, 7), 0.5, 2), "float32", t);
    check(() => sm.addmm(1.5, A(), B(), -1, 0.25), mk([], [1.5], -1, 0.25), "float32", t);
    const cT = Array.from({ length: 35 }, (_, i) => c[i % 20]!);
    check(() => sm.addmm(sm.array(cT).reshape([5, 7]).T, A(), B(), 2, -1), mk([7, 5], Array.from({ length: 35 }, (_, i) => cT[(i % 5) * 7 + Math.floor(i / 5)]!), 2, -1), "float32", t);
  });
  test("outer of vectors, of 2-D inputs (flattened), and of an empty vector", () => {
    const a = inDType("float32", randn(3, 5)), b = inDType("float32", randn(4, 6));
    const want = ref([3, 4], a.flatMap((x) => b.map((y) => x * y)));
    check(() => sm.outer(sm.array(a), sm.array(b)), want, "float32", { ulps: 0 });
    check(() => sm.outer(sm.array(a).reshape([3, 1]), sm.array(b).reshape([2, 2])), want, "float32", { ulps: 0 });
    check(() => sm.outer(sm.zeros([0]), sm.array(b)), ref([0, 4], []), "float32");
    check(() => sm.outer(sm.array([1, 2], "int32"), sm.array([3, 4], "int32")), ref([2, 2], [3, 4, 6, 8]), "int32");
  });
  test("inner: dot of vectors; over the last axes of n-d inputs (shape a[:-1] + b[:-1])", () => {
    const a = inDType("float32", randn(6, 7)), b = inDType("float32", randn(12, 8));
    const dot = (x: number[], y: number[]) => x.reduce((s, v, i) => s + v * y[i]!, 0);
    check(() => sm.inner(sm.array(a.slice(0, 3)), sm.array(b.slice(0, 3))), ref([], [dot(a.slice(0, 3), b.slice(0, 3))]), "float32", { ulps: 4 });
    const rowsA = [a.slice(0, 3), a.slice(3, 6)];
    const rowsB = [0, 1, 2, 3].map((i) => b.slice(3 * i, 3 * i + 3));
    check(() => sm.inner(sm.array(a).reshape([2, 3]), sm.array(b).reshape([4, 3])), ref([2, 4], rowsA.flatMap((x) => rowsB.map((y) => dot(x, y)))), "float32", { ulps: 4 });
    check(() => sm.inner(sm.array(a.slice(0, 3)), sm.array(b).reshape([2, 2, 3])), ref([2, 2], rowsB.map((y) => dot(a.slice(0, 3), y))), "float32", { ulps: 4 });
    check(() => sm.inner(sm.array(a).reshape([2, 3]), sm.array(2)), ref([2, 3], a.map((x) => 2 * x)), "float32", { ulps: 0 });
    check(() => sm.inner(sm.zeros([2, 0]), sm.zeros([3, 0])), ref([2, 3], new Array(6).fill(0)), "float32");
  });
});

describe("matmul errors at the call", () => {
  test("mismatched contraction, scalars, batch dims that do not broadcast", () => {
    const e = expectSmeltError(() => sm.matmul(sm.zeros([2, 3]), sm.zeros([4, 5])), "matmul", "[2,3]", "[4,5]");
    expect(e.message).toContain("3");
    expectSmeltError(() => sm.matmul(sm.zeros([3]), sm.zeros([4])), "matmul", "[3]", "[4]");
    expectSmeltError(() => sm.matmul(sm.array(2), sm.zeros([2, 2])), "matmul", "scalar");
    expectSmeltError(() => sm.matmul(sm.zeros([2, 3, 4]), sm.zeros([3, 4, 5])), "matmul", "[2]", "[3]");
    expectSmeltError(() => sm.inner(sm.zeros([2, 3]), sm.zeros([2, 4])), "inner", "[2,3]", "[2,4]");
    expectSmeltError(() => sm.addmm(sm.zeros([3]), sm.zeros([2, 4]), sm.zeros([4, 5])), "addmm");
  });
});
