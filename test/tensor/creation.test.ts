import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { type DType, DTYPES } from "../../src/graph/dtype.ts";
import { both, check, expectClose, expectSmeltError, inDType, ref, roundTo, uniform } from "./helpers.ts";

setDefaultTimeout(120_000);

describe("array", () => {
  test("nested arrays: shape, inferred dtype, values", () => {
    const r = both(() => sm.array([[1, 2, 3], [4, 5, 6]]));
    expect(r.shape).toEqual([2, 3]);
    expect(r.dtype).toBe("int32");
    expect(r.values).toEqual([1, 2, 3, 4, 5, 6]);
    expect(sm.array([[1.5], [2]]).dtype).toBe("float32");
    expect(sm.array([true, false]).dtype).toBe("bool");
    expect(sm.array([true, 2]).dtype).toBe("int32");
    expect(sm.array([]).dtype).toBe("float32");
    expect(sm.array([]).shape).toEqual([0]);
    expect(sm.array([[], []]).shape).toEqual([2, 0]);
    expect(sm.array(3).shape).toEqual([]);
    expect(sm.array(3).item()).toBe(3);
    expect(sm.array(2.5).item()).toBe(2.5);
    expect(sm.array(true).item<boolean>()).toBe(true);
    // Integers past int32 become float32 rather than wrapping (smelt has no int64).
    expect(sm.array([2 ** 31]).dtype).toBe("float32");
  });
  test("typed arrays: Float32Array stays float32; integer typed arrays keep their integer type", () => {
    expect(sm.array(new Float32Array([1, 2.5])).dtype).toBe("float32");
    expect(sm.array(new Float32Array([1, 2.5])).toArray()).toEqual([1, 2.5]);
    expect(sm.array(new Int32Array([1, -2])).dtype).toBe("int32");
    expect(sm.array(new Uint8Array([1, 255])).toArray()).toEqual([1, 255]);
    expect(sm.array(new Float64Array([0.1])).toArray()).toEqual([Math.fround(0.1)]);
  });
  test("an explicit dtype rounds (floats) or truncates (integers) the values", () => {
    const xs = [0.1, -2.5, 65520, 1e-8, 3.14159, NaN, Infinity];
    for (const dtype of ["float32", "float16", "bfloat16"] as DType[]) {
      const r = both(() => sm.array(xs, dtype));
      expect(r.dtype).toBe(dtype);
      expectClose(r.values, xs, dtype, { ulps: 0 });
    }
    // Numbers an integer dtype cannot hold are errors (creation-values.test.ts), not wrapped.
    expect(sm.array([255, 0, 3.7, -0.5], "uint8").toArray()).toEqual([255, 0, 3, 0]);
    expect(sm.array([127, -128, -3.7], "int8").toArray()).toEqual([127, -128, -3]);
    expect(sm.array([0, 2 ** 32 - 1], "uint32").toArray()).toEqual([0, 4294967295]);
    expect(sm.array([0, 2, NaN, -0], "bool").toArray<boolean>()).toEqual([false, true, true, false]);
  });
  test("NaN and inf in data are values, not errors", () => {
    const t = sm.array([NaN, Infinity, -Infinity]);
    const r = both(() => sm.add(sm.array([NaN, Infinity, -Infinity]), 1));
    expect(t.toArray()).toEqual([NaN, Infinity, -Infinity]);
    expect(r.values).toEqual([NaN, Infinity, -Infinity]);
  });
  test("array(tensor) returns it, or casts it", () => {
    const t = sm.array([1.5, 2]);
    expect(sm.array(t)).toBe(t);
    check(() => sm.array(sm.array([1.5, 2]), "int32"), ref([2], [1, 2]), "int32");
  });
  test("ragged input, bad elements and bad dtypes throw at the call", () => {
    expectSmeltError(() => sm.array([[1, 2], [3]]), "array", "ragged");
    expectSmeltError(() => sm.array([[1, 2], 3] as never), "array", "ragged");
    expectSmeltError(() => sm.array(["a"] as never), "array", "string");
    expectSmeltError(() => sm.array([1], "float64" as never), "array", "float64");
    expectSmeltError(() => sm.array([1], "int64" as never), "array", "no int64");
  });
});

