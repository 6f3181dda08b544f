// Multi-output kernels (elementwise kernels of one eval that share work become one kernel) and the
// two-stage reduction over many rows: kernel counts via sm.stats(), values against float64.
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { execute, planOf, schedule } from "../../src/exec/realize.ts";
import { kernels, rng, roundTo } from "./helpers.ts";

setDefaultTimeout(120_000);
type T = sm.Tensor;


const data = (n: number, seed: number) => {
  const r = rng(seed);
  return Array.from({ length: n }, () => roundTo("float32", r() * 4 - 2));
};
/** Each element of got within rel of want's (float64) magnitude. */
function close(got: T, want: number[], rel = 1e-5) {
  const g = got.astype("float32").toArray() as number[];
  expect(g.length).toBe(want.length);
  const bad = want.findIndex((w, i) => !(Math.abs(g[i]! - w) <= rel * (1 + Math.abs(w))));
  expect(bad < 0 ? null : `[${bad}] got ${g[bad]}, want ${want[bad]}`).toBeNull();
}

const [R, C] = [37, 53];
const av = data(R * C, 1), bv = data(R * C, 2), cv = data(C, 3);
const a = sm.array(av).reshape([R, C]).eval();
const b = sm.array(bv).reshape([R, C]).eval();
const c = sm.array(cv).eval();

test("sibling outputs that share a producer are one kernel, each value right", () => {
  const build = () => {
    const e = sm.exp(a).mul(b).add(c);
    return [e.add(1), e.mul(2), sm.sqrt(sm.abs(e))];
  };
  expect(kernels(build)).toBe(1);
  const e = av.map((x, i) => Math.exp(x) * bv[i]! + cv[i % C]!);
  const [y1, y2, y3] = build();
  close(y1!, e.map((x) => x + 1));
  close(y2!, e.map((x) => x * 2));
  close(y3!, e.map((x) => Math.sqrt(Math.abs(x))));
});

test("an output read by another's kernel is written by that kernel (AdamW-like p, m, v)", () => {
  const g = b, p = a;
  let m = sm.zeros([R, C]).eval(), v = sm.zeros([R, C]).eval();
  const step = (lr: number, t: number) => {
    const m2 = m.mul(0.9).add(g.mul(0.1));
    const v2 = v.mul(0.999).add(g.square().mul(0.001));
    const p2 = p.sub(m2.div(1 - 0.9 ** t).div(sm.sqrt(v2.div(1 - 0.999 ** t)).add(1e-8)).mul(lr)).sub(p.mul(lr * 0.01));
    return [p2, m2, v2];
  };
  expect(kernels(() => step(1e-3, 1))).toBe(1);
  // A second step with new scalars compiles nothing, and each output equals its float64 value.
  const [p1, m1, v1] = step(1e-3, 1);
  sm.eval(p1!, m1!, v1!);
  [m, v] = [m1!, v1!];
  const before = sm.stats().kernelCompiles + sm.stats().kernelDiskCacheHits;
  const [p2, m2, v2] = step(2e-3, 2);
  sm.resetStats();
  sm.eval(p2!, m2!, v2!);
  expect(sm.stats().kernelsDispatched).toBe(1);
  expect(sm.stats().kernelCompiles + sm.stats().kernelDiskCacheHits).toBe(before);
  const mw = bv.map((x) => 0.9 * 0.1 * x + 0.1 * x);
  const vw = bv.map((x) => 0.999 * 0.001 * x * x + 0.001 * x * x);
  const pw = av.map((x, i) => x - 2e-3 * (mw[i]! / (1 - 0.81) / (Math.sqrt(vw[i]! / (1 - 0.999 ** 2)) + 1e-8)) - x * 2e-5);
  close(m2!, mw);
  close(v2!, vw);
  close(p2!, pw, 1e-4);
});

