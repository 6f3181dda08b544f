/**
 * sm.lm.load: a model, its tokenizer and its config from a GGUF file or a Hugging Face folder
 * (config.json, model.safetensors or a sharded index, tokenizer.json). GGUF tensors are renamed
 * to transformers' names and llama.cpp's reordering of Llama's q/k rows is undone, so the model
 * sees the same weights whichever file it came from.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { SmeltError } from "../errors.ts";
import { loadGGUF } from "../io/gguf.ts";
import { loadSafetensors } from "../io/safetensors.ts";
import { clearCache } from "../exec/memory.ts";
import { QuantizedTensor } from "../tensor/quantized.ts";
import { evalTensors, Tensor, tidy } from "../tensor/tensor.ts";
import { configFromGGUF, configFromHF, type ModelConfig } from "./config.ts";
import { LlamaModel, type Weight } from "./llama.ts";
import { Tokenizer } from "./tokenizer.ts";

export interface LoadOptions {
  /** Float32 weights instead of quantized blocks (and instead of float16/bfloat16). */
  dequantize?: boolean | undefined;
}

export interface LoadedModel {
  model: LlamaModel;
  tokenizer: Tokenizer;
  config: ModelConfig;
}

/** GGUF's per-layer tensor names and transformers' (`blk.N.` becomes `model.layers.N.`). */
const GGUF_LAYER_NAMES: Record<string, string> = {
  attn_q: "self_attn.q_proj",
  attn_k: "self_attn.k_proj",
  attn_v: "self_attn.v_proj",
  attn_output: "self_attn.o_proj",
  ffn_gate: "mlp.gate_proj",
  ffn_up: "mlp.up_proj",
  ffn_down: "mlp.down_proj",
  attn_norm: "input_layernorm",
  ffn_norm: "post_attention_layernorm",
};
const GGUF_NAMES: Record<string, string> = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
};

/** transformers' name of a GGUF tensor, or undefined for one the model does not use. */
export function hfName(gguf: string): string | undefined {
  if (GGUF_NAMES[gguf]) return GGUF_NAMES[gguf];
  const m = /^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$/.exec(gguf);
  const part = m && GGUF_LAYER_NAMES[m[2]!];
  return part ? `model.layers.${m![1]}.${part}.${m![3]}` : undefined;
}

/**
 * Undoes llama.cpp's reordering of a Llama q or k projection: within each head it stores the rows
 * of the two rotary halves interleaved (row 2i + j holds half j's row i), where transformers keeps
 * the halves apart. Whole rows move, so quantized rows move as their bytes. Returns a computed tensor.
 */
export function unpermuteRows<W extends Weight>(w: W, heads: number): W {
  const rows = w.shape[0]!;
  if (rows % heads !== 0 || (rows / heads) % 2 !== 0) throw new SmeltError(`lm.load: ${rows} rows do not split into ${heads} heads of an even size`);
  const half = rows / heads / 2;
  if (w instanceof QuantizedTensor) {
    const rowBytes = w.nbytes / rows;
    const blocks = evaluated(() => w.blocks.reshape([heads, half, 2, rowBytes]).transpose([0, 2, 1, 3]).reshape([w.nbytes]));
    return QuantizedTensor.fromBlocks(blocks, w.shape, w.format) as W;
  }
  const t = w as Tensor;
  const rest = t.shape.slice(1);
  return evaluated(() => t.reshape([heads, half, 2, ...rest]).swapaxes(1, 2).reshape(t.shape)) as W;
}

/**
 * make()'s tensor, evaluated, with the views made on the way disposed: left to the collector,
 * they would hold their source's buffer after the caller disposes it, past load's clearCache.
 */
function evaluated(make: () => Tensor): Tensor {
  return tidy(() => {
    const t = make();
    evalTensors(t);
    return t;
  });
}

function asFloat32(w: Tensor): Tensor {
  return w.dtype === "float32" ? w : w.astype("float32");
}

