// sm.lm.generate and sm.lm.stream on stand-in models: a tiny module with a KV-style cache whose
// greedy tokens are checked against a float64 reference, and a scripted model that emits given
// bytes, for the text the stream yields (UTF-8 characters whole, stop strings, flushing).
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { errorMessage } from "../expect-error.ts";

setDefaultTimeout(120_000);

const EOS = 256;

/** Bytes as tokens, 256 as end of sequence; decoding replaces incomplete UTF-8 with U+FFFD. */
const byteTokenizer = {
  eosTokenIds: [EOS],
  encode: (text: string) => [...new TextEncoder().encode(text)],
  decode: (ids: readonly number[]) => new TextDecoder().decode(Uint8Array.from(ids.filter((t) => t < 256))),
};

/**
 * logits = head(tanh(running sum of the embeddings of every token so far)): the cache holds the
 * running sum, so a step that lost it would give other tokens than the reference.
 */
class ToyCache {
  state: sm.Tensor | null = null;
}
/** The same, held as sm.lm.KVCache holds its tensors: out of sight but for tensors(). */
class PrivateToyCache {
  #state: sm.Tensor | null = null;
  get state() {
    return this.#state;
  }
  set state(t: sm.Tensor | null) {
    this.#state = t;
  }
  tensors(): sm.Tensor[] {
    return this.#state ? [this.#state] : [];
  }
}
class ToyLM extends sm.nn.Module {
  emb: sm.nn.Embedding;
  head: sm.nn.Linear;
  calls: number[] = [];
  constructor(vocab: number, dims: number, seed: number, readonly privateCache = false) {
    super();
    const k = sm.random.split(sm.random.key(seed));
    this.emb = new sm.nn.Embedding(vocab, dims, { key: sm.take(k, 0, 0) });
    this.head = new sm.nn.Linear(dims, vocab, { bias: false, key: sm.take(k, 1, 0) });
    sm.eval(this.emb.weight, this.head.weight);
  }
  makeCache(): ToyCache | PrivateToyCache {
    return this.privateCache ? new PrivateToyCache() : new ToyCache();
  }
  override forward(tokens: sm.Tensor, cache?: ToyCache | PrivateToyCache): sm.Tensor {
    this.calls.push(tokens.shape[1]!);
    let h = sm.cumsum(this.emb.forward(tokens), 1);
    if (cache?.state) h = sm.add(h, cache.state);
    if (cache) {
      cache.state?.dispose();
      cache.state = sm.slice(h, ":, -1:, :");
    }
    return this.head.forward(sm.tanh(h));
  }
  /** Greedy continuation in float64, with transformers' repetition penalty over prompt and output. */
  reference(prompt: number[], n: number, penalty = 1): number[] {
    const E = this.emb.weight.tolist() as number[][];
    const W = this.head.weight.tolist() as number[][];
    const h = new Array<number>(E[0]!.length).fill(0);
    const out: number[] = [];
    let input = prompt;
    for (let s = 0; s < n; s++) {
      for (const t of input) E[t]!.forEach((e, d) => (h[d]! += e));
      const a = h.map(Math.tanh);
      const logits = W.map((w) => w.reduce((acc, x, d) => acc + x * a[d]!, 0));
      for (const t of new Set([...prompt, ...out])) logits[t] = logits[t]! > 0 ? logits[t]! / penalty : logits[t]! * penalty;
      const next = logits.indexOf(Math.max(...logits));
      out.push(next);
      if (next === EOS) break;
      input = [next];
    }
    return out;
  }
}

/** Emits `script` one token per forward pass (one-hot logits), whatever the input. */
class ScriptedLM {
  constructor(readonly script: number[]) {}
  makeCache() {
    return { step: 0 };
  }
  forward(tokens: sm.Tensor, cache?: { step: number }): sm.Tensor {
    const t = tokens.shape[1]!;
    const next = this.script[cache!.step++] ?? EOS;
    const row = new Float32Array(EOS + 1).fill(-10);
    row[next] = 10;
    const data = new Float32Array(t * row.length);
    for (let i = 0; i < t; i++) data.set(row, i * row.length);
    return sm.fromBytes(data, [1, t, row.length], "float32");
  }
}

