/**
 * A decoder-only model's hyperparameters, read from GGUF metadata (`<arch>.*` keys) or from a
 * Hugging Face `config.json`, in one shape for both so the model never asks where it came from.
 */
import { SmeltError } from "../errors.ts";
import type { GGUFValue } from "../io/gguf.ts";

export const ARCHITECTURES = ["llama", "qwen2"] as const;
export type Architecture = (typeof ARCHITECTURES)[number];

/** How rotary frequencies are stretched for long contexts. */
export type RopeScaling =
  | { type: "linear"; factor: number }
  | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number };

export interface ModelConfig {
  architecture: Architecture;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  rmsNormEps: number;
  /** lm_head is the input embedding. */
  tieWordEmbeddings: boolean;
  /** q, k and v projections have biases (always for qwen2). */
  attentionBias: boolean;
  maxPositionEmbeddings: number | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
}

function isArchitecture(a: unknown): a is Architecture {
  return typeof a === "string" && (ARCHITECTURES as readonly string[]).includes(a);
}

function unknownArchitecture(op: string, file: string, arch: unknown): never {
  throw new SmeltError(`${op}: ${file}: architecture ${JSON.stringify(arch)} is not supported (smelt runs ${ARCHITECTURES.join(", ")})`);
}

/** Checks that the sizes make a model, naming the file when they do not. */
function checked(op: string, file: string, c: ModelConfig): ModelConfig {
  const ints: (keyof ModelConfig)[] = ["hiddenSize", "numLayers", "numHeads", "numKvHeads", "headDim", "intermediateSize", "vocabSize"];
  for (const k of ints) {
    const v = c[k];
    if (!Number.isInteger(v) || (v as number) <= 0) throw new SmeltError(`${op}: ${file}: ${k} must be a positive integer, got ${String(v)}`);
  }
  if (c.numHeads % c.numKvHeads !== 0) throw new SmeltError(`${op}: ${file}: ${c.numHeads} attention heads are not a multiple of ${c.numKvHeads} key/value heads`);
  if (c.headDim % 2 !== 0) throw new SmeltError(`${op}: ${file}: the head dimension ${c.headDim} must be even for rotary positions`);
  if (!(c.ropeTheta > 0)) throw new SmeltError(`${op}: ${file}: rope theta must be positive, got ${c.ropeTheta}`);
  if (!(c.rmsNormEps > 0)) throw new SmeltError(`${op}: ${file}: the RMS norm epsilon must be positive, got ${c.rmsNormEps}`);
  return c;
}

/** The config a GGUF file's metadata describes; `hasOutput`: whether it holds `output.weight` (untied head), `hasQBias` the q bias. */
export function configFromGGUF(file: string, meta: Record<string, GGUFValue>, tensors: { hasOutput: boolean; hasQBias: boolean }): ModelConfig {
  const op = "lm.load";
  const arch = meta["general.architecture"];
  if (!isArchitecture(arch)) unknownArchitecture(op, file, arch);
  const num = (key: string, fallback?: number): number => {
    const v = meta[`${arch}.${key}`];
    if (v === undefined && fallback !== undefined) return fallback;
    if (typeof v !== "number") throw new SmeltError(`${op}: ${file}: metadata ${arch}.${key} must be a number, got ${v === undefined ? "nothing" : JSON.stringify(String(v))}`);
    return v;
  };
  const hiddenSize = num("embedding_length");
  const numHeads = num("attention.head_count");
  const tokens = meta["tokenizer.ggml.tokens"];
  const id = (key: string): number | null => {
    const v = meta[`tokenizer.ggml.${key}`];
    return typeof v === "number" ? v : null;
  };
  const scalingType = meta[`${arch}.rope.scaling.type`];
  let ropeScaling: RopeScaling | null = null;
  if (scalingType === "linear") ropeScaling = { type: "linear", factor: num("rope.scaling.factor") };
  else if (scalingType !== undefined && scalingType !== "none") {
    throw new SmeltError(`${op}: ${file}: rope scaling ${JSON.stringify(scalingType)} is not supported (linear is; llama3's comes as rope_freqs.weight)`);
  }
  const eos = id("eos_token_id");
  return checked(op, file, {
    architecture: arch,
    hiddenSize,
    numLayers: num("block_count"),
    numHeads,
    numKvHeads: num("attention.head_count_kv", numHeads),
    headDim: num("attention.key_length", hiddenSize / numHeads),
    intermediateSize: num("feed_forward_length"),
    vocabSize: num("vocab_size", Array.isArray(tokens) ? tokens.length : NaN),
    ropeTheta: num("rope.freq_base", 10000),
    ropeScaling,
    rmsNormEps: num("attention.layer_norm_rms_epsilon"),
    tieWordEmbeddings: !tensors.hasOutput,
    attentionBias: arch === "qwen2" || tensors.hasQBias,
    maxPositionEmbeddings: typeof meta[`${arch}.context_length`] === "number" ? (meta[`${arch}.context_length`] as number) : null,
    bosTokenId: id("bos_token_id"),
    eosTokenIds: eos === null ? [] : [eos],
  });
}

