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
import { DEQUANTIZE_ROWS, QuantizedTensor } from "../tensor/quantized.ts";
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
    /** The source's tensors are handed over: the builder may join them and release the originals. */
    readonly join: boolean,
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
  /**
   * Projections of one input, as linear(); when their weights are quantized in one format and
   * handed over, also one QuantizedLinear over their rows stacked, so that a step runs one matmul
   * kernel for all of them. Each projection's weight is then a view of the joined blocks (no copy).
   */
  projections(prefixes: readonly string[], inDims: number, outs: readonly number[], bias: boolean): { parts: AnyLinear[]; joined?: Joined } {
    const ws = prefixes.map((p, i) => this.tensor(`${p}.weight`, [outs[i]!, inDims]));
    const first = ws[0];
    if (!this.join || !(first instanceof QuantizedTensor) || !ws.every((w) => w instanceof QuantizedTensor && w.format === first.format))
      return { parts: prefixes.map((p, i) => this.linear(p, inDims, outs[i]!, bias)) };
    const qs = ws as QuantizedTensor[];
    const blocks = concatenate(qs.map((w) => w.blocks));
    const biases = bias ? prefixes.map((p, i) => this.float(`${p}.bias`, [outs[i]!])) : undefined;
    const joinedBias = biases && concatenate(biases);
    evalTensors(blocks, ...(joinedBias ? [joinedBias] : []));
    for (const w of qs) w.dispose();
    let at = 0;
    const parts = qs.map((w, i) => {
      const view = blocks.slice({ start: at, stop: at + w.nbytes });
      at += w.nbytes;
      return new QuantizedLinear(QuantizedTensor.fromBlocks(view, w.shape, w.format), biases?.[i]);
    });
    evalTensors(...parts.map((l) => l.weight.blocks));
    const total = outs.reduce((a, b) => a + b, 0);
    return { parts, joined: { linear: new QuantizedLinear(QuantizedTensor.fromBlocks(blocks, [total, inDims], first.format), joinedBias), parts, outs } };
  }
  norm(name: string, dims: number, eps: number): RMSNorm {
    const n = new RMSNorm(dims, eps);
    n.weight = this.float(name, [dims]);
    return n;
  }
}

/** Projections of one input joined into one quantized matmul (Builder.projections). */
interface Joined {
  linear: QuantizedLinear;
  /** The layers it stands for: while a module still holds them (no adapter replaced one), it computes them. */
  parts: readonly AnyLinear[];
  outs: readonly number[];
}

/** The projections of x, by the joined matmul when `current` are still the layers it was built from. */
function project(x: Tensor, current: readonly AnyLinear[], joined: Joined | undefined): Tensor[] {
  if (!joined || current.some((l, i) => l !== joined.parts[i])) return current.map((l) => l.forward(x));
  const y = joined.linear.forward(x);
  let at = 0;
  return joined.outs.map((n) => {
    const part = y.slice("...", { start: at, stop: at + n });
    at += n;
    return part;
  });
}

/**
 * What every layer needs of a pass's positions. cos and sin of their rotary angles [T, headDim],
 * halves repeated as rotate-half pairs them, sin's first half negated (the sign rotate-half gives
 * x's second half); mask: the causal mask [T, offset + T], 0 or -inf ("causal" past
 * MASK_TABLE elements); for one position, the mask of the cache's window [1, window] (-inf past
 * the positions held), or null without a cache.
 */
interface Rotary {
  cos: Tensor;
  sin: Tensor;
  mask: Tensor | "causal" | null;
}

/** The most elements of a causal mask uploaded as a table (16 MB of float32). */
const MASK_TABLE = 1 << 22;

function rotate(x: Tensor, r: Rotary): Tensor {
  const D = x.shape[x.ndim - 1]!;
  const half = D / 2;
  const lead = x.shape.slice(0, -1);
  // rotate_half: [-x2, x1], the minus in r.sin
  const partner = x.reshape([...lead, 2, half]).slice("...", { step: -1 }, {}).reshape([...lead, D]);
  return x.mul(r.cos).add(partner.mul(r.sin));
}