const bytes = (s: string) => [...new TextEncoder().encode(s)];

async function chunks(model: sm.lm.CausalLM, prompt: string | number[], opts: sm.lm.GenerateOptions = {}) {
  const out: sm.lm.StreamChunk[] = [];
  for await (const c of sm.lm.stream(model, byteTokenizer, prompt, opts)) out.push(c);
  return out;
}

/**
 * Handles earlier test files dropped without disposing are freed by the finalizer when the event
 * loop turns, which a stream's awaits let happen mid-measurement: collect and run them first.
 */
async function settleFinalizers(): Promise<void> {
  Bun.gc(true);
  await Bun.sleep(1);
}

describe("lm.stream: text", () => {
  test("multi-byte characters are never split, and the text is the decoded tokens", async () => {
    const s = "héllo €😀 wörld";
    const out = await chunks(new ScriptedLM(bytes(s)), "hi");
    expect(out.map((c) => c.token)).toEqual([...bytes(s), EOS]);
    expect(out.map((c) => c.text).join("")).toBe(s);
    for (const c of out) expect(c.text).not.toContain("\uFFFD");
    // The euro sign's three bytes: nothing, nothing, then the whole sign.
    const euro = out.findIndex((c) => c.text.includes("€"));
    expect(out[euro]!.text).toBe("€");
    expect([out[euro - 1]!.text, out[euro - 2]!.text]).toEqual(["", ""]);
  });

  test("a stop string ends generation, and none of it is ever streamed", async () => {
    const out = await chunks(new ScriptedLM(bytes("a<b<|end|>tail")), "x", { stop: ["<|end|>", "zz"] });
    expect(out.map((c) => c.text).join("")).toBe("a<b");
    expect(out.map((c) => c.token)).toEqual(bytes("a<b<|end|>"));
    // '<' waits until 'b' shows it starts no stop string.
    expect(out.map((c) => c.text)).toEqual(["a", "", "<b", "", "", "", "", "", "", ""]);
  });

  test("text held back is flushed by the end-of-sequence token and at maxTokens", async () => {
    const eos = await chunks(new ScriptedLM([...bytes("ab<|"), EOS]), "x", { stop: "<|end|>" });
    expect(eos.map((c) => [c.token, c.text])).toEqual([[97, "a"], [98, "b"], [60, ""], [124, ""], [EOS, "<|"]]);
    const cut = await chunks(new ScriptedLM(bytes("ab€")), "x", { maxTokens: 3 });
    expect(cut.map((c) => c.text).join("")).toBe("ab\uFFFD");
    expect(cut.map((c) => c.text).join("")).toBe(byteTokenizer.decode(bytes("ab€").slice(0, 3)));
  });

  test("each step decodes a few tokens, and the text is the whole list's decode", async () => {
    let longest = 0;
    const counted = (decode: (ids: readonly number[]) => string) => (ids: readonly number[]) => {
      longest = Math.max(longest, ids.length);
      return decode(ids);
    };
    // Pieces with and without a leading space; like SentencePiece's decoder, decode drops the
    // space that starts its text, so a window decoded alone starts differently from the whole.
    const piece = (t: number) => (t % 3 === 0 ? ` w${t}` : t % 3 === 1 ? "é" : `${t % 10}`);
    const spaced = { ...byteTokenizer, decode: counted((ids) => ids.filter((t) => t < 256).map(piece).join("").replace(/^ /, "")) };
    const script = Array.from({ length: 200 }, (_, i) => (i * 7 + 3) % 256);
    const got = await sm.lm.generate(new ScriptedLM(script), spaced, "p", { maxTokens: 200 });
    expect(longest).toBeLessThanOrEqual(4);
    expect(got.tokens).toEqual(script);
    expect(got.text).toBe(spaced.decode(script));
    expect(got.text.startsWith("w3")).toBe(true);

    // Characters of two to four bytes, one byte a token: windows span the incomplete ones.
    longest = 0;
    const text = "ü€😀 ".repeat(40);
    const bytewise = { ...byteTokenizer, decode: counted(byteTokenizer.decode) };
    const viaBytes = await sm.lm.generate(new ScriptedLM(bytes(text)), bytewise, "p", { maxTokens: 1000 });
    expect(viaBytes.text).toBe(text);
    expect(longest).toBeLessThanOrEqual(8);
  });

  test("generate's text and tokens are the stream's", async () => {
    const model = new ScriptedLM(bytes("one two😀 three"));
    const got = await sm.lm.generate(model, byteTokenizer, "p", { stop: " three" });
    const out = await chunks(model, "p", { stop: " three" });
    expect(got.text).toBe("one two😀");
    expect(got.text).toBe(out.map((c) => c.text).join(""));
    expect(got.tokens).toEqual(out.map((c) => c.token));
    expect(got.promptTokens).toBe(1);
  });
});

