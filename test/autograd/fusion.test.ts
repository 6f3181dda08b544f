// The backward graph goes through the same scheduler as a forward one: kernel counts via sm.stats().
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { planOf, schedule, execute } from "../../src/exec/realize.ts";
import fc from "fast-check";
import { withTargetEnv } from "../../src/runtime/target.ts";
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

test("softmax's backward folds three row reductions: no gradient flows into its row max", () => {
  // The max, the sum of exponentials, and the sum of cotangent times output; the max's own
  // gradient (zero: softmax does not depend on it) would add a count of ties and a sum.
  const outs = dx((x) => sm.softmax(x, -1))();
  const s = schedule(outs.map((t) => (t as unknown as { node(why: string): import("../../src/graph/node.ts").Node }).node("test")));
  expect(s.order.length).toBe(1);
  const source = planOf(s, s.order[0]!).source;
  execute(s);
  expect(source.match(/float acc\d+_total = /g)?.length).toBe(3);
  // dx = y * (g - sum(g * y)) against float64.
  const xs = x.toArray() as number[], gs = ct.toArray() as number[], got = outs[0]!.toArray() as number[];
  let worst = 0;
  for (let r = 0; r < 64; r++) {
    const row = xs.slice(r * 256, r * 256 + 256), g = gs.slice(r * 256, r * 256 + 256);
    const m = Math.max(...row), e = row.map((v) => Math.exp(v - m)), z = e.reduce((a, v) => a + v, 0), y = e.map((v) => v / z);
    const dot = y.reduce((a, v, j) => a + v * g[j]!, 0);
    y.forEach((v, j) => (worst = Math.max(worst, Math.abs(got[r * 256 + j]! - v * (g[j]! - dot)))));
  }
  expect(worst).toBeLessThan(1e-6);
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

/** The kernels of outs in schedule order, each as [op, threadgroups or threads], evaluated. */
function dispatches(outs: T[]): [string, number][] {
  const s = schedule(outs.map((t) => t.node("test")));
  const d = s.order.map((n): [string, number] => [n.op, planOf(s, n).dispatch.size[0]]);
  execute(s);
  return d;
}

/** Layer norm's (or, without a bias, RMS norm's) dw and db in float64: column sums of ct * xhat and of ct, and their error scales. */
function normGrads64(xv: number[], cv: number[], C: number, centered: boolean) {
  const R = xv.length / C;
  const dw = new Float64Array(C), db = new Float64Array(C), scale = new Float64Array(C);
  for (let i = 0; i < R; i++) {
    const row = xv.slice(i * C, i * C + C);
    const mu = centered ? row.reduce((a, v) => a + v, 0) / C : 0;
    const r = 1 / Math.sqrt(row.reduce((a, v) => a + (v - mu) ** 2, 0) / C + 1e-5);
    for (let j = 0; j < C; j++) {
      const c = cv[i * C + j]!, p = c * (row[j]! - mu) * r;
      db[j]! += c;
      dw[j]! += p;
      scale[j]! += Math.abs(p) + Math.abs(c);
    }
  }
  return { dw, db, scale };
}

test("at any row count, the weight (and bias) gradients are partials of the row kernel and one fold kernel", () => {
  for (const C of [128, 576, 4096]) {
    for (const R of [64, 1024, 2048, 4096, 8192]) {
      const key = (k: number) => sm.random.key(1000 + k);
      const xs = sm.random.normal([R, C], "float32", 0, 1, key(0)).eval();
      const cts = sm.random.normal([R, C], "float32", 0, 1, key(1)).eval();
      const ws = sm.random.normal([C], "float32", 0, 1, key(2)).eval();
      const bs = sm.random.normal([C], "float32", 0, 1, key(3)).eval();
      const at = `[${R}, ${C}]`;
      const rms = () => sm.vjp((x: T, w: T) => sm.fast.rmsNorm(x, w), [xs, ws], [cts])[1] as T[];
      const rmsW = () => sm.vjp((w: T) => sm.fast.rmsNorm(xs, w), [ws], [cts])[1] as T[];
      const ln = () => sm.vjp((x: T, w: T, b: T) => sm.fast.layerNorm(x, w, b), [xs, ws, bs], [cts])[1] as T[];
      // One evaluation each (dispatches), as the largest take a while on the host.
      for (const [name, build] of [["rmsNorm dx, dw", rms], ["rmsNorm dw", rmsW]] as const) {
        expect(`${name} ${at}: ${dispatches(build()).length}`).toBe(`${name} ${at}: 2`);
      }
      const one = (f: (x: T) => T, cot = cts) => [sm.vjp(f, [xs], [cot])[1][0] as T];
      expect(dispatches(one((x) => sm.softmax(x, -1))).length).toBe(1);
      expect(dispatches(one((x) => sm.logSoftmax(x, -1))).length).toBe(1);
      expect(dispatches(one((x) => sm.logsumexp(x, -1), sm.ones([R]))).length).toBe(1);
      // Over many rows, a threadgroup per block of rows, then a thread per column folds the blocks.
      const lnKernels = dispatches(ln());
      expect(`layerNorm dx, dw, db ${at}: ${lnKernels.length}`).toBe(`layerNorm dx, dw, db ${at}: 2`);
      const [row, fold] = lnKernels;
      if (R >= 1024) {
        expect(row![1] * 16).toBeLessThanOrEqual(R);
        expect(row![1]).toBeGreaterThanOrEqual(16);
      } else expect(row![1]).toBe(R);
      expect(fold![1]).toBe(C);
    }
  }
});

test("the blocks' partial sums against float64, on the host's one thread per row and on 32", () => {
  const [R, C] = [2048, 128];
  const xs = sm.random.normal([R, C], "float32", 0, 1, sm.random.key(7)).eval();
  const cts = sm.random.normal([R, C], "float32", 0, 1, sm.random.key(8)).eval();
  const ws = sm.random.normal([C], "float32", 0, 1, sm.random.key(9)).eval();
  const bs = sm.random.normal([C], "float32", 0, 1, sm.random.key(10)).eval();
  const want = normGrads64(xs.toArray() as number[], cts.toArray() as number[], C, true);
  for (const threads of ["1", "32"]) {
    const outs = withTargetEnv(sm.device(), { SMELT_ROW_THREADS: threads }, () => {
      const outs = sm.vjp((x: T, w: T, b: T) => sm.fast.layerNorm(x, w, b), [xs, ws, bs], [cts])[1] as T[];
      // 64 blocks of 32 rows, then the fold of their partials, a thread per column.
      expect(dispatches(outs)).toEqual([["reduce", 64], ["reduce", C]]);
      return outs;
    });
    const [gw, gb] = [outs[1]!.toArray() as number[], outs[2]!.toArray() as number[]];
    for (let j = 0; j < C; j++) {
      expect(Math.abs(gw[j]! - want.dw[j]!)).toBeLessThan(1e-6 * want.scale[j]!);
      expect(Math.abs(gb[j]! - want.db[j]!)).toBeLessThan(1e-6 * want.scale[j]!);
    }
  }
});

test("norm weight gradients over random rows, widths, dtypes, [B, T, C] inputs and accumulation: 2 kernels, lazy as eager and float64", () => {
  const TOL: Record<string, number> = { float32: 2e-6, float16: 2e-3, bfloat16: 1e-2 };
  fc.assert(
    fc.property(
      fc.constantFrom([1024], [2048], [3072], [4, 256], [2, 8, 64], [48], [1536]),
      fc.constantFrom(8, 100, 128, 576),
      fc.constantFrom<sm.DType>("float32", "float16", "bfloat16"),
      fc.boolean(), // layer norm (else RMS norm)
      fc.boolean(), // added to gradients from before
      fc.constantFrom("1", "32"),
      fc.integer({ min: 0, max: 1000 }),
      (lead, C, dtype, centered, accumulate, threads, seed) => {
        const shape = [...lead, C];
        const key = (k: number) => sm.random.key(seed * 8 + k);
        const input = (s: number[], k: number) => sm.random.normal(s, "float32", 0, 1, key(k)).astype(dtype).eval();
        const [xs, cts, ws, bs, gw0, gb0] = [input(shape, 0), input(shape, 1), input([C], 2), input([C], 3), input([C], 4), input([C], 5)];
        const build = (): T[] => {
          const f = (x: T, w: T, b: T) => (centered ? sm.fast.layerNorm(x, w, b) : sm.fast.rmsNorm(x, w).add(b));
          const [dx, dw, db] = sm.vjp(f, [xs, ws, bs], [cts])[1] as [T, T, T];
          return accumulate ? [dx, gw0.add(dw), gb0.add(db)] : [dx, dw, db];
        };
        const count = withTargetEnv(sm.device(), { SMELT_ROW_THREADS: threads }, () => kernels(build));
        expect(`${shape} ${dtype}: ${count}`).toBe(`${shape} ${dtype}: 2`);
        const lazy = withTargetEnv(sm.device(), { SMELT_ROW_THREADS: threads }, () => {
          const outs = build();
          sm.eval(outs);
          return outs.map((t) => t.astype("float32").toArray() as number[]);
        });
        const eager = sm.eager(build).map((t) => t.astype("float32").toArray() as number[]);
        const want = normGrads64(xs.astype("float32").toArray() as number[], cts.astype("float32").toArray() as number[], C, centered);
        const before = [gw0, gb0].map((t) => t.astype("float32").toArray() as number[]);
        const tol = TOL[dtype]!;
        for (let j = 0; j < C; j++) {
          for (const [k, w] of [[1, want.dw[j]!], [2, want.db[j]!]] as const) {
            const expected = w + (accumulate ? before[k - 1]![j]! : 0);
            const scale = want.scale[j]! + Math.abs(expected);
            expect(Math.abs(lazy[k]![j]! - expected)).toBeLessThanOrEqual(tol * scale);
            expect(Math.abs(lazy[k]![j]! - eager[k]![j]!)).toBeLessThanOrEqual(tol * scale);
          }
        }
        const worst = lazy[0]!.reduce((m, v, i) => Math.max(m, Math.abs(v - eager[0]![i]!) / (1 + Math.abs(eager[0]![i]!))), 0);
        expect(worst).toBeLessThanOrEqual(dtype === "float32" ? 1e-5 : 8 * tol);
      },
    ),
    { numRuns: 16, seed: 20261206 },
  );
});

test("a sum over rows finished by a cast or an add into an earlier gradient is one kernel with it, values right", () => {
  for (const R of [64, 2048]) {
    const xs = sm.random.normal([R, 24], "float32", 0, 1, sm.random.key(40)).eval();
    const g0 = sm.random.normal([24], "float32", 0, 1, sm.random.key(41)).eval();
    const build = () => [xs.sum(0).astype("float16"), g0.add(xs.mul(xs).sum(0)).mul(0.5)];
    // Below 1024 rows the two sums share one kernel; from there their partials take one more.
    expect(kernels(build)).toBe(R < 1024 ? 1 : 2);
    const [half, acc] = build().map((t) => t.astype("float32").toArray() as number[]);
    const xv = xs.toArray() as number[], gv = g0.toArray() as number[];
    for (let j = 0; j < 24; j++) {
      let s = 0, q = 0;
      for (let i = 0; i < R; i++) {
        s += xv[i * 24 + j]!;
        q += xv[i * 24 + j]! ** 2;
      }
      expect(Math.abs(half![j]! - s)).toBeLessThanOrEqual(1e-3 * (1 + Math.abs(s)));
      expect(Math.abs(acc![j]! - 0.5 * (gv[j]! + q))).toBeLessThanOrEqual(1e-5 * (1 + q));
    }
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

test("attention's keys: their gradient is computed in their own layout, the transposed keys a view, no transposed copies", () => {
  const [B, H, L, D] = [2, 2, 48, 40];
  const q = sm.random.normal([B, H, L, D], "float32", 0, 1, sm.random.key(61)).eval();
  const k = sm.random.normal([B, H, L, D], "float32", 0, 1, sm.random.key(62)).eval();
  const c = sm.random.normal([B, H, L, L], "float32", 0, 1, sm.random.key(63)).eval();
  // k goes through an elementwise op first (as rotary embeddings), read by two matmuls (forward, dq)
  const f = (q: T, k: T) => sm.matmul(q, k.mul(2).add(1).swapaxes(-1, -2));
  const build = () => sm.vjp(f, [q, k], [c])[1] as T[];
  const grads = build();
  const s = schedule(grads.map((g) => g.node("test")));
  // two products (dq, dk), dk of k's shape; the transposed keys are never written in their own order
  const products = [...s.matmuls.values()].map((m) => m.main.shape);
  expect(products).toEqual([[B, H, L, D], [B, H, L, D]]);
  expect(s.order.some((n) => n.op === "permute")).toBe(false);
  execute(s);
  const eager = sm.eager(build);
  grads.forEach((g, i) => expect(Array.from(g.raw())).toEqual(Array.from(eager[i]!.raw())));
  const fwd = sm.tidy(() => {
    const s2 = schedule([f(q, k).mul(1).node("test")]);
    return s2.order.map((n) => n.op);
  });
  // forward: the keys' op is a kernel of k's layout (no permute kernel), then the product
  expect(fwd.includes("permute")).toBe(false);
  [q, k, c, ...grads, ...eager].forEach((t) => t.dispose());
});
