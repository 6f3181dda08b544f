/**
 * GPU row kernels whose threads cover the row in a few steps keep the elements they load in
 * registers (plan/rows.ts RowPlan.steps): the later passes read no memory. Run here with
 * GPU-shaped threadgroups (SMELT_ROW_THREADS), they must give exactly the loop's results, bit for
 * bit, since each thread folds the same elements in the same order.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { execute, planOf, schedule } from "../../src/exec/realize.ts";
import { withTargetEnv } from "../../src/runtime/target.ts";

const ops: [string, (x: sm.Tensor, w: sm.Tensor) => sm.Tensor][] = [
  ["softmax", (x) => sm.softmax(x, -1)],
  ["softmax in float16", (x) => sm.softmax(x.astype("float16"), -1)],
  ["logSoftmax", (x) => sm.logSoftmax(x, -1)],
  ["rms norm", (x, w) => x.mul(sm.rsqrt(x.mul(x).mean(-1, true).add(1e-5))).mul(w)],
  ["layer norm", (x) => x.sub(x.mean(-1, true)).div(sm.sqrt(x.sub(x.mean(-1, true)).square().mean(-1, true).add(1e-5)))],
  ["row sum", (x) => x.sum(-1)],
  ["row max", (x) => x.max(-1)],
  ["softmax backward", (x, w) => sm.grad((a: sm.Tensor) => sm.softmax(a, -1).mul(w).sum())(x) as sm.Tensor],
];

setDefaultTimeout(120_000);

const bits = (t: sm.Tensor) => Array.from(new Uint32Array(new Float32Array(t.toArray().flat() as number[]).buffer));

describe("row kernels with register steps", () => {
  test("equal the loop over the row bit for bit, at row lengths around the thread count", () => {
    for (const threads of [32, 64]) {
      for (const n of [1, 31, 64, 65, 700, 1024]) {
        const x = sm.random.normal([3, n], "float32", 0, 2, sm.random.key(n + threads)).eval();
        const w = sm.random.normal([n], "float32", 0, 1, sm.random.key(n + 1)).eval();
        for (const [name, f] of ops) {
          const run = (steps: string) => withTargetEnv(sm.device(), { SMELT_ROW_THREADS: String(threads), SMELT_ROW_STEPS: steps }, () => sm.tidy(() => bits(f(x, w))));
          const stepped = run("32"), loop = run("0");
          if (stepped.some((b, i) => b !== loop[i])) throw new Error(`${name}, ${threads} threads, n = ${n}: the stepped kernel differs from the loop`);
          expect(stepped.length).toBe(name.startsWith("row ") ? 3 : 3 * n);
        }
        x.dispose();
        w.dispose();
      }
    }
  });

  test("are planned where the steps fit, with the steps in the source; the loop otherwise", () => {
    const source = (n: number, steps: string) =>
      withTargetEnv(sm.device(), { SMELT_ROW_THREADS: "64", SMELT_ROW_STEPS: steps }, () =>
        sm.tidy(() => {
          const x = sm.random.normal([2, n], "float32", 0, 1, sm.random.key(5)).eval();
          const y = sm.softmax(x, -1).node("test");
          const s = schedule([y]);
          const code = planOf(s, s.order[s.order.length - 1]!);
          execute(s);
          return { source: code.source, whole: code.dispatch.whole === true };
        }),
      );
    const fits = source(1000, "16");
    expect(fits.source).toContain("for (int t = 0; t < 16; ++t)");
    expect(fits.source).toContain("row0[t]");
    // The output reads exp(x - max) that the sum's pass kept, rather than computing it again.
    expect(fits.source).toContain("spill[t]");
    expect(fits.source.match(/exp\(/g)?.length).toBe(1);
    expect(fits.whole).toBe(true);
    // 1100 elements need 18 steps of 64 threads: over 16, the loop.
    const over = source(1100, "16");
    expect(over.source).not.toContain("row0[t]");
    expect(over.whole).toBe(false);
    expect(source(1000, "0").source).not.toContain("row0[t]");
  });
});
