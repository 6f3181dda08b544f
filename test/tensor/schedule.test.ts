// Scheduling: what one evaluation of several outputs computes, and in which order.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { execute, planOf, schedule } from "../../src/exec/realize.ts";
import { targetOf, withTargetEnv } from "../../src/runtime/target.ts";
import { check, inDType, ref, uniform } from "./helpers.ts";

setDefaultTimeout(120_000);

test("a node computed later in the same evaluation is not read by an earlier kernel", () => {
  const x = sm.array([1, 2, 3, 4], "float32");
  const a = x.mul(2);
  const y = a.reshape([2, 2]).add(1); // scheduled first: computes a inline
  sm.resetStats();
  sm.eval(y, a); // a gets its own kernel after y's (another shape: no multi-output kernel)
  expect(sm.stats().kernelsDispatched).toBe(2);
  expect(y.toArray()).toEqual([3, 5, 7, 9]);
  expect(a.toArray()).toEqual([2, 4, 6, 8]);
});

test("a long evaluation is committed in several command buffers, in order, and equals eager", () => {
  // Each product reads the one before from memory: a chain of kernels of one evaluation.
  const w = sm.array(uniform(48 * 48, -0.2, 0.2, 3), "float32").reshape([48, 48]);
  const x = sm.array(uniform(48 * 48, -1, 1, 4), "float32").reshape([48, 48]);
  const chain = () => {
    let y = x;
    for (let i = 0; i < 150; i++) y = sm.matmul(y, w).tanh();
    return y;
  };
  const y = chain();
  sm.resetStats();
  sm.eval(y);
  const { kernelsDispatched, commandBuffers, evaluations } = sm.stats();
  expect(evaluations).toBe(1);
  expect(kernelsDispatched).toBeGreaterThanOrEqual(150);
  // Commits after 32, 64, 128, 256 ... kernels, then every 512: the device starts early.
  let expected = 1;
  for (let at = 32; at < kernelsDispatched; at += Math.min(at, 512)) expected++;
  expect(commandBuffers).toBe(expected);
  sm.setDefaultMode("eager");
  try {
    expect(y.toArray()).toEqual(chain().toArray());
  } finally {
    sm.setDefaultMode("lazy");
  }
});

test("of the same shape, the two are one kernel writing both", () => {
  const x = sm.array([1, 2, 3, 4], "float32");
  const a = x.mul(2);
  const y = a.add(1);
  sm.resetStats();
  sm.eval(y, a);
  expect(sm.stats().kernelsDispatched).toBe(1);
  expect(y.toArray()).toEqual([3, 5, 7, 9]);
  expect(a.toArray()).toEqual([2, 4, 6, 8]);
});

test("the same with a row reduction wanted by two consumers", () => {
  const x = sm.array([[1, 2, 3], [4, 5, 9]], "float32");
  const m = x.max(-1, true);
  const shifted = x.sub(m);
  sm.eval(shifted, m);
  expect(shifted.toArray()).toEqual([-2, -1, 0, -5, -4, 0]);
  expect(m.toArray()).toEqual([3, 9]);
});

test("consumers outside the evaluation do not change its kernels: dropped ones are finalized whenever", async () => {
  const x = sm.reshape(sm.array(Array.from({ length: 64 }, (_, i) => i / 64), "float32"), [8, 8]).eval();
  // A short matmul read by two kernels is computed once (a kernel of its own); read by this
  // evaluation once, it is computed inline, whatever else reads it.
  const kernels = (outside: "alive" | "dropped" | "none") => {
    const a = sm.matmul(x, x);
    const other = outside === "none" ? null : sm.multiply(a, 3);
    const y = sm.add(a, 1);
    sm.resetStats();
    y.eval();
    const n = sm.stats().kernelsDispatched;
    if (outside === "alive") expect(other!.toArray()).toEqual((sm.multiply(sm.add(y, -1), 3).toArray() as number[]));
    return { n, y: y.toArray() as number[] };
  };
  const none = kernels("none");
  expect(none.n).toBe(1);
  expect(kernels("alive")).toEqual(none);
  // A handle dropped before the evaluation: whether the collector has finalized it by then must
  // not matter; here it has.
  const dropped = (() => {
    const a = sm.matmul(x, x);
    sm.multiply(a, 3);
    return sm.add(a, 1);
  })();
  Bun.gc(true);
  await Bun.sleep(10);
  Bun.gc(true);
  await Bun.sleep(10);
  sm.resetStats();
  dropped.eval();
  expect(sm.stats().kernelsDispatched).toBe(1);
  expect(dropped.toArray()).toEqual(none.y);
});

test("outputs sharing inputs are evaluated in one command buffer", () => {
  const x = sm.arange(6).astype("float32");
  const outs = [x.add(1), x.mul(2), x.sum()];
  sm.resetStats();
  sm.eval(outs);
  expect(sm.stats().commandBuffers).toBe(1);
  expect(outs.map((t) => t.toArray())).toEqual([[1, 2, 3, 4, 5, 6], [0, 2, 4, 6, 8, 10], [15]]);
});

