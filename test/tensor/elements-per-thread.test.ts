// Elementwise kernels whose threads compute several elements (Target.elementwise, GPUs' large
// kernels), forced on this device with SMELT_ELEMENTS_PER_THREAD: views, broadcasts, dtypes and
// multi-output kernels against float64, and the plan's grid and source.
import { expect, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { execute, planOf, schedule } from "../../src/exec/realize.ts";
import { withTargetEnv } from "../../src/runtime/target.ts";
import { uniform } from "./helpers.ts";

const per = (n: number, fn: () => void) => withTargetEnv(sm.device(), { SMELT_ELEMENTS_PER_THREAD: String(n) }, fn);

/** The plan of the one kernel computing what fn builds, evaluated. */
function plan(fn: () => sm.Tensor) {
  return sm.tidy(() => {
    const s = schedule([fn().node("test")]);
    const p = planOf(s, s.order.at(-1)!);
    execute(s);
    return p;
  });
}

test("4 per thread: a quarter of the threads, each element at gid + k * threads, against 1 per thread and float64", () => {
  const xs = uniform(3 * 64, -2, 2, 71), ys = uniform(64, -1, 1, 72);
  const x = sm.array(xs, "float32").reshape([3, 64]).eval();
  const y = sm.array(ys, "float32").eval();
  const f32 = Math.fround;
  let one: number[] = [];
  per(1, () => {
    one = sm.tidy(() => Array.from(sm.exp(x.mul(y).add(1)).raw()));
  });
  per(4, () => {
    const p = plan(() => sm.exp(x.mul(y).add(1)));
    expect(p.dispatch.size[0]).toBe(48);
    expect(p.source).toContain("grid_threads");
    const got = sm.tidy(() => Array.from(sm.exp(x.mul(y).add(1)).raw()));
    expect(got).toEqual(one); // the same arithmetic per element, bit for bit
    got.forEach((g, i) => {
      const want = Math.exp(f32(f32(xs[i]! * ys[i % 64]!) + 1));
      expect(Math.abs(g - want)).toBeLessThanOrEqual(4e-7 * Math.abs(want));
    });
    // a transposed view (strided reads) in float16
    const h = sm.array(xs, "float16").reshape([3, 64]).eval();
    const t = sm.tidy(() => Array.from(h.transpose().mul(2).astype("float32").raw()));
    const hv = Array.from(h.astype("float32").raw());
    t.forEach((g, k) => expect(g).toBe(2 * hv[(k % 3) * 64 + Math.floor(k / 3)]!));
    h.dispose();
  });
  [x, y].forEach((v) => v.dispose());
});

test("4 per thread: a multi-output kernel writes every element of both outputs", () => {
  const xs = uniform(256, -3, 3, 73);
  const x = sm.array(xs, "float32").eval();
  per(4, () => {
    const a = x.mul(2);
    const b = a.add(1);
    sm.resetStats();
    sm.eval(b, a);
    expect(sm.stats().kernelsDispatched).toBe(1);
    expect(Array.from(a.raw())).toEqual(xs.map((v) => Math.fround(v) * 2));
    expect(Array.from(b.raw())).toEqual(xs.map((v) => Math.fround(Math.fround(v) * 2 + 1)));
    [a, b].forEach((v) => v.dispose());
    // the same kernel again with other scalars, which each of a thread's elements reads
    const c = x.mul(-3);
    const d = c.add(0.5);
    sm.eval(d, c);
    expect(Array.from(d.raw())).toEqual(xs.map((v) => Math.fround(Math.fround(Math.fround(v) * -3) + 0.5)));
    [c, d].forEach((v) => v.dispose());
  });
  x.dispose();
});

test("a size that is not a multiple keeps one element per thread", () => {
  const x = sm.array(uniform(21, -1, 1, 74), "float32").eval();
  per(4, () => {
    const p = plan(() => x.mul(3));
    expect(p.dispatch.size[0]).toBe(21);
    expect(p.source).not.toContain("grid_threads");
  });
  x.dispose();
});
