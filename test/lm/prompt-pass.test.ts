// A prompt's forward pass: LlamaModel.forward's lastOnly option (the last position's logits, the
// same as the whole forward's last row, with and without a cache; generate's prompt pass uses
// it), and a long input with a cache evaluated a layer at a time, so quantized layers' float
// copies of their weights do not all exist at once.
import { expect, test } from "bun:test";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { DEQUANTIZE_ROWS } from "../../src/tensor/quantized.ts";
import { modelPath, SMOLLM2_GGUF } from "../models.ts";

const FIXTURES = join(import.meta.dir, "../fixtures/lm");

test("lastOnly gives the last row of the whole forward", async () => {
  const { model } = await sm.lm.load(join(FIXTURES, "tiny-llama-q8_0.gguf"));
  const ids = [1, 17, 42, 5, 99, 3, 64];
  const whole = model.forward(sm.array([ids], "int32"));
  const V = whole.shape[2]!;
  expect(whole.shape).toEqual([1, ids.length, V]);
  const want = (whole.toArray() as number[]).slice((ids.length - 1) * V);
  const last = model.forward(sm.array([ids], "int32"), undefined, { lastOnly: true });
  expect(last.shape).toEqual([1, 1, V]);
  const got = last.toArray() as number[];
  for (let j = 0; j < V; j++) expect(Math.abs(got[j]! - want[j]!)).toBeLessThan(1e-4 * (1 + Math.abs(want[j]!)));

  // With a cache: the prompt's last row, then a step that continues from the cached positions.
  const cache = model.makeCache();
  const first = model.forward(sm.array([ids.slice(0, 5)], "int32"), cache, { lastOnly: true });
  expect(first.shape).toEqual([1, 1, V]);
  const next = model.forward(sm.array([ids.slice(5)], "int32"), cache, { lastOnly: true }).toArray() as number[];
  for (let j = 0; j < V; j++) expect(Math.abs(next[j]! - want[j]!)).toBeLessThan(1e-4 * (1 + Math.abs(want[j]!)));
  // The default is unchanged: every position.
  expect(model.forward(sm.array([ids.slice(0, 3)], "int32")).shape).toEqual([1, 3, V]);
}, 120_000);

test("a long input with a cache is evaluated a layer at a time, a short one at once", async () => {
  const { model, config } = await sm.lm.load(join(FIXTURES, "tiny-llama-q8_0.gguf"));
  const ids = Array.from({ length: DEQUANTIZE_ROWS + 4 }, (_, i) => (i * 37) % config.vocabSize);
  const whole = model.forward(sm.array([ids], "int32"), undefined, { lastOnly: true }).toArray() as number[];
  for (const [n, evaluations] of [[ids.length, config.numLayers + 1], [DEQUANTIZE_ROWS - 1, 1]] as const) {
    const cache = model.makeCache();
    sm.resetStats();
    const logits = model.forward(sm.array([ids.slice(0, n)], "int32"), cache, { lastOnly: true });
    expect(sm.stats().evaluations).toBe(evaluations);
    if (n === ids.length) {
      const got = logits.toArray() as number[];
      for (let j = 0; j < got.length; j++) expect(Math.abs(got[j]! - whole[j]!)).toBeLessThan(1e-4 * (1 + Math.abs(whole[j]!)));
    }
  }
}, 120_000);

const smol = modelPath(SMOLLM2_GGUF);
test.skipIf(!smol)(`a 64-token prompt on ${SMOLLM2_GGUF} holds one layer's float weights at a time`, async () => {
  const { model } = await sm.lm.load(smol!);
  const ids = Array.from({ length: 64 }, (_, i) => 100 + ((i * 131) % 5000));
  const cache = model.makeCache();
  sm.resetPeakMemory();
  const before = sm.getPeakMemory();
  model.forward(sm.array([ids], "int32"), cache, { lastOnly: true }).dispose();
  // All 30 layers' float weights are 425 MB (and as much again of packed copies); one layer's
  // are 14 MB, and the activations of 64 positions a few more.
  expect(sm.getPeakMemory() - before).toBeLessThan(400e6);
}, 120_000);
