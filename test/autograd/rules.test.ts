/** Every gradient rule against float64 central finite differences (test/autograd/helpers.ts). */
import { describe, test } from "bun:test";
import fc from "fast-check";
import * as sm from "../../src/index.ts";
import { gatherRef, gradCheck } from "./helpers.ts";
import {
  broadcastRef, erf, erfinv, gelu, geluTanh, map1, mapN, matmulRef, permuteRef, pyDivmod, type Ref, reduceRef,
  sigmoid, sliceIndices, softplus, takeRef,
} from "../tensor/helpers.ts";

type T = sm.Tensor;
const S = [2, 3];

const unary: [string, (x: T) => T, (x: number) => number, number, number][] = [
  ["negative", sm.negative, (x) => -x, -2, 2],
  ["abs", sm.abs, Math.abs, -2, 2],
  ["square", sm.square, (x) => x * x, -2, 2],
  ["sqrt", sm.sqrt, Math.sqrt, 0.5, 2],
  ["rsqrt", sm.rsqrt, (x) => 1 / Math.sqrt(x), 0.5, 2],
  ["exp", sm.exp, Math.exp, -2, 2],
  ["expm1", sm.expm1, Math.expm1, -2, 2],
  ["log", sm.log, Math.log, 0.5, 2],
  ["log1p", sm.log1p, Math.log1p, -0.5, 2],
  ["log2", sm.log2, Math.log2, 0.5, 2],
  ["log10", sm.log10, Math.log10, 0.5, 2],
  ["reciprocal", sm.reciprocal, (x) => 1 / x, 0.5, 2],
  ["sin", sm.sin, Math.sin, -2, 2],
  ["cos", sm.cos, Math.cos, -2, 2],
  ["tan", sm.tan, Math.tan, -1, 1],
  ["tanh", sm.tanh, Math.tanh, -2, 2],
  ["sigmoid", sm.sigmoid, sigmoid, -3, 3],
  ["erf", sm.erf, erf, -2, 2],
  ["erfinv", sm.erfinv, erfinv, -0.8, 0.8],
  ["relu", sm.relu, (x) => Math.max(x, 0), -2, 2],
  ["gelu", (x) => sm.gelu(x), gelu, -3, 3],
  ["gelu tanh", (x) => sm.gelu(x, "tanh"), geluTanh, -3, 3],
  ["silu", sm.silu, (x) => x * sigmoid(x), -3, 3],
  ["softplus", sm.softplus, softplus, -3, 3],
  ["floor", sm.floor, Math.floor, -2, 2],
  ["ceil", sm.ceil, Math.ceil, -2, 2],
  ["round", sm.round, Math.round, -2, 2],
  ["sign", sm.sign, Math.sign, -2, 2],
  ["nanToNum", (x) => sm.nanToNum(x), (x) => x, -2, 2],
  ["astype float32 -> float32", (x) => sm.astype(x, "float32"), (x) => x, -2, 2],
];

describe("unary rules", () => {
  for (const [name, f, r, lo, hi] of unary) test(name, () => gradCheck(f, (x) => map1(x, r), [{ shape: S, lo, hi }]));
});

const binary: [string, (a: T, b: T) => T, (a: number, b: number) => number, [number, number], [number, number]][] = [
  ["add", sm.add, (a, b) => a + b, [-2, 2], [-2, 2]],
  ["subtract", sm.subtract, (a, b) => a - b, [-2, 2], [-2, 2]],
  ["multiply", sm.multiply, (a, b) => a * b, [-2, 2], [-2, 2]],
  ["divide", sm.divide, (a, b) => a / b, [-2, 2], [0.5, 2]],
  ["power", sm.power, (a, b) => a ** b, [0.5, 2], [-1.5, 1.5]],
  ["remainder", sm.remainder, (a, b) => pyDivmod(a, b)[1], [-3, 3], [0.7, 1.5]],
  ["floorDivide", sm.floorDivide, (a, b) => Math.floor(a / b), [-3, 3], [0.7, 1.5]],
  ["maximum", sm.maximum, Math.max, [-2, 2], [-2, 2]],
  ["minimum", sm.minimum, Math.min, [-2, 2], [-2, 2]],
];

