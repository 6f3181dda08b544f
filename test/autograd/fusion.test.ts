// The backward graph goes through the same scheduler as a forward one: kernel counts via sm.stats().
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { planOf, schedule, execute } from "../../src/exec/realize.ts";
import { kernels } from "../tensor/helpers.ts";

setDefaultTimeout(120_000);
type T = sm.Tensor;

const x = sm.random.normal([64, 256]).eval();
const w = sm.random.normal([256]).eval();
const b = sm.random.normal([256]).eval();
const ct = sm.random.normal([64, 256]).eval();

const dx = (f: (x: T) => T, cot = ct) => () => [sm.vjp(f, [x], [cot])[1][0] as T];

test("the backward of softmax, logSoftmax, logsumexp, RMS norm and layer norm (dx) is one row kernel each", () => {
  expect(kernels(dx((x) => sm.softmax(x, -1)))).toBe(1);
  expect(kernels(dx((x) => sm.logSoftmax(x, -1)))).toBe(1);
  expect(kernels(dx((x) => sm.logsumexp(x, -1), sm.ones([64])))).toBe(1);
  expect(kernels(dx((x) => sm.fast.rmsNorm(x, w)))).toBe(1);
  expect(kernels(dx((x) => sm.fast.layerNorm(x, w, b)))).toBe(1);
});

test("with the weight (and bias) gradients: the dx row kernel and one reduction kernel, values as eager", () => {
  const rms = () => sm.vjp((x: T, w: T) => sm.fast.rmsNorm(x, w), [x, w], [ct])[1] as T[];
  const ln = () => sm.vjp((x: T, w: T, b: T) => sm.fast.layerNorm(x, w, b), [x, w, b], [ct])[1] as T[];
  expect(kernels(rms)).toBe(2);
  expect(kernels(ln)).toBe(2);
  for (const build of [rms, ln]) {
    const lazy = build();
    sm.eval(lazy);
    const eager = sm.eager(build);
    lazy.forEach((g, i) => {
      const got = g.toArray() as number[], want = eager[i]!.toArray() as number[];
      const bad = want.findIndex((v, j) => !(Math.abs(got[j]! - v) <= 1e-5 * (1 + Math.abs(v))));
      expect(bad < 0 ? null : `gradient ${i} [${bad}]: lazy ${got[bad]}, eager ${want[bad]}`).toBeNull();
    });
  }
  // And RMS norm's weight gradient against float64: the column sums of ct * x / rms(x).
  const xv = x.toArray() as number[], cv = ct.toArray() as number[];
  const [R, C] = x.shape as [number, number];
  const dw = new Float64Array(C);
  for (let i = 0; i < R; i++) {
    const row = xv.slice(i * C, i * C + C);
    const r = 1 / Math.sqrt(row.reduce((a, v) => a + v * v, 0) / C + 1e-5);
    for (let j = 0; j < C; j++) dw[j]! += cv[i * C + j]! * row[j]! * r;
  }
  const gw = rms()[1]!.toArray() as number[];
  for (let j = 0; j < C; j++) expect(Math.abs(gw[j]! - dw[j]!)).toBeLessThan(1e-4 * (1 + Math.abs(dw[j]!)));
});

