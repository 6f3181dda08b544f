/**
 * Scalars that change from call to call (a learning rate, a step count, bias corrections) are
 * kernel arguments: a training loop compiles nothing after its first step and keeps no new plans.
 */
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { keptPlans } from "../../src/exec/plans.ts";
import { expectClose, randn } from "./helpers.ts";

setDefaultTimeout(120_000);

test("an SGD and an Adam-like step with a new lr and t each step: no compiles and no new plans after step 1", () => {
  const n = 64;
  const g0 = randn(n, 3), w0 = randn(n, 4);
  const g = sm.array(g0, "float32");
  let w = sm.array(w0, "float32"), u = sm.array(w0, "float32");
  let m = sm.zeros([n]), v = sm.zeros([n]);
  sm.eval(m, v); // as the steps after it will find them: computed
  // float64 reference of the same updates
  const W = [...w0], U = [...w0], M: number[] = new Array(n).fill(0), V: number[] = new Array(n).fill(0);
  const b1 = 0.9, b2 = 0.999, eps = 1e-8;
  let plansAfterFirst = -1;
  for (let t = 1; t <= 50; t++) {
    const lr = 0.05 / Math.sqrt(t) + t * 1e-4;
    const next = sm.tidy(() => {
      const mt = m.mul(b1).add(g.mul(1 - b1));
      const vt = v.mul(b2).add(g.mul(g).mul(1 - b2));
      const mhat = mt.div(1 - b1 ** t), vhat = vt.div(1 - b2 ** t);
      const wt = w.sub(mhat.mul(lr).div(sm.sqrt(vhat).add(eps)));
      const ut = u.sub(g.mul(lr));
      sm.eval(mt, vt, wt, ut);
      return [mt, vt, wt, ut] as const;
    });
    for (const x of [m, v, w, u]) x.dispose();
    [m, v, w, u] = next;
    for (let i = 0; i < n; i++) {
      M[i] = b1 * M[i]! + (1 - b1) * g0[i]!;
      V[i] = b2 * V[i]! + (1 - b2) * g0[i]! * g0[i]!;
      W[i] = W[i]! - (lr * (M[i]! / (1 - b1 ** t))) / (Math.sqrt(V[i]! / (1 - b2 ** t)) + eps);
      U[i] = U[i]! - lr * g0[i]!;
    }
    if (t === 1) {
      plansAfterFirst = keptPlans();
      sm.resetStats();
    } else {
      expect(sm.stats().kernelCompiles, `step ${t}`).toBe(0);
      expect(keptPlans(), `step ${t}`).toBe(plansAfterFirst);
    }
  }
  expectClose(w.toArray() as number[], W, "float32", { rtol: 1e-5, atol: 1e-6 });
  expectClose(u.toArray() as number[], U, "float32", { rtol: 1e-5, atol: 1e-6 });
});

test("arange, eye, pad, nanToNum and clip take new values without new kernels or plans", () => {
  const x = sm.array([1, Number.NaN, Infinity, -Infinity, -5, 5], "float32");
  const run = (k: number) =>
    sm.tidy(() => {
      const parts = [
        sm.arange(k, k + 12, 2),
        sm.arange(k * 0.5, k * 0.5 + 1.5, 0.25),
        sm.eye(4, 4, k % 3).reshape([-1]),
        sm.pad(sm.arange(4).astype("float32"), 2, k),
        sm.nanToNum(x, k, 100 + k, -100 - k),
        sm.clip(x, -k, k),
      ];
      sm.eval(...parts);
      return parts.map((p) => Array.from(p.toArray() as ArrayLike<number>));
    });
  run(1);
  const plans = keptPlans();
  sm.resetStats();
  for (const k of [2, 3, 4]) {
    const [ar, af, ey, pd, nn, cl] = run(k);
    expect(ar).toEqual([0, 1, 2, 3, 4, 5].map((i) => k + 2 * i));
    expect(af).toEqual([0, 1, 2, 3, 4, 5].map((i) => k * 0.5 + 0.25 * i));
    expect(ey).toEqual(Array.from({ length: 16 }, (_, i) => ((i % 4) - Math.floor(i / 4) === k % 3 ? 1 : 0)));
    expect(pd).toEqual([k, k, 0, 1, 2, 3, k, k]);
    expect(nn).toEqual([1, k, 100 + k, -100 - k, -5, 5]);
    expect(cl!.map((c) => (Number.isNaN(c) ? "nan" : c))).toEqual([Math.min(1, k), "nan", k, -k, -k, k]);
  }
  expect(sm.stats().kernelCompiles).toBe(0);
  expect(keptPlans()).toBe(plans);
});