function loadFromGGUF(path: string, opts: LoadOptions): LoadedModel {
  const g = loadGGUF(path);
  const config = configFromGGUF(path, g.metadata, {
    hasOutput: "output.weight" in g.tensors,
    hasQBias: "blk.0.attn_q.bias" in g.tensors,
  });
  const weights = new Map<string, Weight>();
  const made: Tensor[] = [];
  for (const [name, raw] of Object.entries(g.tensors)) {
    const hf = hfName(name);
    if (!hf) continue;
    let w: Weight = raw;
    // llama.cpp reorders Llama's q/k rows for its rotary kernel; other architectures keep transformers' order.
    if (config.architecture === "llama" && /\.self_attn\.[qk]_proj\./.test(hf)) {
      w = unpermuteRows(raw, hf.includes(".q_proj.") ? config.numHeads : config.numKvHeads);
      raw.dispose();
    }
    if (opts.dequantize && w instanceof QuantizedTensor) {
      const q = w;
      made.push((w = q.dequantize()));
      evalTensors(w);
      q.dispose();
    } else if (w instanceof Tensor && w.dtype !== "float32") made.push((w = asFloat32(w)));
    weights.set(hf, w);
  }
  evalTensors(made);
  const factors = g.tensors["rope_freqs.weight"];
  let ropeFactors: ArrayLike<number> | undefined;
  if (factors instanceof Tensor) ropeFactors = asFloat32(factors).toArray() as number[];
  const model = new LlamaModel(config, (n) => weights.get(n), { file: path, ropeFactors, handOver: true });
  // The model joined projections' weights into new buffers: the ones it released are of sizes
  // that nothing reuses, and kept for reuse they would double the weights' resident memory.
  clearCache();
  return { model, tokenizer: Tokenizer.fromGGUF(g.metadata), config };
}

function readJSON(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new SmeltError(`lm.load: cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("not a JSON object");
    return v as Record<string, unknown>;
  } catch (e) {
    throw new SmeltError(`lm.load: ${path} is not valid JSON: ${(e as Error).message}`);
  }
}

/** The safetensors files of a folder: model.safetensors, or the shards its index names. */
function weightFiles(dir: string): string[] {
  const single = join(dir, "model.safetensors");
  if (existsSync(single)) return [single];
  const indexPath = join(dir, "model.safetensors.index.json");
  if (!existsSync(indexPath)) throw new SmeltError(`lm.load: ${dir} has neither model.safetensors nor model.safetensors.index.json`);
  const map = readJSON(indexPath).weight_map;
  if (!map || typeof map !== "object") throw new SmeltError(`lm.load: ${indexPath} has no weight_map`);
  const files = new Set(Object.values(map as Record<string, unknown>));
  for (const f of files) {
    if (typeof f !== "string" || f.includes("/") || f.includes("\\")) throw new SmeltError(`lm.load: ${indexPath} names ${JSON.stringify(f)}, not a file in the folder`);
  }
  return [...files].map((f) => join(dir, f as string));
}

/** Safetensors weights are floats already, so no load option applies. */
function loadFromFolder(dir: string): LoadedModel {
  const configPath = join(dir, "config.json");
  const config = configFromHF(configPath, readJSON(configPath));
  const weights = new Map<string, Tensor>();
  const files = weightFiles(dir);
  const made: Tensor[] = [];
  for (const file of files) {
    for (const [name, t] of Object.entries(loadSafetensors(file).tensors)) {
      if (weights.has(name)) throw new SmeltError(`lm.load: tensor ${name} appears in more than one file of ${dir}`);
      const f = asFloat32(t);
      if (f !== t) {
        made.push(f);
        t.dispose();
      }
      weights.set(name, f);
    }
  }
  evalTensors(made);
  const tokenizerPath = join(dir, "tokenizer.json");
  if (!existsSync(tokenizerPath)) throw new SmeltError(`lm.load: ${dir} has no tokenizer.json`);
  const tokenizer = Tokenizer.fromFile(tokenizerPath);
  const model = new LlamaModel(config, (n) => weights.get(n), { file: files.length === 1 ? files[0]! : dir });
  return { model, tokenizer, config };
}

/** A model, tokenizer and config from a `.gguf` file or a Hugging Face model folder. */
export async function load(pathOrDir: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  if (typeof pathOrDir !== "string") throw new SmeltError(`lm.load: pathOrDir must be a string, got ${typeof pathOrDir}`);
  let isDir: boolean;
  try {
    isDir = statSync(pathOrDir).isDirectory();
  } catch (e) {
    throw new SmeltError(`lm.load: cannot open ${pathOrDir}: ${(e as Error).message}`);
  }
  return isDir ? loadFromFolder(pathOrDir) : loadFromGGUF(pathOrDir, opts);
}