test("outputs of different shapes, or sharing no work, stay kernels of their own", () => {
  expect(kernels(() => [sm.exp(a).add(1), sm.exp(c).add(1)])).toBe(2);
  expect(kernels(() => [a.add(1), b.add(1)])).toBe(2);
});

test("a kernel between two that share work, reading the first, keeps them apart and right", () => {
  // e is computed first; its row sums read it from memory before y's kernel, which also computes e.
  const build = () => {
    const e = sm.exp(a).mul(b);
    const s = e.sum(1, true);
    return [e, e.mul(2).add(s)];
  };
  const [e, y] = build();
  sm.eval(e!, y!);
  const ew = av.map((x, i) => Math.exp(x) * bv[i]!);
  const sw = Array.from({ length: R }, (_, r) => ew.slice(r * C, r * C + C).reduce((s, x) => s + x, 0));
  close(e!, ew);
  close(y!, ew.map((x, i) => 2 * x + sw[Math.floor(i / C)]!));
});

// Row kernels of one row shape that share a softmax merge too. When a later merge moves kernels,
// the outputs of an earlier one keep their kernel's place: otherwise a kernel right after it finds
// the further output "not computed yet" and computes it inline, row reductions and all.
const softmaxRows = av.map((_, i) => {
  const r = Math.floor(i / C), row = av.slice(r * C, r * C + C);
  const m = Math.max(...row);
  return Math.exp(av[i]! - m) / row.reduce((s, x) => s + Math.exp(x - m), 0);
});
const tv = cv.map((x) => Math.sin(Math.exp(x)));

test("merged row kernels: a later merge leaves their further outputs at their kernel's place", () => {
  // In order: s*2 and s*3 (rows, merged at s*3's place), t+1 and t+2 (merged at t+2's place, after
  // s*2 + 1, which reads s*2 right after the row kernel).
  const build = () => {
    const s = sm.softmax(a, -1), t = sm.sin(sm.exp(c));
    const s2 = s.mul(2);
    return [s2, t.add(1), s.mul(3), s2.add(1), t.add(2)];
  };
  expect(kernels(build)).toBe(3);
  const [s2, t1, s3, k, t2] = build();
  sm.eval(s2!, t1!, s3!, k!, t2!);
  close(s2!, softmaxRows.map((x) => 2 * x));
  close(s3!, softmaxRows.map((x) => 3 * x));
  close(k!, softmaxRows.map((x) => 2 * x + 1));
  close(t1!, tv.map((x) => x + 1));
  close(t2!, tv.map((x) => x + 2));
});

test("merged row kernels stay after a kernel whose further output reads one of them", () => {
  // e+1, e*(s*2) and a longer chain on e share e: one kernel at the chain's place, whose further
  // output e*(s*2) reads the row kernel s*2; the row kernels s*2 and a chain on s*3 then merge at
  // s*2's place, before it. (Roots sharing work are planned shortest first: the chains' lengths
  // keep the order written.)
  const steps = (t: T) => {
    for (let i = 0; i < 12; i++) t = t.mul(0.9).add(0.1);
    return t;
  };
  const stepsOf = (x: number) => {
    for (let i = 0; i < 12; i++) x = x * 0.9 + 0.1;
    return x;
  };
  const build = () => {
    const s = sm.softmax(a, -1), e = sm.sin(sm.exp(b));
    const s2 = s.mul(2);
    return [e.add(1), s2, e.mul(s2), steps(e.add(3)), steps(s.mul(3))];
  };
  expect(kernels(build)).toBe(2);
  const [e1, s2, es, ec, sc] = build();
  sm.eval(e1!, s2!, es!, ec!, sc!);
  const ev = bv.map((x) => Math.sin(Math.exp(x)));
  close(e1!, ev.map((x) => x + 1));
  close(s2!, softmaxRows.map((x) => 2 * x));
  close(es!, ev.map((x, i) => x * 2 * softmaxRows[i]!));
  close(ec!, ev.map((x) => stepsOf(x + 3)));
  close(sc!, softmaxRows.map((x) => stepsOf(3 * x)));
});

