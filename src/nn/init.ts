/**
 * Initialisers: each returns a new tensor of the shape asked, drawn with sm.random (from `key`
 * when given, else the global key). Fans follow PyTorch for weights shaped [out, in, ...].
 */
import { SmeltError } from "../errors.ts";
import type { DType } from "../graph/dtype.ts";
import { full } from "../tensor/ops.ts";
import * as random from "../tensor/random.ts";
import type { Tensor } from "../tensor/tensor.ts";

interface Draw {
  dtype?: DType;
  key?: Tensor | undefined;
}

function fans(op: string, shape: readonly number[]): [number, number] {
  if (shape.length < 2) throw new SmeltError(`init.${op}: needs a shape of at least 2 dimensions to find fans, got [${shape}]`);
  const field = shape.slice(2).reduce((a, b) => a * b, 1);
  return [shape[1]! * field, shape[0]! * field];
}

export const constant = (shape: readonly number[], value: number, dtype: DType = "float32") => full(shape, value, dtype);
export const zeros = (shape: readonly number[], dtype: DType = "float32") => full(shape, 0, dtype);
export const ones = (shape: readonly number[], dtype: DType = "float32") => full(shape, 1, dtype);

export function normal(shape: readonly number[], opts: Draw & { mean?: number; std?: number } = {}): Tensor {
  return random.normal(shape, opts.dtype, opts.mean ?? 0, opts.std ?? 1, opts.key);
}
export function uniform(shape: readonly number[], opts: Draw & { low?: number; high?: number } = {}): Tensor {
  return random.uniform(opts.low ?? 0, opts.high ?? 1, shape, opts.dtype, opts.key);
}
/** Glorot/Xavier: U(±gain·sqrt(6 / (fanIn + fanOut))). */
export function glorotUniform(shape: readonly number[], opts: Draw & { gain?: number } = {}): Tensor {
  const [fi, fo] = fans("glorotUniform", shape);
  const a = (opts.gain ?? 1) * Math.sqrt(6 / (fi + fo));
  return uniform(shape, { ...opts, low: -a, high: a });
}
/** Glorot/Xavier: N(0, gain²·2 / (fanIn + fanOut)). */
export function glorotNormal(shape: readonly number[], opts: Draw & { gain?: number } = {}): Tensor {
  const [fi, fo] = fans("glorotNormal", shape);
  return normal(shape, { ...opts, std: (opts.gain ?? 1) * Math.sqrt(2 / (fi + fo)) });
}
/** He/Kaiming: U(±gain·sqrt(3 / fan)), gain sqrt(2) as for ReLU by default. */
export function heUniform(shape: readonly number[], opts: Draw & { gain?: number; mode?: "fanIn" | "fanOut" } = {}): Tensor {
  const [fi, fo] = fans("heUniform", shape);
  const a = (opts.gain ?? Math.SQRT2) * Math.sqrt(3 / (opts.mode === "fanOut" ? fo : fi));
  return uniform(shape, { ...opts, low: -a, high: a });
}
export function heNormal(shape: readonly number[], opts: Draw & { gain?: number; mode?: "fanIn" | "fanOut" } = {}): Tensor {
  const [fi, fo] = fans("heNormal", shape);
  return normal(shape, { ...opts, std: (opts.gain ?? Math.SQRT2) / Math.sqrt(opts.mode === "fanOut" ? fo : fi) });
}
export { glorotNormal as xavierNormal, glorotUniform as xavierUniform, heNormal as kaimingNormal, heUniform as kaimingUniform };
