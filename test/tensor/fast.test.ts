// sm.fast against float64 references, on odd shapes, in float32, float16 and bfloat16.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";

setDefaultTimeout(120_000);

function data(n: number, seed: number, scale = 1): number[] {
  let s = seed;
  return Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return ((s / 2147483648) * 2 - 1) * scale;
  });
}
const tol = { float32: 2e-5, float16: 4e-3, bfloat16: 3e-2 } as const;
type F = keyof typeof tol;

function close(got: number[], want: number[], t: number) {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++)
    if (!(Math.abs(got[i]! - want[i]!) <= t * (1 + Math.abs(want[i]!)))) throw new Error(`element ${i}: got ${got[i]}, want ${want[i]}`);
}
/** Values as the dtype holds them, so references start from the same inputs. */
function held(xs: number[], dtype: F): number[] {
  return sm.tidy(() => sm.array(xs).astype(dtype).astype("float32").toArray() as number[]);
}

describe("norms", () => {
  for (const dtype of ["float32", "float16", "bfloat16"] as const) {
    test(`rmsNorm and layerNorm on [3, 5, 67], ${dtype}, one kernel each`, () => {
      const n = 67, xs = held(data(3 * 5 * n, 1, 3), dtype), ws = held(data(n, 2), dtype), bs = held(data(n, 3), dtype);
      const x = sm.array(xs).reshape([3, 5, n]).astype(dtype).eval(), w = sm.array(ws).astype(dtype).eval(), b = sm.array(bs).astype(dtype).eval();
      sm.resetStats();
      const rms = sm.tidy(() => sm.fast.rmsNorm(x, w, 1e-5).astype("float32").toArray() as number[]);
      expect(sm.stats().kernelsDispatched).toBe(1); // the casts around it are part of the same kernel
      sm.resetStats();
      const ln = sm.tidy(() => sm.fast.layerNorm(x, w, b, 1e-5).astype("float32").toArray() as number[]);
      const wantRms: number[] = [], wantLn: number[] = [];
      for (let r = 0; r < 15; r++) {
        const row = xs.slice(r * n, r * n + n);
        const ms = row.reduce((a, v) => a + v * v, 0) / n;
        const mu = row.reduce((a, v) => a + v, 0) / n;
        const va = row.reduce((a, v) => a + (v - mu) ** 2, 0) / n;
        row.forEach((v, j) => {
          wantRms.push((v / Math.sqrt(ms + 1e-5)) * ws[j]!);
          wantLn.push(((v - mu) / Math.sqrt(va + 1e-5)) * ws[j]! + bs[j]!);
        });
      }
      close(rms, wantRms, tol[dtype]);
      close(ln, wantLn, tol[dtype] * 4);
    });
  }
  test("bad weight shapes are refused at the call", () => {
    const x = sm.ones([2, 4]);
    expect(() => sm.fast.rmsNorm(x, sm.ones([3]))).toThrow(/rmsNorm: weight must have shape \[4\]/);
    expect(() => sm.fast.layerNorm(x, null, sm.ones([2, 4]))).toThrow(/layerNorm: bias/);
  });
});

function ropeRef(xs: number[], shape: number[], dims: number, traditional: boolean, base: number, scale: number, offset: number): number[] {
  const D = shape[shape.length - 1]!, L = shape[shape.length - 2]!;
  const out = [...xs];
  for (let at = 0; at < xs.length; at += D) {
    const l = (at / D) % L;
    const p = (offset + l) * scale;
    for (let i = 0; i < dims / 2; i++) {
      const th = p * Math.pow(base, (-2 * i) / dims);
      const [a, b] = traditional ? [at + 2 * i, at + 2 * i + 1] : [at + i, at + i + dims / 2];
      out[a] = xs[a]! * Math.cos(th) - xs[b]! * Math.sin(th);
      out[b] = xs[a]! * Math.sin(th) + xs[b]! * Math.cos(th);
    }
  }
  return out;
}