test("a sum over many rows runs in two parallel stages (more threads than columns), values right", () => {
  // Max and min stay one stage (a split would share their gradient among ties per part).
  const [N, M] = [2048, 24];
  const xv = data(N * M, 4);
  const x = sm.array(xv).reshape([N, M]).eval();
  const col = (f: (acc: number, v: number) => number, init: number) =>
    Array.from({ length: M }, (_, j) => {
      let acc = init;
      for (let i = 0; i < N; i++) acc = f(acc, xv[i * M + j]!);
      return acc;
    });
  const sum = x.sum(0);
  const s = schedule([sum.node("test")]);
  const threads = s.order.map((n) => planOf(s, n).dispatch.size[0]);
  execute(s);
  expect(threads.length).toBe(2);
  expect(threads[0]).toBeGreaterThanOrEqual(16 * M);
  close(sum, col((a, v) => a + v, 0), 1e-5);
  close(x.max(0), col(Math.max, -Infinity), 0);
  close(x.min(0), col(Math.min, Infinity), 0);
  // Several leading axes, and float16 input (partials kept in float32).
  const x3 = x.reshape([32, 64, M]);
  close(x3.sum([0, 1]), col((a, v) => a + v, 0), 1e-5);
  close(x.astype("float16").sum(0), col((a, v) => a + roundTo("float16", v), 0), 2e-3);
  expect(kernels(() => [x.sum(0)])).toBe(2);
  // Few rows: one kernel, as before.
  expect(kernels(() => [a.sum(0)])).toBe(1);
});

test("two stacked layer norms: every gradient lazily as eagerly, the four weight and bias sums one kernel", () => {
  const k = (i: number) => sm.random.key(40 + i);
  const x = sm.random.normal([64, 128], "float32", 0, 1, k(0)).eval();
  const params = [1, 2, 3, 4].map((i) => sm.random.normal([128], "float32", 0, 1, k(i)).eval());
  const ct = sm.random.normal([64, 128], "float32", 0, 1, k(5)).eval();
  const f = (x: T, w1: T, b1: T, w2: T, b2: T) => sm.fast.layerNorm(sm.tanh(sm.fast.layerNorm(x, w1, b1)), w2, b2);
  const build = () => sm.vjp(f, [x, ...params], [ct])[1] as T[];
  // Layer 2's row kernel writes its dx and the products its weight gradients sum; layer 1's dx
  // and its products (past the 128-node cap: two kernels); one reduction for the four sums.
  expect(kernels(build)).toBe(4);
  const lazy = build();
  sm.eval(lazy);
  const eager = sm.eager(build);
  lazy.forEach((t, i) => {
    const want = eager[i]!.toArray() as number[];
    close(t, want, 1e-6);
  });
});

test("a chain of shifted views of views stays bounded: each view's reads counted per path", () => {
  // y[i] + y[i + 1], 30 times: few distinct nodes, but 2^30 paths through the views.
  const n = 64, steps = 30;
  const xv = data(n, 6);
  let y = sm.array(xv);
  for (let k = 0; k < steps; k++) y = y.slice({ start: 1 }).add(y.slice({ stop: -1 }));
  sm.resetStats();
  const got = y.toArray() as number[];
  expect(sm.stats().kernelsDispatched).toBeGreaterThan(1);
  // C(steps, j) by rows of Pascal's triangle.
  let row = [1];
  for (let k = 0; k < steps; k++) row = [...row, 0].map((v, j) => v + (j > 0 ? row[j - 1]! : 0));
  const want = Array.from({ length: n - steps }, (_, i) => row.reduce((s, c, j) => s + c * xv[i + j]!, 0));
  const mag = Array.from({ length: n - steps }, (_, i) => row.reduce((s, c, j) => s + c * Math.abs(xv[i + j]!), 0));
  got.forEach((g, i) => expect(Math.abs(g - want[i]!)).toBeLessThan(1e-5 * mag[i]!));
});
