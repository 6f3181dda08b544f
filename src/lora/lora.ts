/**
 * LoRA adapters on a model's linear layers. A wrapped layer keeps the layout PEFT gives it
 * (`<path>.base_layer`, `<path>.lora_A.weight` [r, in], `<path>.lora_B.weight` [out, r]), so the
 * names of saved adapters map one to one onto PEFT's `base_model.model.<path>.lora_A.weight`.
 */
import { SmeltError } from "../errors.ts";
import * as init from "../nn/init.ts";
import { Dropout, Linear } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import { QuantizedLinear } from "../nn/quantized.ts";
import * as ops from "../tensor/ops.ts";
import { stopGradient } from "../autograd/transforms.ts";
import { composite, type Tensor } from "../tensor/tensor.ts";

export type Targets = readonly string[] | "all-linear" | RegExp;

export interface LoRAOptions {
  rank?: number | undefined;
  alpha?: number | undefined;
  dropout?: number | undefined;
  /** Module names (the last path component, or a full dotted path), "all-linear", or a RegExp matched against the whole path. */
  targets?: Targets | undefined;
  /** Only layers whose path has `layers.<i>.` with i in this list (PEFT's layers_to_transform). */
  layers?: readonly number[] | undefined;
  useDora?: boolean | undefined;
  useRslora?: boolean | undefined;
}

/** The settings an applied model carries; save writes them, load reads them back. */
export interface LoRAConfig {
  rank: number;
  alpha: number;
  dropout: number;
  /** The module paths that were wrapped, in model order. */
  paths: string[];
  /** What the user asked for, as PEFT records it (names, or a regex source). */
  targets: string[] | string;
  layers: number[] | null;
  useRslora: boolean;
  useDora: boolean;
}

/** The layers LoRA can wrap. */
type LinearLike = Linear | QuantizedLinear;

const isLinearLike = (m: Module): m is LinearLike => m instanceof Linear || m instanceof QuantizedLinear;

function dimsOf(m: LinearLike): [number, number] {
  return m instanceof Linear ? [m.weight.shape[1]!, m.weight.shape[0]!] : [m.inDims, m.outDims];
}

/** A float Linear holding weight (and bias), for a quantized layer that merge dequantizes. */
function floatLinear(weight: Tensor, bias: Tensor | undefined): Linear {
  const l = new Linear(1, 1, { bias: false });
  l.weight.dispose();
  l.weight = weight;
  if (bias) l.bias = bias;
  return l;
}

/** One factor of the update, a Module with a `weight` so the parameter path ends in `.weight` as PEFT's. */
export class LoRAFactor extends Module {
  constructor(public weight: Tensor) {
    super();
  }
}

/**
 * base(x) + s·(dropout(x) Aᵀ) Bᵀ, with A [r, in] and B [out, r]. With DoRA (a magnitude vector m
 * [out]), as PEFT computes it: base(x) + (m/‖W + sBA‖ − 1)·(x_d Wᵀ) + (m/‖W + sBA‖)·s·(x_d Aᵀ) Bᵀ,
 * x_d = dropout(x), the row norms taken as constants of the gradient (PEFT detaches them).
 */
export class LoRALinear extends Module {
  base_layer: LinearLike;
  lora_A: LoRAFactor;
  lora_B: LoRAFactor;
  lora_dropout: Dropout;
  /** DoRA's per-output magnitudes [out]; absent for plain LoRA. */
  lora_magnitude_vector?: Tensor;
  readonly scale: number;
  #merged = false;
  /** DoRA: the row norms at merge time, which unmerge divides back out. */
  #mergedNorm: Tensor | null = null;

