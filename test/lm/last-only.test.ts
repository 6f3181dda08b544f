// LlamaModel.forward's lastOnly option: the last position's logits, the same as the whole
// forward's last row, with and without a cache; generate's prompt pass uses it.
import { expect, test } from "bun:test";
import { join } from "node:path";
import * as sm from "../../src/index.ts";

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
