/**
 * sm.random (src/tensor/random.ts) against the exact JS reference src/tensor/random-reference.ts:
 * the API gives what the reference gives for the same key, in lazy and eager mode, for every dtype
 * and for shapes with size-1 and size-0 axes; keys from split, lazy keys and the global key; and
 * the errors.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { bf16BitsToNumber, f16BitsToNumber } from "../../src/graph/dtype.ts";
import * as rr from "../../src/tensor/random-reference.ts";
import { errorMessage as errorOf } from "../expect-error.ts";

setDefaultTimeout(120_000);

type Run = <T>(fn: () => T) => T;
const MODES: [string, Run][] = [
  ["lazy", (fn) => fn()],
  ["eager", sm.eager],
];

const SHAPES: number[][] = [[], [1], [3, 5], [0, 4], [2, 1, 7], [4097]];
const sizeOf = (s: readonly number[]) => s.reduce((a, d) => a * d, 1);
const raw = (t: sm.Tensor) => Array.from(t.raw());


function expectClose(got: readonly number[], want: readonly number[], rel: number, abs: number): void {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => {
    const w = want[i]!;
    if (Math.abs(g - w) > abs + rel * Math.abs(w)) throw new Error(`element ${i}: got ${g}, want ${w} (rel ${rel}, abs ${abs})`);
  });
}

/** Argmax of logits + Gumbel noise from the reference's uniforms, in float64: row s of u samples logits row rowOf(s). */
function categoricalRef(k: Uint32Array, rows: number[][], samples: number, rowOf: (s: number) => number): number[] {
  const classes = rows[0]!.length;
  const u = rr.uniform(k, samples * classes, 0, 1, "float32");
  return Array.from({ length: samples }, (_, s) => {
    let best = 0;
    let bestValue = -Infinity;
    for (let c = 0; c < classes; c++) {
      const v = rows[rowOf(s)]![c]! - Math.log(-Math.log(u[s * classes + c]!));
      if (v > bestValue) [best, bestValue] = [c, v];
    }
    return best;
  });
}

const KEY_SEEDS: (number | bigint)[] = [0, 42, -1, 2 ** 40 + 7, 0x123456789abcdef0n];

