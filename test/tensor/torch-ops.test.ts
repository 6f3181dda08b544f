/**
 * The ordering, triangle, closeness, contraction and convolution ops against PyTorch (CPU): the
 * fixtures are written by scripts/torch_reference.py (ordering, elementwise-extra, contractions,
 * convolutions), inputs and outputs together. Each case runs lazily and eagerly (both()).
 * Indices and bools are compared exactly; sums of products within a few float32 roundings.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { both, type DType, expectClose, roundTo, type Tol } from "./helpers.ts";

setDefaultTimeout(120_000);

interface Encoded {
  shape: number[];
  dtype: DType;
  data: (number | string)[];
}
type Params = Record<string, unknown>;
interface Case {
  name: string;
  op: string;
  params: Params;
  inputs: Encoded[];
  output: Encoded;
}

const decode = (v: number | string) => (v === "nan" ? NaN : v === "inf" ? Infinity : v === "-inf" ? -Infinity : (v as number));
const values = (e: Encoded) => e.data.map((v) => roundTo(e.dtype, decode(v)));
const tensor = (e: Encoded) => sm.array(values(e), e.dtype).reshape(e.shape);

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

const DIR = join(import.meta.dir, "../fixtures/torch");
const FILES = ["ordering", "elementwise-extra", "contractions", "convolutions"];

for (const file of FILES) {
  const body = JSON.parse(readFileSync(join(DIR, `${file}.json`), "utf8")) as { torch: string; cases: Case[] };
  describe(`PyTorch ${body.torch}: ${file}`, () => {
    test("fixtures are present and cover their ops", () => {
      expect(body.cases.length).toBeGreaterThan(3);
      for (const c of body.cases) expect(OPS[c.op]).toBeDefined();
    });
    for (const c of body.cases) {
      test(c.name, () => {
        const r = both(() => OPS[c.op]!(c.inputs.map(tensor), c.params), c.name);
        expect(r.dtype).toBe(resultType(c));
        expect(r.shape).toEqual(c.output.shape);
        expectClose(r.values, c.output.data.map(decode), c.output.dtype, tolerance(c), c.name);
      });
    }
  });
}
