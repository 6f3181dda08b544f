/**
 * The ops added for MLX's core set, against float64 references computed here: ordering (long
 * lines, views and fused inputs, every dtype), triangles, flips, rolls, closeness, contractions
 * and convolutions; lazy and eager (both/check); and the errors bad arguments get.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { both, check, type DType, expectSmeltError, input, matmulRef, randint, randn, ref, roundTo } from "./helpers.ts";

setDefaultTimeout(120_000);

/** Stable ascending order of xs' positions, NaN last (NumPy's sort order). */
function argsortRef(xs: readonly number[]): number[] {
  const key = (v: number) => (Number.isNaN(v) ? Infinity : v);
  return xs
    .map((_, i) => i)
    .sort((i, j) => {
      const a = xs[i]!, b = xs[j]!;
      if (Number.isNaN(a) !== Number.isNaN(b)) return Number.isNaN(a) ? 1 : -1;
      return key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : i - j;
    });
}
/** Lines of a row-major [rows, n] array. */
const rowsOf = (data: readonly number[], n: number) => Array.from({ length: data.length / n }, (_, r) => data.slice(r * n, (r + 1) * n));

describe("sort, argsort, topk", () => {
  test("long lines: every position in order, ties stable, NaN last", () => {
    const n = 3001;
    const data = randint(2 * n, -50, 50, 7).map((v, i) => (i % 97 === 0 ? NaN : v / 4));
    const want = rowsOf(data, n).flatMap(argsortRef);
    const r = both(() => sm.argsort(sm.array(data).reshape([2, n])));
    expect(r.dtype).toBe("uint32");
    expect(r.values).toEqual(want);
    const s = both(() => sm.sort(sm.array(data).reshape([2, n])));
    expect(s.values).toEqual(want.map((i, k) => data[Math.floor(k / n) * n + i]!));
  });
  test("every dtype, and inputs that are views or fused expressions", () => {
    const xs = randint(24, -9, 9, 3);
    for (const dtype of ["float32", "float16", "bfloat16", "int32", "int8", "uint8", "uint32", "bool"] as DType[]) {
      const vals = xs.map((v) => (dtype === "bool" ? Number(v > 0) : dtype.startsWith("uint") ? v + 9 : v));
      const want = rowsOf(vals.map((v) => roundTo(dtype, v)), 6).flatMap(argsortRef);
      expect(both(() => sm.argsort(sm.array(vals, dtype).reshape([4, 6]))).values, dtype).toEqual(want);
    }
    for (const layout of ["transposed", "strided", "lazyTransposed"] as const) {
      const vals = randn(20, 4);
      const t = () => input([4, 5], vals, "float32", layout);
      const want = rowsOf(vals, 5).flatMap((row) => argsortRef(row).map((i) => row[i]!));
      check(() => sm.sort(t()), ref([4, 5], want), "float32", { ulps: 0 }, layout);
    }
    // A fused input: sort(-x) is x sorted descending, read through the negation inside the kernel.
    const vals = randn(10, 5);
    const desc = argsortRef(vals.map((v) => -v)).map((i) => -vals[i]!);
    check(() => sm.sort(sm.negative(sm.array(vals))), ref([10], desc), "float32", { ulps: 0 });
  });
  test("axis 0, axis null and topk's descending order", () => {
    const vals = randn(12, 6);
    const cols = [0, 1, 2].map((c) => [0, 1, 2, 3].map((r) => vals[r * 3 + c]!));
    const sorted = cols.map((col) => argsortRef(col).map((i) => col[i]!));
    const want = [0, 1, 2, 3].flatMap((r) => [0, 1, 2].map((c) => sorted[c]![r]!));
    check(() => sm.sort(sm.array(vals).reshape([4, 3]), 0), ref([4, 3], want), "float32", { ulps: 0 });
    check(() => sm.sort(sm.array(vals).reshape([4, 3]), null), ref([12], argsortRef(vals).map((i) => vals[i]!)), "float32", { ulps: 0 });
    const top = argsortRef(vals).reverse().slice(0, 4).map((i) => vals[i]!);
    check(() => sm.topk(sm.array(vals), 4), ref([4], top), "float32", { ulps: 0 });
    expect(sm.topk(sm.array(vals).reshape([4, 3]), 0).shape).toEqual([4, 0]);
    expect(sm.sort(sm.zeros([3, 0])).shape).toEqual([3, 0]);
  });
  test("bad arguments throw at the call", () => {
    expectSmeltError(() => sm.sort(sm.array([1, 2]), 1), "sort", "axis");
    expectSmeltError(() => sm.argsort(sm.array(3)), "argsort", "zero-dimensional");
    expectSmeltError(() => sm.topk(sm.array([1, 2]), 3), "topk", "0 to 2");
    expectSmeltError(() => sm.topk(sm.array([1, 2]), 1.5), "topk", "1.5");
    expectSmeltError(() => sm.sort(5 as never), "sort", "tensor");
  });
});