for (const [mode, run] of MODES) {
  describe(`${mode}: keys`, () => {
    test("key(seed) is the reference's key, a uint32 tensor of shape [2]", () => {
      for (const s of KEY_SEEDS) {
        const k = run(() => sm.random.key(s));
        expect([k.dtype, k.shape]).toEqual(["uint32", [2]]);
        expect(raw(k)).toEqual(Array.from(rr.key(s)));
      }
    });

    test("split gives the reference's keys as a [num, 2] tensor; they differ from each other and the parent", () => {
      for (const s of [0, 42, -1]) {
        for (const num of [1, 2, 3, 8]) {
          const keys = run(() => sm.random.split(sm.random.key(s), num));
          expect([keys.dtype, keys.shape]).toEqual(["uint32", [num, 2]]);
          expect(raw(keys)).toEqual(Array.from(rr.split(rr.key(s), num)));
          const distinct = new Set([...(keys.tolist() as number[][]), Array.from(rr.key(s))].map((w) => w.join(",")));
          expect(distinct.size).toBe(num + 1);
        }
      }
      const [a, b] = [0, 1].map((i) => run(() => sm.random.split(sm.random.key(3)).slice(i)));
      expect(raw(sm.random.uniform(0, 1, [8], "float32", a!))).not.toEqual(raw(sm.random.uniform(0, 1, [8], "float32", b!)));
    });

    test("a row of split keys (a view at an offset) and a lazy key are used as their values", () => {
      run(() => {
        const keys = sm.random.split(sm.random.key(9), 3);
        const want = rr.split(rr.key(9), 3).slice(4, 6);
        expect(raw(sm.random.uniform(0, 1, [5], "float32", keys.slice(2)))).toEqual(Array.from(rr.uniform(want, 5, 0, 1, "float32")));
        const transposed = sm.transpose(sm.reshape(sm.array([7, 8], "uint32"), [1, 2])).reshape([2]);
        expect(raw(sm.random.randint(0, 100, [6], "int32", transposed))).toEqual(Array.from(rr.randint([7, 8], 6, 0, 100)));
        const lazy = sm.add(sm.array([0, 40], "uint32"), sm.array([0, 2], "uint32"));
        expect(raw(sm.random.normal([3], "float32", 0, 1, lazy))).toEqual(raw(sm.random.normal([3], "float32", 0, 1, sm.random.key(42))));
      });
    });
  });

  describe(`${mode}: distributions equal the reference`, () => {
    const k = rr.key(1234);
    const key = () => sm.random.key(1234);

    test("uniform, float32/float16/bfloat16, bit for bit", () => {
      for (const shape of SHAPES) {
        for (const [low, high] of [[0, 1], [-3, 5.5], [1000, 1000.001]] as const) {
          for (const dtype of ["float32", "float16", "bfloat16"] as const) {
            const t = run(() => sm.random.uniform(low, high, shape, dtype, key()));
            expect([t.shape, t.dtype]).toEqual([shape, dtype]);
            expect(raw(t)).toEqual(Array.from(rr.uniform(k, sizeOf(shape), low, high, dtype)));
          }
        }
      }
      const u = run(() => sm.random.uniform(0, 1, [10000], "float32", key())).toArray() as number[];
      expect(Math.abs(u.reduce((a, b) => a + b, 0) / u.length - 0.5)).toBeLessThan(0.01);
      expect(Math.min(...u)).toBeGreaterThanOrEqual(0);
      expect(Math.max(...u)).toBeLessThan(1);
    });

    test("normal, to float tolerance (log and sqrt are the backend's)", () => {
      for (const shape of SHAPES) {
        const n = sizeOf(shape);
        const f = run(() => sm.random.normal(shape, "float32", 2, 0.5, key()));
        expect([f.shape, f.dtype]).toEqual([shape, "float32"]);
        expectClose(f.toArray() as number[], Array.from(rr.normal(k, n, 2, 0.5, "float32")), 1e-5, 1e-6);
        const h = run(() => sm.random.normal(shape, "float16", 0, 1, key()));
        expectClose(h.toArray() as number[], Array.from(rr.normal(k, n, 0, 1, "float16"), f16BitsToNumber), 1e-3, 1e-6);
        const b = run(() => sm.random.normal(shape, "bfloat16", 0, 1, key()));
        expectClose(b.toArray() as number[], Array.from(rr.normal(k, n, 0, 1, "bfloat16"), bf16BitsToNumber), 8e-3, 1e-6);
      }
      const z = run(() => sm.random.normal([20000], "float32", 0, 1, key())).toArray() as number[];
      const mean = z.reduce((a, b) => a + b, 0) / z.length;
      const variance = z.reduce((a, b) => a + (b - mean) ** 2, 0) / z.length;
      expect(Math.abs(mean)).toBeLessThan(0.03);
      expect(Math.abs(variance - 1)).toBeLessThan(0.05);
    });

    test("randint in every integer dtype, exactly", () => {
      const cases: [number, number, "int32" | "uint32" | "int8" | "uint8"][] = [
        [0, 10, "int32"],
        [-5, 3, "int32"],
        [-(2 ** 31), 2 ** 31 - 1, "int32"],
        [0, 2 ** 32 - 1, "uint32"],
        [3_000_000_000, 4_000_000_000, "uint32"],
        [-128, 128, "int8"],
        [0, 256, "uint8"],
      ];
      for (const shape of SHAPES) {
        for (const [low, high, dtype] of cases) {
          const t = run(() => sm.random.randint(low, high, shape, dtype, key()));
          expect([t.shape, t.dtype]).toEqual([shape, dtype]);
          const want = rr.randint(k, sizeOf(shape), low, high);
          const values = dtype === "uint32" ? Array.from(new Uint32Array(want.buffer)) : Array.from(want);
          expect(t.toArray()).toEqual(values);
          for (const v of values) expect(v >= low && v < high).toBe(true);
        }
      }
    });

    test("bernoulli with a number p (the kernel) and a tensor p (uniform < p), exactly", () => {
      for (const shape of SHAPES) {
        for (const p of [0, 0.3, 0.5, 1]) {
          const t = run(() => sm.random.bernoulli(p, shape, key()));
          expect([t.shape, t.dtype]).toEqual([shape, "bool"]);
          expect(t.toArray<boolean>()).toEqual(Array.from(rr.bernoulli(k, sizeOf(shape), p), (b) => b === 1));
        }
      }
      expect(run(() => sm.random.bernoulli(undefined, [5], key())).toArray<boolean>()).toEqual(Array.from(rr.bernoulli(k, 5, 0.5), (b) => b === 1));
      const probs = [0.1, 0.5, 0.9];
      const u = rr.uniform(k, 12, 0, 1, "float32");
      const broadcast = run(() => sm.random.bernoulli(sm.reshape(sm.array(probs), [3, 1]), [3, 4], key()));
      expect(broadcast.toArray<boolean>()).toEqual(Array.from(u, (x, i) => x < Math.fround(probs[Math.floor(i / 4)]!)));
      const own = run(() => sm.random.bernoulli(sm.array(probs), undefined, key()));
      const u3 = rr.uniform(k, 3, 0, 1, "float32");
      expect([own.shape, own.toArray<boolean>()]).toEqual([[3], probs.map((p, i) => u3[i]! < Math.fround(p))]);
      // The tensor form and the kernel agree for a constant p.
      const viaTensor = run(() => sm.random.bernoulli(sm.full([7, 3], 0.3), undefined, key()));
      expect(viaTensor.toArray()).toEqual(run(() => sm.random.bernoulli(0.3, [7, 3], key())).toArray());
    });

    test("categorical: default, numSamples, shape, another axis, integer logits", () => {
      const rows = [
        [0.5, -1, 2, 0],
        [3, 3, -2, 0.25],
        [-1, 0, 1, 2],
      ];
      const logits = () => sm.array(rows, "float32");
      const one = run(() => sm.random.categorical(logits(), -1, undefined, key()));
      expect([one.shape, one.dtype]).toEqual([[3], "uint32"]);
      expect(one.toArray()).toEqual(categoricalRef(k, rows, 3, (s) => s));
      const many = run(() => sm.random.categorical(logits(), 1, 6, key()));
      expect(many.shape).toEqual([3, 6]);
      expect(many.toArray()).toEqual(categoricalRef(k, rows, 18, (s) => Math.floor(s / 6)));
      const shaped = run(() => sm.random.categorical(logits(), -1, [2, 3], key()));
      expect(shaped.shape).toEqual([2, 3]);
      expect(shaped.toArray()).toEqual(categoricalRef(k, rows, 6, (s) => s % 3));
      const columns = run(() => sm.random.categorical(sm.transpose(logits()), 0, undefined, key()));
      expect(columns.toArray()).toEqual(one.toArray());
      const ints = run(() => sm.random.categorical(sm.array([[0, 5, 0]], "int32"), -1, 4, key()));
      expect(ints.toArray()).toEqual(categoricalRef(k, [[0, 5, 0]], 4, () => 0));
      const none = run(() => sm.random.categorical(logits(), -1, 0, key()));
      expect(none.shape).toEqual([3, 0]);
    });

    test("categorical samples follow the probabilities", () => {
      const p = [0.1, 0.2, 0.7];
      const draws = run(() => sm.random.categorical(sm.log(sm.array(p)), -1, 20000, key())).toArray() as number[];
      const freq = [0, 1, 2].map((c) => draws.filter((d) => d === c).length / draws.length);
      freq.forEach((f, c) => expect(Math.abs(f - p[c]!)).toBeLessThan(0.015));
    });
  });

  describe(`${mode}: the global key`, () => {
    test("seed(s) makes the key-less calls reproducible: each takes the second half of split(global)", () => {
      run(() => {
        sm.random.seed(7);
        const a = raw(sm.random.uniform(0, 1, [4]));
        const b = raw(sm.random.uniform(0, 1, [4]));
        const g0 = rr.split(rr.key(7), 2);
        const g1 = rr.split(g0.slice(0, 2), 2);
        expect(a).toEqual(Array.from(rr.uniform(g0.slice(2, 4), 4, 0, 1, "float32")));
        expect(b).toEqual(Array.from(rr.uniform(g1.slice(2, 4), 4, 0, 1, "float32")));
        expect(a).not.toEqual(b);
        sm.random.seed(7);
        expect(raw(sm.random.uniform(0, 1, [4]))).toEqual(a);
        sm.random.seed(7n);
        expect(raw(sm.random.randint(0, 1000, [4]))).toEqual(Array.from(rr.randint(g0.slice(2, 4), 4, 0, 1000)));
      });
    });
  });
}

