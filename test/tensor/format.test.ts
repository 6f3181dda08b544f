/**
 * console.log(tensor), Bun.inspect and String(tensor) print NumPy's repr. The expected texts are
 * what NumPy 2 prints for the same values (np.array(..., np.float32) and so on), except that
 * smelt always names the dtype and does not wrap long rows.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";

setDefaultTimeout(120_000);

const show = (t: sm.Tensor) => Bun.inspect(t);

describe("printing tensors", () => {
  test("integers, bools, 0-d, empty and 3-d layouts", () => {
    expect(show(sm.array([[1, 2], [3, 4]]))).toBe("array([[1, 2],\n       [3, 4]], dtype=int32)");
    expect(show(sm.array([true, false]))).toBe("array([ True, False], dtype=bool)");
    expect(show(sm.array(3.5))).toBe("array(3.5, dtype=float32)");
    expect(show(sm.zeros([2, 0]))).toBe("array([], shape=(2, 0), dtype=float32)");
    expect(show(sm.zeros([0]))).toBe("array([], dtype=float32)");
    expect(show(sm.arange(8).reshape([2, 2, 2]))).toBe("array([[[0, 1],\n        [2, 3]],\n\n       [[4, 5],\n        [6, 7]]], dtype=int32)");
    expect(show(sm.array([-5, 120], "int8"))).toBe("array([ -5, 120], dtype=int8)");
  });
  test("floats as NumPy formats them", () => {
    expect(show(sm.array([[1, 2], [3, 4]], "float32"))).toBe("array([[1., 2.],\n       [3., 4.]], dtype=float32)");
    expect(show(sm.array([0.1, 0.25, 3]))).toBe("array([0.1 , 0.25, 3.  ], dtype=float32)");
    expect(show(sm.array([0.1, 1 / 3]))).toBe("array([0.1       , 0.33333334], dtype=float32)");
    expect(show(sm.array([1e-5, 1]))).toBe("array([1.e-05, 1.e+00], dtype=float32)");
    expect(show(sm.array([1, 2000]).astype("float32"))).toBe("array([1.e+00, 2.e+03], dtype=float32)");
    expect(show(sm.array([1.5e9, 1], "float32"))).toBe("array([1.5e+09, 1.0e+00], dtype=float32)");
    expect(show(sm.array([100000.5, 1]))).toBe("array([1.000005e+05, 1.000000e+00], dtype=float32)");
    expect(show(sm.array([NaN, 1.5, -Infinity]))).toBe("array([ nan,  1.5, -inf], dtype=float32)");
    expect(show(sm.array([0.1, 1.5], "float16"))).toBe("array([0.1, 1.5], dtype=float16)");
  });
  test("over 1000 elements: first and last 3 per axis, and the shape", () => {
    // Every element is padded to the widest one shown, as NumPy does.
    const cells = (r: number, cs: number[]) => cs.map((c) => String(r * 50 + c).padStart(4)).join(", ");
    const rows = (r: number) => `[${cells(r, [0, 1, 2])}, ..., ${cells(r, [47, 48, 49])}]`;
    const want = `array([${[0, 1, 2].map(rows).join(",\n       ")},\n       ...,\n       ${[37, 38, 39].map(rows).join(",\n       ")}], shape=(40, 50), dtype=int32)`;
    expect(show(sm.arange(2000).reshape([40, 50]))).toBe(want);
    expect(show(sm.arange(1000))).not.toContain("...");
  });
  test("toString is the same text; a disposed tensor says so; lazy tensors are evaluated", () => {
    const t = sm.add(sm.array([1, 2]), 1);
    expect(String(t)).toBe("array([2, 3], dtype=int32)");
    expect(`${t}`).toBe(show(t));
    t.dispose();
    expect(String(t)).toBe("array(<disposed>)");
    expect(show(t)).toBe("array(<disposed>)");
    expect(Bun.inspect({ x: sm.array([1]) })).toContain("x: array([1], dtype=int32)");
  });
});

describe("typed reads", () => {
  test("toFloat32Array converts every dtype; toArray and item take the element type", () => {
    expect(sm.array([1.5, -2]).toFloat32Array()).toEqual(new Float32Array([1.5, -2]));
    expect(sm.array([3, -4], "int8").toFloat32Array()).toEqual(new Float32Array([3, -4]));
    expect(sm.array([0.5], "float16").toFloat32Array()).toEqual(new Float32Array([0.5]));
    expect(sm.array([true, false]).toFloat32Array()).toEqual(new Float32Array([1, 0]));
    const n: number = sm.array([2]).item();
    const flags: boolean[] = sm.array([true]).toArray<boolean>();
    expect([n, flags]).toEqual([2, [true]]);
  });
});