test("over many rows the weight gradients' reduction is two parallel stages, each one kernel for w and b", () => {
  const [R, C] = [2048, 128];
  const xs = sm.random.normal([R, C], "float32", 0, 1, sm.random.key(7)).eval();
  const cts = sm.random.normal([R, C], "float32", 0, 1, sm.random.key(8)).eval();
  const ws = sm.random.normal([C], "float32", 0, 1, sm.random.key(9)).eval();
  const bs = sm.random.normal([C], "float32", 0, 1, sm.random.key(10)).eval();
  const build = () => sm.vjp((x: T, w: T, b: T) => sm.fast.layerNorm(x, w, b), [xs, ws, bs], [cts])[1] as T[];
  expect(kernels(build)).toBe(3);
  const outs = build();
  const s = schedule(outs.map((t) => t.node("test")));
  const threads = s.order.map((n) => planOf(s, n).dispatch.size[0]);
  execute(s);
  // A row kernel (a threadgroup per row), then partial sums of many rows' parts, then their fold.
  expect(threads).toEqual([R, 64 * C, C]); // 64 parts of 32 rows
  // db is the column sum of the cotangent; dw that of cotangent times the normalized x.
  const xv = xs.toArray() as number[], cv = cts.toArray() as number[];
  const dw = new Float64Array(C), db = new Float64Array(C);
  for (let i = 0; i < R; i++) {
    const row = xv.slice(i * C, i * C + C);
    const mu = row.reduce((a, v) => a + v, 0) / C;
    const r = 1 / Math.sqrt(row.reduce((a, v) => a + (v - mu) ** 2, 0) / C + 1e-5);
    for (let j = 0; j < C; j++) {
      db[j]! += cv[i * C + j]!;
      dw[j]! += cv[i * C + j]! * (row[j]! - mu) * r;
    }
  }
  const [gw, gb] = [outs[1]!.toArray() as number[], outs[2]!.toArray() as number[]];
  for (let j = 0; j < C; j++) {
    expect(Math.abs(gw[j]! - dw[j]!)).toBeLessThan(1e-3 * (1 + Math.abs(dw[j]!)));
    expect(Math.abs(gb[j]! - db[j]!)).toBeLessThan(1e-3 * (1 + Math.abs(db[j]!)));
  }
});

test("LoRA x@W + s(x@A)@B with W frozen: forward 2 kernels, forward and full backward 4 more", () => {
  for (const [bt, n, d, r] of [[2, 16, 64, 4], [4, 64, 512, 8], [2, 64, 256, 16]] as const) {
    const key = (k: number) => sm.random.key(100 + k);
    const X = sm.random.normal([bt, n, d], "float32", 0, 1, key(0)).eval();
    const W = sm.random.normal([d, d], "float32", 0, 0.05, key(1)).eval();
    const A = sm.random.normal([d, r], "float32", 0, 0.05, key(2)).eval();
    const B = sm.random.normal([r, d], "float32", 0, 0.05, key(3)).eval();
    const CT = sm.random.normal([bt, n, d], "float32", 0, 1, key(4)).eval();
    const lora = (x: T, a: T, bb: T) => x.matmul(W).add(x.matmul(a).matmul(bb).mul(2));
    const forward = kernels(() => [lora(X, A, B)]);
    expect(forward).toBe(2);
    expect(kernels(() => {
      const [o, g] = sm.vjp(lora, [X, A, B], [CT]);
      return [...(o as T[]), ...(g as T[])];
    })).toBe(forward + 4);
    if (d > 64) continue;
    // The gradients against float64: dxa = 2 CT B^T, dX = CT W^T + dxa A^T, dA = sum X^T dxa, dB = 2 sum (XA)^T CT.
    const [xv, wv, av, bv, cv] = [X, W, A, B, CT].map((t) => t.toArray() as number[]) as [number[], number[], number[], number[], number[]];
    const rows = bt * n;
    const xa = new Float64Array(rows * r), dxa = new Float64Array(rows * r);
    for (let i = 0; i < rows; i++)
      for (let q = 0; q < r; q++)
        for (let k = 0; k < d; k++) {
          xa[i * r + q]! += xv[i * d + k]! * av[k * r + q]!;
          dxa[i * r + q]! += 2 * cv[i * d + k]! * bv[q * d + k]!;
        }
    const want = { x: new Float64Array(rows * d), a: new Float64Array(d * r), b: new Float64Array(r * d) };
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < d; j++) {
        for (let k = 0; k < d; k++) want.x[i * d + j]! += cv[i * d + k]! * wv[j * d + k]!;
        for (let q = 0; q < r; q++) {
          want.x[i * d + j]! += dxa[i * r + q]! * av[j * r + q]!;
          want.a[j * r + q]! += xv[i * d + j]! * dxa[i * r + q]!;
          want.b[q * d + j]! += 2 * xa[i * r + q]! * cv[i * d + j]!;
        }
      }
    const [gx, ga, gb] = sm.vjp(lora, [X, A, B], [CT])[1] as T[];
    for (const [got, w] of [[gx!, want.x], [ga!, want.a], [gb!, want.b]] as const) {
      const g = got.toArray() as number[];
      const worst = g.reduce((m, v, i) => Math.max(m, Math.abs(v - w[i]!) / (1 + Math.abs(w[i]!))), 0);
      expect(worst).toBeLessThan(1e-4);
    }
  }
});