/** The config of a Hugging Face `config.json` (already parsed). */
export function configFromHF(file: string, json: Record<string, unknown>): ModelConfig {
  const op = "lm.load";
  const arch = json.model_type;
  if (!isArchitecture(arch)) unknownArchitecture(op, file, arch);
  const num = (key: string, fallback?: number): number => {
    const v = json[key];
    if ((v === undefined || v === null) && fallback !== undefined) return fallback;
    if (typeof v !== "number") throw new SmeltError(`${op}: ${file}: ${key} must be a number, got ${JSON.stringify(v) ?? "nothing"}`);
    return v;
  };
  const hiddenSize = num("hidden_size");
  const numHeads = num("num_attention_heads");
  const eos = json.eos_token_id;
  // transformers 5 writes rope_parameters (theta and scaling together) where 4 wrote rope_theta and rope_scaling.
  const rope = (json.rope_parameters ?? null) as Record<string, unknown> | null;
  const theta = json.rope_theta ?? rope?.rope_theta;
  return checked(op, file, {
    architecture: arch,
    hiddenSize,
    numLayers: num("num_hidden_layers"),
    numHeads,
    numKvHeads: num("num_key_value_heads", numHeads),
    headDim: num("head_dim", hiddenSize / numHeads),
    intermediateSize: num("intermediate_size"),
    vocabSize: num("vocab_size"),
    ropeTheta: theta === undefined ? 10000 : typeof theta === "number" ? theta : num("rope_theta"),
    ropeScaling: hfRopeScaling(op, file, json.rope_scaling ?? rope),
    rmsNormEps: num("rms_norm_eps", 1e-6),
    tieWordEmbeddings: json.tie_word_embeddings === true,
    attentionBias: arch === "qwen2" || json.attention_bias === true,
    maxPositionEmbeddings: typeof json.max_position_embeddings === "number" ? json.max_position_embeddings : null,
    bosTokenId: typeof json.bos_token_id === "number" ? json.bos_token_id : null,
    eosTokenIds: typeof eos === "number" ? [eos] : Array.isArray(eos) ? eos.filter((e): e is number => typeof e === "number") : [],
  });
}

function hfRopeScaling(op: string, file: string, s: unknown): RopeScaling | null {
  if (s === undefined || s === null) return null;
  const r = s as Record<string, unknown>;
  const type = r.rope_type ?? r.type;
  const n = (k: string): number => {
    if (typeof r[k] !== "number") throw new SmeltError(`${op}: ${file}: rope_scaling.${k} must be a number`);
    return r[k] as number;
  };
  if (type === "default") return null;
  if (type === "linear") return { type: "linear", factor: n("factor") };
  if (type === "llama3") {
    return {
      type: "llama3",
      factor: n("factor"),
      lowFreqFactor: n("low_freq_factor"),
      highFreqFactor: n("high_freq_factor"),
      originalMaxPositionEmbeddings: n("original_max_position_embeddings"),
    };
  }
  throw new SmeltError(`${op}: ${file}: rope scaling ${JSON.stringify(type)} is not supported (linear and llama3 are)`);
}

/**
 * The rotary inverse frequencies, one per pair of features: theta^(-2i/d), divided by the scaling
 * (llama3 stretches only the low frequencies, blending across the middle band), and by per-pair
 * factors when the file gives them (GGUF's rope_freqs.weight).
 */
export function ropeInvFreq(c: ModelConfig, factors?: ArrayLike<number>): Float64Array {
  const half = c.headDim / 2;
  const out = new Float64Array(half);
  for (let i = 0; i < half; i++) out[i] = Math.pow(c.ropeTheta, (-2 * i) / c.headDim);
  const s = c.ropeScaling;
  if (s?.type === "linear") for (let i = 0; i < half; i++) out[i]! /= s.factor;
  else if (s?.type === "llama3") {
    const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
    const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const f = out[i]!;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > lowWavelen) out[i] = f / s.factor;
      else if (wavelen >= highWavelen) {
        const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        out[i] = (1 - smooth) * (f / s.factor) + smooth * f;
      }
    }
  }
  if (factors) for (let i = 0; i < half; i++) out[i]! /= factors[i]!;
  return out;
}
