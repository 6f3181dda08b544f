// Row fusion: a reduction over trailing axes, its producers and the consumers that broadcast it
// back over the rows run as one kernel. Each case checks the kernel count through sm.stats() and
// the values against a float64 reference (and against eager mode, which runs every op alone).
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { execute, schedule } from "../../src/exec/realize.ts";
import { rowKernel } from "../../src/exec/plans.ts";
import { withTargetEnv } from "../../src/runtime/target.ts";

setDefaultTimeout(120_000);

function data(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return (s / 2147483648) * 8 - 4;
  });
}

/** Runs fn lazily, returning its values and the number of kernels it took. */
function lazy(fn: () => sm.Tensor): { values: number[]; kernels: number } {
  sm.resetStats();
  const values = sm.tidy(() => fn().toArray() as number[]);
  return { values, kernels: sm.stats().kernelsDispatched };
}

function rows(x: Float32Array, n: number): Float64Array[] {
  const out: Float64Array[] = [];
  for (let i = 0; i < x.length; i += n) out.push(Float64Array.from(x.subarray(i, i + n)));
  return out;
}

function expectClose(got: number[], want: number[], rel: number, abs = 1e-6) {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    const ok = Math.abs(got[i]! - want[i]!) <= abs + rel * Math.abs(want[i]!) || (Number.isNaN(got[i]) && Number.isNaN(want[i]));
    if (!ok) throw new Error(`element ${i}: got ${got[i]}, want ${want[i]}`);
  }
}