describe("errors name the op and the problem", () => {
  const k = sm.random.key(0);
  test("keys and seeds", () => {
    expect(errorOf(() => sm.random.key(1.5))).toBe("random.key: the seed must be a safe integer or a bigint, got 1.5");
    expect(errorOf(() => sm.random.seed(2 ** 60))).toBe(`random.seed: the seed must be a safe integer or a bigint, got ${2 ** 60}`);
    expect(errorOf(() => sm.random.split(k, 0))).toBe("random.split: num must be a positive integer, got 0");
    expect(errorOf(() => sm.random.split(sm.array([1, 2], "int32")))).toBe(
      "random.split: key must be a uint32 tensor of shape [2] (from random.key or random.split), got dtype int32 and shape [2]",
    );
    expect(errorOf(() => sm.random.uniform(0, 1, [2], "float32", sm.random.split(k)))).toBe(
      "random.uniform: key must be a uint32 tensor of shape [2] (from random.key or random.split), got dtype uint32 and shape [2, 2]",
    );
  });
  test("shapes, dtypes and parameters", () => {
    expect(errorOf(() => sm.random.uniform(0, 1, [-1], "float32", k))).toContain("random.uniform:");
    expect(errorOf(() => sm.random.uniform(1, 1, [2], "float32", k))).toBe("random.uniform: low (1) must be less than high (1) in float32");
    expect(errorOf(() => sm.random.uniform(0, Infinity, [2], "float32", k))).toBe("random.uniform: high must be a finite number, got Infinity");
    expect(errorOf(() => sm.random.uniform(0, 1, [2], "int32", k))).toBe("random.uniform: dtype must be float32, float16 or bfloat16, got int32");
    expect(errorOf(() => sm.random.normal([2], "uint8", 0, 1, k))).toBe("random.normal: dtype must be float32, float16 or bfloat16, got uint8");
    expect(errorOf(() => sm.random.normal([2.5], "float32", 0, 1, k))).toContain("random.normal:");
    expect(errorOf(() => sm.random.normal([2], "float32", 0, NaN, k))).toBe("random.normal: scale must be a finite number, got NaN");
    expect(errorOf(() => sm.random.bernoulli(1.5, [2], k))).toBe("random.bernoulli: p must be a probability in [0, 1], got 1.5");
    expect(errorOf(() => sm.random.bernoulli(NaN, [2], k))).toBe("random.bernoulli: p must be a probability in [0, 1], got NaN");
    expect(errorOf(() => sm.random.bernoulli(sm.zeros([3]), [2], k))).toBe("random.bernoulli: shapes [3] and [2] cannot be broadcast together");
    expect(errorOf(() => sm.random.bernoulli(sm.zeros([3]), [1], k))).toBe("random.bernoulli: p of shape [3] cannot be broadcast to shape [1]");
    expect(errorOf(() => sm.random.randint(5, 5, [2], "int32", k))).toBe("random.randint: low (5) must be less than high (5)");
    expect(errorOf(() => sm.random.randint(0, 1.5, [2], "int32", k))).toBe("random.randint: high must be an integer, got 1.5");
    expect(errorOf(() => sm.random.randint(0, 300, [2], "uint8", k))).toBe("random.randint: [0, 300) does not fit uint8, whose values are 0 to 255");
    expect(errorOf(() => sm.random.randint(-1, 3, [2], "uint32", k))).toBe(
      "random.randint: [-1, 3) does not fit uint32, whose values are 0 to 4294967295",
    );
    expect(errorOf(() => sm.random.randint(-(2 ** 31), 2 ** 31, [2], "int32", k))).toBe(
      "random.randint: high - low must be at most 2^32 - 1, got 4294967296",
    );
    expect(errorOf(() => sm.random.randint(0, 2, [2], "float32", k))).toBe("random.randint: dtype must be an integer type, got float32");
  });
  test("categorical", () => {
    const logits = sm.zeros([2, 3]);
    expect(errorOf(() => sm.random.categorical(sm.array(1), -1, undefined, k))).toBe(
      "random.categorical: logits must have an axis of classes, got a zero-dimensional tensor",
    );
    expect(errorOf(() => sm.random.categorical(sm.zeros([2, 0]), -1, undefined, k))).toBe("random.categorical: axis 1 of logits has no classes (size 0)");
    expect(errorOf(() => sm.random.categorical(logits, 2, undefined, k))).toBe("random.categorical: axis 2 is out of range for a 2-D array");
    expect(errorOf(() => sm.random.categorical(logits, -1, [3], k))).toBe("random.categorical: shapes [2] and [3] cannot be broadcast together");
    expect(errorOf(() => sm.random.categorical(logits, -1, [1], k))).toBe(
      "random.categorical: the distributions (shape [2]) cannot be broadcast to shape [1]",
    );
    expect(errorOf(() => sm.random.categorical(logits, -1, -2, k))).toBe(
      "random.categorical: the number of samples must be a non-negative integer, got -2",
    );
  });
});
