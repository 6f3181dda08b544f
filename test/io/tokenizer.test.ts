// sm.lm.Tokenizer from SmolLM2's GGUF metadata against transformers' tokenizer for the same file
// (scripts/tokenizer_reference.py).
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer as HFTokenizer } from "@huggingface/tokenizers";
import * as sm from "../../src/index.ts";
import { errorMessage } from "../expect-error.ts";
import { modelPath, SMOLLM2_GGUF } from "../models.ts";

interface Reference {
  bosTokenId: number;
  eosTokenId: number;
  cases: { text: string; ids: number[]; idsPlain: number[]; decoded: string; decodedSkip: string }[];
  chats: { messages: sm.lm.ChatMessage[]; addGenerationPrompt: boolean; text: string }[];
}
const reference = JSON.parse(readFileSync(join(import.meta.dir, "../fixtures/tokenizer/smollm2.json"), "utf8")) as Reference;

function agrees(tok: () => sm.lm.Tokenizer) {
  test("special token ids", () => {
    expect(tok().bosTokenId).toBe(reference.bosTokenId);
    expect(tok().eosTokenIds).toEqual([reference.eosTokenId]);
    expect(tok().vocabSize).toBe(49152);
  });
  for (const c of reference.cases) {
    test(`encode and decode ${JSON.stringify(c.text).slice(0, 40)}`, () => {
      expect(tok().encode(c.text)).toEqual(c.ids);
      expect(tok().encode(c.text, { addSpecialTokens: false })).toEqual(c.idsPlain);
      expect(tok().decode(c.ids)).toBe(c.decoded);
      expect(tok().decode(c.ids, { skipSpecialTokens: true })).toBe(c.decodedSkip);
      expect(tok().decode(c.ids)).toBe(c.text);
    });
  }
  test("chat templates for system, user and assistant turns", () => {
    for (const c of reference.chats) expect(tok().applyChatTemplate(c.messages, { addGenerationPrompt: c.addGenerationPrompt })).toBe(c.text);
  });
}

const model = modelPath(SMOLLM2_GGUF);
describe.skipIf(!model)(`Tokenizer.fromGGUF on ${SMOLLM2_GGUF}`, () => {
  // Metadata only is needed; the tensors are freed at once.
  const { metadata, tensors } = model ? sm.io.loadGGUF(model) : { metadata: {}, tensors: {} };
  for (const t of Object.values(tensors)) t.dispose();
  const tok = model ? sm.lm.Tokenizer.fromGGUF(metadata) : (null as never);
  agrees(() => tok);
  test("end-of-turn tokens also end generation", () => {
    expect(sm.lm.Tokenizer.fromGGUF({ ...metadata, "tokenizer.ggml.eot_token_id": 0 }).eosTokenIds).toEqual([2, 0]);
    expect(sm.lm.Tokenizer.fromGGUF({ ...metadata, "tokenizer.ggml.eot_token_id": 2 }).eosTokenIds).toEqual([2]);
  });
  test("bad input", () => {
    expect(errorMessage(() => tok.decode([49152]))).toContain("49152 is not a token id");
    expect(errorMessage(() => tok.encode(3 as unknown as string))).toContain("text must be a string");
    expect(errorMessage(() => sm.lm.Tokenizer.fromGGUF({ ...metadata, "tokenizer.ggml.pre": "nope" }))).toContain('tokenizer.ggml.pre "nope" is not supported');
    expect(errorMessage(() => sm.lm.Tokenizer.fromGGUF({ ...metadata, "tokenizer.ggml.model": "t5" }))).toContain('tokenizer.ggml.model "t5" is not supported');
    expect(errorMessage(() => sm.lm.Tokenizer.fromGGUF({ ...metadata, "tokenizer.ggml.bos_token_id": 1e6 }))).toContain("not a token id below 49152");
  });
});

const folder = modelPath("SmolLM2-135M-Instruct-tokenizer");
describe.skipIf(!folder)("Tokenizer.fromFile on the same tokenizer saved by transformers", () => {
  let tok: sm.lm.Tokenizer | undefined;
  agrees(() => (tok ??= sm.lm.Tokenizer.fromFile(join(folder!, "tokenizer.json"))));
  test("a missing file", () => {
    expect(errorMessage(() => sm.lm.Tokenizer.fromFile(join(folder!, "absent.json")))).toContain("cannot read");
  });
});

/** A BPE tokenizer.json of five tokens and two merges, without pre-tokenizer or decoder. */
const tinyJSON = () => ({
    version: "1.0", added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null,
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "",
      fuse_unk: false, byte_fallback: false, ignore_merges: false,
      vocab: { a: 0, b: 1, ab: 2, c: 3, abc: 4 }, merges: ["a b", "ab c"],
    },
  });

test("Tokenizer.fromJSON leaves the caller's object as it was, for another tokenizer", () => {
  const json = tinyJSON();
  const before = JSON.stringify(json);
  expect(sm.lm.Tokenizer.fromJSON(json).encode("abcab")).toEqual([4, 2]);
  expect(JSON.stringify(json)).toBe(before);
  expect(sm.lm.Tokenizer.fromJSON(json).encode("cab")).toEqual([3, 2]);
});

test("Tokenizer.fromJSON encodes as the library does from the same tokenizer.json", () => {
  // Merges listed twice, with a half that is no token, and as pairs; an added token that moves a token's id.
  const json = tinyJSON();
  json.model.merges = ["b c", "a b", "ab c", "x a", "b c", "abc"];
  const pairs = { ...json, model: { ...json.model, merges: json.model.merges.map((m) => m.split(" ")) } };
  const added = { ...json, added_tokens: [{ id: 5, content: "ab", special: false, normalized: false }] };
  for (const j of [json, pairs, added]) {
    const ours = sm.lm.Tokenizer.fromJSON(j);
    const theirs = new HFTokenizer(structuredClone(j), { clean_up_tokenization_spaces: false });
    expect(ours.vocabSize).toBe(theirs.get_vocab(true).size);
    for (const text of ["abcab", "bca", "xabc", "cabcx", "aabbcc"]) expect(ours.encode(text)).toEqual(theirs.encode(text).ids);
  }
});

test("decode checks ids against a vocabulary size it computes once", () => {
  // The library answers get_vocab by building a map of every token: once per decode was a
  // measurable part of a decoding step with 49152 tokens.
  const tok = sm.lm.Tokenizer.fromJSON(tinyJSON());
  const proto = HFTokenizer.prototype as { get_vocab: (withAdded?: boolean) => Map<string, number> };
  const original = proto.get_vocab;
  let calls = 0;
  proto.get_vocab = function (this: unknown, withAdded?: boolean) {
    calls++;
    return original.call(this, withAdded);
  };
  try {
    for (let i = 0; i < 5; i++) expect(tok.decode([4, 2])).toBe("abc ab");
    expect(errorMessage(() => tok.decode([5]))).toContain("not a token id");
  } finally {
    proto.get_vocab = original;
  }
  expect(calls).toBeLessThanOrEqual(1);
});
