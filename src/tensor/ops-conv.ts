/**
 * Convolutions in MLX's channels-last layout: input [N, ..., Cin], weight [Cout, ..., Cin / groups],
 * output [N, ..., Cout]. Lowered to a matmul over patches: each kernel tap is a strided view of the
 * padded input, the taps are joined along the channel axis, and one matmul per group multiplies
 * them by the flattened weight. One kernel writes the patch matrix (the padding and the joins are
 * index math in it); a direct convolution kernel would save that memory, but this reuses the
 * matmul kernels and their tests.
 */
import { SmeltError } from "../errors.ts";
import { matmul, reshape, slice, transpose } from "./ops.ts";
import { concatenate, pad } from "./ops-structure.ts";
import { composite, Tensor } from "./tensor.ts";

type Pair = number | readonly [number, number];

function pairArg(op: string, v: unknown, what: string, min: number): [number, number] {
  const p = typeof v === "number" ? [v, v] : Array.isArray(v) && v.length === 2 ? v : null;
  if (!p || !p.every((x) => typeof x === "number" && Number.isSafeInteger(x) && x >= min))
    throw new SmeltError(`${op}: ${what} must be an integer >= ${min} or a pair of them, got ${JSON.stringify(v)}`);
  return [p[0], p[1]];
}

function conv(op: string, input: Tensor, weight: Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: number): Tensor {
  if (!(input instanceof Tensor) || !(weight instanceof Tensor)) throw new SmeltError(`${op}: input and weight must be Tensors`);
  const [sh, sw] = pairArg(op, stride, "stride", 1);
  const [ph, pw] = pairArg(op, padding, "padding", 0);
  const [dh, dw] = pairArg(op, dilation, "dilation", 1);
  const [N, H, W, C] = input.shape as [number, number, number, number];
  const [O, KH, KW, CG] = weight.shape as [number, number, number, number];
  if (!Number.isSafeInteger(groups) || groups < 1 || C % groups !== 0 || O % groups !== 0)
    throw new SmeltError(`${op}: groups must be a positive integer dividing both ${C} input and ${O} output channels, got ${groups}`);
  if (CG !== C / groups)
    throw new SmeltError(`${op}: weight has ${CG} input channels per group, expected ${C / groups} (input channels ${C} / groups ${groups})`);
  const OH = Math.floor((H + 2 * ph - dh * (KH - 1) - 1) / sh) + 1;
  const OW = Math.floor((W + 2 * pw - dw * (KW - 1) - 1) / sw) + 1;
  if (OH < 1 || OW < 1)
    throw new SmeltError(`${op}: the kernel (size ${KH === 1 && op === "conv1d" ? KW : `${KH}x${KW}`}, dilation applied) is larger than the padded input`);
  return composite(() => {
    const padded = ph || pw ? pad(input, [[0, 0], [ph, ph], [pw, pw], [0, 0]]) : input;
    const outs: Tensor[] = [];
    for (let g = 0; g < groups; g++) {
      const channels = { start: g * CG, stop: (g + 1) * CG };
      const taps: Tensor[] = [];
      for (let i = 0; i < KH; i++) {
        for (let j = 0; j < KW; j++) {
          const rows = { start: i * dh, stop: i * dh + (OH - 1) * sh + 1, step: sh };
          const cols = { start: j * dw, stop: j * dw + (OW - 1) * sw + 1, step: sw };
          taps.push(slice(padded, {}, rows, cols, channels));
        }
      }
      // [N, OH, OW, KH * KW * CG] patches, in the weight's (kh, kw, c) order.
      const patches = reshape(concatenate(taps, 3), [N * OH * OW, KH * KW * CG]);
      const w = reshape(slice(weight, { start: g * (O / groups), stop: (g + 1) * (O / groups) }), [O / groups, KH * KW * CG]);
      outs.push(reshape(matmul(patches, transpose(w)), [N, OH, OW, O / groups]));
    }
    return outs.length === 1 ? outs[0]! : concatenate(outs, 3);
  });
}

/**
 * 2-D convolution (cross-correlation, as every framework computes it): input [N, H, W, Cin],
 * weight [Cout, KH, KW, Cin / groups], result [N, OH, OW, Cout]. stride, padding (zeros on both
 * sides) and dilation are one number or a [height, width] pair.
 */
export function conv2d(input: Tensor, weight: Tensor, stride: Pair = 1, padding: Pair = 0, dilation: Pair = 1, groups = 1): Tensor {
  const op = "conv2d";
  if (!(input instanceof Tensor) || input.ndim !== 4) throw new SmeltError(`${op}: input must be a 4-D tensor [N, H, W, Cin], got ${describe(input)}`);
  if (!(weight instanceof Tensor) || weight.ndim !== 4) throw new SmeltError(`${op}: weight must be a 4-D tensor [Cout, KH, KW, Cin], got ${describe(weight)}`);
  return conv(op, input, weight, stride, padding, dilation, groups);
}

/** 1-D convolution: input [N, L, Cin], weight [Cout, K, Cin / groups], result [N, OL, Cout]. */
export function conv1d(input: Tensor, weight: Tensor, stride = 1, padding = 0, dilation = 1, groups = 1): Tensor {
  const op = "conv1d";
  if (!(input instanceof Tensor) || input.ndim !== 3) throw new SmeltError(`${op}: input must be a 3-D tensor [N, L, Cin], got ${describe(input)}`);
  if (!(weight instanceof Tensor) || weight.ndim !== 3) throw new SmeltError(`${op}: weight must be a 3-D tensor [Cout, K, Cin], got ${describe(weight)}`);
  for (const [v, what, min] of [[stride, "stride", 1], [padding, "padding", 0], [dilation, "dilation", 1]] as const)
    if (typeof v !== "number") throw new SmeltError(`${op}: ${what} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  return composite(() => {
    const [N, L, C] = input.shape as [number, number, number];
    const [O, K, CG] = weight.shape as [number, number, number];
    const out = conv(op, reshape(input, [N, 1, L, C]), reshape(weight, [O, 1, K, CG]), [1, stride], [0, padding], [1, dilation], groups);
    return reshape(out, [N, out.shape[2]!, O]);
  });
}

function describe(x: unknown): string {
  return x instanceof Tensor ? `shape [${x.shape}]` : x === null ? "null" : typeof x;
}
