import { describe, test } from "bun:test";
import { dev, expectClose, kernelFile, read, runGroups, uniform } from "./helpers.ts";

const kernel = kernelFile("softmax.metal");

describe("softmax.metal", () => {
  for (const [rows, cols, tg] of [
    [6, 1000, 256],
    [5, 37, 64],
    [3, 4096, 1024],
  ]) {
    test(`softmax_rows: ${rows} rows of ${cols}, threadgroup ${tg}; -inf entries, rows that overflow exp without the max`, () => {
      const x = uniform(rows! * cols!, -10, 10, rows! * 100 + cols!);
      x[0] = -Infinity; // row 0: one -inf entry gets probability 0
      x[1] = -Infinity;
      for (let c = 0; c < cols!; c++) x[cols! + c] = 1000 + (c % 7); // row 1: exp would overflow without the max
      x[2 * cols! + 5] = 60; // row 2: one dominant entry
      const y = dev.buffer(new Float32Array(rows! * cols!));
      runGroups(kernel("softmax_rows"), [dev.buffer(x), y, new Uint32Array([cols!])], [rows!, 1, 1], [tg!, 1, 1]);
      const want: number[] = [];
      for (let r = 0; r < rows!; r++) {
        const row = Array.from(x.subarray(r * cols!, (r + 1) * cols!));
        const m = Math.max(...row);
        const e = row.map((v) => Math.exp(v - m));
        const s = e.reduce((a, b) => a + b, 0);
        want.push(...e.map((v) => v / s));
      }
      expectClose("softmax", read(y, Float32Array), want, {
        rtol: 2e-5,
        atol: 1e-9,
        label: (i) => `row ${Math.floor(i / cols!)} col ${i % cols!} x=${x[i]}`,
      });
    });
  }
});
