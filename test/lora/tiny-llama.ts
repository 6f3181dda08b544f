// A tiny Llama with transformers' module paths (model.layers.i.self_attn.q_proj, ..., lm_head),
// so LoRA tests and PEFT parity run without the real model. Weights come from a safetensors file
// written by scripts/reference/lora.py from transformers' LlamaForCausalLM, or from a seed.
import * as sm from "../../src/index.ts";

const { Module, Linear, Embedding, RMSNorm } = sm.nn;

export interface TinyConfig {
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  eps: number;
  ropeTheta: number;
}
export const TINY: TinyConfig = { vocab: 64, hidden: 32, intermediate: 48, layers: 2, heads: 4, eps: 1e-6, ropeTheta: 10000 };

class Attention extends Module {
  q_proj: sm.nn.Linear;
  k_proj: sm.nn.Linear;
  v_proj: sm.nn.Linear;
  o_proj: sm.nn.Linear;
  constructor(readonly c: TinyConfig) {
    super();
    const h = c.hidden;
    this.q_proj = new Linear(h, h, { bias: false });
    this.k_proj = new Linear(h, h, { bias: false });
    this.v_proj = new Linear(h, h, { bias: false });
    this.o_proj = new Linear(h, h, { bias: false });
  }
  override forward(x: sm.Tensor): sm.Tensor {
    const [b, l] = x.shape as [number, number];
    const hd = this.c.hidden / this.c.heads;
    const heads = (t: sm.Tensor) => sm.transpose(sm.reshape(t, [b, l, this.c.heads, hd]), [0, 2, 1, 3]);
    const q = sm.fast.rope(heads(this.q_proj.forward(x)), hd, { base: this.c.ropeTheta });
    const k = sm.fast.rope(heads(this.k_proj.forward(x)), hd, { base: this.c.ropeTheta });
    const v = heads(this.v_proj.forward(x));
    const o = sm.fast.scaledDotProductAttention(q, k, v, { mask: "causal" });
    return this.o_proj.forward(sm.reshape(sm.transpose(o, [0, 2, 1, 3]), [b, l, this.c.hidden]));
  }
}

class MLP extends Module {
  gate_proj: sm.nn.Linear;
  up_proj: sm.nn.Linear;
  down_proj: sm.nn.Linear;
  constructor(c: TinyConfig) {
    super();
    this.gate_proj = new Linear(c.hidden, c.intermediate, { bias: false });
    this.up_proj = new Linear(c.hidden, c.intermediate, { bias: false });
    this.down_proj = new Linear(c.intermediate, c.hidden, { bias: false });
  }
  override forward(x: sm.Tensor): sm.Tensor {
    return this.down_proj.forward(sm.multiply(sm.nn.silu(this.gate_proj.forward(x)), this.up_proj.forward(x)));
  }
}

class Block extends Module {
  input_layernorm: sm.nn.RMSNorm;
  self_attn: Attention;
  post_attention_layernorm: sm.nn.RMSNorm;
  mlp: MLP;
  constructor(c: TinyConfig) {
    super();
    this.input_layernorm = new RMSNorm(c.hidden, c.eps);
    this.self_attn = new Attention(c);
    this.post_attention_layernorm = new RMSNorm(c.hidden, c.eps);
    this.mlp = new MLP(c);
  }
  override forward(x: sm.Tensor): sm.Tensor {
    const h = sm.add(x, this.self_attn.forward(this.input_layernorm.forward(x)) as sm.Tensor);
    return sm.add(h, this.mlp.forward(this.post_attention_layernorm.forward(h)));
  }
}

class Body extends Module {
  embed_tokens: sm.nn.Embedding;
  layers: Block[];
  norm: sm.nn.RMSNorm;
  constructor(c: TinyConfig) {
    super();
    this.embed_tokens = new Embedding(c.vocab, c.hidden);
    this.layers = Array.from({ length: c.layers }, () => new Block(c));
    this.norm = new RMSNorm(c.hidden, c.eps);
  }
}

export class TinyLlama extends Module {
  model: Body;
  lm_head: sm.nn.Linear;
  constructor(readonly config: TinyConfig = TINY) {
    super();
    this.model = new Body(config);
    this.lm_head = new Linear(config.hidden, config.vocab, { bias: false });
  }
  /** ids [B, L] (int32) → logits [B, L, vocab]. */
  override forward(ids: sm.Tensor): sm.Tensor {
    let h = this.model.embed_tokens.forward(ids);
    for (const layer of this.model.layers) h = layer.forward(h);
    return this.lm_head.forward(this.model.norm.forward(h));
  }
}

/** A tiny Llama with seeded random weights (for tests that need no reference). */
export function seededTiny(seed = 1): TinyLlama {
  sm.random.seed(seed);
  const m = new TinyLlama();
  sm.eval(m.parameters());
  return m;
}