const softmaxRef = (x: Float32Array, n: number) =>
  rows(x, n).flatMap((r) => {
    const m = Math.max(...r);
    const e = r.map((v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b, 0);
    return [...e.map((v) => v / s)];
  });

describe("one kernel per row group (lazy), values against float64", () => {
  for (const shape of [[2, 3, 257], [5, 1], [1, 100_000], [3, 64]]) {
    const n = shape[shape.length - 1]!;
    const xs = data(shape.reduce((a, b) => a * b, 1), n);
    test(`softmax from primitives on [${shape}]`, () => {
      const x = sm.array(xs).reshape(shape);
      const run = lazy(() => {
        const e = sm.exp(x.sub(x.max(-1, true)));
        return e.div(e.sum(-1, true));
      });
      expect(run.kernels).toBe(1);
      expectClose(run.values, softmaxRef(xs, n), 1e-5);
      const eager = sm.tidy(() => sm.eager(() => {
        const e = sm.exp(x.sub(x.max(-1, true)));
        return e.div(e.sum(-1, true)).toArray() as number[];
      }));
      expectClose(run.values, eager, 1e-6);
      x.dispose();
    });
  }

  test("RMS norm x * rsqrt(mean(x*x) + eps) * w on [4, 16, 96]", () => {
    const n = 96;
    const xs = data(4 * 16 * n, 7), ws = data(n, 8);
    const x = sm.array(xs).reshape([4, 16, n]), w = sm.array(ws);
    const run = lazy(() => x.mul(sm.rsqrt(x.mul(x).mean(-1, true).add(1e-5))).mul(w));
    expect(run.kernels).toBe(1);
    const want = rows(xs, n).flatMap((r) => {
      const ms = r.reduce((a, v) => a + v * v, 0) / n;
      return [...r.map((v, j) => (v / Math.sqrt(ms + 1e-5)) * ws[j]!)];
    });
    expectClose(run.values, want, 1e-5);
  });

  test("layer norm (x - mean) * rsqrt(var + eps) * w + b on [6, 130]", () => {
    const n = 130;
    const xs = data(6 * n, 9), ws = data(n, 10), bs = data(n, 11);
    const x = sm.array(xs).reshape([6, n]), w = sm.array(ws), b = sm.array(bs);
    const run = lazy(() => x.sub(x.mean(-1, true)).mul(sm.rsqrt(sm.variance(x, -1, true).add(1e-5))).mul(w).add(b));
    expect(run.kernels).toBe(1);
    const want = rows(xs, n).flatMap((r) => {
      const mu = r.reduce((a, v) => a + v, 0) / n;
      const v = r.reduce((a, x) => a + (x - mu) ** 2, 0) / n;
      return [...r.map((x, j) => ((x - mu) / Math.sqrt(v + 1e-5)) * ws[j]! + bs[j]!)];
    });
    expectClose(run.values, want, 1e-4, 1e-5);
  });

  test("logsumexp over the last axis, one value per row", () => {
    const n = 333;
    const xs = data(7 * n, 12);
    const x = sm.array(xs).reshape([7, n]);
    const run = lazy(() => sm.logsumexp(x, -1));
    expect(run.kernels).toBe(1);
    const want = rows(xs, n).map((r) => {
      const m = Math.max(...r);
      return m + Math.log(r.reduce((a, v) => a + Math.exp(v - m), 0));
    });
    expectClose(run.values, want, 1e-6);
  });

  test("a reduction over several trailing axes is one row", () => {
    const xs = data(3 * 4 * 5, 13);
    const x = sm.array(xs).reshape([3, 4, 5]);
    const run = lazy(() => x.sub(x.mean([1, 2], true)));
    expect(run.kernels).toBe(1);
    const want = rows(xs, 20).flatMap((r) => {
      const mu = r.reduce((a, v) => a + v, 0) / 20;
      return [...r.map((v) => v - mu)];
    });
    expectClose(run.values, want, 1e-5, 1e-6);
  });

  test("max propagates NaN through the row fold; -inf rows stay finite where they should", () => {
    const x = sm.array([[1, NaN, 3], [-Infinity, 0, 1]]);
    const run = lazy(() => x.sub(x.max(-1, true)));
    expect(run.kernels).toBe(1);
    expect(Number.isNaN(run.values[0]!) && Number.isNaN(run.values[1]!) && Number.isNaN(run.values[2]!)).toBe(true);
    expect(run.values.slice(3)).toEqual([-Infinity, -1, 0]);
  });

  test("float16 rows accumulate in float32 and round once", () => {
    const xs = data(4 * 300, 14);
    const x = sm.array(xs).reshape([4, 300]).astype("float16");
    const run = lazy(() => x.sum(-1));
    expect(run.kernels).toBe(1);
    const h = sm.tidy(() => x.astype("float32").toArray() as number[]);
    const want = [0, 1, 2, 3].map((r) => h.slice(r * 300, r * 300 + 300).reduce((a, b) => a + b, 0));
    expectClose(run.values, want, 2 ** -10);
  });
});

describe("falls back to separate kernels where rows do not line up", () => {
  test("a reduction over a leading axis broadcast back", () => {
    const xs = data(4 * 6, 15);
    const x = sm.array(xs).reshape([4, 6]);
    const run = lazy(() => x.sub(x.mean(0, true)));
    expect(run.kernels).toBe(2);
    const want: number[] = [];
    for (let i = 0; i < 4; i++)
      for (let j = 0; j < 6; j++) {
        let mu = 0;
        for (let k = 0; k < 4; k++) mu += xs[k * 6 + j]!;
        want.push(xs[i * 6 + j]! - mu / 4);
      }
    expectClose(run.values, want, 1e-5, 1e-6);
  });

  test("a row reduction read through a transpose", () => {
    const x = sm.array([[1, 2], [3, 5]]);
    const run = lazy(() => sm.add(x, x.sum(-1, true).T));
    expect(run.values).toEqual([4, 10, 6, 13]);
  });
});

describe("the GPU's layout (many threads per row) gives the same results", () => {
  for (const threads of [32, 96, 256]) {
    test(`softmax and RMS norm with ${threads} threads per row`, () => {
      const n = 1000;
      const xs = data(3 * n, 21);
      const x = sm.array(xs).reshape([3, n]);
      try {
        withTargetEnv(sm.device(), { SMELT_ROW_THREADS: String(threads) }, () => {
          const run = lazy(() => sm.softmax(x, -1));
          expect(run.kernels).toBe(1);
          expectClose(run.values, softmaxRef(xs, n), 1e-5);
          const rms = lazy(() => x.mul(sm.rsqrt(x.mul(x).mean(-1, true).add(1e-5))));
          expect(rms.kernels).toBe(1);
          const want = rows(xs, n).flatMap((r) => {
            const ms = r.reduce((a, v) => a + v * v, 0) / n;
            return [...r.map((v) => v / Math.sqrt(ms + 1e-5))];
          });
          expectClose(rms.values, want, 1e-5);
        });
      } finally {
        x.dispose();
      }
    });
  }
});

describe("cross-entropy from logits and integer targets", () => {
  test("per-row loss with an ignore index is one kernel; the mean over rows is a second", () => {
    const n = 37, rowsN = 9, ignore = -100;
    const ls = data(rowsN * n, 31);
    const ts = [3, 0, 36, ignore, 5, 5, 17, ignore, 1];
    const logits = sm.array(ls).reshape([rowsN, n]).eval();
    const targets = sm.array(ts, "int32").reshape([rowsN, 1]).eval();
    const perRow = lazy(() => {
      const valid = targets.ne(ignore);
      const picked = sm.takeAlongAxis(logits, sm.where(valid, targets, 0), -1);
      return sm.where(valid, sm.logsumexp(logits, -1, true).sub(picked), 0);
    });
    expect(perRow.kernels).toBe(1);
    const want = rows(ls, n).map((r, i) => {
      if (ts[i] === ignore) return 0;
      const m = Math.max(...r);
      return m + Math.log(r.reduce((a, v) => a + Math.exp(v - m), 0)) - r[ts[i]!]!;
    });
    expectClose(perRow.values, want, 1e-5);
    const mean = lazy(() => {
      const valid = targets.ne(ignore);
      const picked = sm.takeAlongAxis(logits, sm.where(valid, targets, 0), -1);
      const loss = sm.where(valid, sm.logsumexp(logits, -1, true).sub(picked), 0);
      return loss.sum().div(valid.astype("float32").sum());
    });
    expect(mean.kernels).toBe(2);
    expectClose(mean.values, [want.reduce((a, b) => a + b, 0) / ts.filter((t) => t !== ignore).length], 1e-5);
  });
});

describe("a CPU thread computes what the output shares with the last reduction once", () => {
  /** The MSL of the row kernel computing t, laid out for `threads` threads per row (then it runs). */
  function rowSource(t: sm.Tensor, threads: number): string {
    const s = schedule([t.node("test")]);
    const n = s.order[s.order.length - 1]!;
    const source = rowKernel(n, s.rows.get(n)!, threads).source;
    execute(s);
    return source;
  }
  const exps = (source: string) => source.match(/\bexp\(/g)?.length ?? 0;
  const SPILL = "out0[base + j] = chunk[c];";
  const softmax = (x: sm.Tensor) => {
    const e = sm.exp(x.sub(x.max(-1, true)));
    return e.div(e.sum(-1, true));
  };

  test("softmax's exp goes to the output in the sum's pass and is divided there after", () => {
    const n = 700; // chunks of 256, and a partial one
    const xs = data(5 * n, 41);
    const x = sm.array(xs).reshape([5, n]).eval();
    const serial = sm.tidy(() => rowSource(softmax(x), 1));
    expect(exps(serial)).toBe(1);
    expect(serial).toContain(SPILL);
    expect(exps(sm.tidy(() => rowSource(softmax(x), 32)))).toBe(2); // GPU threads recompute it
    const run = lazy(() => softmax(x));
    expect(run.kernels).toBe(1);
    expectClose(run.values, softmaxRef(xs, n), 1e-5);
    x.dispose();
  });

  test("not where the output would round it (float16), nor where the output does not read it (log-softmax)", () => {
    const n = 300;
    const xs = data(4 * n, 42);
    const x = sm.array(xs).reshape([4, n]).eval();
    const half = sm.tidy(() => x.astype("float16").eval());
    const xh = sm.tidy(() => half.astype("float32").toArray() as number[]);
    const f16 = (t: sm.Tensor) => softmax(t.astype("float32")).astype("float16");
    const f16Source = sm.tidy(() => rowSource(f16(half), 1));
    expect(exps(f16Source)).toBe(2);
    expect(f16Source).not.toContain(SPILL);
    const run = lazy(() => f16(half));
    expect(run.kernels).toBe(1);
    expectClose(run.values, softmaxRef(Float32Array.from(xh), n), 2 ** -10, 2 ** -24);
    // log-softmax: z - log(sum(exp(z))) reads z, not the summed exp(z)
    const logSoftmax = (t: sm.Tensor) => {
      const z = t.sub(t.max(-1, true));
      return z.sub(sm.log(sm.exp(z).sum(-1, true)));
    };
    expect(sm.tidy(() => rowSource(logSoftmax(x), 1))).not.toContain(SPILL);
    const logRun = lazy(() => logSoftmax(x));
    expectClose(logRun.values, softmaxRef(xs, n).map(Math.log), 1e-5, 1e-5);
    [x, half].forEach((t) => t.dispose());
  });
});
