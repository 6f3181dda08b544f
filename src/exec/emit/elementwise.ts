/**
 * The MSL expression of every elementwise op. Float math runs in float for float32, float16 and
 * bfloat16 alike and is rounded to the node's dtype afterwards, so a fused chain and the same ops
 * run one by one (eager mode) round at the same places and agree bit for bit.
 */
import type { DType } from "../../graph/dtype.ts";
import type { ElementwiseOp } from "../../graph/op.ts";

export interface Value {
  v: string;
  dtype: DType;
}
type Emit = (args: Value[], out: DType, scalars: string[]) => string;

const isInt = (d: DType) => d !== "bool" && !d.startsWith("float") && d !== "bfloat16";
const f = (a: Value) => `float(${a.v})`;
const fn1 = (name: string): Emit => ([a]) => `${name}(${f(a!)})`;

export const elementwise: Record<ElementwiseOp, Emit> = {
  // unary arithmetic
  negative: ([a]) => `-${a!.v}`,
  abs: ([a]) => (a!.dtype === "bool" || a!.dtype.startsWith("uint") ? a!.v : `abs(${a!.v})`),
  sign: ([a]) => (isInt(a!.dtype) ? `(${a!.v} > 0) - (${a!.v} < 0)` : `sign(${f(a!)})`),
  square: ([a]) => `${a!.v} * ${a!.v}`,
  sqrt: fn1("sqrt"),
  rsqrt: fn1("rsqrt"),
  exp: fn1("exp"),
  expm1: fn1("smelt_expm1"),
  log: fn1("log"),
  log1p: fn1("smelt_log1p"),
  log2: fn1("log2"),
  log10: fn1("log10"),
  sin: fn1("sin"),
  cos: fn1("cos"),
  tan: fn1("tan"),
  tanh: fn1("tanh"),
  // exp(x) / (1 + exp(x)) for x < 0: 1 / (1 + exp(-x)) would overflow to 0 where the result is
  // still a (subnormal) float.
  sigmoid: ([a]) => `${f(a!)} < 0.0f ? exp(${f(a!)}) / (1.0f + exp(${f(a!)})) : 1.0f / (1.0f + exp(-${f(a!)}))`,
  erf: fn1("smelt_erf"),
  erfinv: fn1("smelt_erfinv"),
  floor: ([a]) => (isInt(a!.dtype) ? a!.v : `floor(${f(a!)})`),
  ceil: ([a]) => (isInt(a!.dtype) ? a!.v : `ceil(${f(a!)})`),
  round: ([a]) => (isInt(a!.dtype) ? a!.v : `rint(${f(a!)})`),
  // Float max() ignores a NaN operand; relu is maximum(x, 0), which keeps it (MLX, PyTorch).
  relu: ([a]) => (isInt(a!.dtype) || a!.dtype === "bool" ? `max(${a!.v}, decltype(${a!.v})(0))` : `smelt_fmax(${f(a!)}, 0.0f)`),
  gelu: ([a]) => `0.5f * ${f(a!)} * (1.0f + smelt_erf(${f(a!)} * 0.70710678118654752f))`,
  geluApprox: ([a]) =>
    `0.5f * ${f(a!)} * (1.0f + tanh(0.79788456080286536f * (${f(a!)} + 0.044715f * ${f(a!)} * ${f(a!)} * ${f(a!)})))`,
  silu: ([a]) => `${f(a!)} < 0.0f ? ${f(a!)} * exp(${f(a!)}) / (1.0f + exp(${f(a!)})) : ${f(a!)} / (1.0f + exp(-${f(a!)}))`,
  softplus: ([a]) => `max(${f(a!)}, 0.0f) + smelt_log1p(exp(-fabs(${f(a!)})))`,
  logicalNot: ([a]) => `!bool(${a!.v})`,
  isnan: ([a]) => (isInt(a!.dtype) || a!.dtype === "bool" ? "false" : `isnan(${f(a!)})`),
  isinf: ([a]) => (isInt(a!.dtype) || a!.dtype === "bool" ? "false" : `isinf(${f(a!)})`),
  nanToNum: ([a], _o, [nan, pos, neg]) =>
    `isnan(${f(a!)}) ? ${nan} : (${f(a!)} == INFINITY ? ${pos} : (${f(a!)} == -INFINITY ? ${neg} : ${f(a!)}))`,

  // binary: the inputs already have the op's computation dtype
  add: ([a, b]) => `${a!.v} + ${b!.v}`,
  subtract: ([a, b]) => `${a!.v} - ${b!.v}`,
  multiply: ([a, b]) => `${a!.v} * ${b!.v}`,
  divide: ([a, b]) => `${f(a!)} / ${f(b!)}`,
  floorDivide: ([a, b]) => (isInt(a!.dtype) ? `smelt_ifloordiv(${a!.v}, ${b!.v})` : `smelt_floordiv(${f(a!)}, ${f(b!)})`),
  remainder: ([a, b]) => (isInt(a!.dtype) ? `smelt_imod(${a!.v}, ${b!.v})` : `smelt_mod(${f(a!)}, ${f(b!)})`),
  power: ([a, b]) => (isInt(a!.dtype) ? `smelt_ipow(int(${a!.v}), int(${b!.v}))` : `smelt_pow(${f(a!)}, ${f(b!)})`),
  maximum: ([a, b]) => (isInt(a!.dtype) || a!.dtype === "bool" ? `max(${a!.v}, ${b!.v})` : `smelt_fmax(${f(a!)}, ${f(b!)})`),
  minimum: ([a, b]) => (isInt(a!.dtype) || a!.dtype === "bool" ? `min(${a!.v}, ${b!.v})` : `smelt_fmin(${f(a!)}, ${f(b!)})`),
  equal: ([a, b]) => `${a!.v} == ${b!.v}`,
  notEqual: ([a, b]) => `${a!.v} != ${b!.v}`,
  less: ([a, b]) => `${a!.v} < ${b!.v}`,
  lessEqual: ([a, b]) => `${a!.v} <= ${b!.v}`,
  greater: ([a, b]) => `${a!.v} > ${b!.v}`,
  greaterEqual: ([a, b]) => `${a!.v} >= ${b!.v}`,
  logicalAnd: ([a, b]) => `bool(${a!.v}) && bool(${b!.v})`,
  logicalOr: ([a, b]) => `bool(${a!.v}) || bool(${b!.v})`,

  where: ([c, a, b]) => `bool(${c!.v}) ? ${a!.v} : ${b!.v}`,
};