describe("rope", () => {
  for (const traditional of [false, true]) {
    for (const dtype of ["float32", "float16"] as const) {
      test(`traditional=${traditional}, ${dtype}, [2, 3, 7, 16] with offset 5 and scale 0.5`, () => {
        const shape = [2, 3, 7, 16];
        const xs = held(data(2 * 3 * 7 * 16, 9), dtype);
        const x = sm.array(xs).reshape(shape).astype(dtype);
        const got = sm.tidy(() => sm.fast.rope(x, 16, { traditional, base: 10000, scale: 0.5, offset: 5 }).astype("float32").toArray() as number[]);
        close(got, ropeRef(xs, shape, 16, traditional, 10000, 0.5, 5), dtype === "float32" ? 1e-5 : 4e-3);
      });
    }
  }
  test("dims below the feature count rotate only the first dims", () => {
    const shape = [1, 4, 10];
    const xs = data(40, 10);
    const got = sm.tidy(() => sm.fast.rope(sm.array(xs).reshape(shape), 6).toArray() as number[]);
    close(got, ropeRef(xs, shape, 6, false, 10000, 1, 0), 1e-5);
  });
  test("odd dims are refused", () => {
    expect(() => sm.fast.rope(sm.ones([2, 4]), 3)).toThrow(/rope: dims must be an even integer/);
  });
});

function sdpaRef(q: number[], k: number[], v: number[], [B, Hq, L, D]: [number, number, number, number], Hkv: number, S: number, scale: number, mask: "causal" | number[] | null): number[] {
  const out: number[] = [];
  const G = Hq / Hkv;
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++)
      for (let l = 0; l < L; l++) {
        const kh = Math.floor(h / G);
        const s: number[] = [];
        for (let t = 0; t < S; t++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[((b * Hq + h) * L + l) * D + d]! * k[((b * Hkv + kh) * S + t) * D + d]!;
          let x = dot * scale;
          if (mask === "causal" && t > l + (S - L)) x = -Infinity;
          if (Array.isArray(mask)) x += mask[l * S + t]!;
          s.push(x);
        }
        const m = Math.max(...s);
        const e = s.map((x) => Math.exp(x - m));
        const z = e.reduce((a, x) => a + x, 0);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let t = 0; t < S; t++) acc += (e[t]! / z) * v[((b * Hkv + kh) * S + t) * D + d]!;
          out.push(acc);
        }
      }
  return out;
}

describe("scaledDotProductAttention", () => {
  const cases: { name: string; shape: number[]; Hkv: number; S: number; mask: "causal" | "additive" | null; D: number }[] = [
    { name: "grouped heads, causal", shape: [2, 4, 5, 8], Hkv: 2, S: 5, mask: "causal", D: 8 },
    { name: "one head, longer keys than queries, causal", shape: [1, 1, 3, 40], Hkv: 1, S: 7, mask: "causal", D: 40 },
    { name: "additive mask, head dim 48", shape: [1, 2, 6, 48], Hkv: 2, S: 9, mask: "additive", D: 48 },
    { name: "no mask", shape: [1, 3, 4, 16], Hkv: 3, S: 4, mask: null, D: 16 },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const [B, Hq, L, D] = c.shape as [number, number, number, number];
      const q = data(B * Hq * L * D, 11), k = data(B * c.Hkv * c.S * D, 12), v = data(B * c.Hkv * c.S * D, 13);
      const mask = c.mask === "additive" ? data(L * c.S, 14, 2) : c.mask;
      const scale = 0.3;
      const got = sm.tidy(() =>
        sm.fast
          .scaledDotProductAttention(sm.array(q).reshape(c.shape), sm.array(k).reshape([B, c.Hkv, c.S, D]), sm.array(v).reshape([B, c.Hkv, c.S, D]), {
            scale,
            mask: Array.isArray(mask) ? sm.array(mask).reshape([L, c.S]) : mask,
          })
          .toArray() as number[],
      );
      close(got, sdpaRef(q, k, v, [B, Hq, L, D], c.Hkv, c.S, scale, mask), 1e-5);
    });
  }
  test("mismatched heads are refused", () => {
    expect(() => sm.fast.scaledDotProductAttention(sm.ones([1, 3, 2, 4]), sm.ones([1, 2, 2, 4]), sm.ones([1, 2, 2, 4]))).toThrow(
      /3 query heads are not a multiple of 2/,
    );
  });
});
