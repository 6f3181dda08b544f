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

test("4 per thread: a quarter of the threads, each a run of 4 elements, against 1 per thread and float64", () => {
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
    expect(p.source).toContain("((device const float4*)in0)[q0]");
    expect(p.source).toContain("((device float4*)out0)[q0] = float4(");
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

/** What fn computes, as numbers, with `n` elements per thread. */
const valuesAt = (n: number, fn: () => sm.Tensor) => {
  let out: number[] = [];
  per(n, () => {
    out = sm.tidy(() => Array.from(fn().astype("float32").raw()));
  });
  return out;
};

test("vector runs: inputs at an offset of whole vectors, at others, views and every dtype, as 1 per thread", () => {
  const xs = uniform(4 * 260, -2, 2, 75);
  const x = sm.array(xs, "float32").eval();
  const h = sm.array(xs, "float16").eval();
  const i = sm.array(xs.map((v) => Math.round(v * 100)), "int32").eval();
  const m = sm.array(xs, "float32").reshape([40, 26]).eval();
  const cases: [string, () => sm.Tensor, string[], string[]][] = [
    // offset 4 (a whole vector): loaded as vectors from in0 + offset
    ["slice at 4", () => x.slice("4:1036").mul(3).add(x.slice(":1032")), ["((device const float4*)(in1 + int(P["], []],
    // offset 1: element by element, the other input still as vectors
    ["slice at 1", () => x.slice("1:1033").mul(x.slice(":1032")), ["((device const float4*)in"], []],
    // a transposed view: element loads at the run's indices
    ["transpose", () => m.transpose().reshape([1040]).add(x), ["((device const float4*)in"], []],
    ["float16", () => h.mul(h).add(1), ["((device const half4*)in0)[q0]", "((device half4*)out0)[q0] = half4("], []],
    ["int32", () => i.mul(3).add(i), ["((device const int4*)in0)[q0]", "((device int4*)out0)[q0]"], []],
    // outputs without a vector type store each element
    ["uint8", () => i.astype("uint8"), ["((device const int4*)in0)[q0]"], ["uchar4"]],
    ["bool", () => x.gt(0), ["((device const float4*)in0)[q0]"], ["uchar4"]],
  ];
  for (const [what, fn, has, lacks] of cases) {
    const one = valuesAt(1, fn);
    for (const n of [4, 8]) {
      per(n, () => {
        const p = plan(fn);
        expect(p.dispatch.size[0]).toBe(one.length / n);
        for (const t of has) expect(p.source, `${what}, ${n} per thread`).toContain(t);
        for (const t of lacks) expect(p.source, `${what}, ${n} per thread`).not.toContain(t);
        if (n === 8) expect(p.source).toMatch(/int q\d+ = int\(gid \+ 1u \* grid_threads\);/);
      });
      expect(valuesAt(n, fn), `${what}, ${n} per thread`).toEqual(one);
    }
  }
  // The offset-1 slice against float64: its loads are not the vector ones.
  const got = valuesAt(4, () => x.slice("1:1033").mul(x.slice(":1032")));
  got.forEach((g, k) => expect(g).toBe(Math.fround(Math.fround(xs[k + 1]!) * Math.fround(xs[k]!))));
  [x, h, i, m].forEach((v) => v.dispose());
});

test("a sum finished elementwise keeps its thread per element; too many parameters for 8 per thread, one", () => {
  const xs = uniform(8 * 64, -1, 1, 76);
  const x = sm.array(xs, "float32").reshape([8, 64]).eval();
  // A gradient summed over rows and cast: the sum's kernel, one thread per output element.
  const sum = () => x.sum(0).astype("float16");
  per(4, () => expect(plan(sum).dispatch.size[0]).toBe(64));
  expect(valuesAt(4, sum)).toEqual(valuesAt(1, sum));
  // Many pieces: each element's index math takes parameters of its own, past what a dispatch takes.
  const pieces = () => sm.concatenate(Array.from({ length: 24 }, (_, k) => x.slice(`:, ${k}:${k + 1}`).mul(k)), 1);
  per(8, () => {
    const p = plan(pieces);
    expect(p.source).not.toContain("grid_threads");
    expect(p.params.byteLength).toBeLessThanOrEqual(4096);
  });
  expect(valuesAt(8, pieces)).toEqual(valuesAt(1, pieces));
  x.dispose();
});

test("runs along the last axis (a CPU's, for inline matmuls): bit for bit one element per thread, float64 close", () => {
  // A gradient sum of two low-rank products (K = 8) and two inputs, as a LoRA backward has; B
  // contiguous along the run and transposed, a broadcast weight, and a multi-output kernel.
  const [M, N, R] = [12, 48, 8];
  const vals = (n: number, seed: number) => sm.array(uniform(n, -1, 1, seed), "float32");
  const u = vals(M * R, 81).reshape([M, R]).eval(), v = vals(M * R, 82).reshape([M, R]).eval();
  const b = vals(R * N, 83).reshape([R, N]).eval(), ct = vals(N * R, 84).reshape([N, R]).eval();
  const y = vals(M * N, 85).reshape([M, N]).eval(), w = vals(N, 86).eval();
  const build = () => {
    const g = sm.matmul(u, b).mul(2).add(y).add(sm.matmul(v, ct.T).mul(0.5));
    return [g.mul(w), g.add(1)] as const;
  };
  const run = (runs: string) =>
    withTargetEnv(sm.device(), { SMELT_ELEMENT_RUNS: runs }, () =>
      sm.tidy(() => {
        const [a, c] = build();
        const s = schedule([a.node("test"), c.node("test")]);
        const sources = s.order.map((n) => planOf(s, n).source);
        execute(s);
        return { sources, a: Array.from(a.raw()), c: Array.from(c.raw()) };
      }),
    );
  const runs = run("1"), one = run("0");
  const host = sm.device().backend === "host";
  expect(runs.sources.some((src) => src.includes("for (int e = 0; e <"))).toBe(host);
  expect(one.sources.some((src) => src.includes("for (int e = 0; e <"))).toBe(false);
  expect(runs.a).toEqual(one.a);
  expect(runs.c).toEqual(one.c);
  const [U, V, B, C, Y, W] = [u, v, b, ct, y, w].map((t) => Array.from(t.raw())) as [number[], number[], number[], number[], number[], number[]];
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let p = 0, q = 0;
      for (let k = 0; k < R; k++) {
        p += U[i * R + k]! * B[k * N + j]!;
        q += V[i * R + k]! * C[j * R + k]!;
      }
      const g = 2 * p + Y[i * N + j]! + 0.5 * q;
      expect(Math.abs(runs.a[i * N + j]! - g * W[j]!)).toBeLessThanOrEqual(1e-5);
      expect(Math.abs(runs.c[i * N + j]! - (g + 1))).toBeLessThanOrEqual(1e-5);
    }
  // A last axis that 16 does not divide keeps one element per thread.
  const odd = vals(M * 24, 87).reshape([M, 24]).eval(), b24 = vals(R * 24, 88).reshape([R, 24]).eval();
  const src = sm.tidy(() => {
    const s = schedule([sm.matmul(u, b24).add(odd).node("test")]);
    return s.order.map((n) => planOf(s, n).source).join("\n");
  });
  expect(src).not.toContain("for (int e = 0; e <");
  [u, v, b, ct, y, w, odd, b24].forEach((t) => t.dispose());
});

test("runs through views, reshapes and pads (attention heads split, merged, rotated; a slice's gradient): as one per thread", () => {
  const [B, H, T, D] = [2, 3, 8, 32];
  const q = sm.array(uniform(B * H * T * D, -1, 1, 91), "float32").reshape([B, H, T, D]).eval();
  const g = sm.array(uniform(B * H * T * D, -1, 1, 92), "float32").reshape([B, H, T, D]).eval();
  const y = sm.array(uniform(B * T * H * D, -1, 1, 93), "float32").reshape([B, T, H * D]).eval();
  const bias = sm.array(uniform(H * D, -1, 1, 94), "float32").eval();
  const cases: Record<string, () => sm.Tensor> = {
    merge: () => q.mul(g).transpose([0, 2, 1, 3]).reshape([B, T, H * D]),
    split: () => y.mul(2).reshape([B, T, H, D]).transpose([0, 2, 1, 3]),
    rotate: () => q.mul(2).add(q.reshape([B, H, T, 2, D / 2]).slice("...", { step: -1 }, {}).reshape([B, H, T, D]).mul(3)),
    // leading-axis padding and padding along the last axis in whole runs
    pad: () => sm.pad(q.slice("...", { start: 0, stop: 16 }), [[0, 0], [1, 0], [0, 0], [16, 0]]).slice({ start: 0, stop: B }, { start: 0, stop: H }).add(g),
    // an offset slice in whole runs, and a broadcast row
    shifted: () => g.slice("...", { start: 16, stop: 32 }).add(q.slice("...", { start: 0, stop: 16 })).reshape([B, H, T * 16]).mul(bias.slice({ start: 0, stop: 1 })),
  };
  const host = sm.device().backend === "host";
  for (const [name, f] of Object.entries(cases)) {
    const run = (runs: string) =>
      withTargetEnv(sm.device(), { SMELT_ELEMENT_RUNS: runs }, () =>
        sm.tidy(() => {
          const out = f();
          const s = schedule([out.node("test")]);
          const sources = s.order.map((n) => planOf(s, n).source).join("\n");
          execute(s);
          return { sources, values: Array.from(out.raw()) };
        }),
      );
    const runs = run("1"), one = run("0");
    // on a CPU every case runs: the view's row is found once per run, its position moves with e
    expect([name, runs.sources.includes("for (int e = 0; e <")]).toEqual([name, host]);
    expect([name, runs.values]).toEqual([name, one.values]);
  }
  // the eager values, from the same ops evaluated one at a time
  const eager = sm.eager(() => cases.pad!().toArray() as number[]);
  expect(sm.tidy(() => cases.pad!().toArray() as number[])).toEqual(eager);
  // a true transpose of the last axes cannot split: one element per thread
  const t = sm.tidy(() => {
    const s = schedule([q.mul(2).swapaxes(-1, -2).reshape([B, H, D * T]).node("test")]);
    return s.order.map((n) => planOf(s, n).source).join("\n");
  });
  expect(t).not.toContain("for (int e = 0; e <");
  [q, g, y, bias].forEach((v) => v.dispose());
});