describe("binary rules, with broadcasting", () => {
  for (const [name, f, r, [alo, ahi], [blo, bhi]] of binary) {
    test(name, () => {
      gradCheck(f, (a, b) => mapN([a, b], r), [{ shape: S, lo: alo, hi: ahi }, { shape: S, lo: blo, hi: bhi }]);
      gradCheck(f, (a, b) => mapN([a, b], r), [{ shape: [2, 1, 3], lo: alo, hi: ahi }, { shape: [4, 1], lo: blo, hi: bhi }]);
    });
  }
  test("multiply by a scalar and by itself", () => {
    gradCheck((x) => sm.multiply(sm.multiply(x, x), 3), (x) => map1(x, (v) => 3 * v * v), [{ shape: S }]);
  });
  test("where", () => {
    const cond = [true, false, true, false, false, true];
    const c = sm.array(cond).reshape(S);
    const ref = (a: Ref, b: Ref): Ref => ({ shape: S, data: cond.map((k, i) => (k ? a.data[i]! : b.data[i % 3]!)) });
    gradCheck((a, b) => sm.where(c, a, b), ref, [{ shape: S }, { shape: [3] }]);
  });
});

describe("views", () => {
  test("broadcastTo", () => gradCheck((x) => sm.broadcastTo(x, [4, 2, 3]), (x) => broadcastRef(x, [4, 2, 3]), [{ shape: [2, 1] }]));
  test("transpose", () => gradCheck((x) => sm.transpose(x, [2, 0, 1]), (x) => permuteRef(x, [2, 0, 1]), [{ shape: [2, 3, 4] }]));
  test("reshape, squeeze, expandDims", () => {
    gradCheck((x) => sm.reshape(x, [3, 2]), (x) => ({ shape: [3, 2], data: x.data }), [{ shape: S }]);
    gradCheck((x) => sm.squeeze(x, 1), (x) => ({ shape: [2, 3], data: x.data }), [{ shape: [2, 1, 3] }]);
    gradCheck((x) => sm.expandDims(x, [0, 2]), (x) => ({ shape: [1, 2, 1, 3], data: x.data }), [{ shape: S }]);
  });
  const slices: [string, number[]][] = [
    ["1:3, ::2", [4, 5]],
    ["::-1, 1", [4, 5]],
    ["None, ..., -2:0:-2", [3, 6]],
    ["1, None, 1:", [3, 4, 5]],
    ["::3, ::-2, 2", [7, 5, 3]],
  ];
  for (const [name, shape] of slices) {
    test(`slice ${name}`, () => {
      // The reference: the view of an arange gives each element's flat source index.
      const where = sm.slice(sm.arange(shape.reduce((a, b) => a * b, 1)).reshape(shape), name);
      const src = where.toArray() as number[];
      gradCheck((x) => sm.slice(x, name), (x) => ({ shape: where.shape, data: src.map((s) => x.data[s]!) }), [{ shape }]);
    });
  }
  test("slice of a slice of a transpose", () => {
    gradCheck(
      (x) => sm.transpose(x).slice("1:").slice("::-1, 0:2"),
      (x) => takeRef(permuteRef(x, [1, 0]), [sliceIndices(4, 1, null, 1).reverse(), [0, 1]]),
      [{ shape: [3, 4] }],
    );
  });
});

