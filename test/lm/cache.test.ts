// sm.lm.KVCache: each step's keys and values are written into buffers of a capacity that doubles
// when full; attention reads the positions held. Checked on the tiny Llama GGUF fixture against
// the same model without a cache (whole sequences), in lazy and eager mode, batched, and for the
// memory a long generation holds.
import { expect, test } from "bun:test";
import { join } from "node:path";
import * as sm from "../../src/index.ts";

const FIXTURES = join(import.meta.dir, "../fixtures/lm");
const { model, config } = await sm.lm.load(join(FIXTURES, "tiny-llama.gguf"));
const V = config.vocabSize;
const SLOW = 120_000;

const idsOf = (n: number, seed: number) => Array.from({ length: n }, (_, i) => (i * 37 + seed * 11 + 5) % V);

function expectClose(got: number[], want: number[]): void {
  expect(got.length).toBe(want.length);
  let worst = 0;
  for (let j = 0; j < got.length; j++) worst = Math.max(worst, Math.abs(got[j]! - want[j]!) / Math.max(1, Math.abs(want[j]!)));
  expect(worst).toBeLessThan(2e-5);
}

/** Logits of positions [from, to) of a cache-less forward over ids[0, to), rows [B][T * V]. */
function wholeRows(rows: number[][], from: number, to: number): number[][] {
  const logits = model.forward(sm.array(rows.map((r) => r.slice(0, to)), "int32"));
  const out = rows.map((_, b) => logits.slice(b, { start: from, stop: to }).toArray() as number[]);
  logits.dispose();
  return out;
}

test("positions continue through the cache past its first capacity, which doubles", () => {
  const ids = idsOf(300, 1);
  const cache = model.makeCache();
  expect(cache.capacity).toBe(0);
  // A prompt just below the first capacity, then one token at a time across it.
  model.forward(sm.array([ids.slice(0, 250)], "int32"), cache).dispose();
  expect(cache.offset).toBe(250);
  expect(cache.capacity).toBe(256);
  const stepped: number[] = [];
  for (let t = 250; t < 300; t++) {
    const logits = model.forward(sm.array([[ids[t]!]], "int32"), cache);
    stepped.push(...(logits.toArray() as number[]));
    logits.dispose();
    expect(cache.capacity).toBe(t + 1 <= 256 ? 256 : 512);
  }
  expect(cache.offset).toBe(300);
  expectClose(stepped, wholeRows([ids], 250, 300)[0]!);
  // layer() gives the positions held, not the buffer.
  expect(cache.layer(0)!.keys.shape).toEqual([1, config.numKvHeads, 300, config.headDim]);
  expect(cache.tensors()[0]!.shape).toEqual([1, config.numKvHeads, 512, config.headDim]);
  cache.dispose();
}, SLOW);

test("a prompt longer than the first capacity gets room for all of it at once", () => {
  const ids = idsOf(270, 2);
  const cache = model.makeCache();
  const logits = model.forward(sm.array([ids.slice(0, 265)], "int32"), cache);
  expect(cache.capacity).toBe(512);
  logits.dispose();
  const rest = model.forward(sm.array([ids.slice(265)], "int32"), cache);
  expectClose(rest.toArray() as number[], wholeRows([ids], 265, 270)[0]!);
  rest.dispose();
  cache.dispose();
}, SLOW);

test("a batch of two rows through the cache matches each row without it", () => {
  const rows = [idsOf(40, 3), idsOf(40, 4)];
  const cache = model.makeCache();
  model.forward(sm.array(rows.map((r) => r.slice(0, 30)), "int32"), cache).dispose();
  const stepped: number[][] = [[], []];
  for (let t = 30; t < 40; t++) {
    const logits = model.forward(sm.array(rows.map((r) => [r[t]!]), "int32"), cache);
    rows.forEach((_, b) => stepped[b]!.push(...(logits.slice(b).toArray() as number[])));
    logits.dispose();
  }
  const want = wholeRows(rows, 30, 40);
  rows.forEach((_, b) => expectClose(stepped[b]!, want[b]!));
  cache.dispose();
}, SLOW);

test("eager steps give the lazy steps' logits", () => {
  const ids = idsOf(24, 5);
  const steps = (mode: "lazy" | "eager") => {
    const cache = model.makeCache();
    const out: number[] = [];
    const run = () => {
      for (let t = 0; t < ids.length; t += t === 0 ? 8 : 1) {
        const logits = model.forward(sm.array([ids.slice(t, t === 0 ? 8 : t + 1)], "int32"), cache);
        out.push(...(logits.toArray() as number[]));
        logits.dispose();
      }
    };
    if (mode === "eager") sm.eager(run);
    else run();
    cache.dispose();
    return out;
  };
  const lazy = steps("lazy");
  expect(steps("eager")).toEqual(lazy);
}, SLOW);

test("tensor memory stays flat over a long generation while the capacity holds", () => {
  const cache = model.makeCache();
  let token = 1;
  const bytes: number[] = [];
  for (let t = 0; t < 240; t++) {
    // The scope frees the step's input and logits, which would otherwise wait for the collector;
    // it keeps what it returns, the cache's buffers among them (as sm.lm.generate does).
    const [next] = sm.tidy(() => [model.forward(sm.array([[token]], "int32"), cache, { lastOnly: true }).argmax(-1), cache.tensors()] as const);
    token = next.item() as number;
    next.dispose();
    bytes.push(sm.stats().bytesAllocated);
  }
  // The first steps may still fill the memory cache; after them, nothing grows with the positions.
  expect(new Set(bytes.slice(10)).size).toBe(1);
  expect(cache.capacity).toBe(256);
  cache.dispose();
}, SLOW);

test("generation evaluates each step's token and cache entries in one evaluation", async () => {
  const { tokenizer } = await sm.lm.load(join(FIXTURES, "tiny-llama.gguf"));
  const endless: sm.lm.TextTokenizer = { encode: (t, o) => tokenizer.encode(t, o), decode: (ids, o) => tokenizer.decode(ids, o), eosTokenIds: [] };
  const prompt = idsOf(8, 6);
  sm.resetStats();
  const { tokens } = await sm.lm.generate(model, endless, prompt, { maxTokens: 12 });
  expect(sm.stats().evaluations).toBe(12);
  // Greedy tokens as whole cache-less forwards pick them.
  const ids = [...prompt];
  for (let i = 0; i < 12; i++) {
    const next = sm.tidy(() => model.forward(sm.array([ids], "int32")).slice(0, -1).argmax(-1));
    ids.push(next.item() as number);
    next.dispose();
  }
  expect(tokens).toEqual(ids.slice(8));
}, SLOW);
