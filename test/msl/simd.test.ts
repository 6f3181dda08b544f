import { describe, test } from "bun:test";
import { dev, expectClose, expectEqual, kernelFile, read, runGroups, runThreads, uniform, uniformInt } from "./helpers.ts";

const kernel = kernelFile("simd.metal");

/**
 * The SIMD-groups of a 1-D dispatch of n threads in threadgroups of tg: runs of consecutive
 * thread indices, 32 long except the last of each threadgroup. Returns [start, length] pairs.
 */
function simdgroups(n: number, tg: number): [number, number][] {
  const out: [number, number][] = [];
  for (let g0 = 0; g0 < n; g0 += tg) {
    const end = Math.min(g0 + tg, n);
    for (let s = g0; s < end; s += 32) out.push([s, Math.min(32, end - s)]);
  }
  return out;
}

/** Per thread, the 12 results of simd_f32 (NaN where a result reads an inactive lane). */
function simdF32Reference(x: Float32Array, tg: number): number[] {
  const want = new Array<number>(12 * x.length).fill(NaN);
  for (const [s, len] of simdgroups(x.length, tg)) {
    const v = Array.from(x.subarray(s, s + len));
    const sum = v.reduce((a, b) => a + b, 0);
    let prefix = 0;
    for (let l = 0; l < len; l++) {
      const o = 12 * (s + l);
      want[o] = sum;
      want[o + 1] = Math.max(...v);
      want[o + 2] = Math.min(...v);
      want[o + 3] = prefix;
      want[o + 4] = prefix + v[l]!;
      prefix += v[l]!;
      if (len === 32) {
        want[o + 5] = v[(l * 7 + 3) & 31]!;
        want[o + 6] = l + 3 < 32 ? v[l + 3]! : v[l]!;
        want[o + 7] = l >= 2 ? v[l - 2]! : v[l]!;
        want[o + 8] = v[l ^ 5]!;
        want[o + 9] = v[7]!;
      }
      want[o + 10] = v[0]!;
      want[o + 11] = (v.every((a) => a > -100) ? 1 : 0) + 2 * (v.some((a) => a > 0.9) ? 1 : 0);
    }
  }
  return want;
}

const F32_NAMES = [
  "sum", "max", "min", "prefix_excl", "prefix_incl", "shuffle", "shuffle_down3", "shuffle_up2", "shuffle_xor5",
  "broadcast7", "broadcast_first", "all/any",
];

describe("simd.metal", () => {
  test("simd_f32, full SIMD-groups: reductions, prefix sums, shuffles, broadcasts, simd_all/any", () => {
    const x = uniform(256, -1, 1, 101);
    const out = dev.buffer(new Float32Array(12 * 256));
    runGroups(kernel("simd_f32"), [dev.buffer(x), out], [4, 1, 1], [64, 1, 1]);
    // Sums of 32 values in [-1, 1] in any order: within 32 * 2^-24 * 32.
    expectClose("simd_f32", read(out, Float32Array), simdF32Reference(x, 64), {
      atol: 2e-5,
      label: (k) => `thread ${Math.floor(k / 12)} ${F32_NAMES[k % 12]}`,
    });
  });

  test("simd_f32, partial SIMD-groups (100 threads in threadgroups of 64 and 40): functions over active lanes", () => {
    for (const tg of [64, 40]) {
      const x = uniform(100, -1, 1, 102 + tg);
      const out = dev.buffer(new Float32Array(12 * 100));
      runThreads(kernel("simd_f32"), [dev.buffer(x), out], [100, 1, 1], [tg, 1, 1]);
      const want = simdF32Reference(x, tg);
      expectClose(`simd_f32 tg ${tg}`, read(out, Float32Array), want, {
        atol: 2e-5,
        // Shuffles and broadcasts of a partial SIMD-group could read inactive lanes: left out.
        skip: (k) => Number.isNaN(want[k]!),
        label: (k) => `thread ${Math.floor(k / 12)} ${F32_NAMES[k % 12]}`,
      });
    }
  });

  test("simd_i32: integer sum/max/min/prefix, shuffle_xor 16, broadcast of uint, shuffle_down 16 minus shuffle", () => {
    for (const [n, tg, groups] of [
      [128, 128, true],
      [90, 64, false],
    ] as const) {
      const x = uniformInt(n, -1000, 1000, 111 + n);
      const out = dev.buffer(new Int32Array(8 * n));
      if (groups) runGroups(kernel("simd_i32"), [dev.buffer(x), out], [n / tg, 1, 1], [tg, 1, 1]);
      else runThreads(kernel("simd_i32"), [dev.buffer(x), out], [n, 1, 1], [tg, 1, 1]);
      const want = new Array<number>(8 * n).fill(NaN);
      for (const [s, len] of simdgroups(n, tg)) {
        const v = Array.from(x.subarray(s, s + len));
        let prefix = 0;
        for (let l = 0; l < len; l++) {
          const o = 8 * (s + l);
          want[o] = v.reduce((a, b) => a + b, 0);
          want[o + 1] = Math.max(...v);
          want[o + 2] = Math.min(...v);
          want[o + 3] = prefix;
          prefix += v[l]!;
          if (len === 32) {
            want[o + 4] = v[l ^ 16]!;
            want[o + 5] = (v[31]! + 31) | 0;
            want[o + 6] = (l + 16 < 32 ? v[l + 16]! : v[l]!) - v[l ^ 1]!;
          }
          want[o + 7] = (len * (len - 1)) / 2;
        }
      }
      expectEqual(`simd_i32 n=${n} tg=${tg}`, read(out, Int32Array), want, {
        skip: (k) => Number.isNaN(want[k]!),
        label: (k) => `thread ${Math.floor(k / 8)} result ${k % 8}`,
      });
    }
  });
});