describe("full, zeros, ones, zerosLike, onesLike", () => {
  test("shapes (including 0-d and zero-size), dtypes and values", () => {
    check(() => sm.full([2, 3], 2.5), ref([2, 3], new Array(6).fill(2.5)), "float32");
    check(() => sm.full([2], 7), ref([2], [7, 7]), "int32");
    check(() => sm.full([2], true), ref([2], [1, 1]), "bool");
    check(() => sm.full([], NaN), ref([], [NaN]), "float32");
    check(() => sm.full([2], -Infinity, "float16"), ref([2], [-Infinity, -Infinity]), "float16");
    check(() => sm.full([3], 0.1, "bfloat16"), ref([3], [0.1, 0.1, 0.1]), "bfloat16", { ulps: 0 });
    check(() => sm.full([2], 3.7, "int32"), ref([2], [3, 3]), "int32");
    check(() => sm.full([2], -1, "int8"), ref([2], [-1, -1]), "int8");
    check(() => sm.full([0, 4], 1), ref([0, 4], []), "int32");
    for (const dtype of DTYPES) {
      check(() => sm.zeros([2, 1, 3], dtype), ref([2, 1, 3], new Array(6).fill(0)), dtype);
      check(() => sm.ones([3], dtype), ref([3], [1, 1, 1]), dtype);
    }
    expect(sm.zeros([2]).dtype).toBe("float32");
    expect(sm.ones([]).shape).toEqual([]);
  });
  test("zerosLike and onesLike keep shape and dtype, of views and lazy tensors too", () => {
    const x = sm.array([[1, 2, 3], [4, 5, 6]], "int8").T;
    check(() => sm.zerosLike(x), ref([3, 2], new Array(6).fill(0)), "int8");
    check(() => sm.onesLike(sm.add(sm.array([1.5]), sm.zeros([2, 2], "float16"))), ref([2, 2], [1, 1, 1, 1]), "float32");
    check(() => sm.onesLike(sm.array([true])), ref([1], [1]), "bool");
  });
  // Integer constants reach kernels as their 32 bits, not as floats (which hold 24).
  test("integer constants past 2^24 are exact (full, scalar operands, arange)", () => {
    check(() => sm.full([2], 16777217, "int32"), ref([2], [16777217, 16777217]), "int32");
    check(() => sm.full([1], 2147483647), ref([1], [2147483647]), "int32");
    check(() => sm.full([1], 4294967295, "uint32"), ref([1], [4294967295]), "uint32");
    check(() => sm.add(sm.array([0, 1], "int32"), 16777217), ref([2], [16777217, 16777218]), "int32");
    check(() => sm.arange(16777216, 16777220), ref([4], [16777216, 16777217, 16777218, 16777219]), "int32");
  });
  test("bad shapes and dtypes throw at the call", () => {
    expectSmeltError(() => sm.full([2, -1], 0), "full", "[2,-1]");
    expectSmeltError(() => sm.zeros([1.5]), "full", "1.5");
    expectSmeltError(() => sm.ones([2], "float64" as never), "float64");
    expectSmeltError(() => sm.full("3" as never, 0), "full", "shape");
  });
});

