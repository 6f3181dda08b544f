/**
 * Kernels index elements with 32-bit integers: an op whose result would have more than
 * MAX_ELEMENTS elements throws a SmeltError where it is called, naming the op and the shape,
 * instead of computing garbage (or writing outside its buffer) at evaluation.
 */
import { describe, expect, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { MAX_ELEMENTS } from "../../src/graph/shape.ts";
import { expectSmeltError } from "./helpers.ts";

const big = 2 ** 31 + 8;

describe("results past the 32-bit element limit are rejected at graph build", () => {
  test("the issue's examples", () => {
    expectSmeltError(() => sm.ones([big]).sum(), "full:", `[${big}]`, "32-bit");
    expectSmeltError(() => sm.ones([big], "uint8").add(1), "full:", `[${big}]`);
  });

  test("every way to make a large node names its op and shape", () => {
    const half = sm.ones([2 ** 30]); // lazy: no memory
    const cases: [() => unknown, string, string][] = [
      [() => sm.zeros([2 ** 16, 2 ** 16]), "full:", "[65536,65536]"],
      [() => sm.random.normal([2 ** 31]), "random.normal:", "[2147483648]"],
      [() => sm.eye(2 ** 16), "eye:", "[65536,65536]"],
      [() => sm.arange(2 ** 31), "arange:", "[2147483648]"],
      [() => sm.ones([2 ** 16, 1]).add(sm.ones([2 ** 16])), "add:", "[65536,65536]"],
      [() => sm.where(sm.ones([2 ** 16, 1], "bool"), sm.ones([2 ** 16]), 0), "where:", "[65536,65536]"],
      [() => sm.broadcastTo(sm.ones([1]), [2 ** 31]), "broadcastTo:", "[2147483648]"],
      [() => sm.matmul(sm.ones([2 ** 16, 1]), sm.ones([1, 2 ** 16])), "matmul:", "[65536,65536]"],
      [() => sm.concatenate([half, half]), "concatenate:", "[2147483648]"],
      [() => sm.stack([half, half]), "stack:", "[2,1073741824]"],
      [() => sm.pad(half, [0, 2 ** 30]), "pad:", "[2147483648]"],
      [() => sm.tile(sm.ones([2 ** 20]), [2 ** 11]), "tile:", "[2147483648]"],
      [() => sm.repeat(sm.ones([2 ** 20]), 2 ** 11), "repeat:", "[2147483648]"],
    ];
    for (const [f, op, shape] of cases) expectSmeltError(f, op, shape);
  });

  test("a result at the limit is still accepted (lazily: nothing is allocated)", () => {
    expect(sm.ones([MAX_ELEMENTS]).shape).toEqual([MAX_ELEMENTS]);
    expect(sm.ones([MAX_ELEMENTS], "uint8").add(1).size).toBe(MAX_ELEMENTS);
    expectSmeltError(() => sm.ones([MAX_ELEMENTS + 1]), "full:");
  });
});