describe("tril, triu, flip, roll", () => {
  test("triangles of a batch, any k, keeping the dtype", () => {
    const vals = randint(2 * 3 * 4, -5, 5, 9);
    for (const k of [-2, 0, 1, 5]) {
      const lower = vals.map((v, i) => ((i % 4) - (Math.floor(i / 4) % 3) <= k ? v : 0));
      const upper = vals.map((v, i) => ((i % 4) - (Math.floor(i / 4) % 3) >= k ? v : 0));
      check(() => sm.tril(sm.array(vals).reshape([2, 3, 4]), k), ref([2, 3, 4], lower), "int32", {}, `tril ${k}`);
      check(() => sm.triu(sm.array(vals, "float16").reshape([2, 3, 4]), k), ref([2, 3, 4], upper), "float16", {}, `triu ${k}`);
    }
    expect(sm.tril(sm.ones([2, 2], "bool")).toArray<boolean>()).toEqual([true, false, true, true]);
    expectSmeltError(() => sm.tril(sm.array([1, 2])), "tril", "2 axes");
    expectSmeltError(() => sm.triu(sm.ones([2, 2]), 0.5), "triu", "k");
  });
  test("flip and roll are the index maps NumPy gives", () => {
    const v = [...Array(12).keys()];
    check(() => sm.flip(sm.arange(12).reshape([3, 4]), 1), ref([3, 4], [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8]), "int32");
    check(() => sm.flip(sm.arange(12).reshape([3, 4])), ref([3, 4], [...v].reverse()), "int32");
    check(() => sm.roll(sm.arange(12).reshape([3, 4]), 5), ref([3, 4], v.map((_, i) => (i - 5 + 12) % 12)), "int32");
    const rolled = v.map((_, i) => {
      const r = Math.floor(i / 4), c = i % 4;
      return ((r + 2) % 3) * 4 + ((c + 1) % 4);
    });
    check(() => sm.roll(sm.arange(12).reshape([3, 4]), [-2, -1], [0, 1]), ref([3, 4], rolled), "int32");
    check(() => sm.roll(sm.arange(4), 8), ref([4], [0, 1, 2, 3]), "int32");
    expectSmeltError(() => sm.roll(sm.arange(4), [1, 2], [0]), "roll", "same length");
    expectSmeltError(() => sm.roll(sm.arange(4), 1.5), "roll", "integer");
    expectSmeltError(() => sm.flip(sm.arange(4), 2), "flip", "axis");
  });
});

describe("isclose, allclose, log10, reciprocal", () => {
  test("isclose follows |a - b| <= atol + rtol |b|, with infinities and NaN", () => {
    const a = [1, 1, Infinity, -Infinity, NaN, NaN, 0, 5];
    const b = [1 + 1e-6, 1.1, Infinity, Infinity, NaN, 1, 1e-9, 5];
    expect(both(() => sm.isclose(sm.array(a), sm.array(b))).values).toEqual([true, false, true, false, false, false, true, true]);
    expect(both(() => sm.isclose(sm.array(a), sm.array(b), 0, 0, true)).values).toEqual([false, false, true, false, true, false, false, true]);
    expect(both(() => sm.isclose(sm.array([1, 2, 3]), 2, 0, 1)).values).toEqual([true, true, true]);
    expect(sm.allclose(sm.array([1, 2]), sm.array([1, 2.00001])).item<boolean>()).toBe(true);
    expect(sm.allclose(sm.array([1, 2]), sm.array([1, 2.1])).item<boolean>()).toBe(false);
    expect(sm.allclose(sm.array([1, 2]), sm.array([1, 2.1])).shape).toEqual([]);
    expectSmeltError(() => sm.isclose(sm.array([1]), sm.array([1]), -1), "isclose", "rtol");
  });
  test("log10 and reciprocal against float64", () => {
    const xs = [1e-3, 0.5, 1, 7, 100, 12345];
    check(() => sm.log10(sm.array(xs)), ref([6], xs.map(Math.log10)), "float32", { ulps: 2 });
    check(() => sm.reciprocal(sm.array(xs)), ref([6], xs.map((x) => 1 / x)), "float32", { ulps: 1 });
    check(() => sm.reciprocal(sm.array([2, 4])), ref([2], [0.5, 0.25]), "float32");
    check(() => sm.array(xs).log10(), ref([6], xs.map(Math.log10)), "float32", { ulps: 2 });
  });
});