describe("arange and linspace", () => {
  test("arange(stop), arange(start, stop, step) with negative and fractional steps, as NumPy", () => {
    check(() => sm.arange(5), ref([5], [0, 1, 2, 3, 4]), "int32");
    check(() => sm.arange(2, 11, 3), ref([3], [2, 5, 8]), "int32");
    check(() => sm.arange(5, -4, -2), ref([5], [5, 3, 1, -1, -3]), "int32");
    check(() => sm.arange(3, 3), ref([0], []), "int32");
    check(() => sm.arange(5, 1), ref([0], []), "int32");
    const f = Array.from({ length: 10 }, (_, i) => 0.1 * i);
    check(() => sm.arange(0, 1, 0.1), ref([10], f), "float32", { ulps: 2 });
    check(() => sm.arange(1.5, -1, -0.5), ref([5], [1.5, 1, 0.5, 0, -0.5]), "float32", { ulps: 0 });
    check(() => sm.arange(0, 5, 1, "float16"), ref([5], [0, 1, 2, 3, 4]), "float16");
    check(() => sm.arange(0, 4, 1, "uint8"), ref([4], [0, 1, 2, 3]), "uint8");
    check(() => sm.arange(-0.5, 2.5), ref([3], [-0.5, 0.5, 1.5]), "float32", { ulps: 0 });
    check(() => sm.arange(0, 10, 4, "float32"), ref([3], [0, 4, 8]), "float32", { ulps: 0 });
  });
  test("arange errors: zero or non-finite step, bad dtype", () => {
    expectSmeltError(() => sm.arange(0, 5, 0), "arange", "step");
    expectSmeltError(() => sm.arange(0, 5, NaN), "arange", "step");
    expectSmeltError(() => sm.arange(0, 5, 1, "int64" as never), "arange", "int64");
  });
  test("linspace: endpoints exact, interior within a few ulps, num 0 and 1, int dtype", () => {
    for (const [a, b, n] of [[0, 1, 7], [-3.3, 7.1, 11], [0.1, 0.9, 9], [5, -5, 21], [0, 1e-3, 13]] as [number, number, number][]) {
      const want = Array.from({ length: n }, (_, i) => (i === n - 1 ? b : a + ((b - a) * i) / (n - 1)));
      const r = check(() => sm.linspace(a, b, n), ref([n], want), "float32", { atol: 4 * 2 ** -24 * Math.max(Math.abs(a), Math.abs(b)) });
      expect(r.values[0]).toBe(Math.fround(a));
      expect(r.values[n - 1]).toBe(Math.fround(b));
    }
    check(() => sm.linspace(2, 3, 1), ref([1], [2]), "float32");
    check(() => sm.linspace(2, 3, 0), ref([0], []), "float32");
    expect(sm.linspace(0, 1).shape).toEqual([50]);
    check(() => sm.linspace(0, 10, 5, "int32"), ref([5], [0, 2, 5, 7, 10]), "int32");
    check(() => sm.linspace(-1, 1, 5, "bfloat16"), ref([5], [-1, -0.5, 0, 0.5, 1]), "bfloat16", { ulps: 0 });
    expectSmeltError(() => sm.linspace(0, 1, -1), "linspace", "-1");
    expectSmeltError(() => sm.linspace(0, 1, 2.5), "linspace", "2.5");
  });
});

describe("eye", () => {
  test("square, rectangular, diagonal offsets, dtypes", () => {
    const eye = (n: number, m: number, k: number) => Array.from({ length: n * m }, (_, i) => Number(i % m - Math.floor(i / m) === k));
    check(() => sm.eye(3), ref([3, 3], eye(3, 3, 0)), "float32");
    check(() => sm.eye(3, 5), ref([3, 5], eye(3, 5, 0)), "float32");
    check(() => sm.eye(4, 3, 1), ref([4, 3], eye(4, 3, 1)), "float32");
    check(() => sm.eye(4, 3, -2), ref([4, 3], eye(4, 3, -2)), "float32");
    check(() => sm.eye(2, 2, 5), ref([2, 2], eye(2, 2, 5)), "float32");
    check(() => sm.eye(3, undefined, 0, "int8"), ref([3, 3], eye(3, 3, 0)), "int8");
    check(() => sm.eye(2, 3, 0, "bool"), ref([2, 3], eye(2, 3, 0)), "bool");
    check(() => sm.eye(0), ref([0, 0], []), "float32");
    expectSmeltError(() => sm.eye(-1), "eye");
  });
});

