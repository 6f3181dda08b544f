// sm.lm.generate, sm.lm.stream and the smelt CLI on SmolLM2-135M (Q4_1 GGUF) against transformers'
// greedy tokens for the same file (test/fixtures/lm/smollm2.json, scripts/reference/lm.py).
// Economical: two short prompts, 24 tokens each, and a few short runs.
import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { modelPath, SMOLLM2_GGUF } from "../models.ts";

setDefaultTimeout(120_000);

interface Reference {
  prompts: { prompt: string; ids: number[]; greedy: number[] }[];
}
const reference = JSON.parse(readFileSync(join(import.meta.dir, "../fixtures/lm/smollm2.json"), "utf8")) as Reference;
const path = modelPath(SMOLLM2_GGUF);
const root = join(import.meta.dir, "../..");

describe.skipIf(!path)("generate with SmolLM2-135M", () => {
  let loaded: sm.lm.LoadedModel;
  beforeAll(async () => {
    loaded = await sm.lm.load(path!);
  });

  /**
   * The reference generated with min_new_tokens=24, which gives the end-of-sequence tokens -∞
   * logits: so does this view of the model, so that both run 24 tokens.
   */
  function withoutEos(): sm.lm.CausalLM {
    const { model, tokenizer } = loaded;
    const vocab = model.config.vocabSize;
    const mask = new Uint8Array(vocab);
    for (const t of tokenizer.eosTokenIds) mask[t] = 1;
    return {
      makeCache: () => model.makeCache(),
      forward: (tokens, cache) => sm.where(sm.fromBytes(mask, [vocab], "bool"), -Infinity, model.forward(tokens, cache as never)),
    };
  }

  test("greedy tokens are transformers' for 24 tokens", async () => {
    const short = reference.prompts.filter((p) => p.ids.length < 16);
    expect(short.length).toBeGreaterThanOrEqual(2);
    for (const p of short) {
      const got = await sm.lm.generate(withoutEos(), loaded.tokenizer, p.ids, { maxTokens: 24 });
      expect(got.tokens).toEqual(p.greedy);
      expect(got.text).toBe(loaded.tokenizer.decode(p.greedy));
      expect(got.promptTokens).toBe(p.ids.length);
    }
  });

  test("a chat answer ends at the end-of-sequence token, after transformers' tokens", async () => {
    const chat = reference.prompts.find((p) => p.prompt.startsWith("<|im_start|>"))!;
    const got = await sm.lm.generate(loaded.model, loaded.tokenizer, chat.ids, { maxTokens: 24 });
    const eos = got.tokens.at(-1)!;
    expect(loaded.tokenizer.eosTokenIds).toContain(eos);
    expect(got.tokens.slice(0, -1)).toEqual(chat.greedy.slice(0, got.tokens.length - 1));
    expect(got.text).toBe(loaded.tokenizer.decode(got.tokens.slice(0, -1)));
  });

  test("seeded sampling is reproducible, stream's text is generate's, memory is given back", async () => {
    const opts = { maxTokens: 12, temperature: 0.9, topP: 0.95, topK: 50, seed: 1234 };
    const ids = reference.prompts[0]!.ids;
    const a = await sm.lm.generate(loaded.model, loaded.tokenizer, ids, opts);
    const after = sm.getActiveMemory();
    const chunks: sm.lm.StreamChunk[] = [];
    for await (const c of sm.lm.stream(loaded.model, loaded.tokenizer, ids, opts)) chunks.push(c);
    // The KV cache and every step's tensors are gone once generation ends.
    expect(sm.getActiveMemory()).toBe(after);
    expect(chunks.map((c) => c.token)).toEqual(a.tokens);
    expect(chunks.map((c) => c.text).join("")).toBe(a.text);
    expect(a.tokens.length).toBeGreaterThan(0);
    expect(a.tokens).not.toEqual(reference.prompts[0]!.greedy.slice(0, a.tokens.length));
  });

  test("the CLI streams the greedy text and reports throughput", () => {
    const p = reference.prompts[0]!;
    const r = spawnSync(process.execPath, ["src/cli/main.ts", "generate", "--model", path!, "--prompt", p.prompt, "--max-tokens", "8"], { cwd: root, encoding: "utf8" });
    expect(r.stderr).toMatch(/Prompt: \d+ tokens, [\d.]+ tokens-per-sec\nGeneration: 8 tokens, [\d.]+ tokens-per-sec\nPeak memory: [\d.]+ GB/);
    expect(r.status).toBe(0);
    // The reference's prompt ids are the prompt encoded with the tokenizer's special tokens, as the CLI does.
    expect(loaded.tokenizer.encode(p.prompt)).toEqual(p.ids);
    expect(r.stdout).toBe(`${loaded.tokenizer.decode(p.greedy.slice(0, 8))}\n`);
  });
});
