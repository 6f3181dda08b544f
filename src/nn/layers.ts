/** Layers, with PyTorch's default initialisations. */
import { SmeltError } from "../errors.ts";
import * as fast from "../tensor/fast.ts";
import * as ops from "../tensor/ops.ts";
import { take } from "../tensor/ops-structure.ts";
import * as random from "../tensor/random.ts";
import { composite, type Tensor } from "../tensor/tensor.ts";
import * as init from "./init.ts";
import { Module } from "./module.ts";

function positive(op: string, what: string, v: unknown): number {
  if (!Number.isInteger(v) || (v as number) <= 0) throw new SmeltError(`${op}: ${what} must be a positive integer, got ${String(v)}`);
  return v as number;
}
function lastDim(op: string, x: Tensor, dims: number): void {
  if (x.shape[x.shape.length - 1] !== dims) throw new SmeltError(`${op}: the input's last dimension must be ${dims}, got shape [${x.shape}]`);
}

/** y = x Wᵀ + b with W [out, in]; W and b ~ U(±1/sqrt(in)), as torch.nn.Linear. */
export class Linear extends Module {
  weight: Tensor;
  bias?: Tensor;
  constructor(inDims: number, outDims: number, opts: { bias?: boolean; key?: Tensor | undefined } = {}) {
    super();
    positive("Linear", "inDims", inDims);
    positive("Linear", "outDims", outDims);
    const k = opts.key ? random.split(opts.key) : undefined;
    const a = 1 / Math.sqrt(inDims);
    this.weight = init.uniform([outDims, inDims], { low: -a, high: a, key: k ? take(k, 0, 0) : undefined });
    if (opts.bias ?? true) this.bias = init.uniform([outDims], { low: -a, high: a, key: k ? take(k, 1, 0) : undefined });
  }
  override forward(x: Tensor): Tensor {
    lastDim("Linear", x, this.weight.shape[1]!);
    return composite(() => {
      const y = ops.matmul(x, ops.transpose(this.weight));
      return this.bias ? ops.add(y, this.bias) : y;
    });
  }
}

/** A lookup table [num, dims] ~ N(0, 1), as torch.nn.Embedding. */
export class Embedding extends Module {
  weight: Tensor;
  constructor(numEmbeddings: number, dims: number, opts: { key?: Tensor | undefined } = {}) {
    super();
    positive("Embedding", "numEmbeddings", numEmbeddings);
    positive("Embedding", "dims", dims);
    this.weight = init.normal([numEmbeddings, dims], { key: opts.key });
  }
  override forward(ids: Tensor): Tensor {
    return take(this.weight, ids, 0);
  }
  /** x Wᵀ: the table as an output head tied to the input embedding. */
  asLinear(x: Tensor): Tensor {
    lastDim("Embedding.asLinear", x, this.weight.shape[1]!);
    return ops.matmul(x, ops.transpose(this.weight));
  }
}

export class RMSNorm extends Module {
  weight: Tensor;
  constructor(dims: number, readonly eps = 1e-5) {
    super();
    this.weight = init.ones([positive("RMSNorm", "dims", dims)]);
  }
  override forward(x: Tensor): Tensor {
    lastDim("RMSNorm", x, this.weight.shape[0]!);
    return fast.rmsNorm(x, this.weight, this.eps);
  }
}

export class LayerNorm extends Module {
  weight?: Tensor;
  bias?: Tensor;
  constructor(readonly dims: number, opts: { eps?: number; affine?: boolean; bias?: boolean } = {}) {
    super();
    positive("LayerNorm", "dims", dims);
    this.eps = opts.eps ?? 1e-5;
    if (opts.affine ?? true) {
      this.weight = init.ones([dims]);
      if (opts.bias ?? true) this.bias = init.zeros([dims]);
    }
  }
  readonly eps: number;
  override forward(x: Tensor): Tensor {
    lastDim("LayerNorm", x, this.dims);
    return fast.layerNorm(x, this.weight ?? null, this.bias ?? null, this.eps);
  }
}