test("a chain of 1,000 ops reading two tensors throughout is 8 kernels of 128 ops, against float64", () => {
  // Each kernel reads x (or the kernel before), a and b: three inputs, however often it reads them.
  const xs = inDType("float32", uniform(16, -1, 1, 61));
  const as = inDType("float32", uniform(16, -0.5, 0.5, 62)), bs = inDType("float32", uniform(16, -0.5, 0.5, 63));
  const [x, a, b] = [xs, as, bs].map((v) => sm.array(v, "float32").eval()) as [sm.Tensor, sm.Tensor, sm.Tensor];
  const chain = () => {
    let y = x;
    for (let i = 0; i < 1000; i++) y = i % 2 ? y.add(b) : y.mul(a);
    return y;
  };
  sm.resetStats();
  sm.tidy(() => chain().eval());
  expect(sm.stats().kernelsDispatched).toBe(8);
  const want = xs.map((v, j) => {
    for (let i = 0; i < 1000; i++) v = i % 2 ? v + bs[j]! : v * as[j]!;
    return v;
  });
  sm.tidy(() => check(chain, ref([16], want), "float32", { atol: 1e-6 }));
  [x, a, b].forEach((t) => t.dispose());
});

test("a kernel reads at most 24 computed tensors: a sum of 30 is two kernels", () => {
  const parts = Array.from({ length: 30 }, (_, i) => uniform(5, -1, 1, 70 + i));
  const xs = parts.map((p) => sm.array(p, "float32").eval());
  sm.resetStats();
  const total = sm.tidy(() => xs.reduce((s, x) => s.add(x)).toArray() as number[]);
  expect(sm.stats().kernelsDispatched).toBe(2);
  const want = [0, 1, 2, 3, 4].map((j) => parts.reduce((s, p) => Math.fround(s + Math.fround(p[j]!)), 0));
  expect(total).toEqual(want);
  xs.forEach((t) => t.dispose());
});

