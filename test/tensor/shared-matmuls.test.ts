// A long matmul whose result several kernels read is computed by one kernel, not once per reader
// (plan/shared.ts): what a training step needs for its weight gradients (read by the new
// parameter and both moments) and pre-activations (read by the activation and the backward mask).
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { execute, planOf, schedule } from "../../src/exec/realize.ts";
import type { Node } from "../../src/graph/node.ts";
import { check, mapN, matmulRef, permuteRef, ref, uniform } from "./helpers.ts";

setDefaultTimeout(120_000);

const nodeOf = (t: sm.Tensor) => (t as unknown as { node(why: string): Node }).node("eval");

/** How many of the kernels one evaluation of ts runs compute a matmul, after running it. */
function matmulKernels(ts: sm.Tensor[]): number {
  const s = schedule(ts.map(nodeOf));
  const srcs = s.order.map((n) => planOf(s, n).source);
  execute(s);
  return srcs.filter((src) => /smelt_mm_(panel|narrow8?|column|dot|simd|block<\d+>|skinny)\(a/.test(src)).length;
}

// K = 48 is past the depth computed inline as dot products: each reader would run a matmul kernel.
const [M, K, N] = [40, 48, 36];
const as = uniform(K * M, -1, 1, 401), gs = uniform(K * N, -1, 1, 402);
const ps = uniform(M * N, -1, 1, 403), ms = uniform(M * N, -0.1, 0.1, 404), vs = uniform(M * N, 0, 0.01, 405);
const [b1, b2, lr, eps] = [0.9, 0.999, 0.01, 1e-8];

/** An AdamW-like update from dW = a^T @ g: the new parameter, first and second moments. */
function adam(): sm.Tensor[] {
  const a = sm.array(as, "float32").reshape([K, M]), g = sm.array(gs, "float32").reshape([K, N]);
  const p = sm.array(ps, "float32").reshape([M, N]), m = sm.array(ms, "float32").reshape([M, N]), v = sm.array(vs, "float32").reshape([M, N]);
  const dw = a.T.matmul(g);
  const m2 = m.mul(b1).add(dw.mul(1 - b1));
  const v2 = v.mul(b2).add(dw.mul(dw).mul(1 - b2));
  const p2 = p.sub(m2.div(v2.sqrt().add(eps)).mul(lr));
  return [p2, m2, v2];
}
function adamRef() {
  const dw = matmulRef(permuteRef(ref([K, M], as), [1, 0]), ref([K, N], gs));
  const m2 = mapN([ref([M, N], ms), dw], (m, d) => b1 * m + (1 - b1) * d);
  const v2 = mapN([ref([M, N], vs), dw], (v, d) => b2 * v + (1 - b2) * d * d);
  const p2 = mapN([ref([M, N], ps), m2, v2], (p, m, v) => p - lr * (m / (Math.sqrt(v) + eps)));
  return [p2, m2, v2] as const;
}

test("a weight gradient read by the new parameter and both moments is one matmul kernel", () => {
  expect(sm.tidy(() => matmulKernels(adam()))).toBe(1);
  const want = adamRef();
  const tol = { rtol: 1e-5, atol: 1e-5, modes: { rtol: 1e-6, atol: 1e-6 } };
  want.forEach((w, i) => check(() => adam()[i]!, w, "float32", tol, ["p", "m", "v"][i]));
  // all three at once, lazily, against float64
  const got = sm.tidy(() => {
    const out = adam();
    sm.eval(out);
    return out.map((t) => Array.from(t.toFloat32Array()));
  });
  got.forEach((g, i) => g.forEach((x, j) => expect(Math.abs(x - want[i]!.data[j]!)).toBeLessThan(1e-5 + 1e-5 * Math.abs(want[i]!.data[j]!))));
});

const xs = uniform(M * K, -1, 1, 406), ws = uniform(K * N, -0.5, 0.5, 407), bs = uniform(N, -0.5, 0.5, 408), cts = uniform(M * N, -1, 1, 409);

/** A layer's activation and the backward pass's masked gradient, both from z = x@W + b. */
function layer(): [sm.Tensor, sm.Tensor] {
  const x = sm.array(xs, "float32").reshape([M, K]), w = sm.array(ws, "float32").reshape([K, N]);
  const b = sm.array(bs, "float32"), ct = sm.array(cts, "float32").reshape([M, N]);
  const z = x.matmul(w).add(b);
  return [sm.nn.relu(z), sm.where(z.gt(0), ct, 0)];
}

test("a pre-activation read by the activation and by the backward mask runs its matmul once", () => {
  expect(sm.tidy(() => matmulKernels(layer()))).toBe(1);
  const z = mapN([matmulRef(ref([M, K], xs), ref([K, N], ws)), ref([N], bs)], (p, q) => p + q);
  const tol = { rtol: 1e-5, atol: 1e-5, modes: { rtol: 1e-6, atol: 1e-6 } };
  check(() => layer()[0], mapN([z], (v) => Math.max(v, 0)), "float32", tol);
  check(() => layer()[1], mapN([z, ref([M, N], cts)], (v, c) => (v > 0 ? c : 0)), "float32", tol);
});

test("readers inside one kernel keep the product as that kernel's epilogue (silu)", () => {
  const silu = () => {
    const x = sm.array(xs, "float32").reshape([M, K]), w = sm.array(ws, "float32").reshape([K, N]);
    const y = x.matmul(w);
    return y.mul(y.sigmoid());
  };
  const s = sm.tidy(() => {
    sm.resetStats();
    silu().eval();
    return sm.stats().kernelsDispatched;
  });
  // the matmul with silu as its epilogue, and the copy of W into panels where the CPU kernel takes them
  expect(s).toBeLessThanOrEqual(2);
  expect(sm.tidy(() => matmulKernels([silu()]))).toBe(1);
  check(silu, mapN([matmulRef(ref([M, K], xs), ref([K, N], ws))], (v) => v / (1 + Math.exp(-v))), "float32", { rtol: 1e-5, atol: 1e-5 });
});

test("the nodes over a shared product inside one row kernel stay in it: softmax of x@W is one row kernel", () => {
  // The product is read by the row's max and by x - max, which the row kernel computes together:
  // it gets a kernel of its own (the matmul's), but exp(x - max), read by the sum and the division
  // of the same row kernel, must not.
  const build = () => {
    const a = sm.array(as, "float32").reshape([K, M]), g = sm.array(gs, "float32").reshape([K, N]);
    return sm.softmax(a.T.matmul(g), -1);
  };
  const s = schedule([nodeOf(build())]);
  const rows = s.order.filter((n) => s.rows.has(n)).length;
  execute(s);
  expect(rows).toBe(1);
  expect(matmulKernels([build()])).toBe(1);
  const y = matmulRef(permuteRef(ref([K, M], as), [1, 0]), ref([K, N], gs));
  const want: number[] = new Array(M * N).fill(0);
  for (let i = 0; i < M; i++) {
    const row = Array.from(y.data.slice(i * N, i * N + N));
    const mx = Math.max(...row);
    const e = row.map((v) => Math.exp(v - mx));
    const sum = e.reduce((p, q) => p + q, 0);
    e.forEach((v, j) => (want[i * N + j] = v / sum));
  }
  check(build, { shape: [M, N], data: want }, "float32", { rtol: 1e-5, atol: 1e-6 });
});
