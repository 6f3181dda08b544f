// SmolLM2-135M-Instruct (Q4_1 GGUF) against transformers' float32 run of the same file
// (scripts/reference/lm.py): logits of whole prompts and token by token through the KV cache,
// and 24 greedy tokens on three prompts. Skips, saying why, when the model is not fetched.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { modelPath, SMOLLM2_GGUF } from "../models.ts";

interface Prompt {
  prompt: string;
  ids: number[];
  argmax: number[];
  rows: number[][];
  topIds: number[];
  topValues: number[];
  greedy: number[];
}
const ref = JSON.parse(readFileSync(join(import.meta.dir, "../fixtures/lm/smollm2.json"), "utf8")).prompts as Prompt[];
const path = modelPath(SMOLLM2_GGUF);
const SLOW = 120_000;

/** Largest |got - want| over every position's leading logits and the last position's top 50. */
function maxError(logits: number[], V: number, p: Prompt, positions = p.ids.length): number {
  let e = 0;
  p.rows.slice(0, positions).forEach((row, t) => row.forEach((want, j) => (e = Math.max(e, Math.abs(logits[t * V + j]! - want)))));
  if (positions === p.ids.length) {
    const at = (p.ids.length - 1) * V;
    p.topIds.forEach((id, k) => (e = Math.max(e, Math.abs(logits[at + id]! - p.topValues[k]!))));
  }
  return e;
}

/** Argmax tokens: the prompt through the cache at once, then one token at a time. */
function greedy(model: sm.lm.LlamaModel, ids: number[], n: number): number[] {
  const cache = model.makeCache();
  const out: number[] = [];
  let next = ids;
  for (let i = 0; i < n; i++) {
    const logits = model.forward(sm.array([next], "int32"), cache);
    const id = (logits.slice(0, -1).argmax(-1).toArray() as number[])[0]!;
    logits.dispose();
    out.push(id);
    next = [id];
  }
  cache.dispose();
  return out;
}

describe.skipIf(!path)("SmolLM2-135M against transformers", async () => {
  const floats = path ? await sm.lm.load(path, { dequantize: true }) : null;
  const quant = path ? await sm.lm.load(path) : null;
  const V = floats?.config.vocabSize ?? 0;

  test("the tokenizer gives transformers' prompt ids", () => {
    for (const p of ref) expect(floats!.tokenizer.encode(p.prompt)).toEqual(p.ids);
  });

  test("dequantized: whole-prompt logits within 1e-2, same argmax per position", () => {
    for (const p of ref) {
      const logits = floats!.model.forward(sm.array([p.ids], "int32"));
      const got = logits.toArray() as number[];
      logits.dispose();
      expect(maxError(got, V, p)).toBeLessThan(1e-2);
      expect(Array.from({ length: p.ids.length }, (_, t) => got.slice(t * V, (t + 1) * V).reduce((b, v, j, a) => (v > a[b]! ? j : b), 0))).toEqual(p.argmax);
    }
  }, SLOW);

  test("dequantized: token by token through the KV cache within 1e-2", () => {
    const p = ref[0]!;
    const cache = floats!.model.makeCache();
    const got: number[] = [];
    for (const id of p.ids) {
      const logits = floats!.model.forward(sm.array([[id]], "int32"), cache);
      got.push(...(logits.toArray() as number[]));
      logits.dispose();
    }
    cache.dispose();
    expect(maxError(got, V, p)).toBeLessThan(1e-2);
  }, SLOW);

  test("dequantized: 24 greedy tokens identical on 3 prompts", () => {
    for (const p of ref) expect(greedy(floats!.model, p.ids, 24)).toEqual(p.greedy);
  }, SLOW);

  // The kernels dequantize exactly as transformers does, so the bound is the same (measured: 1.1e-4
  // either way). The chat prompt is left out: quantizedMatmul over a long prompt is slow on host.
  test("quantized in memory: logits within 1e-2 too", () => {
    for (const p of ref.slice(0, 2)) {
      const logits = quant!.model.forward(sm.array([p.ids], "int32"));
      expect(maxError(logits.toArray() as number[], V, p)).toBeLessThan(1e-2);
      logits.dispose();
    }
  }, SLOW);
});