describe("kernel plans are reused for equal kernels only", () => {
  /** The plans of the kernels of one evaluation of what fn builds (then evaluated); row kernels get `threads` per row if given. */
  function plans(fn: () => sm.Tensor, threads?: number) {
    return withTargetEnv(sm.device(), threads ? { SMELT_ROW_THREADS: String(threads) } : {}, () =>
      sm.tidy(() => {
        const s = schedule([fn().node("test")]);
        const out = s.order.map((n) => ({ plan: planOf(s, n), panels: s.matmuls.get(n)?.panels ?? null }));
        execute(s);
        return out;
      }),
    );
  }
  const x = sm.array([1, -2, 3, -4, 5, -6, 7, -8], "float32").eval();
  const y = sm.array([0.5, 0.25, 2, 4, -1, 3, 1, 8], "float32").eval();

  test("the same graph again gets the same plan, a new scalar a new one", () => {
    const [first] = plans(() => x.mul(2).add(y)).map((k) => k.plan);
    const [again] = plans(() => x.mul(2).add(y)).map((k) => k.plan);
    const [other] = plans(() => x.mul(3).add(y)).map((k) => k.plan);
    expect(again!.params).toBe(first!.params);
    expect(other!.params).not.toBe(first!.params);
    expect(other!.source).toBe(first!.source); // one kernel compiled for both
  });

  test("values: scalars (-0 is not 0, NaN), operand order, views at other offsets and strides", () => {
    const read = (fn: () => sm.Tensor) => sm.tidy(() => fn().toArray() as number[]);
    // toEqual tells -0 from 0
    for (const s of [2, 3, -0, 0, NaN, 2]) expect(read(() => x.mul(s))).toEqual([1, -2, 3, -4, 5, -6, 7, -8].map((v) => v * s));
    expect(read(() => x.sub(y))).toEqual([0.5, -2.25, 1, -8, 6, -9, 6, -16]);
    expect(read(() => y.sub(x))).toEqual([-0.5, 2.25, -1, 8, -6, 9, -6, 16]);
    expect(read(() => x.slice("1:5").mul(2))).toEqual([-4, 6, -8, 10]);
    expect(read(() => x.slice("2:6").mul(2))).toEqual([6, -8, 10, -12]);
    expect(read(() => x.slice("::2").mul(2))).toEqual([2, 6, 10, 14]);
  });

  test("row kernels: the same graph again (other inputs) gets the same plan; other eps, rows or threads do not", () => {
    const a = sm.array(uniform(24, -3, 3, 91), "float32").reshape([4, 6]).eval();
    const b = sm.array(uniform(24, -3, 3, 92), "float32").reshape([4, 6]).eval();
    const wide = sm.array(uniform(24, -3, 3, 93), "float32").reshape([3, 8]).eval();
    const rms = (t: sm.Tensor, eps: number) => t.mul(sm.rsqrt(t.mul(t).mean(-1, true).add(eps)));
    const [first] = plans(() => rms(a, 1e-5)).map((k) => k.plan);
    const [again] = plans(() => rms(b, 1e-5)).map((k) => k.plan);
    const [eps] = plans(() => rms(a, 1e-3)).map((k) => k.plan);
    const [rows] = plans(() => rms(wide, 1e-5)).map((k) => k.plan);
    // A row kernel's source depends on whether one thread walks the row or several share it, not on
    // how many share it: ask for the other kind than this device's default.
    const serial = targetOf(sm.device()).rowThreads === 1;
    const [threads] = plans(() => rms(a, 1e-5), serial ? 4 : 1).map((k) => k.plan);
    expect(again!.params).toBe(first!.params);
    expect(again!.inputs[0]!.storage).toBe(b.node("test").data!.storage); // b's memory, not a's
    expect(eps!.params).not.toBe(first!.params);
    expect(eps!.source).toBe(first!.source);
    expect(rows!.params).not.toBe(first!.params);
    expect(threads!.source).not.toBe(first!.source);
    // and the reused plans compute the right values: softmax of two inputs in turn, then again
    for (let round = 0; round < 2; round++) {
      for (const t of [a, b]) {
        const got = sm.tidy(() => {
          const e = sm.exp(t.sub(t.max(-1, true)));
          return Array.from(e.div(e.sum(-1, true)).raw());
        });
        const flat = Array.from(t.raw());
        for (let i = 0; i < 4; i++) {
          const row = flat.slice(6 * i, 6 * i + 6);
          const m = Math.max(...row);
          const z = row.reduce((s, v) => s + Math.exp(v - m), 0);
          row.forEach((v, j) => expect(Math.abs(got[6 * i + j]! - Math.exp(v - m) / z)).toBeLessThan(1e-6));
        }
      }
    }
    [a, b, wide].forEach((t) => t.dispose());
  });

  // the panel variant is the host's
  test.skipIf(sm.device().backend !== "host")("matmul kernels (host panels): the same LoRA graph again gets the same plans, with this evaluation's memory", () => {
    process.env.SMELT_MATMUL = "panel";
    try {
      const vals = (n: number, seed: number) => uniform(n, -1, 1, seed);
      const xs = [0, 1].map((k) => sm.array(vals(16 * 64, 101 + k), "float32").reshape([16, 64]).eval());
      const W = sm.array(vals(64 * 48, 103), "float32").reshape([64, 48]).eval();
      const A = sm.array(vals(64 * 4, 104), "float32").reshape([64, 4]).eval();
      const B = sm.array(vals(4 * 48, 105), "float32").reshape([4, 48]).eval();
      const lora = (x: sm.Tensor) => sm.matmul(x, W).add(sm.matmul(sm.matmul(x, A), B).mul(2));
      const runs = [0, 1, 0, 1].map((k) => plans(() => lora(xs[k]!)).at(-1)!);
      // the first evaluation fills W's panels (kept with W); the low-rank B is read in place, so
      // the later ones pack nothing
      expect(runs[0]!.plan.packs!.length).toBe(1);
      expect(runs[1]!.plan.packs ?? []).toHaveLength(0);
      expect(runs[1]!.plan.params).not.toBe(runs[0]!.plan.params);
      for (const r of runs.slice(2)) {
        expect(r.plan.params).toBe(runs[1]!.plan.params);
        expect(r.plan.source).toBe(runs[1]!.plan.source);
        // inputs get this evaluation's memory: W's kept panels, B itself
        expect(r.plan.inputs.at(-1)!.storage).toBe(r.panels!.b);
        expect(r.plan.inputs.some((d) => d.storage === B.node("test").data!.storage)).toBe(true);
      }
      // and compute the right values, alternating inputs
      const f64 = (x: ArrayLike<number>) => {
        const w = W.raw(), a = A.raw(), b = B.raw(), out: number[] = [];
        for (let i = 0; i < 16; i++) {
          const xa = [0, 1, 2, 3].map((r) => { let t = 0; for (let k = 0; k < 64; k++) t += x[64 * i + k]! * a[4 * k + r]!; return t; });
          for (let j = 0; j < 48; j++) {
            let v = 0;
            for (let k = 0; k < 64; k++) v += x[64 * i + k]! * w[48 * k + j]!;
            out.push(v + 2 * xa.reduce((s, t, r) => s + t * b[48 * r + j]!, 0));
          }
        }
        return out;
      };
      for (const k of [0, 1, 0, 1]) {
        const got = sm.tidy(() => Array.from(lora(xs[k]!).raw()));
        const want = f64(xs[k]!.raw());
        got.forEach((g, i) => expect(Math.abs(g - want[i]!)).toBeLessThan(1e-5 * Math.max(1, Math.abs(want[i]!))));
      }
      [...xs, W, A, B].forEach((t) => t.dispose());
    } finally {
      delete process.env.SMELT_MATMUL;
    }
  });

  test("a node read from memory or computed inline (by a later kernel of the same evaluation)", () => {
    for (let round = 0; round < 2; round++) {
      const a = x.mul(2);
      const b = a.add(1);
      sm.eval(b, a); // b's kernel computes a inline
      expect(b.toArray()).toEqual([3, -3, 7, -7, 11, -11, 15, -15]);
      const c = a.add(1); // now reads a
      expect(c.toArray()).toEqual([3, -3, 7, -7, 11, -11, 15, -15]);
      [a, b, c].forEach((t) => t.dispose());
    }
  });
});
