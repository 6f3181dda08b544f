/**
 * sm.random builds graph nodes: nothing runs until the expression that uses the numbers is
 * evaluated, and then everything, lazy keys included, runs in one command buffer.
 */
import { describe, expect, test } from "bun:test";
import * as sm from "../../src/index.ts";
import * as reference from "../../src/tensor/random-reference.ts";

const f = Math.fround;

/** where(bernoulli(0.5), 2 * normal, uniform(-1, 1)) + 1 under keys k0, k1, k2, in float32, from the reference. */
function expected(keys: Uint32Array, n: number): number[] {
  const k = (i: number) => keys.slice(2 * i, 2 * i + 2);
  const z = reference.normal(k(0), n, 0, 1, "float32");
  const u = reference.uniform(k(1), n, -1, 1, "float32");
  const m = reference.bernoulli(k(2), n, 0.5);
  return Array.from({ length: n }, (_, i) => f((m[i] ? f(2 * z[i]!) : u[i]!) + 1));
}

function expression(keys: sm.Tensor): sm.Tensor {
  const k = [0, 1, 2].map((i) => keys.slice(i));
  const z = sm.random.normal([8, 8], "float32", 0, 1, k[0]);
  const u = sm.random.uniform(-1, 1, [8, 8], "float32", k[1]);
  const m = sm.random.bernoulli(0.5, [8, 8], k[2]);
  return sm.where(m, z.mul(2), u).add(1);
}

describe("sm.random is lazy", () => {
  test("normal, uniform and bernoulli under a lazy key in an expression: one command buffer, none before", () => {
    sm.resetStats();
    const y = sm.tidy(() => expression(sm.random.split(sm.random.key(11), 3)));
    expect(sm.stats().commandBuffers).toBe(0);
    const got = Array.from(y.toArray() as number[]);
    expect(sm.stats().commandBuffers).toBe(1);
    expect(got).toEqual(expected(reference.split(reference.key(11), 3), 64));
    y.dispose();
  });

  test("the global key stays on the host: a dropout mask costs no sync of its own", () => {
    sm.random.seed(5);
    sm.resetStats();
    const x = sm.arange(16).astype("float32");
    const y = x.mul(sm.random.bernoulli(0.75, [16])).div(0.75);
    expect(sm.stats().commandBuffers).toBe(0);
    const got = Array.from(y.toArray() as number[]);
    expect(sm.stats().commandBuffers).toBe(1);
    const sub = reference.split(reference.key(5), 2).slice(2, 4);
    const mask = reference.bernoulli(sub, 16, 0.75);
    expect(got).toEqual(Array.from({ length: 16 }, (_, i) => f((mask[i] ? i : 0) / 0.75)));
    [x, y].forEach((t) => t.dispose());
  });

  test("eager mode computes each random tensor when it is made, with the same numbers", () => {
    const lazy = sm.tidy(() => expression(sm.random.split(sm.random.key(11), 3)));
    sm.resetStats();
    const eager = sm.eager(() => {
      const keys = sm.random.split(sm.random.key(11), 3);
      expect(sm.stats().commandBuffers).toBeGreaterThan(0);
      const out = sm.tidy(() => expression(keys));
      keys.dispose();
      return out;
    });
    expect(Array.from(eager.toArray() as number[])).toEqual(Array.from(lazy.toArray() as number[]));
    [lazy, eager].forEach((t) => t.dispose());
  });

  test("a key at other strides (a column of keys) gives the numbers of its words", () => {
    const k1 = reference.split(reference.key(3), 2).slice(2, 4);
    const col = sm.array([[k1[0]!, 7], [k1[1]!, 9]], "uint32").slice(":, 0"); // two apart in memory
    expect(col.node("test").data!.strides).toEqual([2]);
    const got = Array.from(sm.random.uniform(0, 1, [5], "float32", col).toArray() as number[]);
    expect(got).toEqual(Array.from(reference.uniform(k1, 5, 0, 1, "float32")));
  });
});
