// The backward graph goes through the same scheduler as a forward one: kernel counts via sm.stats().
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";

setDefaultTimeout(120_000);
type T = sm.Tensor;

const x = sm.random.normal([64, 256]).eval();
const w = sm.random.normal([256]).eval();
const b = sm.random.normal([256]).eval();
const ct = sm.random.normal([64, 256]).eval();

/** Kernels dispatched to evaluate what build() makes (compiled once beforehand). */
function kernels(build: () => T[]): number {
  sm.eval(build());
  const outs = build();
  sm.resetStats();
  sm.eval(outs);
  return sm.stats().kernelsDispatched;
}
const dx = (f: (x: T) => T, cot = ct) => () => [sm.vjp(f, [x], [cot])[1][0] as T];

test("the backward of softmax, logSoftmax, logsumexp and RMS norm (dx) is one row kernel each", () => {
  expect(kernels(dx((x) => sm.softmax(x, -1)))).toBe(1);
  expect(kernels(dx((x) => sm.logSoftmax(x, -1)))).toBe(1);
  expect(kernels(dx((x) => sm.logsumexp(x, -1), sm.ones([64])))).toBe(1);
  expect(kernels(dx((x) => sm.fast.rmsNorm(x, w)))).toBe(1);
});

// Not yet one row kernel each (docs/ARCHITECTURE.md, "Autograd"): these bound today's counts.
test("the backward of layer norm and the weight gradients stay within today's kernel counts", () => {
  expect(kernels(dx((x) => sm.fast.layerNorm(x, w, b)))).toBeLessThanOrEqual(3);
  expect(kernels(() => sm.vjp((x: T, w: T) => sm.fast.rmsNorm(x, w), [x, w], [ct])[1] as T[])).toBeLessThanOrEqual(3);
  expect(kernels(() => sm.vjp((x: T, w: T, b: T) => sm.fast.layerNorm(x, w, b), [x, w, b], [ct])[1] as T[])).toBeLessThanOrEqual(7);
});