describe("astype", () => {
  const F = [0, -0, 1.5, -2.5, 3.9999, -3.9999, 100.25, 65504, 1e-5, 70000];
  test("float32 → float16 and bfloat16 round to nearest even, overflow to inf", () => {
    const xs = inDType("float32", [...F, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 65520, NaN, -Infinity]);
    for (const dtype of ["float16", "bfloat16"] as DType[]) {
      const r = both(() => sm.astype(sm.array(xs), dtype));
      expect(r.dtype).toBe(dtype);
      expectClose(r.values, xs, dtype, { ulps: 0 });
    }
  });
  test("half types widen exactly; float16 ↔ bfloat16 rounds once", () => {
    const h = inDType("float16", uniform(20, -100, 100, 3));
    check(() => sm.array(h, "float16").astype("float32"), ref([20], h), "float32", { ulps: 0 });
    check(() => sm.array(h, "float16").astype("bfloat16"), ref([20], h), "bfloat16", { ulps: 0 });
    const b = inDType("bfloat16", uniform(20, -100, 100, 4));
    check(() => sm.array(b, "bfloat16").astype("float16"), ref([20], b), "float16", { ulps: 0 });
  });
  test("float → integer truncates toward zero (in range); → bool is nonzero (NaN true)", () => {
    const xs = [0, 1.9, -1.9, 100.5, -100.5, 127, -128];
    for (const dtype of ["int32", "int8"] as DType[]) check(() => sm.astype(sm.array(xs), dtype), ref([7], xs.map(Math.trunc)), dtype);
    check(() => sm.astype(sm.array([0, 1.9, 255.5, 200]), "uint8"), ref([4], [0, 1, 255, 200]), "uint8");
    check(() => sm.astype(sm.array([0, 3e9, 7.5]), "uint32"), ref([3], [0, 3e9, 7]), "uint32");
    check(() => sm.astype(sm.array([0, -0, 0.5, NaN, -Infinity]), "bool"), ref([5], [0, 0, 1, 1, 1]), "bool");
    check(() => sm.astype(sm.array([1.5, -2.5], "float16"), "int32"), ref([2], [1, -2]), "int32");
  });
  test("integer → integer wraps; integer → float is exact or rounded; bool → numbers is 0/1", () => {
    check(() => sm.astype(sm.array([300, -1, 127, 128], "int32"), "int8"), ref([4], [44, -1, 127, -128]), "int8");
    check(() => sm.astype(sm.array([-1, 255], "int32"), "uint8"), ref([2], [255, 255]), "uint8");
    check(() => sm.astype(sm.array([-1, 5], "int8"), "uint32"), ref([2], [4294967295, 5]), "uint32");
    check(() => sm.astype(sm.array([4294967295, 7], "uint32"), "int32"), ref([2], [-1, 7]), "int32");
    check(() => sm.astype(sm.array([16777217, -3], "int32"), "float32"), ref([2], [16777217, -3]), "float32", { ulps: 0 });
    check(() => sm.astype(sm.array([2049, 70000], "int32"), "float16"), ref([2], [2049, 70000]), "float16", { ulps: 0 });
    check(() => sm.astype(sm.array([255, 0], "uint8"), "bfloat16"), ref([2], [255, 0]), "bfloat16", { ulps: 0 });
    for (const dtype of DTYPES) check(() => sm.astype(sm.array([true, false]), dtype), ref([2], [1, 0]), dtype);
    check(() => sm.astype(sm.array([0, 7, -1], "int8"), "bool"), ref([3], [0, 1, 1]), "bool");
  });
  test("astype of a view, the identity cast, and bad dtypes", () => {
    check(() => sm.array([[1.5, 2.5], [3.5, 4.5]]).T.astype("int32"), ref([2, 2], [1, 3, 2, 4]), "int32");
    const t = sm.array([1.5]);
    expect(sm.astype(t, "float32").toArray()).toEqual([1.5]);
    expectSmeltError(() => sm.astype(t, "float64" as never), "astype", "float64");
    expect(roundTo("int8", 200)).toBe(-56);
  });
});

describe("reading tensors", () => {
  test("toArray, item, tolist, data() and eval", async () => {
    const t = sm.add(sm.array([[1, 2], [3, 4]], "float32"), 0.5);
    expect(await t.data()).toEqual([1.5, 2.5, 3.5, 4.5]);
    expect(t.tolist()).toEqual([[1.5, 2.5], [3.5, 4.5]]);
    expect(t.eval()).toBe(t);
    expect(sm.sum(t).item()).toBe(12);
    expect(sm.array([true, false]).toArray<boolean>()).toEqual([true, false]);
    expect(sm.array([1, 2], "float16").toArray()).toEqual([1, 2]);
    expectSmeltError(() => t.item(), "item", "4 elements");
    expectSmeltError(() => sm.zeros([0]).item(), "item");
  });
  test("reading or using a disposed tensor throws a SmeltError naming the call", async () => {
    const t = sm.array([1, 2, 3]);
    const lazy = sm.multiply(sm.array([1.5]), 2);
    t.dispose();
    lazy.dispose();
    expectSmeltError(() => t.toArray(), "toArray", "disposed");
    expectSmeltError(() => t.item(), "disposed");
    expectSmeltError(() => lazy.toArray(), "disposed");
    expectSmeltError(() => sm.add(t, 1), "add", "disposed");
    expectSmeltError(() => sm.matmul(t, t), "matmul", "disposed");
    expectSmeltError(() => t.reshape([3]), "reshape", "disposed");
    expect(t.disposed).toBe(true);
    await expect(t.data()).rejects.toThrow(sm.SmeltError);
    t.dispose(); // disposing twice is harmless
  });
  test("a tensor that others were built from can be disposed; the dependents still evaluate", () => {
    const x = sm.array([1.5, 2.5]);
    const y = sm.exp(x);
    x.dispose();
    expectClose(y.toArray(), [Math.exp(1.5), Math.exp(2.5)], "float32");
  });
});