  constructor(base: LinearLike, opts: { rank: number; alpha: number; dropout: number; useRslora: boolean; useDora?: boolean; key?: Tensor | undefined }) {
    super();
    const [inDims, outDims] = dimsOf(base);
    this.base_layer = base;
    // PEFT draws A as nn.Linear does (Kaiming-uniform with a = √5): U(±1/√in).
    const bound = 1 / Math.sqrt(inDims);
    this.lora_A = new LoRAFactor(init.uniform([opts.rank, inDims], { low: -bound, high: bound, key: opts.key }).eval());
    this.lora_B = new LoRAFactor(init.zeros([outDims, opts.rank]).eval());
    this.lora_dropout = new Dropout(opts.dropout);
    this.scale = opts.useRslora ? opts.alpha / Math.sqrt(opts.rank) : opts.alpha / opts.rank;
    // B is zero, so the magnitudes start as W's row norms and the layer starts as the base.
    if (opts.useDora) this.lora_magnitude_vector = this.#rowNorms().eval();
  }
  get rank(): number {
    return this.lora_A.weight.shape[0]!;
  }
  get merged(): boolean {
    return this.#merged;
  }
  get dora(): boolean {
    return this.lora_magnitude_vector !== undefined;
  }
  /** The update s·B·A [out, in] that merge adds to the base weight. */
  delta(): Tensor {
    return composite(() => ops.multiply(ops.matmul(this.lora_B.weight, this.lora_A.weight), this.scale));
  }
  #floatWeight(): Tensor {
    const b = this.base_layer;
    return b instanceof Linear ? b.weight : b.weight.dequantize();
  }
  /** ‖W + s·B·A‖ over each output row, outside the gradient. */
  #rowNorms(): Tensor {
    return composite(() => stopGradient(ops.sqrt(ops.sum(ops.square(ops.add(this.#floatWeight(), stopGradient(this.delta()))), 1))));
  }
  override forward(x: Tensor): Tensor {
    const y = this.base_layer.forward(x) as Tensor;
    if (this.#merged) return y;
    return composite(() => {
      const xd = this.lora_dropout.forward(x);
      const h = ops.matmul(xd, ops.transpose(this.lora_A.weight));
      const lora = ops.multiply(ops.matmul(h, ops.transpose(this.lora_B.weight)), this.scale);
      const m = this.lora_magnitude_vector;
      if (!m) return ops.add(y, lora);
      const k = ops.divide(m, this.#rowNorms());
      const plain = ops.matmul(xd, ops.transpose(this.#floatWeight()));
      return ops.add(ops.add(y, ops.multiply(plain, ops.subtract(k, 1))), ops.multiply(lora, k));
    });
  }
  /**
   * Folds the adapter into the base weight. A quantized base is dequantized to a float32 Linear
   * first (it cannot hold the sum in its blocks); unmerge leaves it float.
   */
  merge(path = ""): void {
    if (this.#merged) return;
    if (this.base_layer instanceof QuantizedLinear) {
      const q = this.base_layer;
      console.warn(`lora.merge: ${path || "a layer"} is quantized (${q.weight.format}); merging dequantizes it to float32 (${((q.inDims * q.outDims * 4) / 2 ** 20).toFixed(1)} MB)`);
      this.base_layer = floatLinear(q.weight.dequantize().eval(), q.bias);
      this.base_layer.freeze();
    }
    const base = this.base_layer;
    let merged = ops.add(base.weight, this.delta());
    if (this.lora_magnitude_vector) {
      this.#mergedNorm = this.#rowNorms().eval();
      merged = ops.multiply(merged, ops.expandDims(ops.divide(this.lora_magnitude_vector, this.#mergedNorm), 1));
    }
    const w = ops.astype(merged, base.weight.dtype).eval();
    base.weight.dispose();
    base.weight = w;
    this.#merged = true;
  }
  unmerge(): void {
    if (!this.#merged) return;
    const base = this.base_layer as Linear;
    let unscaled: Tensor = base.weight;
    if (this.lora_magnitude_vector && this.#mergedNorm) unscaled = ops.multiply(unscaled, ops.expandDims(ops.divide(this.#mergedNorm, this.lora_magnitude_vector), 1));
    const w = ops.astype(ops.subtract(unscaled, this.delta()), base.weight.dtype).eval();
    base.weight.dispose();
    base.weight = w;
    this.#mergedNorm?.dispose();
    this.#mergedNorm = null;
    this.#merged = false;
  }
}

const CONFIG = new WeakMap<Module, LoRAConfig>();

/** The LoRA settings apply or load gave this model, or undefined when it has no adapters. */
export function configOf(model: Module): LoRAConfig | undefined {
  return CONFIG.get(model);
}

/** Every wrapped layer of the model with its path. */
export function loraLayers(model: Module): [string, LoRALinear][] {
  return model.namedModules().filter((e): e is [string, LoRALinear] => e[1] instanceof LoRALinear);
}

function layerIndex(path: string): number | null {
  const m = /(?:^|\.)layers\.(\d+)\./.exec(`${path}.`);
  return m ? Number(m[1]) : null;
}

function matcher(targets: Targets): (path: string) => boolean {
  if (targets === "all-linear") return () => true;
  if (targets instanceof RegExp) {
    const full = new RegExp(`^(?:${targets.source})$`, targets.flags.replace(/[gy]/g, ""));
    return (p) => full.test(p);
  }
  if (!Array.isArray(targets) || targets.length === 0 || targets.some((t) => typeof t !== "string" || t === ""))
    throw new SmeltError(`lora.apply: targets must be "all-linear", a RegExp or a non-empty list of module names, got ${String(targets)}`);
  // PEFT's rule: a name matches the whole path or its trailing components.
  return (p) => targets.some((t) => p === t || p.endsWith(`.${t}`));
}

function positiveInt(what: string, v: unknown): number {
  if (!Number.isInteger(v) || (v as number) <= 0) throw new SmeltError(`lora.apply: ${what} must be a positive integer, got ${String(v)}`);
  return v as number;
}

/** The module a dotted path names, with its parent and the field (or list index) holding it. */
function locate(model: Module, path: string): { parent: Record<string, unknown>; key: string } {
  const parts = path.split(".");
  let at: Record<string, unknown> = model as unknown as Record<string, unknown>;
  for (let i = 0; i < parts.length - 1; i++) at = at[parts[i]!] as Record<string, unknown>;
  return { parent: at, key: parts[parts.length - 1]! };
}

/**
 * Wraps the model's matching linear layers in LoRALinear, freezes every other parameter, and
 * returns the number of trainable parameters. The output head (`lm_head`) is never a target of
 * "all-linear", as in PEFT.
 */
export function apply(model: Module, opts: LoRAOptions = {}): number {
  if (!(model instanceof Module)) throw new SmeltError("lora.apply: model must be an nn.Module");
  if (CONFIG.has(model)) throw new SmeltError("lora.apply: the model already has LoRA adapters");
  const rank = positiveInt("rank", opts.rank ?? 8);
  const alpha = opts.alpha ?? 16;
  if (typeof alpha !== "number" || !Number.isFinite(alpha) || alpha <= 0) throw new SmeltError(`lora.apply: alpha must be a positive number, got ${String(alpha)}`);
  const dropout = opts.dropout ?? 0;
  if (typeof dropout !== "number" || !(dropout >= 0 && dropout < 1)) throw new SmeltError(`lora.apply: dropout must be in [0, 1), got ${String(dropout)}`);
  const targets = opts.targets ?? ["q_proj", "v_proj"];
  const matches = matcher(targets);
  const layers = opts.layers === undefined ? null : [...opts.layers];
  if (layers && (layers.length === 0 || layers.some((l) => !Number.isInteger(l) || l < 0)))
    throw new SmeltError(`lora.apply: layers must be a non-empty list of layer indices, got [${layers}]`);
  const chosen = model.namedModules().filter(([path, m]) => {
    if (path === "" || !isLinearLike(m)) return false;
    if (targets === "all-linear" && /(?:^|\.)lm_head$/.test(path)) return false;
    if (!matches(path)) return false;
    if (layers) {
      const i = layerIndex(path);
      if (i === null || !layers.includes(i)) return false;
    }
    return true;
  });
  if (chosen.length === 0) {
    const shown = targets instanceof RegExp ? String(targets) : JSON.stringify(targets);
    throw new SmeltError(`lora.apply: no linear layer matches targets ${shown}${layers ? ` in layers [${layers}]` : ""}`);
  }
  model.freeze();
  for (const [path, m] of chosen) {
    const wrapped = new LoRALinear(m as LinearLike, { rank, alpha, dropout, useRslora: opts.useRslora ?? false, useDora: opts.useDora ?? false });
    const { parent, key } = locate(model, path);
    parent[key] = wrapped;
    wrapped.lora_A.unfreeze();
    wrapped.lora_B.unfreeze();
  }
  const paths = chosen.map(([p]) => p);
  const recorded = targets === "all-linear" ? paths : targets instanceof RegExp ? targets.source : [...targets];
  CONFIG.set(model, { rank, alpha, dropout, paths, targets: recorded, layers, useRslora: opts.useRslora ?? false, useDora: opts.useDora ?? false });
  return countTrainable(model);
}

export function countTrainable(model: Module): number {
  return model.namedParameters({ trainable: true }).reduce((n, [, t]) => n + t.size, 0);
}

/** Folds every adapter into its base weight; the model then runs at the base model's cost. */
export function merge(model: Module): void {
  const layers = loraLayers(model);
  if (layers.length === 0) throw new SmeltError("lora.merge: the model has no LoRA adapters");
  for (const [p, l] of layers) l.merge(p);
}

/** Takes merged adapters back out of the base weights (up to rounding in the base dtype). */
export function unmerge(model: Module): void {
  const layers = loraLayers(model);
  if (layers.length === 0) throw new SmeltError("lora.unmerge: the model has no LoRA adapters");
  for (const [, l] of layers) l.unmerge();
}
