// sm.lm.load and LlamaModel on tiny random Qwen2 and Llama models made by transformers
// (scripts/reference/lm.py): Hugging Face folders (one tied in bfloat16, one untied in float16
// shards with llama3 rope scaling) and the Llama as GGUF files (q/k rows permuted as llama.cpp
// writes them; one Q8_0), against transformers' float32 logits; damaged folders and files.
import { afterAll, describe, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { unpermuteRows } from "../../src/lm/load.ts";
import { errorMessage } from "../expect-error.ts";

const FIXTURES = join(import.meta.dir, "../fixtures/lm");
interface Sequence {
  ids: number[];
  argmax: number[];
  rows: number[][];
  last: number[];
}
const reference = (name: string) => JSON.parse(readFileSync(join(FIXTURES, name, "reference.json"), "utf8")).sequences as Sequence[];

/**
 * Largest |got - want| / max(1, |want|) over each position's leading logits and the last
 * position's whole row (the reference keeps 6 significant digits).
 */
function maxError(logits: number[], V: number, seq: Sequence): number {
  let e = 0;
  const at = (i: number, want: number) => (e = Math.max(e, Math.abs(logits[i]! - want) / Math.max(1, Math.abs(want))));
  seq.rows.forEach((row, t) => row.forEach((want, j) => at(t * V + j, want)));
  const lastAt = (seq.ids.length - 1) * V;
  seq.last.forEach((want, j) => at(lastAt + j, want));
  return e;
}

function argmaxRows(logits: number[], V: number): number[] {
  const out: number[] = [];
  for (let at = 0; at < logits.length; at += V) {
    let best = at;
    for (let j = at; j < at + V; j++) if (logits[j]! > logits[best]!) best = j;
    out.push(best - at);
  }
  return out;
}

/** The whole sequence at once, and then one token at a time through the cache, both [T * V]. */
function run(model: sm.lm.LlamaModel, ids: number[]): { whole: number[]; stepped: number[] } {
  const whole = model.forward(sm.array([ids], "int32")).toArray() as number[];
  const cache = model.makeCache();
  const stepped: number[] = [];
  // Two positions, then one at a time: a cached prefix longer than one position.
  for (let t = 0; t < ids.length; t += t === 0 ? Math.min(2, ids.length) : 1) {
    const n = t === 0 ? Math.min(2, ids.length) : 1;
    stepped.push(...(model.forward(sm.array([ids.slice(t, t + n)], "int32"), cache).toArray() as number[]));
  }
  expect(cache.offset).toBe(ids.length);
  cache.dispose();
  return { whole, stepped };
}

const BOUND = 2e-5; // float32 against float32 on a tiny model: only summation order differs
const SLOW = 120_000; // the first forward of each shape compiles its kernels

for (const [name, path] of [
  ["tiny-qwen2 (folder, bfloat16)", "tiny-qwen2"],
  ["tiny-llama (folder, float16 shards)", "tiny-llama"],
  ["tiny-llama.gguf (F16, q/k permuted, rope_freqs)", "tiny-llama.gguf"],
] as const) {
  describe(name, async () => {
    const { model, tokenizer, config } = await sm.lm.load(join(FIXTURES, path));
    const refs = reference(path.startsWith("tiny-llama") ? "tiny-llama" : path);
    const V = config.vocabSize;

    test("logits match transformers, whole and token by token with the cache", () => {
      for (const seq of refs) {
        const { whole, stepped } = run(model, seq.ids);
        expect(maxError(whole, V, seq)).toBeLessThan(BOUND);
        expect(maxError(stepped, V, seq)).toBeLessThan(BOUND);
        expect(argmaxRows(whole, V)).toEqual(seq.argmax);
      }
    }, SLOW);

    test("the tokenizer encodes as transformers did", () => {
      expect(tokenizer.encode("hello world, the quick brown fox")).toEqual(refs[3]!.ids);
    });

    test("module paths and config are transformers'", () => {
      const names = model.namedParameters().map(([n]) => n);
      const qwen = config.architecture === "qwen2";
      expect(names).toContain("model.layers.1.self_attn.q_proj.weight");
      expect(names).toContain("model.layers.0.mlp.down_proj.weight");
      expect(names).toContain("model.layers.1.post_attention_layernorm.weight");
      expect(names).toContain("model.norm.weight");
      expect(names.includes("model.layers.0.self_attn.k_proj.bias")).toBe(qwen);
      expect(names.includes("lm_head.weight")).toBe(!qwen);
      expect(config.tieWordEmbeddings).toBe(qwen);
      expect(config.numKvHeads).toBe(qwen ? 2 : 1);
      expect(config.ropeScaling?.type).toBe(qwen || path.endsWith(".gguf") ? undefined : "llama3");
      expect(model.namedModules().map(([n]) => n)).toContain("model.layers.1.self_attn.o_proj");
    });
  });
}

describe("tiny-llama-q8_0.gguf: quantized weights stay quantized", async () => {
  const file = join(FIXTURES, "tiny-llama-q8_0.gguf");
  const { model } = await sm.lm.load(file);
  const { model: floats } = await sm.lm.load(file, { dequantize: true });
  const ids = reference("tiny-llama")[2]!.ids;

  test("QuantizedLinear and QuantizedEmbedding layers, not parameters", () => {
    const layer = model.model.layers[0]!;
    expect(layer.self_attn.q_proj).toBeInstanceOf(sm.nn.QuantizedLinear);
    expect(model.model.embed_tokens).toBeInstanceOf(sm.nn.QuantizedEmbedding);
    expect(floats.model.layers[0]!.self_attn.q_proj).toBeInstanceOf(sm.nn.Linear);
    expect(model.namedParameters().map(([n]) => n).some((n) => n.includes("q_proj"))).toBe(false);
  });

  test("logits equal the dequantized model's (whole and cached) up to float32 rounding", () => {
    const { whole, stepped } = run(model, ids);
    const want = floats.forward(sm.array([ids], "int32")).toArray() as number[];
    const err = (got: number[]) => got.reduce((e, g, i) => Math.max(e, Math.abs(g - want[i]!)), 0);
    expect(err(whole)).toBeLessThan(1e-4);
    expect(err(stepped)).toBeLessThan(1e-4);
  }, SLOW);
});

describe("tiny-llama-q8_0.gguf: projections of one input run as one quantized matmul", async () => {
  const { model, config } = await sm.lm.load(join(FIXTURES, "tiny-llama-q8_0.gguf"));
  const ids = reference("tiny-llama")[2]!.ids;
  // A prompt then one decode step; the step's kernels and logits.
  const step = () => {
    const cache = model.makeCache();
    model.forward(sm.array([ids.slice(0, -1)], "int32"), cache).dispose();
    sm.resetStats();
    const logits = model.forward(sm.array([ids.slice(-1)], "int32"), cache);
    const kernels = sm.stats().kernelsDispatched;
    const values = logits.toArray() as number[];
    cache.dispose();
    return { kernels, values };
  };

  test("q/k/v and gate/up are one kernel each; a replaced layer is computed on its own, with the same logits", () => {
    const joined = step();
    // As an adapter would: new layers over the same weights, which the joined weight no longer stands for.
    for (const l of model.model.layers) {
      l.self_attn.q_proj = new sm.nn.QuantizedLinear((l.self_attn.q_proj as sm.nn.QuantizedLinear).weight);
      l.mlp.gate_proj = new sm.nn.QuantizedLinear((l.mlp.gate_proj as sm.nn.QuantizedLinear).weight);
    }
    const apart = step();
    expect(apart.kernels - joined.kernels).toBe(3 * config.numLayers);
    expect(joined.values).toEqual(apart.values);
  });
});

describe("unpermuteRows undoes llama.cpp's q/k row order", () => {
  // llama.cpp: w.reshape(heads, 2, rows/heads/2, ...).swapaxes(1, 2): head h's row 2i + j is half j's row i.
  const heads = 2, rows = 8, cols = 32;
  const permuted = (r: number) => {
    const h = Math.floor(r / 4), i = Math.floor((r % 4) / 2), j = r % 2;
    return h * 4 + j * 2 + i;
  };
  test("float rows", () => {
    const w = Array.from({ length: rows * cols }, (_, k) => k);
    const file = Array.from({ length: rows * cols }, (_, k) => w[permuted(Math.floor(k / cols)) * cols + (k % cols)]!);
    expect(unpermuteRows(sm.array(file).reshape([rows, cols]), heads).toArray()).toEqual(w);
  });
  test("quantized rows move as their blocks", () => {
    // Q8_0: one block of 34 bytes per row of 32; the scale (float16 1.0) then 32 int8 values.
    const rowBytes = (r: number) => [0x00, 0x3c, ...Array.from({ length: 32 }, (_, k) => (r * 32 + k) % 100)];
    const file = Array.from({ length: rows }, (_, r) => rowBytes(permuted(r))).flat();
    const q = sm.QuantizedTensor.fromBytes(new Uint8Array(file), [rows, cols], "Q8_0");
    const want = Array.from({ length: rows }, (_, r) => rowBytes(r).slice(2)).flat();
    expect(unpermuteRows(q, heads).dequantize().toArray()).toEqual(want);
  });
  test("QuantizedTensor.fromBlocks checks the blocks against the shape and format", () => {
    const blocks = sm.zeros([68], "uint8");
    expect(sm.QuantizedTensor.fromBlocks(blocks, [2, 32], "Q8_0").shape).toEqual([2, 32]);
    expect(errorMessage(() => sm.QuantizedTensor.fromBlocks(blocks, [3, 32], "Q8_0"))).toContain("shape [3,32] of Q8_0 needs 102 bytes, got 68");
    expect(errorMessage(() => sm.QuantizedTensor.fromBlocks(blocks, [4, 17], "Q8_0"))).toContain("must be a multiple of Q8_0's block of 32 values");
    expect(errorMessage(() => sm.QuantizedTensor.fromBlocks(blocks, [2, 32], "Q5_9" as sm.QuantFormat))).toContain('unknown format "Q5_9"');
    expect(errorMessage(() => sm.QuantizedTensor.fromBlocks(sm.zeros([68]), [2, 32], "Q8_0"))).toContain("blocks must be a 1-D uint8 tensor");
  });
});

describe("bad model files", () => {
  const dir = mkdtempSync(join(tmpdir(), "smelt-lm-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const folder = (name: string, edit: (d: string) => void) => {
    const d = join(dir, name);
    cpSync(join(FIXTURES, "tiny-qwen2"), d, { recursive: true });
    edit(d);
    return d;
  };
  const editConfig = (d: string, f: (c: Record<string, unknown>) => void) => {
    const c = JSON.parse(readFileSync(join(d, "config.json"), "utf8"));
    f(c);
    writeFileSync(join(d, "config.json"), JSON.stringify(c));
  };
  const editWeights = (d: string, f: (t: Record<string, sm.Tensor>) => void) => {
    const file = join(d, "model.safetensors");
    const { tensors } = sm.io.loadSafetensors(file);
    f(tensors);
    sm.io.saveSafetensors(file, tensors);
  };

  test("unknown architecture in config.json", async () => {
    const d = folder("arch", (d) => editConfig(d, (c) => (c.model_type = "gpt_neox")));
    await expect(sm.lm.load(d)).rejects.toThrow(/config\.json: architecture "gpt_neox" is not supported \(smelt runs llama, qwen2\)/);
  });
  test("unknown architecture in a GGUF file", async () => {
    const bytes = readFileSync(join(FIXTURES, "tiny-llama.gguf"));
    const key = bytes.indexOf("general.architecture");
    const at = bytes.indexOf("llama", key + 20);
    bytes.write("lxama", at);
    const file = join(dir, "arch.gguf");
    writeFileSync(file, bytes);
    await expect(sm.lm.load(file)).rejects.toThrow(`lm.load: ${file}: architecture "lxama" is not supported`);
  });
  test("missing tensor", async () => {
    const d = folder("missing", (d) => editWeights(d, (t) => delete t["model.layers.1.mlp.up_proj.weight"]));
    await expect(sm.lm.load(d)).rejects.toThrow(`lm.load: ${join(d, "model.safetensors")}: missing tensor model.layers.1.mlp.up_proj.weight`);
  });
  test("tensor of the wrong shape", async () => {
    const d = folder("shape", (d) => editWeights(d, (t) => (t["model.layers.0.self_attn.k_proj.bias"] = sm.zeros([33]))));
    await expect(sm.lm.load(d)).rejects.toThrow("tensor model.layers.0.self_attn.k_proj.bias has shape [33], the config needs [32]");
  });
  test("config sizes that make no model", async () => {
    const d = folder("heads", (d) => editConfig(d, (c) => (c.num_key_value_heads = 3)));
    await expect(sm.lm.load(d)).rejects.toThrow("4 attention heads are not a multiple of 3 key/value heads");
  });
  test("a folder without weights, a path that is not there", async () => {
    const d = folder("empty", (d) => rmSync(join(d, "model.safetensors")));
    await expect(sm.lm.load(d)).rejects.toThrow("has neither model.safetensors nor model.safetensors.index.json");
    await expect(sm.lm.load(join(dir, "nothing"))).rejects.toThrow("lm.load: cannot open");
  });
  test("forward checks its tokens and cache", async () => {
    const { model } = await sm.lm.load(join(FIXTURES, "tiny-qwen2"));
    expect(errorMessage(() => model.forward(sm.array([[1, 2]], "float32")))).toContain("tokens must be int32 of shape [B, T], got float32 [1,2]");
    expect(errorMessage(() => model.forward(sm.array([1, 2], "int32")))).toContain("tokens must be int32 of shape [B, T]");
    expect(errorMessage(() => model.forward(sm.array([[1]], "int32"), new sm.lm.KVCache(5)))).toContain("cache must be a KVCache from this model's makeCache()");
  });
});