describe("lm.generate on a model with a cache", () => {
  const model = new ToyLM(EOS + 1, 16, 5);

  test("greedy tokens are the float64 reference's, with a cache that keeps its tensors private", async () => {
    const other = new ToyLM(EOS + 1, 16, 5, true);
    const got = await sm.lm.generate(other, byteTokenizer, [4, 5, 6], { maxTokens: 20 });
    expect(got.tokens).toEqual(other.reference([4, 5, 6], 20));
  });

  test("greedy tokens are the float64 reference's; the prompt is one forward pass", async () => {
    const prompt = [10, 200, 33, 7, 99];
    model.calls = [];
    const got = await sm.lm.generate(model, byteTokenizer, prompt, { maxTokens: 40 });
    const want = model.reference(prompt, 40);
    expect(got.tokens).toEqual(want);
    expect(model.calls).toEqual([prompt.length, ...new Array<number>(want.length - 1).fill(1)]);
    expect(got.promptTokens).toBe(5);
    expect(got.promptTps).toBeGreaterThan(0);
    expect(got.generationTps).toBeGreaterThan(0);
    expect(got.peakMemory).toBeGreaterThan(0);
    expect(got.text).toBe(byteTokenizer.decode(got.tokens));
  });

  test("the repetition penalty covers the prompt and every token generated", async () => {
    const prompt = [10, 200, 33];
    const got = await sm.lm.generate(model, byteTokenizer, prompt, { maxTokens: 30, repetitionPenalty: 1.8 });
    expect(got.tokens).toEqual(model.reference(prompt, 30, 1.8));
    expect(got.tokens).not.toEqual(model.reference(prompt, 30));
  });

  test("a string prompt is encoded by the tokenizer", async () => {
    const got = await sm.lm.generate(model, byteTokenizer, "Hi!", { maxTokens: 8 });
    expect(got.tokens).toEqual(model.reference(bytes("Hi!"), 8));
  });

  test("seeded sampling is reproducible", async () => {
    const opts = { maxTokens: 24, temperature: 1.5, topK: 100, topP: 0.95, seed: 42 };
    const a = await sm.lm.generate(model, byteTokenizer, [1, 2, 3], opts);
    const b = await sm.lm.generate(model, byteTokenizer, [1, 2, 3], opts);
    const c = await sm.lm.generate(model, byteTokenizer, [1, 2, 3], { ...opts, seed: 43 });
    expect(a.tokens).toEqual(b.tokens);
    expect(a.tokens).not.toEqual(c.tokens);
    expect(a.tokens).not.toEqual(model.reference([1, 2, 3], 24));
  });

  test("memory stays flat from token to token and is freed at the end", async () => {
    await sm.lm.generate(model, byteTokenizer, [1, 2, 3], { maxTokens: 4 }); // compiles the kernels
    await settleFinalizers();
    const before = sm.getActiveMemory();
    const active: number[] = [];
    for await (const _ of sm.lm.stream(model, byteTokenizer, [1, 2, 3], { maxTokens: 300, temperature: 1, seed: 1, repetitionPenalty: 1.1 }))
      active.push(sm.getActiveMemory());
    expect(active.length).toBe(300);
    expect(new Set(active).size).toBe(1);
    expect(sm.getActiveMemory()).toBe(before);
  });

  test("steps submitted ahead of their token: memory flat from token to token, freed at an end token and at the end", async () => {
    await sm.lm.generate(model, byteTokenizer, [1, 2, 3], { maxTokens: 4 });
    await settleFinalizers();
    const before = sm.getActiveMemory();
    const active: number[] = [];
    const tokens: number[] = [];
    // Without a repetition penalty, step n + 1 is in flight while step n's token is read.
    for await (const c of sm.lm.stream(model, byteTokenizer, [1, 2, 3], { maxTokens: 300, temperature: 1, seed: 1 })) {
      active.push(sm.getActiveMemory());
      tokens.push(c.token);
    }
    expect(active.length).toBe(300);
    // At each token the next step is in flight, its temporaries held or already released: two
    // values at most, and no growth over the stream.
    expect(new Set(active.slice(0, -1)).size).toBeLessThanOrEqual(2);
    expect(Math.max(...active.slice(150))).toBeLessThanOrEqual(Math.max(...active.slice(0, 150)));
    expect(sm.getActiveMemory()).toBe(before);
    expect((await sm.lm.generate(model, byteTokenizer, [1, 2, 3], { maxTokens: 300, temperature: 1, seed: 1 })).tokens).toEqual(tokens);
    // An end token: the step submitted after it is dropped.
    const eos = model.reference([1, 2, 3], 12)[5]!;
    const ending = { ...byteTokenizer, eosTokenIds: [eos] };
    const got = await sm.lm.generate(model, ending, [1, 2, 3], { maxTokens: 12 });
    expect(got.tokens.at(-1)).toBe(eos);
    expect(got.tokens.length).toBeLessThanOrEqual(6);
    expect(sm.getActiveMemory()).toBe(before);
  });

  test("a stream left early gives its memory back", async () => {
    await sm.lm.generate(model, byteTokenizer, [1, 2, 3], { maxTokens: 4 });
    await settleFinalizers();
    const before = sm.getActiveMemory();
    let n = 0;
    for await (const _ of sm.lm.stream(model, byteTokenizer, [1, 2, 3], { maxTokens: 50 })) if (++n === 3) break;
    expect(n).toBe(3);
    expect(sm.getActiveMemory()).toBe(before);
  });

  test("bad arguments are errors at the call, not in the loop", () => {
    const g = (prompt: unknown, opts: object) => () => sm.lm.generate(model, byteTokenizer, prompt as number[], opts as never);
    expect(errorMessage(g([1], { maxTokens: 0 }))).toBe("lm.generate: maxTokens must be an integer ≥ 1, got 0");
    expect(errorMessage(g([], {}))).toBe("lm.generate: the prompt has no tokens");
    expect(errorMessage(g([1, -2], {}))).toBe("lm.generate: prompt token ids must be non-negative integers, got -2");
    expect(errorMessage(g([1], { topP: 1.5 }))).toBe("lm.generate: topP must be a number in (0, 1], got 1.5");
    expect(errorMessage(g([1], { seed: 0.5 }))).toBe("lm.generate: seed must be a safe integer or a bigint, got 0.5");
    expect(errorMessage(g([1], { stop: [""] }))).toBe('lm.generate: stop strings must be non-empty strings, got ""');
    expect(errorMessage(() => sm.lm.stream({} as never, byteTokenizer, [1]))).toBe(
      "lm.stream: model must have forward(tokens, cache) and makeCache() (a model from sm.lm.load), got [object Object]",
    );
  });
});