export class Attention extends Module {
  q_proj: AnyLinear;
  k_proj: AnyLinear;
  v_proj: AnyLinear;
  o_proj: AnyLinear;
  readonly #qkv: Joined | undefined;
  constructor(
    readonly config: ModelConfig,
    b: Builder,
    prefix: string,
  ) {
    super();
    const { hiddenSize: H, numHeads, numKvHeads, headDim, attentionBias } = config;
    const names = ["q_proj", "k_proj", "v_proj"].map((n) => `${prefix}.${n}`);
    const { parts, joined } = b.projections(names, H, [numHeads * headDim, numKvHeads * headDim, numKvHeads * headDim], attentionBias);
    [this.q_proj, this.k_proj, this.v_proj] = parts as [AnyLinear, AnyLinear, AnyLinear];
    this.#qkv = joined;
    this.o_proj = b.linear(`${prefix}.o_proj`, numHeads * headDim, H, false);
  }
  /** kv, when given, receives the cache buffers this layer's keys and values are written into (KVCache.extend's stored). */
  override forward(x: Tensor, rot: Rotary, cache?: KVCache, layer = 0, kv?: [Tensor, Tensor][]): Tensor {
    const [B, T] = x.shape as [number, number];
    const { numHeads, numKvHeads, headDim } = this.config;
    const heads = (y: Tensor, n: number) => y.reshape([B, T, n, headDim]).transpose([0, 2, 1, 3]);
    const [qx, kx, vx] = project(x, [this.q_proj, this.k_proj, this.v_proj], this.#qkv) as [Tensor, Tensor, Tensor];
    const q = rotate(heads(qx, numHeads), rot);
    let k = rotate(heads(kx, numKvHeads), rot);
    let v = heads(vx, numKvHeads);
    if (cache) {
      const all = cache.extend(layer, k, v);
      [k, v] = [all.keys, all.values];
      kv?.push(all.stored);
    }
    const o = fast.scaledDotProductAttention(q, k, v, { mask: rot.mask });
    return this.o_proj.forward(o.transpose([0, 2, 1, 3]).reshape([B, T, numHeads * headDim]));
  }
}

export class MLP extends Module {
  gate_proj: AnyLinear;
  up_proj: AnyLinear;
  down_proj: AnyLinear;
  readonly #gateUp: Joined | undefined;
  constructor(config: ModelConfig, b: Builder, prefix: string) {
    super();
    const { hiddenSize: H, intermediateSize: I } = config;
    const { parts, joined } = b.projections([`${prefix}.gate_proj`, `${prefix}.up_proj`], H, [I, I], false);
    [this.gate_proj, this.up_proj] = parts as [AnyLinear, AnyLinear];
    this.#gateUp = joined;
    this.down_proj = b.linear(`${prefix}.down_proj`, I, H, false);
  }
  override forward(x: Tensor): Tensor {
    const [gate, up] = project(x, [this.gate_proj, this.up_proj], this.#gateUp) as [Tensor, Tensor];
    return this.down_proj.forward(ops.silu(gate).mul(up));
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
  /** Rotary frequencies, float32 as transformers keeps them. */
  readonly #invFreq: Float32Array;

  /**
   * From weights under transformers' names; `file` names the source in errors. ropeFactors: GGUF's
   * per-pair frequency divisors. handOver: the weights are the model's (a loader's own tensors),
   * so quantized projections of one input are joined into one weight and the originals disposed.
   */
  constructor(
    readonly config: ModelConfig,
    weights: WeightSource,
    opts: { file?: string | undefined; ropeFactors?: ArrayLike<number> | undefined; handOver?: boolean | undefined } = {},
  ) {
    super();
    const b = new Builder(opts.file ?? "weights", weights, opts.handOver ?? false);
    this.model = new DecoderStack(config, b);
    if (!config.tieWordEmbeddings) this.lm_head = b.linear("lm_head", config.hiddenSize, config.vocabSize, false);
    this.#invFreq = Float32Array.from(ropeInvFreq(config, opts.ropeFactors));
  }

  /** An empty key/value cache for this model, one entry per layer. */
  makeCache(): KVCache {
    return new KVCache(this.config.numLayers);
  }

  /**
   * The tables are computed here and uploaded: computed in the graph, every element of q and k
   * evaluated a cosine and a sine, and every score its mask's index arithmetic (divisions by
   * runtime sizes), which made the softmax the costliest kernel of a long prompt. The angle is
   * float32 position times float32 frequency, rounded once, as in transformers.
   */
  #rotary(offset: number, T: number, window?: number): Rotary {
    const inv = this.#invFreq;
    const half = inv.length, D = 2 * half;
    const cos = new Float32Array(T * D), sin = new Float32Array(T * D);
    for (let t = 0; t < T; t++) {
      const pos = Math.fround(offset + t);
      for (let i = 0; i < half; i++) {
        const angle = Math.fround(pos * inv[i]!);
        const c = Math.cos(angle), s = Math.sin(angle);
        cos[t * D + i] = cos[t * D + half + i] = c;
        sin[t * D + i] = -s;
        sin[t * D + half + i] = s;
      }
    }
    let mask: Tensor | "causal" | null = T > 1 ? "causal" : null;
    if (T === 1 && window !== undefined) {
      const m = new Float32Array(window);
      m.fill(-Infinity, offset + 1);
      mask = ops.fromBytes(m, [1, window], "float32");
    }
    // Past MASK_TABLE elements the table's memory outweighs the arithmetic it saves.
    if (T > 1 && T * (offset + T) <= MASK_TABLE) {
      const S = offset + T;
      const m = new Float32Array(T * S);
      for (let t = 0; t < T; t++) m.fill(-Infinity, t * S + offset + t + 1, (t + 1) * S);
      mask = ops.fromBytes(m, [T, S], "float32");
    }
    return { cos: ops.fromBytes(cos, [T, D], "float32"), sin: ops.fromBytes(sin, [T, D], "float32"), mask };
  }

  /**
   * lastOnly: logits for the last position only ([B, 1, vocab]), all a generation's prompt pass
   * needs. evaluate: false leaves the logits and the cache's new entries lazy, for the caller to
   * evaluate together with what it computes from them (a generation step's sampled token), in one
   * evaluation, before the next call.
   */
  override forward(tokens: Tensor, cache?: KVCache, opts: { lastOnly?: boolean | undefined; evaluate?: boolean | undefined } = {}): Tensor {
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
      const rot = this.#rotary(cache?.offset ?? 0, T, cache?.window(T));
      const kv: [Tensor, Tensor][] = [];
      let h = this.model.embed_tokens.forward(tokens);
      // An evaluation keeps its intermediates to its end, and quantized layers over many rows
      // make a float copy of their weight: with a cache (evaluated below anyway) a long input is
      // evaluated a layer at a time, so one layer's copies exist at once, not the whole model's.
      const stepwise = cache !== undefined && B * T >= DEQUANTIZE_ROWS;
      this.model.layers.forEach((layer, i) => {
        h = layer.forward(h, rot, cache, i, kv);
        if (stepwise) evalTensors(h);
      });
      if (opts.lastOnly && T > 1) h = h.slice({}, { start: T - 1 });
      h = this.model.norm.forward(h);
      return { logits: this.lm_head ? this.lm_head.forward(h) : this.model.embed_tokens.asLinear(h), kv };
    });
    if (cache) {
      cache.update(kv, T, B);
      if (opts.evaluate !== false) evalTensors(logits, ...cache.tensors());
    }
    return logits;
  }
}