describe("reductions and scans", () => {
  const axesCases: (number[] | undefined)[] = [undefined, [0], [1, 2], [0, 2]];
  const shape = [2, 3, 4];
  for (const axes of axesCases) {
    const name = axes ? `[${axes}]` : "all";
    test(`sum ${name}`, () => gradCheck((x) => sm.sum(x, axes), (x) => reduceRef(x, axes, false, (v) => v.reduce((a, b) => a + b, 0)), [{ shape }]));
    test(`prod ${name}`, () => gradCheck((x) => sm.prod(x, axes), (x) => reduceRef(x, axes, false, (v) => v.reduce((a, b) => a * b, 1)), [{ shape, lo: 0.5, hi: 1.5 }]));
    test(`max ${name}`, () => gradCheck((x) => sm.max(x, axes), (x) => reduceRef(x, axes, false, (v) => Math.max(...v)), [{ shape }]));
    test(`min ${name} keepdims`, () => gradCheck((x) => sm.min(x, axes, true), (x) => reduceRef(x, axes, true, (v) => Math.min(...v)), [{ shape }]));
  }
  // prod is multilinear, so finite differences are exact at zeros too.
  test("prod with zeros", () => {
    gradCheck((x) => sm.prod(x, 1), (x) => reduceRef(x, [1], false, (v) => v.reduce((a, b) => a * b, 1)), [{ shape: [3, 4], values: [1, 0, 2, 3, 0, 0, 2, 1, 1.5, 2, -1, 0.5] }]);
  });
  const scanRef = (x: Ref, axis: number, f: (a: number, b: number) => number): Ref => {
    const out = { shape: x.shape, data: [...x.data] };
    const stride = x.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    for (let i = 0; i < out.data.length; i++) if (Math.floor(i / stride) % x.shape[axis]! > 0) out.data[i] = f(out.data[i - stride]!, out.data[i]!);
    return out;
  };
  test("cumsum", () => {
    gradCheck((x) => sm.cumsum(x, 1), (x) => scanRef(x, 1, (a, b) => a + b), [{ shape: [2, 5, 2] }]);
    gradCheck((x) => sm.cumsum(x, 0), (x) => scanRef(x, 0, (a, b) => a + b), [{ shape: [4, 3] }]);
  });
  test("cumprod, with and without zeros", () => {
    gradCheck((x) => sm.cumprod(x, 1), (x) => scanRef(x, 1, (a, b) => a * b), [{ shape: [2, 5], lo: 0.5, hi: 1.5 }]);
    const values = [0.5, 0, 2, 0, 1.5, 1.2, -1, 0.7, 2, 0, 0, 3, 0.9, 1.1, 0.8];
    gradCheck((x) => sm.cumprod(x, 1), (x) => scanRef(x, 1, (a, b) => a * b), [{ shape: [3, 5], values }]);
    gradCheck((x) => sm.cumprod(x, 0), (x) => scanRef(x, 0, (a, b) => a * b), [{ shape: [5, 3], values }]);
  });
});

describe("matmul", () => {
  const mm = (a: Ref, b: Ref) => matmulRef(a, b);
  test("2-D", () => gradCheck(sm.matmul, mm, [{ shape: [3, 4] }, { shape: [4, 5] }]));
  test("batched with broadcast batch axes", () => gradCheck(sm.matmul, mm, [{ shape: [2, 1, 3, 4] }, { shape: [3, 4, 2] }]));
  test("transposed operands", () =>
    gradCheck((a, b) => sm.matmul(sm.transpose(a), sm.transpose(b)), (a, b) => mm(permuteRef(a, [1, 0]), permuteRef(b, [1, 0])), [{ shape: [4, 3] }, { shape: [5, 4] }]));
  test("vector operands", () => {
    gradCheck(sm.matmul, (a, b) => { const r = mm({ shape: [1, 4], data: a.data }, b); return { shape: [5], data: r.data }; }, [{ shape: [4] }, { shape: [4, 5] }]);
    gradCheck(sm.matmul, (a, b) => { const r = mm(a, { shape: [4, 1], data: b.data }); return { shape: [2, 3], data: r.data }; }, [{ shape: [2, 3, 4] }, { shape: [4] }]);
  });
});

