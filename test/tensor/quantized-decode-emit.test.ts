// The quantized matmul's emitted sums (src/exec/emit/dequantize.ts), properties of the source that
// no result shows, only its speed: one row (decoding) alternates its blocks between two sets of
// lane sums in loops and adds them as halves; a few rows keep a left-to-right chain of lanes, the
// form in which the host's compiler vectorizes their straight-line code at full width.
import { expect, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { plainPlan } from "../../src/exec/plan/kernel.ts";
import { emitKernel } from "../../src/exec/emit/kernel.ts";

for (const [format, bytes] of [["Q4_1", 20], ["Q8_0", 34], ["Q4_0", 18]] as const) {
  test(`${format}: one row's blocks alternate between two sets of 16 lane sums, added as halves at the end`, () => {
    const w = sm.QuantizedTensor.fromBytes(new Uint8Array(4 * 2 * bytes), [4, 64], format);
    const y = sm.quantizedMatmul(sm.zeros([1, 64]), w);
    const { source } = emitKernel(plainPlan(y.node("test")));
    expect(source).toContain("for (; kb + 1 < ");
    expect(source).toMatch(/a\[l\] = fma\(/);
    expect(source).toMatch(/c\[l\] = fma\(/);
    expect(source).toContain("for (int l = 0; l < 16; ++l) a[l] += c[l];");
    for (const h of [8, 4, 2, 1]) expect(source).toContain(`for (int l = 0; l < ${h}; ++l) a[l] += a[l + ${h}];`);
    expect(source).toContain("acc0 = a[0];");
  });
}

test("several rows: each row's lanes on a CPU (loops from 4 rows), one scalar sum per row on a GPU", () => {
  const w = sm.QuantizedTensor.fromBytes(new Uint8Array(4 * 2 * 20), [4, 64], "Q4_1");
  for (const [rows, R] of [[3, 3], [9, 5]] as const) {
    const y = sm.quantizedMatmul(sm.zeros([rows, 64]), w).node("test");
    const cpu = emitKernel(plainPlan(y, [], undefined, true)).source;
    const gpu = emitKernel(plainPlan(y, [], undefined, false)).source;
    for (let r = 0; r < R; r++) {
      const sum = Array.from({ length: 16 }, (_, l) => (R > 3 ? `a[${r}][${l}]` : `a${r}_${l}`)).join(" + ");
      expect(cpu).toContain(`acc${r} = ${sum};`);
      expect(gpu).not.toContain(`acc${r} = ${sum};`);
    }
    expect(gpu).toContain(`float w = `);
  }
});

// The values of either layout are checked against gguf's by test/io/gguf.test.ts on its backend.
test("dequantize: a block per thread on a CPU, a value per thread on a GPU", () => {
  for (const [format, bytes, elements] of [["Q4_1", 20, 32], ["Q8_0", 34, 32], ["Q4_0", 18, 32], ["Q4_K", 144, 256], ["Q6_K", 210, 256]] as const) {
    const rows = 3, cols = 2 * elements;
    const raw = new Uint8Array((rows * cols / elements) * bytes);
    let s = 7;
    for (let i = 0; i < raw.length; i++) raw[i] = (s = (s * 1103515245 + 12345) % 2147483648) >>> 16 & 255;
    const w = sm.QuantizedTensor.fromBytes(raw, [rows, cols], format);
    const node = w.dequantize().node("test");
    const cpu = plainPlan(node, [], undefined, true);
    const gpu = plainPlan(node, [], undefined, false);
    expect(cpu.dispatch.size[0]).toBe((rows * cols) / elements);
    expect(gpu.dispatch.size[0]).toBe(rows * cols);
    expect(emitKernel(cpu).source).toContain(`for (int j = 0; j < ${elements}; ++j)`);
    expect(emitKernel(gpu).source).not.toContain(`for (int j = 0; j < ${elements}; ++j)`);
  }
});
