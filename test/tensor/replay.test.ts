// Schedules kept across evaluations (src/exec/replay.ts): an evaluation of a structure met before
// gets the schedule planned then, and must compute exactly what planning it again would.
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { rng } from "./helpers.ts";

setDefaultTimeout(120_000);

const replayed = () => sm.stats().schedulesReplayed;
const f32 = (xs: ArrayLike<number>) => Array.from(Float32Array.from(xs));

test("a loop of one structure is planned twice, then replayed, with each step's scalars", () => {
  const r = rng(11);
  const n = 1000;
  const p0 = f32(Array.from({ length: n }, () => r() * 2 - 1));
  const g = f32(Array.from({ length: n }, () => r() * 2 - 1));
  let p = sm.array(p0, "float32");
  const grad = sm.array(g, "float32");
  let want = p0.slice();
  const counts: number[] = [];
  for (let step = 0; step < 6; step++) {
    // A rate that changes every step: an argument of the kept kernels, not part of the structure.
    const lr = 0.1 / (step + 1);
    const before = replayed();
    const next = p.sub(grad.mul(lr)).mul(0.99);
    sm.eval(next);
    counts.push(replayed() - before);
    p.dispose();
    p = next;
    want = want.map((x, i) => Math.fround(Math.fround(x - Math.fround(g[i]! * Math.fround(lr))) * Math.fround(0.99)));
    expect(p.toArray()).toEqual(want);
  }
  expect(counts).toEqual([0, 0, 1, 1, 1, 1]);
});

test("a held intermediate keeps its memory: holding it or not are different structures", () => {
  const x = sm.array([0.5, -1, 2, 3], "float32");
  for (let round = 0; round < 4; round++) {
    const hold = round % 2 === 0;
    for (let k = 0; k < 3; k++) {
      const y = x.mul(k + 1).exp();
      const z = y.add(1).log().sum();
      sm.eval(z);
      const want = [0.5, -1, 2, 3].map((v) => Math.exp(v * (k + 1)));
      if (hold) {
        // y is held by its handle: its kernel wrote it, and nothing later took its memory.
        const got = y.toArray() as number[];
        got.forEach((v, i) => expect(Math.abs(v - want[i]!) / want[i]!).toBeLessThan(1e-6));
      }
      const sum = want.reduce((a, v) => a + Math.log(v + 1), 0);
      expect(Math.abs((z.item() as number) - sum) / sum).toBeLessThan(1e-5);
      if (!hold) y.dispose();
    }
  }
});

test("reductions split in two stages are split again on replay", () => {
  const r = rng(5);
  const before = replayed();
  for (let k = 0; k < 4; k++) {
    // One row of 2^17 (split into partial rows) and a column sum over 2048 rows (split into blocks).
    const a = f32(Array.from({ length: 1 << 17 }, () => r()));
    const b = f32(Array.from({ length: 2048 * 8 }, () => r()));
    const s = sm.array(a, "float32").sum();
    const c = sm.array(b, "float32").reshape([2048, 8]).sum(0);
    sm.eval(s, c);
    const wantS = a.reduce((x, y) => x + y, 0);
    expect(Math.abs((s.item() as number) - wantS) / wantS).toBeLessThan(1e-5);
    const wantC = Array.from({ length: 8 }, (_, j) => {
      let t = 0;
      for (let i = 0; i < 2048; i++) t += b[i * 8 + j]!;
      return t;
    });
    (c.toArray() as number[]).forEach((v, j) => expect(Math.abs(v - wantC[j]!) / wantC[j]!).toBeLessThan(1e-5));
  }
  expect(replayed() - before).toBeGreaterThanOrEqual(2);
});

test("a weight's kept panels: read when there, filled when a new weight has none", () => {
  const r = rng(9);
  const M = 64, K = 256, N = 256;
  const xs = f32(Array.from({ length: M * K }, () => r() - 0.5));
  const x = sm.array(xs, "float32").reshape([M, K]);
  const check = (w: number[], got: sm.Tensor) => {
    const out = got.toArray() as number[];
    for (const i of [0, 17, 63]) {
      for (const j of [0, 100, 255]) {
        let t = 0;
        for (let k = 0; k < K; k++) t += xs[i * K + k]! * w[k * N + j]!;
        expect(Math.abs(out[i * N + j]! - t)).toBeLessThan(1e-4);
      }
    }
  };
  const before = replayed();
  for (let round = 0; round < 3; round++) {
    // A new weight every round (its panels are made by the first product), then read three times.
    const ws = f32(Array.from({ length: K * N }, () => r() - 0.5));
    const W = sm.array(ws, "float32").reshape([K, N]);
    for (let k = 0; k < 3; k++) {
      const y = x.matmul(W).add(k);
      sm.eval(y);
      check(ws.map((v) => v), y.sub(k));
      y.dispose();
    }
    W.dispose();
  }
  expect(replayed() - before).toBeGreaterThan(0);
});

test("evaluations in flight replay too, each with its own memory", async () => {
  const r = rng(3);
  const inputs = Array.from({ length: 8 }, () => f32(Array.from({ length: 512 }, () => r() * 4 - 2)));
  const before = replayed();
  const outs = inputs.map((a) => sm.array(a, "float32").tanh().mul(3).add(sm.array(a, "float32").square()).sum(-1, true));
  await Promise.all(outs.map((t) => sm.asyncEval(t)));
  expect(replayed() - before).toBeGreaterThanOrEqual(6);
  outs.forEach((t, k) => {
    const want = inputs[k]!.reduce((s, v) => s + Math.tanh(v) * 3 + v * v, 0);
    expect(Math.abs((t.item() as number) - want)).toBeLessThan(1e-3);
  });
});
