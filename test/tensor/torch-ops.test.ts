/**
 * The ordering, triangle, closeness, contraction and convolution ops against PyTorch (CPU): the
 * fixtures are written by scripts/torch_reference.py (ordering, elementwise-extra, contractions,
 * convolutions), inputs and outputs together. Each case runs lazily and eagerly (both()).
 * Indices and bools are compared exactly; sums of products within a few float32 roundings.
 */
import { expect, setDefaultTimeout } from "bun:test";
import * as sm from "../../src/index.ts";
import { both, type DType, expectClose, type Tol } from "./helpers.ts";
import { type Case, decode, describeFixtures, type Params, tensor } from "./torch-fixtures.ts";

setDefaultTimeout(120_000);

type Fn = (xs: sm.Tensor[], p: Params) => sm.Tensor;
const axisOf = (p: Params) => p.axis as number;
const OPS: Record<string, Fn> = {
  sort: ([x], p) => sm.sort(x!, axisOf(p)),
  argsort: ([x], p) => sm.argsort(x!, axisOf(p)),
  topk: ([x], p) => sm.topk(x!, p.k as number, axisOf(p)),
  tril: ([x], p) => sm.tril(x!, p.k as number),
  triu: ([x], p) => sm.triu(x!, p.k as number),
  flip: ([x], p) => sm.flip(x!, p.axis as number[]),
  roll: ([x], p) => sm.roll(x!, p.shift as number | number[], p.axis as number | number[] | undefined),
  log10: ([x]) => sm.log10(x!),
  reciprocal: ([x]) => sm.reciprocal(x!),
  isclose: ([a, b], p) => sm.isclose(a!, b!, (p.rtol as number) ?? 1e-5, (p.atol as number) ?? 1e-8, (p.equalNan as boolean) ?? false),
  einsum: (xs, p) => sm.einsum(p.subscripts as string, ...xs),
  tensordot: ([a, b], p) => sm.tensordot(a!, b!, p.axes as number | [number[], number[]]),
  conv1d: ([x, w], p) => sm.conv1d(x!, w!, p.stride as number, p.padding as number, p.dilation as number, p.groups as number),
  conv2d: ([x, w], p) =>
    sm.conv2d(x!, w!, p.stride as [number, number], p.padding as [number, number], p.dilation as [number, number], p.groups as number),
};

/** The dtype smelt gives where it differs from the fixture's (indices are uint32, PyTorch's int64 stored as int32). */
const resultType = (c: Case): DType => (c.op === "argsort" ? "uint32" : c.output.dtype);

function tolerance(c: Case): Tol {
  switch (c.op) {
    case "einsum":
    case "tensordot":
    case "conv1d":
    case "conv2d":
      // Unit-normal inputs, sums of at most 40 products: a few float32 roundings of values below 30.
      return { ulps: 4, atol: 2 ** -17 };
    case "log10":
      return { ulps: 2 };
    default:
      return { ulps: 0 };
  }
}

describeFixtures(["ordering", "elementwise-extra", "contractions", "convolutions"], OPS, (c) => {
  const r = both(() => OPS[c.op]!(c.inputs.map(tensor), c.params), c.name);
  expect(r.dtype).toBe(resultType(c));
  expect(r.shape).toEqual(c.output.shape);
  expectClose(r.values, c.output.data.map(decode), c.output.dtype, tolerance(c), c.name);
});
