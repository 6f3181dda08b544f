// The one-row (decode) quantized matmul's emitted sum: the host's compiler vectorizes the lane
// loop at full width only when the lanes are added as a left-to-right chain (src/exec/emit/
// dequantize.ts, laneSum), a property of the source that no result shows, only its speed.
import { expect, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { plainPlan } from "../../src/exec/plan/kernel.ts";
import { emitKernel } from "../../src/exec/emit/kernel.ts";

for (const [format, bytes] of [["Q4_1", 20], ["Q8_0", 34], ["Q4_0", 18]] as const) {
  test(`${format}: one row's 16 lanes are summed left to right`, () => {
    const w = sm.QuantizedTensor.fromBytes(new Uint8Array(4 * 2 * bytes), [4, 64], format);
    const y = sm.quantizedMatmul(sm.zeros([1, 64]), w);
    const { source } = emitKernel(plainPlan(y.node("test")));
    const chain = Array.from({ length: 16 }, (_, l) => `a0_${l}`).join(" + ");
    expect(source).toContain(`acc0 = ${chain};`);
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
