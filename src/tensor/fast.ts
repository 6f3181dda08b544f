/**
 * sm.fast, as mlx.core.fast: entry points to the fused kernels. Each is written from primitive
 * ops, which the scheduler turns into the fused kernels (a row kernel for the norms, an inline
 * expression for RoPE, matmuls with epilogues and a row kernel for attention), so each equals
 * its composition from primitives by construction.
 */
import { SmeltError } from "../errors.ts";
import type { DType } from "../graph/dtype.ts";
import * as ops from "./ops.ts";
import { concatenate } from "./ops-structure.ts";
import { composite, Tensor } from "./tensor.ts";

const isHalf = (d: DType) => d === "float16" || d === "bfloat16";
/** Norms compute in float32 and give back the input's dtype, as MLX's do. */
function inFloat(x: Tensor, fn: (xf: Tensor) => Tensor): Tensor {
  return composite(() => (isHalf(x.dtype) ? ops.astype(fn(ops.astype(x, "float32")), x.dtype) : fn(x)));
}

function checkLast(op: string, x: Tensor, t: Tensor | null | undefined, name: string) {
  if (!t) return;
  const d = x.shape[x.ndim - 1];
  if (t.ndim !== 1 || t.shape[0] !== d)
    throw new SmeltError(`${op}: ${name} must have shape [${d}] (the last axis of x, shape [${x.shape}]), got [${t.shape}]`);
}

/** x * rsqrt(mean(x^2, -1) + eps) * weight */
export function rmsNorm(x: Tensor, weight: Tensor | null, eps = 1e-5): Tensor {
  checkLast("rmsNorm", x, weight, "weight");
  return inFloat(x, (xf) => {
    const y = xf.mul(ops.rsqrt(xf.mul(xf).mean(-1, true).add(eps)));
    return weight ? y.mul(weight) : y;
  });
}

/** (x - mean) * rsqrt(var + eps) * weight + bias, over the last axis */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  checkLast("layerNorm", x, weight, "weight");
  checkLast("layerNorm", x, bias, "bias");
  return inFloat(x, (xf) => {
    let y = xf.sub(xf.mean(-1, true)).mul(ops.rsqrt(ops.variance(xf, -1, true).add(eps)));
    if (weight) y = y.mul(weight);
    return bias ? y.add(bias) : y;
  });
}

/**
 * Rotary position embedding over the first `dims` features of the last axis of x [..., L, D]:
 * position p = offset + row index along axis -2 (times scale); feature pair i turns by
 * p * base^(-2i/dims). traditional pairs adjacent features (2i, 2i+1); otherwise feature i pairs
 * with i + dims/2.
 */
export function rope(x: Tensor, dims: number, opts: { traditional?: boolean; base?: number; scale?: number; offset?: number } = {}): Tensor {
  const { traditional = false, base = 10000, scale = 1, offset = 0 } = opts;
  const D = x.shape[x.ndim - 1]!;
  if (x.ndim < 2) throw new SmeltError(`rope: x needs at least 2 dimensions [..., L, D], got [${x.shape}]`);
  if (!Number.isInteger(dims) || dims <= 0 || dims % 2 !== 0 || dims > D)
    throw new SmeltError(`rope: dims must be an even integer from 2 to ${D} (the last axis of x), got ${dims}`);
  const L = x.shape[x.ndim - 2]!;
  const half = dims / 2;
  const lead = x.shape.slice(0, -2);
  return inFloat(x, (xf) => {
    const rot = D === dims ? xf : xf.slice("...", { start: 0, stop: dims });
    // angle[l, i] = (offset + l) * scale * base^(-2i/dims), spread over the dims features
    const pos = ops.arange(L).astype("float32").add(offset).mul(scale).reshape([L, 1]);
    const freq = ops.exp(ops.arange(half).astype("float32").mul((-2 / dims) * Math.log(base))).reshape([1, half]);
    const angle = pos.mul(freq);
    const spread = (t: Tensor) =>
      traditional ? t.reshape([L, half, 1]).broadcastTo([L, half, 2]).reshape([L, dims]) : t.reshape([L, 1, half]).broadcastTo([L, 2, half]).reshape([L, dims]);
    const cos = spread(ops.cos(angle)), sin = spread(ops.sin(angle));
    // the partner of each feature, and the sign its sine term takes
    const partner = traditional
      ? rot.reshape([...lead, L, half, 2]).slice("...", { step: -1 }).reshape([...lead, L, dims])
      : rot.reshape([...lead, L, 2, half]).slice("...", { step: -1 }, {}).reshape([...lead, L, dims]);
    const first = traditional ? ops.equal(ops.remainder(ops.arange(dims), 2), 0) : ops.less(ops.arange(dims), half);
    const sign = ops.where(first, -1, 1).astype("float32");
    const turned = rot.mul(cos).add(partner.mul(sin).mul(sign));
    if (D === dims) return turned;
    const rest = xf.slice("...", { start: dims });
    return concatenate([turned, rest], -1);
  });
}