/** Zeroes elements with probability p while training, scaling the rest by 1/(1-p); a lazy mask. */
export class Dropout extends Module {
  constructor(readonly p = 0.5) {
    super();
    if (!(p >= 0 && p < 1)) throw new SmeltError(`Dropout: p must be in [0, 1), got ${p}`);
  }
  override forward(x: Tensor, key?: Tensor): Tensor {
    if (!this.training || this.p === 0) return x;
    return composite(() => ops.where(random.bernoulli(1 - this.p, x.shape, key), ops.multiply(x, 1 / (1 - this.p)), 0));
  }
}

/** Rotary positions over the first `dims` features (sm.fast.rope). */
export class RoPE extends Module {
  constructor(readonly dims: number, readonly opts: { traditional?: boolean; base?: number; scale?: number } = {}) {
    super();
    positive("RoPE", "dims", dims);
  }
  override forward(x: Tensor, offset = 0): Tensor {
    return fast.rope(x, this.dims, { ...this.opts, offset });
  }
}

type Layer = Module | ((x: Tensor) => Tensor);
/** Applies its layers in order; functions (activations) may stand between modules. */
export class Sequential extends Module {
  layers: Module[];
  readonly #steps: Layer[];
  constructor(...layers: Layer[]) {
    super();
    for (const l of layers) if (!(l instanceof Module) && typeof l !== "function") throw new SmeltError("Sequential: each layer must be a Module or a function");
    this.#steps = layers;
    this.layers = layers.filter((l): l is Module => l instanceof Module);
  }
  override forward(x: Tensor): Tensor {
    let i = 0;
    return this.#steps.reduce<Tensor>((y, l) => {
      // The module list may have been replaced (update, loadWeights): read the current one.
      const step = l instanceof Module ? this.layers[i++]! : l;
      const out = step instanceof Module ? (step.forward(y) as Tensor) : step(y);
      return out;
    }, x);
  }
}

/** Multi-head attention with query, key, value and output projections (bias off, as MLX). */
export class MultiHeadAttention extends Module {
  queryProj: Linear;
  keyProj: Linear;
  valueProj: Linear;
  outProj: Linear;
  constructor(readonly dims: number, readonly numHeads: number, opts: { bias?: boolean; key?: Tensor | undefined } = {}) {
    super();
    positive("MultiHeadAttention", "dims", dims);
    positive("MultiHeadAttention", "numHeads", numHeads);
    if (dims % numHeads !== 0) throw new SmeltError(`MultiHeadAttention: dims ${dims} must be a multiple of numHeads ${numHeads}`);
    const bias = opts.bias ?? false;
    const keys = opts.key ? random.split(opts.key, 4) : undefined;
    const k = (i: number) => (keys ? take(keys, i, 0) : undefined);
    this.queryProj = new Linear(dims, dims, { bias, key: k(0) });
    this.keyProj = new Linear(dims, dims, { bias, key: k(1) });
    this.valueProj = new Linear(dims, dims, { bias, key: k(2) });
    this.outProj = new Linear(dims, dims, { bias, key: k(3) });
  }
  /** queries [B, L, dims], keys and values [B, S, dims]; mask "causal", an additive or bool tensor, or null. */
  override forward(queries: Tensor, keys: Tensor, values: Tensor, mask: "causal" | Tensor | null = null): Tensor {
    return composite(() => {
      const heads = (x: Tensor) => {
        const [b, l] = x.shape;
        return ops.transpose(ops.reshape(x, [b!, l!, this.numHeads, this.dims / this.numHeads]), [0, 2, 1, 3]);
      };
      const q = heads(this.queryProj.forward(queries));
      const k = heads(this.keyProj.forward(keys));
      const v = heads(this.valueProj.forward(values));
      const o = fast.scaledDotProductAttention(q, k, v, { mask });
      const [b, , l] = o.shape;
      return this.outProj.forward(ops.reshape(ops.transpose(o, [0, 2, 1, 3]), [b!, l!, this.dims]));
    });
  }
}