describe("structure ops", () => {
  test("concatenate and stack", () => {
    gradCheck(
      (a, b) => sm.concatenate([a, b, a], 1),
      (a, b) => gatherRef({ shape: [2, 8], data: [0, 1].flatMap((r) => [...a.data.slice(r * 3, r * 3 + 3), ...b.data.slice(r * 2, r * 2 + 2), ...a.data.slice(r * 3, r * 3 + 3)]) }, [2, 8], (i) => i),
      [{ shape: [2, 3] }, { shape: [2, 2] }],
    );
    gradCheck((a, b) => sm.stack([a, b], 1), (a, b) => ({ shape: [2, 2, 3], data: [0, 1].flatMap((r) => [...a.data.slice(r * 3, r * 3 + 3), ...b.data.slice(r * 3, r * 3 + 3)]) }), [{ shape: S }, { shape: S }]);
  });
  test("split", () => {
    gradCheck((x) => { const [p, q] = sm.split(x, [1], 1); return sm.add(sm.multiply(p!, 2), sm.sum(q!, 1, true)); },
      (x) => ({ shape: [2, 1], data: [0, 1].map((r) => 2 * x.data[r * 3]! + x.data[r * 3 + 1]! + x.data[r * 3 + 2]!) }), [{ shape: S }]);
  });
  test("pad", () => {
    gradCheck((x) => sm.pad(x, [[1, 2], [0, 1]], 5), (x) => gatherRef(x, [5, 4], ([i, j]) => (i! >= 1 && i! < 3 && j! < 3 ? [i! - 1, j!] : null), 5), [{ shape: S }]);
  });
  test("tile and repeat", () => {
    gradCheck((x) => sm.tile(x, [2, 2]), (x) => gatherRef(x, [4, 6], ([i, j]) => [i! % 2, j! % 3]), [{ shape: S }]);
    gradCheck((x) => sm.repeat(x, 3, 1), (x) => gatherRef(x, [2, 9], ([i, j]) => [i!, Math.floor(j! / 3)]), [{ shape: S }]);
  });
  test("take with repeated and negative indices", () => {
    const ids = [[2, -1], [0, 2], [2, 1]];
    const norm = (k: number) => (k < 0 ? k + 4 : k);
    gradCheck((x) => sm.take(x, ids, 1), (x) => gatherRef(x, [3, 3, 2], ([i, a, b]) => [i!, norm(ids[a!]![b!]!)]), [{ shape: [3, 4] }]);
    gradCheck((x) => sm.take(x, sm.array([3, 3, 0], "int32")), (x) => gatherRef(x, [3], ([a]) => [[1, 1, 0][a!]!, [0, 0, 0][a!]!]), [{ shape: [2, 3] }]);
    gradCheck((x) => sm.gather(x, sm.array([1, 1, 0, 1], "uint32")), (x) => gatherRef(x, [4, 3], ([a, j]) => [[1, 1, 0, 1][a!]!, j!]), [{ shape: [2, 3] }]);
    // int8 indices against an axis longer than int8 reaches: -1 is the last of 200.
    gradCheck((x) => sm.take(x, sm.array([-1, 3, -1], "int8"), 1), (x) => gatherRef(x, [2, 3], ([i, a]) => [i!, [199, 3, 199][a!]!]), [{ shape: [2, 200] }]);
  });
  test("takeAlongAxis, with broadcast indices", () => {
    const ids = [[0, 2, 2], [1, 1, 0]];
    gradCheck((x) => sm.takeAlongAxis(x, ids, 1), (x) => gatherRef(x, [2, 3], ([i, j]) => [i!, ids[i!]![j!]!]), [{ shape: S }]);
    gradCheck((x) => sm.takeAlongAxis(x, [[1, 0, 1, 1]], 0), (x) => gatherRef(x, [2, 4], ([, j]) => [[1, 0, 1, 1][j!]!, j!]), [{ shape: [2, 4] }]);
  });
  test("sort and topk: the gradient goes to the positions the values came from", () => {
    const order = (row: number[]) => row.map((v, i) => [v, i] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map(([, i]) => i);
    const sorted = (x: Ref) => [0, 1].map((r) => order(x.data.slice(r * 4, r * 4 + 4)));
    gradCheck((x) => sm.sort(x, 1), (x) => gatherRef(x, [2, 4], ([i, j]) => [i!, sorted(x)[i!]![j!]!]), [{ shape: [2, 4] }]);
    gradCheck((x) => sm.topk(x, 2, 1), (x) => gatherRef(x, [2, 2], ([i, j]) => [i!, sorted(x)[i!]![3 - j!]!]), [{ shape: [2, 4] }]);
  });
  test("tril, triu, flip and roll", () => {
    gradCheck((x) => sm.tril(x), (x) => gatherRef(x, [3, 4], ([i, j]) => (j! <= i! ? [i!, j!] : null)), [{ shape: [3, 4] }]);
    gradCheck((x) => sm.triu(x, 1), (x) => gatherRef(x, [3, 4], ([i, j]) => (j! >= i! + 1 ? [i!, j!] : null)), [{ shape: [3, 4] }]);
    gradCheck((x) => sm.flip(x, 1), (x) => gatherRef(x, [2, 3], ([i, j]) => [i!, 2 - j!]), [{ shape: S }]);
    gradCheck((x) => sm.roll(x, 1, 1), (x) => gatherRef(x, [2, 3], ([i, j]) => [i!, (j! + 2) % 3]), [{ shape: S }]);
  });
  test("einsum, tensordot and conv1d against their matmul forms", () => {
    gradCheck((a, b) => sm.einsum("ij,jk->ik", a, b), (a, b) => matmulRef(a, b), [{ shape: [2, 3] }, { shape: [3, 2] }]);
    gradCheck((a, b) => sm.tensordot(a, b, 1), (a, b) => matmulRef(a, b), [{ shape: [2, 3] }, { shape: [3, 2] }]);
    // A 1x1 convolution over channels-last input is a matmul by the weight's transpose.
    gradCheck(
      (x, w) => sm.conv1d(x, w),
      (x, w) => {
        const out: number[] = [];
        for (let l = 0; l < 4; l++) for (let o = 0; o < 2; o++) out.push([0, 1, 2].reduce((acc, c) => acc + x.data[l * 3 + c]! * w.data[o * 3 + c]!, 0));
        return { shape: [1, 4, 2], data: out };
      },
      [{ shape: [1, 4, 3] }, { shape: [2, 1, 3] }],
    );
  });
  test("putAlongAxis: x and values, duplicates written once", () => {
    const ids = [[0, 2, 0], [1, 1, 3]];
    // The last write along the axis wins: row 0 writes v[0][2] at 0 and v[0][1] at 2; row 1 v[1][1] at 1, v[1][2] at 3.
    const ref = (x: Ref, v: Ref) => {
      const out = [...x.data];
      ids.forEach((row, i) => row.forEach((k, j) => (out[i * 4 + k] = v.data[i * 3 + j]!)));
      return { shape: [2, 4], data: out };
    };
    gradCheck((x, v) => sm.putAlongAxis(x, ids, v, 1), ref, [{ shape: [2, 4] }, { shape: [2, 3] }]);
  });
});

describe("composites", () => {
  const rowsRef = (x: Ref, f: (row: number[]) => number[]): Ref => {
    const n = x.shape[x.shape.length - 1]!;
    const data: number[] = [];
    for (let i = 0; i < x.data.length; i += n) data.push(...f(x.data.slice(i, i + n)));
    return { shape: x.shape, data };
  };
  const softmaxRow = (r: number[]) => { const m = Math.max(...r); const e = r.map((v) => Math.exp(v - m)); const s = e.reduce((a, b) => a + b); return e.map((v) => v / s); };
  const lse = (r: number[]) => { const m = Math.max(...r); return m + Math.log(r.reduce((a, v) => a + Math.exp(v - m), 0)); };
  const meanOf = (r: number[]) => r.reduce((a, b) => a + b) / r.length;
  const varOf = (r: number[], ddof = 0) => { const m = meanOf(r); return r.reduce((a, v) => a + (v - m) ** 2, 0) / (r.length - ddof); };
  test("softmax", () => gradCheck((x) => sm.softmax(x, -1), (x) => rowsRef(x, softmaxRow), [{ shape: [3, 5], lo: -3, hi: 3 }]));
  test("logSoftmax", () => gradCheck((x) => sm.logSoftmax(x, -1), (x) => rowsRef(x, (r) => r.map((v) => v - lse(r))), [{ shape: [3, 5], lo: -3, hi: 3 }]));
  test("logsumexp", () => gradCheck((x) => sm.logsumexp(x, 1), (x) => reduceRef(x, [1], false, lse), [{ shape: [3, 5], lo: -3, hi: 3 }]));
  test("mean, variance, std", () => {
    gradCheck((x) => sm.mean(x, [0, 2]), (x) => reduceRef(x, [0, 2], false, meanOf), [{ shape: [2, 3, 4] }]);
    gradCheck((x) => sm.variance(x, 1, false, 1), (x) => reduceRef(x, [1], false, (r) => varOf(r, 1)), [{ shape: [3, 5] }]);
    gradCheck((x) => sm.std(x, -1), (x) => reduceRef(x, [1], false, (r) => Math.sqrt(varOf(r))), [{ shape: [3, 5] }]);
  });
  test("cross-entropy from primitives", () => {
    const labels = [1, 4, 0];
    gradCheck(
      (x) => sm.negative(sm.mean(sm.takeAlongAxis(sm.logSoftmax(x, -1), sm.array(labels, "int32").reshape([3, 1]), 1))),
      (x) => { let s = 0; labels.forEach((l, i) => { const r = x.data.slice(i * 5, i * 5 + 5); s -= r[l]! - lse(r); }); return { shape: [], data: [s / 3] }; },
      [{ shape: [3, 5], lo: -3, hi: 3 }],
    );
  });
  test("fast.rmsNorm and fast.layerNorm, weight and bias", () => {
    const eps = 1e-5;
    const rms = (x: Ref, w: Ref) => mapN([rowsRef(x, (r) => { const s = 1 / Math.sqrt(meanOf(r.map((v) => v * v)) + eps); return r.map((v) => v * s); }), w], (a, b) => a * b);
    gradCheck((x, w) => sm.fast.rmsNorm(x, w), rms, [{ shape: [3, 6] }, { shape: [6] }]);
    const ln = (x: Ref, w: Ref, b: Ref) =>
      mapN([rowsRef(x, (r) => { const m = meanOf(r), s = 1 / Math.sqrt(varOf(r) + eps); return r.map((v) => (v - m) * s); }), w, b], (a, c, d) => a * c + d);
    gradCheck((x, w, b) => sm.fast.layerNorm(x, w, b), ln, [{ shape: [3, 6] }, { shape: [6] }, { shape: [6] }]);
  });
  test("fast.rope, both pairings, partial dims", () => {
    for (const traditional of [false, true]) {
      const [L, D, dims] = [3, 6, 4];
      const ref = (x: Ref): Ref => {
        const out = [...x.data];
        for (let b = 0; b < x.data.length / (L * D); b++)
          for (let l = 0; l < L; l++)
            for (let i = 0; i < dims / 2; i++) {
              const th = (l + 1) * Math.pow(10000, (-2 * i) / dims);
              const [p, q] = traditional ? [2 * i, 2 * i + 1] : [i, i + dims / 2];
              const at = (k: number) => (b * L + l) * D + k;
              const a = x.data[at(p)]!, c = x.data[at(q)]!;
              out[at(p)] = a * Math.cos(th) - c * Math.sin(th);
              out[at(q)] = c * Math.cos(th) + a * Math.sin(th);
            }
        return { shape: x.shape, data: out };
      };
      gradCheck((x) => sm.fast.rope(x, dims, { traditional, offset: 1 }), ref, [{ shape: [2, L, D] }]);
    }
  });
  test("fast.scaledDotProductAttention: causal, additive mask, grouped heads", () => {
    const [B, Hq, Hkv, L, S2, D] = [1, 4, 2, 3, 3, 2];
    const attn = (q: Ref, k: Ref, v: Ref, mask: (h: number, i: number, j: number) => number): Ref => {
      const out: number[] = [];
      const sc = 1 / Math.sqrt(D);
      for (let h = 0; h < Hq; h++) {
        const g = Math.floor(h / (Hq / Hkv));
        for (let i = 0; i < L; i++) {
          const s = Array.from({ length: S2 }, (_, j) => {
            let d = 0;
            for (let e = 0; e < D; e++) d += q.data[(h * L + i) * D + e]! * k.data[(g * S2 + j) * D + e]!;
            return d * sc + mask(h, i, j);
          });
          const p = softmaxRow(s);
          for (let e = 0; e < D; e++) out.push(p.reduce((a, pj, j) => a + pj * v.data[(g * S2 + j) * D + e]!, 0));
        }
      }
      return { shape: [B, Hq, L, D], data: out };
    };
    const shapes = [{ shape: [B, Hq, L, D] }, { shape: [B, Hkv, S2, D] }, { shape: [B, Hkv, S2, D] }];
    gradCheck((q, k, v) => sm.fast.scaledDotProductAttention(q, k, v, { mask: "causal" }), (q, k, v) => attn(q, k, v, (_, i, j) => (j > i ? -Infinity : 0)), shapes);
    const m = [0.5, -1, 0, 0.25, 1, -0.5, 0, 0, 2];
    gradCheck((q, k, v) => sm.fast.scaledDotProductAttention(q, k, v, { mask: sm.array(m, "float32").reshape([L, S2]) }), (q, k, v) => attn(q, k, v, (_, i, j) => m[i * S2 + j]!), shapes);
  });
});

describe("lazy and eager agree", () => {
  test("a chain of every kind of rule", () => {
    const f = (x: T, w: T) => sm.logsumexp(sm.matmul(sm.tanh(sm.pad(x, [[0, 0], [1, 0]])), w).slice("::-1").cumsum(0), -1);
    const ref = (x: Ref, w: Ref) => {
      const t = gatherRef(map1(x, Math.tanh), [3, 5], ([i, j]) => (j! >= 1 ? [i!, j! - 1] : null));
      const p = matmulRef(t, w);
      const r = takeRef(p, [[2, 1, 0], [0, 1]]);
      for (let i = 1; i < 3; i++) for (let j = 0; j < 2; j++) r.data[i * 2 + j]! += r.data[(i - 1) * 2 + j]!;
      return reduceRef(r, [1], false, (v) => Math.log(v.reduce((a, b) => a + Math.exp(b), 0)));
    };
    for (const mode of ["lazy", "eager"] as const) gradCheck(f, ref, [{ shape: [3, 4] }, { shape: [5, 2] }], { mode });
  });
});

describe("properties", () => {
  test("broadcast binary ops then a reduction over random axes, random shapes", () => {
    const ops: [(a: T, b: T) => T, (a: number, b: number) => number][] = [
      [sm.multiply, (a, b) => a * b],
      [sm.divide, (a, b) => a / b],
      [sm.subtract, (a, b) => a - b],
    ];
    const reductions: [(x: T, axes: number[]) => T, (v: number[]) => number][] = [
      [(x, axes) => sm.sum(x, axes), (v) => v.reduce((a, b) => a + b, 0)],
      [(x, axes) => sm.logsumexp(x, axes), (v) => Math.log(v.reduce((a, b) => a + Math.exp(b), 0))],
      [(x, axes) => sm.prod(x, axes, true), (v) => v.reduce((a, b) => a * b, 1)],
    ];
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 3 }),
        fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
        fc.integer({ min: 1, max: 2 ** 3 - 1 }),
        fc.integer({ min: 0, max: 2 }),
        fc.integer({ min: 0, max: 2 }),
        (shape, ones, axisBits, opIndex, redIndex) => {
          const bshape = shape.slice(1).map((d, i) => (ones[i] ? 1 : d));
          const axes = shape.flatMap((_, i) => ((axisBits >> i) & 1 ? [i] : []));
          const [op, opRef] = ops[opIndex]!;
          const [red, redRef] = reductions[redIndex]!;
          const keep = redIndex === 2;
          gradCheck(
            (a, b) => red(op(a, b), axes),
            (a, b) => reduceRef(mapN([a, b], opRef), axes, keep, redRef),
            [{ shape, lo: 0.5, hi: 1.5 }, { shape: bshape, lo: 0.5, hi: 1.5 }],
          );
        },
      ),
      { numRuns: 30, seed: 20261206 },
    );
  });
});