/**
 * softmax(q k^T * scale + mask) v. q [B, Hq, L, D], k and v [B, Hkv, S, D] with Hq a multiple of
 * Hkv (grouped-query heads share k and v); mask "causal", an additive tensor broadcastable to
 * [B, Hq, L, S], or none.
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: { scale?: number; mask?: "causal" | Tensor | null } = {}): Tensor {
  const op = "scaledDotProductAttention";
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4)
    throw new SmeltError(`${op}: q, k and v must be 4-D [B, H, L, D], got [${q.shape}], [${k.shape}], [${v.shape}]`);
  const [B, Hq, L, D] = q.shape as [number, number, number, number];
  const [Bk, Hkv, S, Dk] = k.shape as [number, number, number, number];
  if (Bk !== B || Dk !== D || v.shape[0] !== B || v.shape[1] !== Hkv || v.shape[2] !== S)
    throw new SmeltError(`${op}: k [${k.shape}] and v [${v.shape}] do not match q [${q.shape}]`);
  if (Hq % Hkv !== 0) throw new SmeltError(`${op}: ${Hq} query heads are not a multiple of ${Hkv} key/value heads`);
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const G = Hq / Hkv;
  return composite(() => attention(q, k, v, opts.mask, scale, G));
}

function attention(q: Tensor, k: Tensor, v: Tensor, mask: "causal" | Tensor | null | undefined, scale: number, G: number): Tensor {
  const op = "scaledDotProductAttention";
  const [B, Hq, L, D] = q.shape as [number, number, number, number];
  const [, Hkv, S] = k.shape as [number, number, number, number];
  // The G query heads sharing a key/value head are G x L rows of one product with it: one matmul
  // per key/value head, whose key and value gradients are products over those rows rather than
  // G products summed afterwards. The mask needs the rows split into [G, L], unless L is 1 (a
  // decoding step): then it is laid out over the G rows, and the scores' matmul computes it in
  // its epilogue. Over longer rows that layout's index math cost the epilogue more than the
  // separate kernel it saves.
  const qg = q.reshape([B, Hkv, G * L, D]);
  let s = ops.matmul(qg, ops.swapaxes(k, -1, -2)).mul(scale);
  const split = L > 1 && mask != null;
  if (split) s = s.reshape([B, Hkv, G, L, S]);
  /** x, of 5 axes broadcasting to the scores' [.., G, L, ..], in the scores' layout. */
  const layout = (x: Tensor) => {
    if (split) return x;
    const [xb, xh, , , xs] = x.shape as [number, number, number, number, number];
    return ops.broadcastTo(x, [xb, xh, G, 1, xs]).reshape([xb, xh, G, xs]);
  };
  if (mask === "causal") {
    const row = ops.arange(L).reshape([1, 1, 1, L, 1]).add(S - L);
    const col = ops.arange(S).reshape([1, 1, 1, 1, S]);
    s = ops.where(layout(ops.greater(col, row)), -Infinity, s);
  } else if (mask instanceof Tensor) {
    const m = mask;
    if (m.ndim < 2 || m.ndim > 4) throw new SmeltError(`${op}: mask must broadcast to [${B}, ${Hq}, ${L}, ${S}], got [${m.shape}]`);
    const m4 = m.reshape([...Array(4 - m.ndim).fill(1), ...m.shape]);
    const [mb, mh, ml, ms] = m4.shape as [number, number, number, number];
    if (mh !== 1 && mh !== Hq) throw new SmeltError(`${op}: mask's head axis has ${mh} heads, expected 1 or ${Hq}`);
    s = s.add(layout(m4.reshape([mb, mh === 1 ? 1 : Hkv, mh === 1 ? 1 : G, ml, ms])));
  } else if (mask != null) {
    throw new SmeltError(`${op}: mask must be "causal", a tensor or null`);
  }
  const p = ops.softmax(s, -1);
  return ops.matmul(p.astype(v.dtype).reshape([B, Hkv, G * L, S]), v).reshape([B, Hq, L, v.shape[3]!]);
}
