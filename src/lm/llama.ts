/**
 * The Llama decoder (and Qwen2, which adds q/k/v biases): module paths are transformers' so that
 * adapter and checkpoint keys map one to one. Built from named weights, never initialised at random.
 */
import { SmeltError } from "../errors.ts";
import { Module } from "../nn/module.ts";
import { Embedding, Linear, RMSNorm } from "../nn/layers.ts";
import { QuantizedEmbedding, QuantizedLinear } from "../nn/quantized.ts";
import * as fast from "../tensor/fast.ts";
import * as ops from "../tensor/ops.ts";
import { concatenate } from "../tensor/ops-structure.ts";
import { QuantizedTensor } from "../tensor/quantized.ts";
import { evalTensors, Tensor, tidy } from "../tensor/tensor.ts";
import { KVCache } from "./cache.ts";
import { type ModelConfig, ropeInvFreq } from "./config.ts";

export type AnyLinear = Linear | QuantizedLinear;
/** A weight as a loader hands it over: float, or quantized blocks. */
export type Weight = Tensor | QuantizedTensor;
/** The weight of a transformers name, or undefined when the file has none. */
export type WeightSource = (name: string) => Weight | undefined;

/** Builds layers from a weight source, checking each tensor's presence and shape against the config. */
class Builder {
  constructor(
    readonly file: string,
    readonly get: WeightSource,
  ) {}
  tensor(name: string, shape: readonly number[]): Weight {
    const w = this.get(name);
    if (w === undefined) throw new SmeltError(`lm.load: ${this.file}: missing tensor ${name}`);
    if (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i]))
      throw new SmeltError(`lm.load: ${this.file}: tensor ${name} has shape [${w.shape}], the config needs [${shape}]`);
    return w;
  }
  float(name: string, shape: readonly number[]): Tensor {
    const w = this.tensor(name, shape);
    return w instanceof QuantizedTensor ? w.dequantize() : w;
  }
  linear(prefix: string, inDims: number, outDims: number, bias: boolean): AnyLinear {
    const w = this.tensor(`${prefix}.weight`, [outDims, inDims]);
    const b = bias ? this.float(`${prefix}.bias`, [outDims]) : undefined;
    if (w instanceof QuantizedTensor) return new QuantizedLinear(w, b);
    const l = new Linear(inDims, outDims, { bias });
    l.weight = w;
    if (b) l.bias = b;
    return l;
  }
  norm(name: string, dims: number, eps: number): RMSNorm {
    const n = new RMSNorm(dims, eps);
    n.weight = this.float(name, [dims]);
    return n;
  }
}

/** cos and sin of every position's angles, [T, headDim], halves repeated as rotate-half pairs them. */
interface Rotary {
  cos: Tensor;
  sin: Tensor;
}

function rotate(x: Tensor, r: Rotary): Tensor {
  const D = x.shape[x.ndim - 1]!;
  const half = D / 2;
  const lead = x.shape.slice(0, -1);
  // rotate_half: [-x2, x1]
  const partner = x.reshape([...lead, 2, half]).slice("...", { step: -1 }, {}).reshape([...lead, D]);
  const sign = ops.where(ops.less(ops.arange(D), half), -1, 1).astype("float32");
  return x.mul(r.cos).add(partner.mul(r.sin).mul(sign));
}

export class Attention extends Module {
  q_proj: AnyLinear;
  k_proj: AnyLinear;
  v_proj: AnyLinear;
  o_proj: AnyLinear;
  constructor(
    readonly config: ModelConfig,
    b: Builder,
    prefix: string,
  ) {
    super();
    const { hiddenSize: H, numHeads, numKvHeads, headDim, attentionBias } = config;
    this.q_proj = b.linear(`${prefix}.q_proj`, H, numHeads * headDim, attentionBias);
    this.k_proj = b.linear(`${prefix}.k_proj`, H, numKvHeads * headDim, attentionBias);
    this.v_proj = b.linear(`${prefix}.v_proj`, H, numKvHeads * headDim, attentionBias);
    this.o_proj = b.linear(`${prefix}.o_proj`, numHeads * headDim, H, false);
  }
  /** kv, when given, receives this layer's keys and values (the cache's with the new ones appended). */
  override forward(x: Tensor, rot: Rotary, cache?: KVCache, layer = 0, kv?: [Tensor, Tensor][]): Tensor {
    const [B, T] = x.shape as [number, number];
    const { numHeads, numKvHeads, headDim } = this.config;
    const heads = (y: Tensor, n: number) => y.reshape([B, T, n, headDim]).transpose([0, 2, 1, 3]);
    const q = rotate(heads(this.q_proj.forward(x), numHeads), rot);
    let k = rotate(heads(this.k_proj.forward(x), numKvHeads), rot);
    let v = heads(this.v_proj.forward(x), numKvHeads);
    if (cache) {
      [k, v] = cache.extend(layer, k, v);
      kv?.push([k, v]);
    }
    // One new token sees every cached one: no mask needed.
    const o = fast.scaledDotProductAttention(q, k, v, { mask: T === 1 ? null : "causal" });
    return this.o_proj.forward(o.transpose([0, 2, 1, 3]).reshape([B, T, numHeads * headDim]));
  }
}

export class MLP extends Module {
  gate_proj: AnyLinear;
  up_proj: AnyLinear;
  down_proj: AnyLinear;
  constructor(config: ModelConfig, b: Builder, prefix: string) {
    super();
    const { hiddenSize: H, intermediateSize: I } = config;
    this.gate_proj = b.linear(`${prefix}.gate_proj`, H, I, false);
    this.up_proj = b.linear(`${prefix}.up_proj`, H, I, false);
    this.down_proj = b.linear(`${prefix}.down_proj`, I, H, false);
  }
  override forward(x: Tensor): Tensor {
    return this.down_proj.forward(ops.silu(this.gate_proj.forward(x)).mul(this.up_proj.forward(x)));
  }
}

