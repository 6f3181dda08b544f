// sm.lm's samplers against float64 references in JS: the filters token for token, the seeded draws
// against the same Gumbel draw computed from the random kernels' reference uniforms, and the
// empirical distribution of many draws against the filtered softmax.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import * as reference from "../../src/tensor/random-reference.ts";
import { errorMessage } from "../expect-error.ts";

setDefaultTimeout(120_000);

interface Opts {
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
}

/** Deterministic normal-ish logits (a sum of uniforms from a linear congruential generator). */
function logitsRow(n: number, seed: number, scale = 3): Float32Array {
  let s = seed >>> 0;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  return Float32Array.from({ length: n }, () => Math.fround((u() + u() + u() + u() - 2) * scale));
}

/** The filtered row in float64: kept logits (divided by the temperature) or -Infinity. */
function refFilter(row: Float32Array, o: Opts): number[] {
  const t = o.temperature ?? 0;
  const l = Array.from(row, (x) => (t > 0 && t !== 1 ? Math.fround(x / Math.fround(t)) : x));
  const n = l.length;
  let thr = -Infinity;
  let asc = [...l].sort((a, b) => a - b);
  if (o.topK !== undefined && o.topK < n) {
    thr = asc[n - o.topK]!;
    asc = asc.map((x) => (x < thr ? -Infinity : x));
  }
  if (o.topP !== undefined && o.topP < 1) {
    const m = Math.max(...asc);
    const e = asc.map((x) => Math.exp(x - m));
    const z = e.reduce((a, b) => a + b, 0);
    let cum = 0;
    let dropped = 0;
    for (const x of e) {
      cum += x / z;
      if (cum <= 1 - o.topP) dropped++;
    }
    thr = Math.max(thr, asc[dropped]!);
  }
  if (o.minP !== undefined && o.minP > 0) thr = Math.max(thr, Math.max(...l) + Math.log(o.minP));
  return l.map((x) => (x < thr ? -Infinity : x));
}

function softmax64(l: number[]): number[] {
  const m = Math.max(...l);
  const e = l.map((x) => (x === -Infinity ? 0 : Math.exp(x - m)));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
}

const filterCases: [string, Opts][] = [
  ["topK 5", { topK: 5 }],
  ["topK 1", { topK: 1 }],
  ["topK = vocab", { topK: 64 }],
  ["topP 0.9", { topP: 0.9 }],
  ["topP 0.5", { topP: 0.5 }],
  ["topP 0.05", { topP: 0.05 }],
  ["minP 0.1", { minP: 0.1 }],
  ["temperature 0.7, topK 20, topP 0.8", { temperature: 0.7, topK: 20, topP: 0.8 }],
  ["temperature 1.5, topK 10, topP 0.95, minP 0.05", { temperature: 1.5, topK: 10, topP: 0.95, minP: 0.05 }],
  ["temperature 0.5, minP 0.2", { temperature: 0.5, minP: 0.2 }],
];

describe("lm.filterLogits", () => {
  for (const [name, o] of filterCases) {
    test(name, () => {
      for (const seed of [1, 2, 3]) {
        const row = logitsRow(64, seed * 7919);
        const want = refFilter(row, o);
        const got = sm.lm.filterLogits(sm.array(Array.from(row)), o).toArray();
        expect(got.map((x) => x === -Infinity)).toEqual(want.map((x) => x === -Infinity));
        expect(got).toEqual(want);
        expect(want.some((x) => x !== -Infinity)).toBe(true);
      }
    });
  }

  test("rows of a batch are filtered independently", () => {
    const rows = [logitsRow(64, 11), logitsRow(64, 12), logitsRow(64, 13)];
    const o = { topK: 9, topP: 0.7 };
    const got = sm.lm.filterLogits(sm.array(rows.map((r) => Array.from(r))), o).tolist();
    expect(got).toEqual(rows.map((r) => refFilter(r, o)));
  });

  test("ties with the last token kept are kept", () => {
    const row = Float32Array.from([1, 3, 2, 3, 0, 2, 3, -1]);
    // The 2nd largest is 3, tied three ways: all three stay.
    expect(sm.lm.filterLogits(sm.array(Array.from(row), "float32"), { topK: 2 }).toArray()).toEqual([-Infinity, 3, -Infinity, 3, -Infinity, -Infinity, 3, -Infinity]);
    // Two equal halves: top-p 0.5 needs one of them, and keeps both.
    expect(sm.lm.filterLogits(sm.array([0, 5, 5], "float32"), { topP: 0.4 }).toArray()).toEqual([-Infinity, 5, 5]);
  });

  test("top-p keeps the smallest set reaching p", () => {
    // probabilities 0.5, 0.25, 0.125, 0.125 (logits ln of them)
    const l = [Math.log(0.5), Math.log(0.25), Math.log(0.125), Math.log(0.125)];
    const kept = (p: number) => sm.lm.filterLogits(sm.array(l), { topP: p }).toArray().map((x) => x !== -Infinity);
    expect(kept(0.3)).toEqual([true, false, false, false]);
    expect(kept(0.6)).toEqual([true, true, false, false]);
    expect(kept(0.8)).toEqual([true, true, true, true]);
  });

  test("bad options are errors at the call", () => {
    const l = sm.array([1, 2, 3], "float32");
    expect(errorMessage(() => sm.lm.filterLogits(l, { topP: 0 }))).toBe("lm.filterLogits: topP must be a number in (0, 1], got 0");
    expect(errorMessage(() => sm.lm.filterLogits(l, { topK: 1.5 }))).toBe("lm.filterLogits: topK must be an integer ≥ 1, got 1.5");
    expect(errorMessage(() => sm.lm.filterLogits(l, { minP: 2 }))).toBe("lm.filterLogits: minP must be a number in [0, 1], got 2");
    expect(errorMessage(() => sm.lm.filterLogits(l, { temperature: -1 }))).toBe("lm.filterLogits: temperature must be a number ≥ 0, got -1");
    expect(errorMessage(() => sm.lm.filterLogits(sm.array([1, 2], "int32"), {}))).toBe("lm.filterLogits: logits must be floating point, got int32");
    expect(errorMessage(() => sm.lm.sample(sm.array(1), {}))).toBe("lm.sample: logits need a last axis of tokens, got shape []");
  });
});

