// sm.profile: every kernel timed alone, grouped by what it computes; results as without it.
import { expect, test } from "bun:test";
import * as sm from "../../src/index.ts";

const a = sm.random.normal([64, 128], "float32", 0, 1, sm.random.key(1)).eval();
const b = sm.random.normal([128, 32], "float32", 0, 1, sm.random.key(2)).eval();
const build = () => [sm.softmax(sm.matmul(a, b).mul(2), -1), sm.exp(a).add(1).sum(0)];

test("profile times every kernel, labels it by kind and fused ops, and leaves the results alone", () => {
  const want = build().map((t) => t.eval().toArray());
  const k0 = sm.stats().kernelsDispatched;
  const [outs, p] = sm.profile(() => {
    const outs = build();
    sm.eval(outs);
    return outs;
  });
  const dispatched = sm.stats().kernelsDispatched - k0;
  expect(outs.map((t) => t.toArray())).toEqual(want);
  expect(p.kernels).toBe(dispatched);
  expect(p.byLabel.reduce((s, e) => s + e.kernels, 0)).toBe(dispatched);
  expect(p.byLabel.every((e) => e.ms >= 0)).toBe(true);
  expect(p.kernelMs).toBeLessThanOrEqual(p.totalMs);
  for (let i = 1; i < p.byLabel.length; i++) expect(p.byLabel[i - 1]!.ms).toBeGreaterThanOrEqual(p.byLabel[i]!.ms);
  const labels = p.byLabel.map((e) => e.label).join("\n");
  expect(labels).toMatch(/matmul/);
  expect(labels).toMatch(/\[64, 32\]/);
  expect(labels).toMatch(/exp/);
  const table = sm.formatProfile(p);
  expect(table.split("\n")[0]).toMatch(new RegExp(`^${dispatched} kernels`));
});

test("each kernel is its own command buffer while profiling, one per evaluation otherwise", () => {
  sm.eval(build()); // compiled
  const c0 = sm.stats().commandBuffers;
  sm.eval(build());
  expect(sm.stats().commandBuffers - c0).toBe(1);
  const c1 = sm.stats().commandBuffers, k1 = sm.stats().kernelsDispatched;
  const [, p] = sm.profile(() => sm.eval(build()));
  expect(p.kernels).toBeGreaterThan(1);
  expect(sm.stats().commandBuffers - c1).toBeGreaterThanOrEqual(sm.stats().kernelsDispatched - k1);
});

test("an async function is awaited; a throwing one ends the profile; profiles do not nest", async () => {
  const [v, p] = await sm.profile(async () => {
    const t = sm.exp(a).sum();
    await sm.asyncEval(t);
    return t.item();
  });
  expect(typeof v).toBe("number");
  expect(p.kernels).toBeGreaterThan(0);
  expect(() =>
    sm.profile(() => {
      throw new Error("boom");
    }),
  ).toThrow("boom");
  expect(() => sm.profile(() => sm.profile(() => 1))).toThrow(/do not nest/);
  const [, after] = sm.profile(() => sm.eval(sm.exp(b)));
  expect(after.kernels).toBe(1);
});
