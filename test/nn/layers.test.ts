// Layers against their definitions written from primitives in float64 JS, and initialiser statistics.
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";

setDefaultTimeout(120_000);
const nn = sm.nn;
const near = (a: number[], b: number[], tol = 1e-5) => {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]! - b[i]!)).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(b[i]!)));
};

test("Linear is x Wᵀ + b with W [out, in], initialised in ±1/sqrt(in) from its key", () => {
  const l = new nn.Linear(3, 2, { key: sm.random.key(5) });
  const w = l.weight.toArray(), b = l.bias!.toArray();
  expect(w.every((v) => Math.abs(v) <= 1 / Math.sqrt(3))).toBe(true);
  expect(new nn.Linear(3, 2, { key: sm.random.key(5) }).weight.toArray()).toEqual(w);
  const x = [1, -2, 0.5];
  const want = [0, 1].map((o) => b[o]! + x.reduce((s, xi, i) => s + xi * w[o * 3 + i]!, 0));
  near(l.forward(sm.array([x])).toArray(), want);
});

test("Embedding looks rows up and asLinear multiplies by the table", () => {
  const e = new nn.Embedding(5, 3, { key: sm.random.key(1) });
  const t = e.weight.toArray();
  expect(e.forward(sm.array([4, 0], "int32")).toArray()).toEqual([...t.slice(12, 15), ...t.slice(0, 3)]);
  const h = [0.5, -1, 2];
  near(e.asLinear(sm.array([h])).toArray(), [0, 1, 2, 3, 4].map((r) => h.reduce((s, v, i) => s + v * t[r * 3 + i]!, 0)));
});

test("RMSNorm and LayerNorm normalise the last axis", () => {
  const x = [1, 2, 3, 4];
  const ms = x.reduce((s, v) => s + v * v, 0) / 4;
  near(new nn.RMSNorm(4).forward(sm.array([x])).toArray(), x.map((v) => v / Math.sqrt(ms + 1e-5)));
  const mu = 2.5, va = x.reduce((s, v) => s + (v - mu) ** 2, 0) / 4;
  near(new nn.LayerNorm(4).forward(sm.array([x])).toArray(), x.map((v) => (v - mu) / Math.sqrt(va + 1e-5)));
});

test("Dropout: scaled mask while training, identity in eval", () => {
  const d = new nn.Dropout(0.25);
  const y = d.forward(sm.ones([10000]), sm.random.key(9)).toArray();
  expect(y.every((v) => v === 0 || Math.abs(v - 4 / 3) < 1e-6)).toBe(true);
  const kept = y.filter((v) => v !== 0).length / y.length;
  expect(Math.abs(kept - 0.75)).toBeLessThan(0.02);
  d.eval();
  const x = sm.ones([3]);
  expect(d.forward(x)).toBe(x);
});

test("Sequential chains modules and functions; its list is a parameter path", () => {
  const s = new nn.Sequential(new nn.Linear(2, 4), nn.relu, new nn.Linear(4, 1), new nn.Sigmoid());
  expect(s.namedParameters().map(([k]) => k)).toEqual(["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]);
  const x = sm.array([[0.3, -0.7]]);
  const [l1, l2] = s.layers as [sm.nn.Linear, sm.nn.Linear];
  const want = sm.sigmoid(l2.forward(sm.relu(l1.forward(x)))).toArray();
  near(s.forward(x).toArray(), want);
});

test("MultiHeadAttention equals per-head softmax attention with its projections", () => {
  const mha = new nn.MultiHeadAttention(4, 2, { key: sm.random.key(3) });
  const q = sm.random.normal([1, 3, 4], "float32", 0, 1, sm.random.key(4));
  const y = mha.forward(q, q, q, "causal").toArray();
  const proj = (l: sm.nn.Linear) => l.forward(q).reshape([1, 3, 2, 2]).transpose([0, 2, 1, 3]);
  const [Q, K, V] = [proj(mha.queryProj), proj(mha.keyProj), proj(mha.valueProj)];
  const mask = sm.where(sm.triu(sm.ones([3, 3]), 1), -Infinity, 0);
  const att = sm.softmax(Q.matmul(K.transpose([0, 1, 3, 2])).mul(1 / Math.SQRT2).add(mask), -1).matmul(V);
  const want = mha.outProj.forward(att.transpose([0, 2, 1, 3]).reshape([1, 3, 4])).toArray();
  near(y, want, 1e-5);
});

test("RoPE is sm.fast.rope at an offset; activations as modules equal the functions", () => {
  const x = sm.random.normal([1, 4, 8], "float32", 0, 1, sm.random.key(2));
  expect(new nn.RoPE(8).forward(x, 3).toArray()).toEqual(sm.fast.rope(x, 8, { offset: 3 }).toArray());
  expect(new nn.GELU("tanh").forward(x).toArray()).toEqual(nn.geluApprox(x).toArray());
  expect(new nn.SiLU().forward(x).toArray()).toEqual(nn.silu(x).toArray());
});

test("initialisers: seeded, with the variances their names promise", () => {
  const k = sm.random.key(7);
  const stats = (t: sm.Tensor) => {
    const v = t.toArray();
    const m = v.reduce((a, b) => a + b, 0) / v.length;
    return [m, v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length];
  };
  expect(nn.init.glorotUniform([200, 300], { key: k }).toArray()).toEqual(nn.init.glorotUniform([200, 300], { key: k }).toArray());
  const [, gu] = stats(nn.init.glorotUniform([200, 300], { key: k }));
  expect(gu).toBeCloseTo(2 / 500, 4);
  const [, hn] = stats(nn.init.heNormal([200, 300], { key: k }));
  expect(hn).toBeCloseTo(2 / 300, 3);
  const [m, n] = stats(nn.init.normal([100, 100], { mean: 1, std: 0.5, key: k }));
  expect(m).toBeCloseTo(1, 1);
  expect(n).toBeCloseTo(0.25, 2);
  expect(nn.init.constant([2], 3).toArray()).toEqual([3, 3]);
  expect(() => nn.init.heUniform([5])).toThrow(/init.heUniform: needs a shape of at least 2 dimensions/);
});
