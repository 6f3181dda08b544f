/**
 * smelt against PyTorch (CPU): the fixtures are written by scripts/torch_reference.py, inputs and
 * outputs together, so this test needs only the JSON. Both are float32 implementations of the
 * same functions, so they agree to a few ulps (more where a formula cancels).
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { type DType, type Tol, check, matmulRef, ref, roundTo } from "./helpers.ts";

setDefaultTimeout(120_000);

interface Encoded {
  shape: number[];
  dtype: DType;
  data: (number | string)[];
}
interface Case {
  name: string;
  op: string;
  params: { axis?: number | number[]; ddof?: number };
  inputs: Encoded[];
  output: Encoded;
}

const decode = (v: number | string) => (v === "nan" ? NaN : v === "inf" ? Infinity : v === "-inf" ? -Infinity : (v as number));
const values = (e: Encoded) => e.data.map((v) => roundTo(e.dtype, decode(v)));
const tensor = (e: Encoded) => sm.array(values(e), e.dtype).reshape(e.shape);

type Fn = (xs: sm.Tensor[], p: Case["params"]) => sm.Tensor;
const OPS: Record<string, Fn> = {
  gelu: ([x]) => sm.gelu(x!),
  geluTanh: ([x]) => sm.gelu(x!, "tanh"),
  silu: ([x]) => sm.silu(x!),
  softplus: ([x]) => sm.softplus(x!),
  erf: ([x]) => sm.erf(x!),
  erfinv: ([x]) => sm.erfinv(x!),
  sigmoid: ([x]) => sm.sigmoid(x!),
  expm1: ([x]) => sm.expm1(x!),
  log1p: ([x]) => sm.log1p(x!),
  logsumexp: ([x], p) => sm.logsumexp(x!, p.axis),
  variance: ([x], p) => sm.variance(x!, p.axis, false, p.ddof),
  std: ([x], p) => sm.std(x!, p.axis, false, p.ddof),
  mean: ([x], p) => sm.mean(x!, p.axis),
  softmax: ([x], p) => sm.softmax(x!, p.axis),
  logSoftmax: ([x], p) => sm.logSoftmax(x!, p.axis),
  floorDivide: ([a, b]) => sm.floorDivide(a!, b!),
  remainder: ([a, b]) => sm.remainder(a!, b!),
  power: ([a, b]) => sm.power(a!, b!),
  cumsum: ([x], p) => sm.cumsum(x!, p.axis as number),
  cumprod: ([x], p) => sm.cumprod(x!, p.axis as number),
  matmul: ([a, b]) => sm.matmul(a!, b!),
};

/** How closely smelt must match PyTorch for a case. */
function tolerance(c: Case): Tol {
  const dtype = c.output.dtype;
  const half = dtype !== "float32";
  const x = c.inputs[0] ? values(c.inputs[0]) : [];
  switch (c.op) {
    case "gelu":
    case "geluTanh":
      // 1 + erf(x / sqrt 2) cancels for negative x in both libraries' float32 arithmetic.
      return { ulps: half ? 1 : 4, atolAt: (i) => 4 * Math.abs(x[i]!) * 2 ** -24 };
    case "floorDivide":
      return { ulps: 0 };
    case "remainder":
      return { ulps: 1 };
    case "matmul": {
      const [a, b] = c.inputs.map((e) => ref(e.shape.length === 1 ? [e.shape[0]!, 1] : e.shape, values(e).map(Math.abs)));
      const abs = matmulRef(a!, b!).data;
      const K = c.inputs[0]!.shape[c.inputs[0]!.shape.length - 1]!;
      return { ulps: half ? 1 : 2, atolAt: (i) => (K + 2) * 2 ** -24 * abs[i]! };
    }
    case "cumsum":
    case "cumprod":
    case "logsumexp":
    case "variance":
    case "std":
    case "mean":
      return { ulps: half ? 1 : 4, rtol: half ? 0 : 2 ** -19, atol: c.op === "cumsum" ? 2 ** -20 : 0 };
    case "softmax":
    case "logSoftmax":
      return { ulps: half ? 1 : 4, atol: half ? 0 : 2 ** -22 };
    default:
      return { ulps: half ? 1 : 4 };
  }
}

const DIR = join(import.meta.dir, "../fixtures/torch");
const FILES = ["activations", "reductions", "softmax", "arithmetic", "scans", "matmul"];

for (const file of FILES) {
  const body = JSON.parse(readFileSync(join(DIR, `${file}.json`), "utf8")) as { torch: string; cases: Case[] };
  describe(`PyTorch ${body.torch}: ${file}`, () => {
    test("fixtures are present and cover their ops", () => {
      expect(body.cases.length).toBeGreaterThan(3);
      for (const c of body.cases) expect(OPS[c.op]).toBeDefined();
    });
    for (const c of body.cases) {
      test(c.name, () => {
        const want = ref(c.output.shape, c.output.data.map(decode));
        const tol = tolerance(c);
        check(() => OPS[c.op]!(c.inputs.map(tensor), c.params), want, c.output.dtype, { ...tol, modes: tol }, c.name);
      });
    }
  });
}