export class DecoderLayer extends Module {
  self_attn: Attention;
  mlp: MLP;
  input_layernorm: RMSNorm;
  post_attention_layernorm: RMSNorm;
  constructor(config: ModelConfig, b: Builder, prefix: string) {
    super();
    this.self_attn = new Attention(config, b, `${prefix}.self_attn`);
    this.mlp = new MLP(config, b, `${prefix}.mlp`);
    this.input_layernorm = b.norm(`${prefix}.input_layernorm.weight`, config.hiddenSize, config.rmsNormEps);
    this.post_attention_layernorm = b.norm(`${prefix}.post_attention_layernorm.weight`, config.hiddenSize, config.rmsNormEps);
  }
  override forward(x: Tensor, rot: Rotary, cache?: KVCache, layer = 0, kv?: [Tensor, Tensor][]): Tensor {
    const h = x.add(this.self_attn.forward(this.input_layernorm.forward(x), rot, cache, layer, kv));
    return h.add(this.mlp.forward(this.post_attention_layernorm.forward(h)));
  }
}

/** transformers' `LlamaModel`: the embedding, the decoder layers and the final norm. */
export class DecoderStack extends Module {
  embed_tokens: Embedding | QuantizedEmbedding;
  layers: DecoderLayer[];
  norm: RMSNorm;
  constructor(config: ModelConfig, b: Builder) {
    super();
    const { vocabSize, hiddenSize } = config;
    const emb = b.tensor("model.embed_tokens.weight", [vocabSize, hiddenSize]);
    if (emb instanceof QuantizedTensor) this.embed_tokens = new QuantizedEmbedding(emb);
    else {
      this.embed_tokens = new Embedding(vocabSize, hiddenSize);
      this.embed_tokens.weight = emb;
    }
    this.layers = Array.from({ length: config.numLayers }, (_, i) => new DecoderLayer(config, b, `model.layers.${i}`));
    this.norm = b.norm("model.norm.weight", hiddenSize, config.rmsNormEps);
  }
}

/**
 * A causal language model: `forward(tokens, cache?)` maps int32 token ids [B, T] to float32
 * logits [B, T, vocab]. With a cache, positions continue after the tokens it holds, and the
 * call evaluates the logits together with the cache's new keys and values (a cache holding
 * unevaluated graphs would grow one graph across every step of a generation).
 */
export class LlamaModel extends Module {
  model: DecoderStack;
  lm_head?: AnyLinear;
  readonly #invFreq: Tensor;

  /** From weights under transformers' names; `file` names the source in errors. ropeFactors: GGUF's per-pair frequency divisors. */
  constructor(
    readonly config: ModelConfig,
    weights: WeightSource,
    opts: { file?: string; ropeFactors?: ArrayLike<number> | undefined } = {},
  ) {
    super();
    const b = new Builder(opts.file ?? "weights", weights);
    this.model = new DecoderStack(config, b);
    if (!config.tieWordEmbeddings) this.lm_head = b.linear("lm_head", config.hiddenSize, config.vocabSize, false);
    const inv = ropeInvFreq(config, opts.ropeFactors);
    this.#invFreq = ops.array(Array.from(inv), "float32").reshape([1, inv.length]);
    evalTensors(this.#invFreq);
  }

  /** An empty key/value cache for this model, one entry per layer. */
  makeCache(): KVCache {
    return new KVCache(this.config.numLayers);
  }

  #rotary(offset: number, T: number): Rotary {
    const pos = ops.arange(T).astype("float32").add(offset).reshape([T, 1]);
    const angle = pos.mul(this.#invFreq);
    const both = (t: Tensor) => concatenate([t, t], -1);
    return { cos: both(ops.cos(angle)), sin: both(ops.sin(angle)) };
  }

  override forward(tokens: Tensor, cache?: KVCache): Tensor {
    const op = "LlamaModel.forward";
    if (!(tokens instanceof Tensor)) throw new SmeltError(`${op}: tokens must be a Tensor of int32 ids [B, T]`);
    if (tokens.ndim !== 2 || tokens.dtype !== "int32") throw new SmeltError(`${op}: tokens must be int32 of shape [B, T], got ${tokens.dtype} [${tokens.shape}]`);
    if (cache !== undefined && !(cache instanceof KVCache && cache.numLayers === this.config.numLayers))
      throw new SmeltError(`${op}: cache must be a KVCache from this model's makeCache()`);
    const [B, T] = tokens.shape as [number, number];
    if (T === 0) throw new SmeltError(`${op}: tokens must hold at least one position, got [${tokens.shape}]`);
    if (cache && cache.offset > 0 && cache.batch !== B) throw new SmeltError(`${op}: the cache holds a batch of ${cache.batch}, tokens have ${B}`);
    // The intermediates' handles go with the scope, so their memory goes back as soon as the
    // graph is evaluated rather than when the collector runs.
    const { logits, kv } = tidy(() => {
      const rot = this.#rotary(cache?.offset ?? 0, T);
      const kv: [Tensor, Tensor][] = [];
      let h = this.model.embed_tokens.forward(tokens);
      this.model.layers.forEach((layer, i) => (h = layer.forward(h, rot, cache, i, kv)));
      h = this.model.norm.forward(h);
      return { logits: this.lm_head ? this.lm_head.forward(h) : this.model.embed_tokens.asLinear(h), kv };
    });
    if (cache) {
      cache.update(kv, T, B);
      evalTensors(logits, ...cache.tensors());
    }
    return logits;
  }
}