describe("lm.applyRepetitionPenalty", () => {
  test("divides positive and multiplies negative logits of seen tokens, as transformers", () => {
    const row = [2, -2, 0.5, -0.5, 3, 0];
    const got = sm.lm.applyRepetitionPenalty(sm.array(row), [0, 1, 3, 5, 1], 1.3).toArray();
    const f = Math.fround;
    expect(got).toEqual([f(2 / f(1.3)), f(-2 * f(1.3)), 0.5, f(-0.5 * f(1.3)), 3, 0]);
  });
  test("token ids outside the vocabulary are errors", () => {
    expect(errorMessage(() => sm.lm.applyRepetitionPenalty(sm.array([1, 2], "float32"), [2], 1.2))).toBe(
      "lm.applyRepetitionPenalty: token id 2 is outside the vocabulary of 2",
    );
  });
  test("greedy sampling sees the penalty", () => {
    // Token 0 leads until penalised: 2/1.5 < 1.5.
    expect(sm.lm.sample(sm.array([2, 1.5, -1]), {}).item()).toBe(0);
    expect(sm.lm.sample(sm.array([2, 1.5, -1]), { repetitionPenalty: 1.5 }, undefined, [0]).item()).toBe(1);
  });
});

describe("lm.sample", () => {
  test("temperature 0 is argmax of each row", () => {
    const rows = [logitsRow(100, 5), logitsRow(100, 6)];
    const got = sm.lm.sample(sm.array(rows.map((r) => Array.from(r))), { topK: 3, topP: 0.1 }).toArray();
    expect(got).toEqual(rows.map((r) => r.indexOf(Math.max(...r))));
  });

  // N rows of one distribution drawn under one key: the uniforms are the reference's, row-major.
  const N = 4000;
  const V = 12;
  const drawCases: [string, Opts][] = [
    ["temperature 1", { temperature: 1 }],
    ["temperature 0.6, topK 6", { temperature: 0.6, topK: 6 }],
    ["temperature 1.2, topP 0.8", { temperature: 1.2, topP: 0.8 }],
    ["temperature 1, minP 0.15", { temperature: 1, minP: 0.15 }],
  ];
  for (const [name, o] of drawCases) {
    test(`${name}: the Gumbel draw of the reference, and the filtered distribution`, () => {
      const row = logitsRow(V, 99, 1.5);
      const filteredRef = refFilter(row, o);
      const seed = 20261206;
      const tokens = sm.lm.sample(sm.broadcastTo(sm.array(Array.from(row)), [N, V]), o, sm.random.key(seed)).toArray();
      const u = reference.uniform(reference.key(seed), N * V, 0, 1, "float32");
      const counts = new Array<number>(V).fill(0);
      let mismatches = 0;
      for (let i = 0; i < N; i++) {
        let best = -1;
        let bestV = -Infinity;
        for (let j = 0; j < V; j++) {
          const g = filteredRef[j]! - Math.log(-Math.log(u[i * V + j]!));
          if (g > bestV) [best, bestV] = [j, g];
        }
        if (best !== tokens[i]) mismatches++;
        counts[tokens[i]!]!++;
      }
      expect(mismatches).toBe(0);
      const p = softmax64(filteredRef);
      for (let j = 0; j < V; j++) {
        if (p[j] === 0) expect(counts[j]).toBe(0);
        else expect(Math.abs(counts[j]! / N - p[j]!)).toBeLessThan(4.5 * Math.sqrt((p[j]! * (1 - p[j]!)) / N) + 1e-9);
      }
    });
  }

  test("the same key draws the same tokens, another key others", () => {
    const l = sm.broadcastTo(sm.array(Array.from(logitsRow(50, 3))), [64, 50]);
    const a = sm.lm.sample(l, { temperature: 1 }, sm.random.key(7)).toArray();
    const b = sm.lm.sample(l, { temperature: 1 }, sm.random.key(7)).toArray();
    const c = sm.lm.sample(l, { temperature: 1 }, sm.random.key(8)).toArray();
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
  });
});
