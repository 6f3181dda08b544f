// Index math divides by shapes through magic numbers (a multiply and a shift), not the hardware
// division: exact for every index a kernel can have (below 2^31), and what strided views,
// concatenations and gathers emit.
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { divisionMagic } from "../../src/exec/emit/builder.ts";
import { execute, planOf, schedule } from "../../src/exec/realize.ts";
import type { Node } from "../../src/graph/node.ts";
import { check, permuteRef, ref, rng, uniform } from "./helpers.ts";

setDefaultTimeout(60_000);

const quotient = (n: number, d: number) => {
  const [m, s] = divisionMagic(d);
  return Number((BigInt(n) * BigInt(m)) >> BigInt(s));
};

test("magic numbers give floor(n / d) for 0 <= n < 2^31 and every divisor tried", () => {
  expect(divisionMagic(1)).toEqual([2 ** 31 + 1, 31]);
  const edges = (d: number) => [0, 1, d - 1, d, d + 1, 2 * d - 1, 2 ** 31 - 1, 2 ** 31 - d, 2 ** 31 - 1 - ((2 ** 31 - 1) % d)];
  for (let d = 1; d <= 4096; d++) {
    const [m] = divisionMagic(d);
    expect(m).toBeLessThan(2 ** 32);
    for (const n of edges(d)) if (n >= 0 && n < 2 ** 31) expect(quotient(n, d)).toBe(Math.floor(n / d));
  }
  const r = rng(20261206);
  for (let t = 0; t < 20000; t++) {
    // divisors of every size, powers of two and their neighbours among them
    const d = t % 3 === 0 ? 2 ** Math.floor(r() * 31) + (t % 2) : 1 + Math.floor(r() * (2 ** 31 - 1));
    const n = Math.floor(r() * 2 ** 31);
    expect(quotient(n, d)).toBe(Math.floor(n / d));
  }
});

const nodeOf = (t: sm.Tensor) => (t as unknown as { node(why: string): Node }).node("eval");

test("a permuted view, a concatenation and a gather divide without the % and / operators", () => {
  const shape = [3, 5, 7, 11];
  const xs = uniform(3 * 5 * 7 * 11, -1, 1, 501);
  const build = () => {
    const x = sm.array(xs, "float32").reshape(shape);
    const p = x.transpose([2, 0, 3, 1]).mul(2); // [7, 3, 11, 5]
    const c = sm.concatenate([p, p.mul(3)], 1); // [7, 6, 11, 5]
    return sm.take(c, sm.array([4, 0, 2], "int32"), 2); // [7, 6, 3, 5]
  };
  const src = sm.tidy(() => {
    const s = schedule([nodeOf(build())]);
    const out = s.order.map((n) => planOf(s, n).source);
    execute(s);
    return out.join("\n");
  });
  const body = src.slice(src.lastIndexOf("void k("));
  expect(body).toContain("smelt_udiv(");
  expect(body).not.toMatch(/[^/]\/[^/*]|%/);
  // float64 reference
  const p = permuteRef(ref(shape, xs), [2, 0, 3, 1]);
  const at = (i: number, j: number, k: number, l: number) => p.data[((i * 3 + j) * 11 + k) * 5 + l]!;
  const data: number[] = [];
  for (let i = 0; i < 7; i++)
    for (let j = 0; j < 6; j++)
      for (const k of [4, 0, 2]) for (let l = 0; l < 5; l++) data.push(j < 3 ? 2 * at(i, j, k, l) : 6 * at(i, j - 3, k, l));
  check(build, { shape: [7, 6, 3, 5], data }, "float32", { rtol: 1e-6, atol: 1e-6 });
});
