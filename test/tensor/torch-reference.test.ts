/**
 * smelt against PyTorch (CPU): the fixtures are written by scripts/torch_reference.py, inputs and
 * outputs together, so this test needs only the JSON. Both are float32 implementations of the
 * same functions, so they agree to a few ulps (more where a formula cancels).
 */
import { setDefaultTimeout } from "bun:test";
import * as sm from "../../src/index.ts";
import { type DType, type Tol, check, matmulRef, ref } from "./helpers.ts";
import { type Case, decode, describeFixtures, tensor, values } from "./torch-fixtures.ts";

setDefaultTimeout(120_000);

/** The parameters these fixture files use. */
interface Params {
  axis?: number | number[];
  ddof?: number;
}
type Fn = (xs: sm.Tensor[], p: Params) => sm.Tensor;
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

describeFixtures(["activations", "reductions", "softmax", "arithmetic", "scans", "matmul"], OPS, (c) => {
  const want = ref(c.output.shape, c.output.data.map(decode));
  const tol = tolerance(c);
  check(() => OPS[c.op]!(c.inputs.map(tensor), c.params as Params), want, c.output.dtype, { ...tol, modes: tol }, c.name);
});