describe("methods and sm.var", () => {
  test("round, floor, log1p, split, var", () => {
    check(() => sm.array([0.5, 1.5, -2.5, 2.7]).round(), ref([4], [0, 2, -2, 3]), "float32", { ulps: 0 });
    check(() => sm.array([0.5, -1.5]).floor(), ref([2], [0, -2]), "float32", { ulps: 0 });
    check(() => sm.array([1e-7, 1]).log1p(), ref([2], [Math.log1p(1e-7), Math.log1p(1)]), "float32", { ulps: 2 });
    const parts = sm.arange(6).split([2, 3]);
    expect(parts.map((p) => p.toArray())).toEqual([[0, 1], [2], [3, 4, 5]]);
    check(() => sm.var(sm.array([1, 2, 3, 4]), null, false, 1), ref([], [5 / 3]), "float32");
    expect(sm.var).toBe(sm.variance);
  });
});

/** Float64 reference of einsum for the specs used here (no repeated labels within an operand). */
function einsumRef(spec: string, ops: { shape: number[]; data: number[] }[]) {
  const [lhs, out] = spec.split("->") as [string, string];
  const ins = lhs.split(",");
  const size = new Map<string, number>();
  ins.forEach((s, k) => [...s].forEach((l, d) => size.set(l, ops[k]!.shape[d]!)));
  const all = [...size.keys()];
  const outShape = [...out].map((l) => size.get(l)!);
  const data = new Array(outShape.reduce((a, b) => a * b, 1)).fill(0);
  const total = all.reduce((a, l) => a * size.get(l)!, 1);
  for (let f = 0; f < total; f++) {
    const at = new Map<string, number>();
    let r = f;
    for (let i = all.length - 1; i >= 0; i--) {
      at.set(all[i]!, r % size.get(all[i]!)!);
      r = Math.floor(r / size.get(all[i]!)!);
    }
    const flat = (labels: string, shape: number[]) => [...labels].reduce((acc, l, d) => acc * shape[d]! + at.get(l)!, 0);
    const p = ins.reduce((acc, s, k) => acc * ops[k]!.data[flat(s, ops[k]!.shape)]!, 1);
    data[flat(out, outShape)] += p;
  }
  return ref(outShape, data);
}

describe("einsum, tensordot", () => {
  test("contractions against a float64 loop over every index", () => {
    const cases: [string, number[][]][] = [
      ["ij,jk->ik", [[4, 40], [40, 3]]],
      ["bij,bkj->bki", [[2, 3, 5], [2, 4, 5]]],
      ["ijk->kj", [[2, 3, 4]]],
      ["i,i->", [[7], [7]]],
      ["ij,k->ikj", [[2, 3], [4]]],
      ["abc,cd,db->a", [[2, 3, 4], [4, 5], [5, 3]]],
    ];
    cases.forEach(([spec, shapes], n) => {
      const ops = shapes.map((s, k) => ref(s, randn(s.reduce((a, b) => a * b, 1), 10 * n + k)));
      check(() => sm.einsum(spec, ...ops.map((o) => sm.array(o.data).reshape(o.shape))), einsumRef(spec, ops), "float32", { atol: 2 ** -16 }, spec);
    });
  });
  test("tensordot matches matmul where they coincide", () => {
    const a = ref([5, 40], randn(200, 1)), b = ref([40, 6], randn(240, 2));
    check(() => sm.tensordot(sm.array(a.data).reshape(a.shape), sm.array(b.data).reshape(b.shape), 1), matmulRef(a, b), "float32", { atol: 2 ** -16 });
    expect(sm.tensordot(sm.ones([2, 3]), sm.ones([4]), 0).shape).toEqual([2, 3, 4]);
  });
  test("bad subscripts and axes throw at the call", () => {
    const x = sm.ones([2, 3]);
    expectSmeltError(() => sm.einsum("ii->i", sm.ones([2, 2])), "einsum", "repeated within one operand");
    expectSmeltError(() => sm.einsum("...ij->ij", x), "einsum", "...");
    expectSmeltError(() => sm.einsum("ij,jk->ik", x, sm.ones([4, 2])), "einsum", "label j");
    expectSmeltError(() => sm.einsum("ij->ik", x), "einsum", "output label k");
    expectSmeltError(() => sm.einsum("ij,jk->ik", x), "einsum", "2 operands");
    expectSmeltError(() => sm.einsum("ijk->i", x), "einsum", "3");
    expectSmeltError(() => sm.tensordot(x, sm.ones([2, 3]), 1), "tensordot", "does not match");
    expectSmeltError(() => sm.tensordot(x, x, 3), "tensordot", "axes");
  });
});

