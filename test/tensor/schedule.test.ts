// Scheduling: what one evaluation of several outputs computes, and in which order.
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";

setDefaultTimeout(120_000);

test("a node computed later in the same evaluation is not read by an earlier kernel", () => {
  const x = sm.array([1, 2, 3, 4], "float32");
  const a = x.mul(2);
  const y = a.add(1); // scheduled first: computes a inline
  sm.resetStats();
  sm.eval(y, a); // a gets its own kernel after y's
  expect(sm.stats().kernelsDispatched).toBe(2);
  expect(y.toArray()).toEqual([3, 5, 7, 9]);
  expect(a.toArray()).toEqual([2, 4, 6, 8]);
});

test("the same with a row reduction wanted by two consumers", () => {
  const x = sm.array([[1, 2, 3], [4, 5, 9]], "float32");
  const m = x.max(-1, true);
  const shifted = x.sub(m);
  sm.eval(shifted, m);
  expect(shifted.toArray()).toEqual([-2, -1, 0, -5, -4, 0]);
  expect(m.toArray()).toEqual([3, 9]);
});

test("outputs sharing inputs are evaluated in one command buffer", () => {
  const x = sm.arange(6).astype("float32");
  const outs = [x.add(1), x.mul(2), x.sum()];
  sm.resetStats();
  sm.eval(outs);
  expect(sm.stats().commandBuffers).toBe(1);
  expect(outs.map((t) => t.toArray())).toEqual([[1, 2, 3, 4, 5, 6], [0, 2, 4, 6, 8, 10], [15]]);
});
