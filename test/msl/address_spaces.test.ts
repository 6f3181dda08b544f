import { describe, expect, test } from "bun:test";
import { dev, expectClose, kernelFile, read, runGroups, runThreads, StructBytes, uniform } from "./helpers.ts";

const kernel = kernelFile("address_spaces.metal");
const K = [0.5, -1.25, 2.0, 3.75];
const OFFS = [-1, 0, 1];

interface Params {
  coef: [number, number, number, number];
  dims: [number, number];
  alpha: number;
  flags: number;
}

function paramsBytes(p: Params): Uint8Array {
  // struct Params { float4 coef; uint2 dims; float alpha; uint flags; }: 32 bytes.
  return new StructBytes(32).f32(0, ...p.coef).u32(16, ...p.dims).f32(24, p.alpha).u32(28, p.flags).bytes;
}

function reference(x: Float32Array, p: Params, lut: Float32Array): number[] {
  const [cols, rows] = p.dims;
  const want: number[] = [];
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      const v = x[i]!;
      const [c0, c1, c2, c3] = p.coef;
      let y = (((c3 * v + c2) * v + c1) * v + c0) * p.alpha + K[i & 3]! + lut[r % 8]!;
      if (p.flags & 2) {
        for (const o of OFFS) if (c + o >= 0 && c + o < cols) y += x[r * cols + c + o]!;
      }
      want.push(p.flags & 1 ? -y : y);
    }
  }
  return want;
}

describe("address_spaces.metal", () => {
  const lut = new Float32Array([10, 20, 30, 40, 50, 60, 70, 80]);

  for (const flags of [0, 1, 2, 3]) {
    test(`params_poly flags=${flags}: constant Params&, program-scope constant tables, constant float* from a buffer`, () => {
      const p: Params = { coef: [0.5, -1, 0.25, 0.125], dims: [37, 19], alpha: flags & 1 ? -0.75 : 1.5, flags };
      const x = uniform(37 * 19, -3, 3, 90 + flags);
      const y = dev.buffer(new Float32Array(37 * 19));
      const echo = dev.buffer(48);
      // The exact grid (non-uniform: 37 x 19 threads in 8 x 8 threadgroups) and a rounded-up one.
      const args = [dev.buffer(x), paramsBytes(p), dev.buffer(lut), y, echo];
      if (flags % 2 === 0) runThreads(kernel("params_poly"), args, [37, 19, 1], [8, 8, 1]);
      else runGroups(kernel("params_poly"), args, [5, 3, 1], [8, 8, 1]);
      expectClose("params_poly", read(y, Float32Array), reference(x, p, lut), {
        rtol: 1e-5,
        atol: 1e-5,
        label: (i) => `row ${Math.floor(i / 37)} col ${i % 37}`,
      });

      // struct Echo { float4 coef_rev; uint2 dims_swapped; float alpha2; uint flags_plus; float k_sum;
      //               int offs_sum; float2 lut_ends; }: 48 bytes, written through a device reference.
      const e = new DataView(read(echo, Uint8Array).buffer);
      const f = (o: number) => e.getFloat32(o, true);
      expect([f(0), f(4), f(8), f(12)]).toEqual([p.coef[3], p.coef[2], p.coef[1], p.coef[0]]);
      expect([e.getUint32(16, true), e.getUint32(20, true)]).toEqual([19, 37]);
      expect(f(24)).toBe(p.alpha * 2);
      expect(e.getUint32(28, true)).toBe(flags + 100);
      expect(f(32)).toBe(K[0]! + K[1]! + K[2]! + K[3]!);
      expect(e.getInt32(36, true)).toBe(-10 + 1);
      expect([f(40), f(44)]).toEqual([10, 80]);
    });
  }
});