/** Direct float64 convolution, channels last: x [N, H, W, C], w [O, KH, KW, C / groups]. */
function conv2dRef(x: { shape: number[]; data: number[] }, w: { shape: number[]; data: number[] }, s: number[], p: number[], d: number[], groups: number) {
  const [N, H, W, C] = x.shape as [number, number, number, number];
  const [O, KH, KW, CG] = w.shape as [number, number, number, number];
  const OH = Math.floor((H + 2 * p[0]! - d[0]! * (KH - 1) - 1) / s[0]!) + 1;
  const OW = Math.floor((W + 2 * p[1]! - d[1]! * (KW - 1) - 1) / s[1]!) + 1;
  const out: number[] = [];
  for (let n = 0; n < N; n++)
    for (let oh = 0; oh < OH; oh++)
      for (let ow = 0; ow < OW; ow++)
        for (let o = 0; o < O; o++) {
          const g = Math.floor(o / (O / groups));
          let acc = 0;
          for (let i = 0; i < KH; i++)
            for (let j = 0; j < KW; j++) {
              const h = oh * s[0]! - p[0]! + i * d[0]!, ww = ow * s[1]! - p[1]! + j * d[1]!;
              if (h < 0 || h >= H || ww < 0 || ww >= W) continue;
              for (let c = 0; c < CG; c++) acc += x.data[((n * H + h) * W + ww) * C + g * CG + c]! * w.data[((o * KH + i) * KW + j) * CG + c]!;
            }
          out.push(acc);
        }
  return ref([N, OH, OW, O], out);
}

describe("conv1d, conv2d", () => {
  test("against a direct float64 convolution", () => {
    const x = ref([2, 6, 7, 4], randn(2 * 6 * 7 * 4, 21)), w = ref([6, 3, 2, 2], randn(6 * 3 * 2 * 2, 22));
    const want = conv2dRef(x, w, [2, 1], [1, 2], [1, 2], 2);
    check(() => sm.conv2d(sm.array(x.data).reshape(x.shape), sm.array(w.data).reshape(w.shape), [2, 1], [1, 2], [1, 2], 2), want, "float32", { atol: 2 ** -18 });
    const x1 = ref([1, 9, 3], randn(27, 23)), w1 = ref([2, 4, 3], randn(24, 24));
    const want1 = conv2dRef(ref([1, 1, 9, 3], x1.data), ref([2, 1, 4, 3], w1.data), [1, 2], [0, 1], [1, 1], 1);
    check(() => sm.conv1d(sm.array(x1.data).reshape(x1.shape), sm.array(w1.data).reshape(w1.shape), 2, 1), ref([1, want1.shape[2]!, 2], want1.data), "float32", { atol: 2 ** -18 });
  });
  test("bad shapes and arguments throw at the call", () => {
    const x = sm.ones([1, 5, 5, 4]);
    expectSmeltError(() => sm.conv2d(sm.ones([5, 5, 4]), sm.ones([2, 3, 3, 4])), "conv2d", "4-D");
    expectSmeltError(() => sm.conv2d(x, sm.ones([2, 3, 3, 3])), "conv2d", "input channels");
    expectSmeltError(() => sm.conv2d(x, sm.ones([3, 3, 3, 2]), 1, 0, 1, 2), "conv2d", "groups");
    expectSmeltError(() => sm.conv2d(x, sm.ones([2, 7, 7, 4])), "conv2d", "larger than the padded input");
    expectSmeltError(() => sm.conv2d(x, sm.ones([2, 3, 3, 4]), 0), "conv2d", "stride");
    expectSmeltError(() => sm.conv1d(sm.ones([1, 5, 2]), sm.ones([1, 3, 2]), 1, -1), "conv1d", "padding");
  });
});
