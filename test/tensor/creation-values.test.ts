/**
 * What creation stores: typed arrays keep their natural dtype, constants that an integer dtype
 * cannot hold are errors (not wrapped numbers), and typed arrays and raw bytes reach the buffer
 * through one native copy.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { bf16BitsToNumber, numberToBf16Bits, numberToF16Bits } from "../../src/graph/dtype.ts";
import { both, expectSmeltError } from "./helpers.ts";

setDefaultTimeout(120_000);

describe("typed arrays keep their natural dtype", () => {
  test("each typed array type maps to its dtype and values", () => {
    const cases: [ArrayBufferView, sm.DType, number[]][] = [
      [new Float64Array([1, 2]), "float32", [1, 2]],
      [new Float64Array([0.1]), "float32", [Math.fround(0.1)]],
      [new Float32Array([1.5, -2]), "float32", [1.5, -2]],
      [new Int32Array([1, -2]), "int32", [1, -2]],
      [new Uint32Array([4294967295]), "uint32", [4294967295]],
      [new Int8Array([-128, 127]), "int8", [-128, 127]],
      [new Uint8Array([0, 255]), "uint8", [0, 255]],
      [new Uint8ClampedArray([0, 255]), "uint8", [0, 255]],
      [new Int16Array([-32768, 32767]), "int32", [-32768, 32767]],
      [new Uint16Array([0, 65535]), "int32", [0, 65535]],
      [new Float16Array([0.5, -3]), "float16", [0.5, -3]],
    ];
    for (const [data, dtype, values] of cases) {
      const t = sm.array(data);
      expect(t.dtype).toBe(dtype);
      expect(t.shape).toEqual([values.length]);
      expect(t.toArray()).toEqual(values);
    }
  });
  test("an explicit dtype converts as astype does; 64-bit integer arrays are refused", () => {
    expect(sm.array(new Float64Array([1.7, -2.5]), "int32").toArray()).toEqual([1, -2]);
    expect(sm.array(new Float32Array([0.1, 65520]), "float16").toArray()).toEqual([0.0999755859375, Infinity]);
    expect(sm.array(new Int32Array([300, -1]), "uint8").toArray()).toEqual([44, 255]);
    expect(sm.array(new Float32Array([0, 2]), "bool").toArray<boolean>()).toEqual([false, true]);
    expectSmeltError(() => sm.array(new BigInt64Array(2) as never), "array", "BigInt64Array");
  });
  test("nested rows that are float typed arrays give float32", () => {
    const t = sm.array([new Float32Array([1, 2]), new Float32Array([3, 4])]);
    expect([t.dtype, t.shape, t.toArray()]).toEqual(["float32", [2, 2], [1, 2, 3, 4]]);
    expect(sm.array([new Int32Array([1, 2])]).dtype).toBe("int32");
  });
  test("a view into a larger buffer reads only its own elements", () => {
    const backing = new Float32Array([9, 1, 2, 3, 9]);
    expect(sm.array(backing.subarray(1, 4)).toArray()).toEqual([1, 2, 3]);
  });
});

describe("constants an integer dtype cannot hold", () => {
  test("full: out of range throws, non-integers truncate toward zero", () => {
    expectSmeltError(() => sm.full([2], 300, "uint8"), "full", "300", "uint8");
    expectSmeltError(() => sm.full([2], -1, "uint32"), "full", "-1", "uint32");
    expectSmeltError(() => sm.full([2], 2 ** 31, "int32"), "full", "int32");
    expectSmeltError(() => sm.full([2], NaN, "int8"), "full", "NaN", "int8");
    expect(both(() => sm.full([2], 2.7, "int32")).values).toEqual([2, 2]);
    expect(both(() => sm.full([2], -2.7, "int8")).values).toEqual([-2, -2]);
    expect(both(() => sm.full([1], 255, "uint8")).values).toEqual([255]);
    expect(both(() => sm.full([1], 4294967295, "uint32")).values).toEqual([4294967295]);
    // Without a dtype, an integer past int32 is float32 (no int64), not a wrapped int32.
    const big = sm.full([1], 2 ** 40);
    expect(big.dtype).toBe("float32");
    expect(big.toArray()).toEqual([2 ** 40]);
  });
  test("array with an explicit integer dtype: out of range throws, non-integers truncate", () => {
    expectSmeltError(() => sm.array([1, 300], "uint8"), "array", "300", "uint8");
    expectSmeltError(() => sm.array([-129], "int8"), "array", "int8");
    expectSmeltError(() => sm.array([-1], "uint32"), "array", "uint32");
    expectSmeltError(() => sm.array([Infinity], "int32"), "array", "Infinity");
    expect(sm.array([3.7, -3.7, 255.9], "int32").toArray()).toEqual([3, -3, 255]);
    expect(sm.array([255.9, 0.5], "uint8").toArray()).toEqual([255, 0]);
  });
  test("a scalar operand out of range for an integer tensor names the op, value and dtype", () => {
    expectSmeltError(() => sm.array([1]).add(2 ** 40), "add", String(2 ** 40), "int32");
    expectSmeltError(() => sm.array([1], "int8").add(300), "add", "300", "int8");
    expectSmeltError(() => sm.multiply(sm.array([1], "uint8"), -1), "multiply", "-1", "uint8");
    expectSmeltError(() => sm.where(sm.array([true]), sm.array([1], "uint8"), 256), "where", "256", "uint8");
    // Comparisons have an answer, as in NumPy 2: every element is below 300 and none equals -1.
    const u = () => sm.array([0, 7, 255], "uint8");
    expect(both(() => u().lt(300)).values).toEqual([true, true, true]);
    expect(both(() => u().ge(300)).values).toEqual([false, false, false]);
    expect(both(() => u().eq(-1)).values).toEqual([false, false, false]);
    expect(both(() => u().ne(-1)).values).toEqual([true, true, true]);
    expect(both(() => sm.greater(300, u())).values).toEqual([true, true, true]);
    expect(both(() => sm.lessEqual(2 ** 40, sm.array([1, -5]))).values).toEqual([false, false]);
    expect(both(() => sm.greater(sm.array([1, -5], "int8"), -1000)).shape).toEqual([2]);
    // In range, and float scalars (which promote to float32), stay as they were.
    expect(both(() => sm.array([1], "int8").add(126)).values).toEqual([127]);
    expect(both(() => sm.array([1], "uint8").add(0.5)).values).toEqual([1.5]);
  });
});

describe("loading bytes", () => {
  test("fromBytes: shape, dtype and bit patterns, float16 and bfloat16 from Uint16Array bits", () => {
    const h = new Uint16Array([numberToF16Bits(1.5), numberToF16Bits(-0.25), numberToF16Bits(65504), numberToF16Bits(0)]);
    const t = sm.fromBytes(h, [2, 2], "float16");
    expect(t.shape).toEqual([2, 2]);
    expect(t.dtype).toBe("float16");
    expect(t.toArray()).toEqual([1.5, -0.25, 65504, 0]);
    const b = new Uint16Array([numberToBf16Bits(3), numberToBf16Bits(-1e30)]);
    expect(sm.fromBytes(b.buffer, [2], "bfloat16").toArray()).toEqual([3, bf16BitsToNumber(numberToBf16Bits(-1e30))]);
    const f = new Float32Array([1, 2, 3, 4, 5, 6]);
    expect(sm.fromBytes(new Uint8Array(f.buffer), [3, 2], "float32").tolist()).toEqual([[1, 2], [3, 4], [5, 6]]);
    expect(sm.fromBytes(new Uint8Array([0, 1]), [2], "bool").toArray<boolean>()).toEqual([false, true]);
    // A typed array that is a window onto a larger buffer contributes only its bytes.
    const window = new Int32Array([7, 8, 9, 10]).subarray(1, 3);
    expect(sm.fromBytes(window, [2], "int32").toArray()).toEqual([8, 9]);
  });
  test("fromBytes: wrong byte counts, bad dtypes and bool bytes other than 0/1 throw", () => {
    expectSmeltError(() => sm.fromBytes(new Uint8Array(7), [2], "float32"), "fromBytes", "8 bytes", "got 7");
    expectSmeltError(() => sm.fromBytes(new Uint8Array(8), [2], "float64" as never), "fromBytes", "float64");
    expectSmeltError(() => sm.fromBytes(new Uint8Array([2]), [1], "bool"), "fromBytes", "0 or 1");
    expectSmeltError(() => sm.fromBytes([1, 2] as never, [2], "uint8"), "fromBytes", "ArrayBuffer");
  });
  test("a 2^22-element Float32Array loads by one native copy, not an element loop", () => {
    const n = 2 ** 22;
    const f = new Float32Array(n);
    for (let i = 0; i < n; i++) f[i] = (i % 1000) * 0.25 - i * 1e-6;
    sm.array(new Float32Array(16)).dispose(); // the device is open before timing
    // The yardstick: a JS loop touching every element once, less than any per-element copy does.
    // Each is timed three times and its best taken, so that a stall of the machine in one try
    // (another process, the collector) does not decide the comparison.
    let loop = Infinity, load = Infinity, copy: number[] = [], t: sm.Tensor | undefined;
    for (let trial = 0; trial < 3; trial++) {
      let t0 = performance.now();
      copy = [];
      for (let i = 0; i < n; i++) copy.push(f[i]!);
      loop = Math.min(loop, performance.now() - t0);
      t?.dispose();
      t0 = performance.now();
      t = sm.array(f);
      load = Math.min(load, performance.now() - t0);
    }
    const back = t!.raw() as Float32Array;
    expect(back.length).toBe(n);
    expect(Buffer.from(back.buffer, back.byteOffset, back.byteLength).equals(Buffer.from(f.buffer))).toBe(true);
    expect(copy.length).toBe(n);
    console.log(`2^22 floats: sm.array ${load.toFixed(1)} ms, a JS loop over them ${loop.toFixed(1)} ms (best of 3)`);
    expect(load).toBeLessThan(loop);
    t!.dispose();
  });
});
