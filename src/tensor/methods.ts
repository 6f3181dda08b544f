/** The common ops as Tensor methods: x.add(y), x.mul(2), x.sum(-1), x.reshape([2, 3]). */
import type { DType } from "../graph/dtype.ts";
import type { IndexItem } from "../graph/shape.ts";
import * as ops from "./ops.ts";
import { reciprocal } from "./ops-extra.ts";
import { split } from "./ops-structure.ts";
import { Tensor } from "./tensor.ts";

type T = ops.TensorLike;
type Axes = number | readonly number[] | null | undefined;

declare module "./tensor.ts" {
  interface Tensor {
    add(b: T): Tensor; sub(b: T): Tensor; mul(b: T): Tensor; div(b: T): Tensor; pow(b: T): Tensor;
    floorDiv(b: T): Tensor; mod(b: T): Tensor; maximum(b: T): Tensor; minimum(b: T): Tensor;
    eq(b: T): Tensor; ne(b: T): Tensor; lt(b: T): Tensor; le(b: T): Tensor; gt(b: T): Tensor; ge(b: T): Tensor;
    neg(): Tensor; abs(): Tensor; square(): Tensor; sqrt(): Tensor; rsqrt(): Tensor; exp(): Tensor; log(): Tensor;
    sin(): Tensor; cos(): Tensor; tanh(): Tensor; sigmoid(): Tensor; relu(): Tensor;
    round(): Tensor; floor(): Tensor; ceil(): Tensor; log1p(): Tensor; log2(): Tensor; log10(): Tensor; reciprocal(): Tensor;
    split(indicesOrSections: number | readonly number[], axis?: number): Tensor[];
    sum(axis?: Axes, keepdims?: boolean): Tensor; mean(axis?: Axes, keepdims?: boolean): Tensor;
    prod(axis?: Axes, keepdims?: boolean): Tensor; max(axis?: Axes, keepdims?: boolean): Tensor;
    min(axis?: Axes, keepdims?: boolean): Tensor; argmax(axis?: number, keepdims?: boolean): Tensor;
    argmin(axis?: number, keepdims?: boolean): Tensor; all(axis?: Axes, keepdims?: boolean): Tensor;
    any(axis?: Axes, keepdims?: boolean): Tensor; var(axis?: Axes, keepdims?: boolean, ddof?: number): Tensor;
    std(axis?: Axes, keepdims?: boolean, ddof?: number): Tensor; logsumexp(axis?: Axes, keepdims?: boolean): Tensor;
    cumsum(axis?: number): Tensor; cumprod(axis?: number): Tensor;
    reshape(shape: readonly number[]): Tensor; flatten(start?: number, end?: number): Tensor;
    transpose(axes?: readonly number[]): Tensor; readonly T: Tensor; swapaxes(a: number, b: number): Tensor;
    moveaxis(s: number, d: number): Tensor; expandDims(axis: number | readonly number[]): Tensor;
    squeeze(axis?: number | readonly number[]): Tensor; broadcastTo(shape: readonly number[]): Tensor;
    slice(...items: (IndexItem | string)[]): Tensor; matmul(b: Tensor): Tensor; astype(d: DType): Tensor;
  }
}

const p = Tensor.prototype as unknown as Record<string, unknown>;
const bin = { add: ops.add, sub: ops.subtract, mul: ops.multiply, div: ops.divide, pow: ops.power, floorDiv: ops.floorDivide, mod: ops.remainder, maximum: ops.maximum, minimum: ops.minimum, eq: ops.equal, ne: ops.notEqual, lt: ops.less, le: ops.lessEqual, gt: ops.greater, ge: ops.greaterEqual } as const;
for (const [k, f] of Object.entries(bin)) p[k] = function (this: Tensor, b: T) { return f(this, b); };
const un = { neg: ops.negative, abs: ops.abs, square: ops.square, sqrt: ops.sqrt, rsqrt: ops.rsqrt, exp: ops.exp, log: ops.log, sin: ops.sin, cos: ops.cos, tanh: ops.tanh, sigmoid: ops.sigmoid, relu: ops.relu,
  round: ops.round, floor: ops.floor, ceil: ops.ceil, log1p: ops.log1p, log2: ops.log2, log10: ops.log10, reciprocal } as const;
for (const [k, f] of Object.entries(un)) p[k] = function (this: Tensor) { return f(this); };
const rest: Record<string, (x: Tensor, ...a: never[]) => Tensor> = {
  sum: ops.sum, mean: ops.mean, prod: ops.prod, max: ops.max, min: ops.min, argmax: ops.argmax, argmin: ops.argmin,
  all: ops.all, any: ops.any, var: ops.variance, std: ops.std, logsumexp: ops.logsumexp, cumsum: ops.cumsum,
  cumprod: ops.cumprod, reshape: ops.reshape, flatten: ops.flatten, transpose: ops.transpose, swapaxes: ops.swapaxes,
  moveaxis: ops.moveaxis, expandDims: ops.expandDims, squeeze: ops.squeeze, broadcastTo: ops.broadcastTo,
  slice: ops.slice, matmul: ops.matmul, astype: ops.astype,
};
p.split = function (this: Tensor, indicesOrSections: number | readonly number[], axis?: number) { return split(this, indicesOrSections, axis); };
for (const [k, f] of Object.entries(rest)) p[k] = function (this: Tensor, ...a: never[]) { return f(this, ...a); };
Object.defineProperty(Tensor.prototype, "T", { get(this: Tensor) { return ops.transpose(this); } });
