/**
 * Text to token ids and back, and chat templates. The tokenization itself is
 * @huggingface/tokenizers' (a JavaScript port of Hugging Face's tokenizers), fed a tokenizer.json;
 * a GGUF file carries no tokenizer.json, so one is assembled from its `tokenizer.ggml.*` metadata.
 * Chat templates are Jinja, rendered by @huggingface/jinja with the variables transformers passes.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer as HFTokenizer } from "@huggingface/tokenizers";
import { SmeltError } from "../errors.ts";
import type { GGUFValue } from "../io/gguf.ts";
import { MergeRanks } from "./merge-ranks.ts";

export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

type Json = Record<string, unknown>;

/**
 * How each `tokenizer.ggml.pre` (llama.cpp's names) splits text before byte-level BPE: a regex,
 * or null for GPT-2's own split, which ByteLevel applies; digits: single digits are split first.
 */
const LLAMA3_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const PRE_TOKENIZERS: Record<string, { split: string | null; digits: boolean }> = {
  default: { split: null, digits: false },
  gpt2: { split: null, digits: false },
  smollm: { split: null, digits: true },
  "llama-bpe": { split: LLAMA3_SPLIT, digits: false },
  llama3: { split: LLAMA3_SPLIT, digits: false },
  qwen2: { split: QWEN2_SPLIT, digits: false },
};

/** GGUF token types: control tokens are special (skipped by decode's skipSpecialTokens), user-defined ones are kept whole. */
const CONTROL = 3;
const USER_DEFINED = 4;

/** A token's text in a tokenizer config: a string, or an added-token object with `content`. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  return undefined;
}

/**
 * The tables of the library's BPE model that buildTokenizer fills in: public fields of its BPE
 * class, whose type the package's entry point does not export.
 */
interface BPEModel {
  vocab: string[];
  tokens_to_ids: Map<string, number>;
  bpe_ranks: Map<string, number>;
  unk_token?: string | undefined;
  unk_token_id?: number | undefined;
}

/** A BPE model's vocabulary and merges ("a b" strings or [a, b] pairs). */
interface BPETables {
  ids: Map<string, number>;
  merges: readonly unknown[];
}

/**
 * The library's tokenizer of a tokenizer.json object. For a BPE model the library would build its
 * tables from the vocabulary object and the merges, with an intermediate array or object per
 * token and per merge, and keep a string per merge: it is given a copy (the caller's object is
 * left as it is, and the library keeps the object it is given) with an empty vocabulary and no
 * merges, and the tables built here (from `tables`, or from the copy's model) take their place,
 * with the added tokens that the library set in its empty tables over them as it would have.
 */
function buildTokenizer(json: Json, config: Json, tables?: BPETables): HFTokenizer {
  const model = json.model as Json | undefined;
  if (!model || model.type !== "BPE") return new HFTokenizer(json, config);
  if (!tables) {
    if (!model.vocab || typeof model.vocab !== "object" || !Array.isArray(model.merges)) return new HFTokenizer(json, config);
    tables = { ids: new Map(Object.entries(model.vocab as Record<string, number>)), merges: model.merges };
  }
  const inner = new HFTokenizer({ ...json, model: { ...model, vocab: {}, merges: [] } }, config);
  const bpe = inner.model as unknown as BPEModel;
  const { ids, merges } = tables;
  const vocab: string[] = new Array(ids.size);
  for (const [t, id] of ids) vocab[id] = t;
  // The library looks the unknown token up in the vocabulary alone, before the added tokens.
  bpe.unk_token_id = ids.get(bpe.unk_token as string);
  bpe.vocab.forEach((t, id) => (vocab[id] = t));
  for (const [t, id] of bpe.tokens_to_ids) ids.set(t, id);
  bpe.vocab = vocab;
  bpe.tokens_to_ids = ids;
  bpe.bpe_ranks = new MergeRanks(merges, ids);
  return inner;
}

export class Tokenizer {
  private readonly template: Template | null;

  private constructor(
    private readonly inner: HFTokenizer,
    private readonly config: Json,
    readonly bosTokenId: number | null,
    readonly eosTokenIds: number[],
  ) {
    const t = config.chat_template;
    this.template = typeof t === "string" ? new Template(t) : null;
  }

  /** From the parsed tokenizer.json and tokenizer_config.json of a Hugging Face model folder. */
  static fromJSON(tokenizerJson: Json, tokenizerConfig: Json = {}): Tokenizer {
    // transformers cleans up spaces before punctuation on decode only when the config asks for it.
    const config: Json = { clean_up_tokenization_spaces: false, ...tokenizerConfig };
    const inner = buildTokenizer(tokenizerJson, config);
    const id = (key: string): number | null => {
      const text = tokenText(config[key]);
      return text === undefined ? null : (inner.token_to_id(text) ?? null);
    };
    const eos = id("eos_token");
    return new Tokenizer(inner, config, id("bos_token"), eos === null ? [] : [eos]);
  }

  /**
   * From tokenizer.json, with the tokenizer_config.json beside it when there is one, and the chat
   * template from chat_template.jinja beside it when the config has none (newer transformers save it there).
   */
  static fromFile(path: string): Tokenizer {
    let json: Json;
    try {
      json = JSON.parse(readFileSync(path, "utf8")) as Json;
    } catch (e) {
      throw new SmeltError(`Tokenizer.fromFile: cannot read ${path}: ${(e as Error).message}`);
    }
    let config: Json = {};
    try {
      config = JSON.parse(readFileSync(join(dirname(path), "tokenizer_config.json"), "utf8")) as Json;
    } catch {
      // A folder may have no tokenizer_config.json: then there is no chat template and no BOS/EOS.
    }
    if (typeof config.chat_template !== "string") {
      try {
        config = { ...config, chat_template: readFileSync(join(dirname(path), "chat_template.jinja"), "utf8") };
      } catch {
        // No template file either: applyChatTemplate says so when called.
      }
    }
    return Tokenizer.fromJSON(json, config);
  }

  /** From a GGUF file's metadata (`tokenizer.ggml.*` and `tokenizer.chat_template`). */
  static fromGGUF(metadata: Record<string, GGUFValue>): Tokenizer {
    const op = "Tokenizer.fromGGUF";
    const model = metadata["tokenizer.ggml.model"];
    if (model !== "gpt2") {
      throw new SmeltError(`${op}: tokenizer.ggml.model ${JSON.stringify(model)} is not supported (byte-level BPE, "gpt2", is)`);
    }
    const tokens = metadata["tokenizer.ggml.tokens"];
    const merges = metadata["tokenizer.ggml.merges"];
    if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === "string")) throw new SmeltError(`${op}: tokenizer.ggml.tokens must be an array of strings`);
    if (!Array.isArray(merges) || !merges.every((t) => typeof t === "string")) throw new SmeltError(`${op}: tokenizer.ggml.merges must be an array of strings`);
    const names = tokens as string[];
    const types = metadata["tokenizer.ggml.token_type"];
    const typeOf = (i: number) => (Array.isArray(types) ? Number(types[i]) : 1);
    const preName = String(metadata["tokenizer.ggml.pre"] ?? "default");
    const pre = PRE_TOKENIZERS[preName];
    if (!pre) {
      throw new SmeltError(`${op}: tokenizer.ggml.pre ${JSON.stringify(preName)} is not supported (known: ${Object.keys(PRE_TOKENIZERS).join(", ")})`);
    }
    const tokenId = (key: string): number | null => {
      const v = metadata[`tokenizer.ggml.${key}`];
      if (v === undefined) return null;
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= names.length) {
        throw new SmeltError(`${op}: tokenizer.ggml.${key} is ${String(v)}, not a token id below ${names.length}`);
      }
      return v;
    };
    const bos = tokenId("bos_token_id");
    const eos = tokenId("eos_token_id");
    const addBos = metadata["tokenizer.ggml.add_bos_token"] === true && bos !== null;

    const ids = new Map<string, number>();
    names.forEach((t, i) => ids.set(t, i));
    const added: Json[] = [];
    names.forEach((content, id) => {
      const type = typeOf(id);
      if (type === CONTROL || type === USER_DEFINED) added.push({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: type === CONTROL });
    });
    const byteLevel = (useRegex: boolean) => ({ type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: useRegex });
    const steps: Json[] = [];
    if (pre.digits) steps.push({ type: "Digits", individual_digits: true });
    if (pre.split) steps.push({ type: "Split", pattern: { Regex: pre.split }, behavior: "Isolated", invert: false });
    steps.push(byteLevel(pre.split === null));
    const bosText = bos === null ? undefined : names[bos]!;
    const json: Json = {
      version: "1.0",
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: steps.length === 1 ? steps[0] : { type: "Sequence", pretokenizers: steps },
      post_processor: {
        type: "TemplateProcessing",
        single: [...(addBos ? [{ SpecialToken: { id: bosText, type_id: 0 } }] : []), { Sequence: { id: "A", type_id: 0 } }],
        pair: [{ Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
        special_tokens: addBos ? { [bosText!]: { id: bosText, ids: [bos], tokens: [bosText] } } : {},
      },
      decoder: byteLevel(true),
      model: {
        type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "",
        fuse_unk: false, byte_fallback: false, ignore_merges: false,
      },
    };
    const config: Json = {
      bos_token: bosText,
      eos_token: eos === null ? undefined : names[eos],
      chat_template: metadata["tokenizer.chat_template"],
      add_bos_token: addBos,
      clean_up_tokenization_spaces: false,
    };
    // Generation also ends at end-of-turn and end-of-message tokens (Llama 3's <|eot_id|>, <|eom_id|>).
    const ends = [eos, tokenId("eot_token_id"), tokenId("eom_token_id")].filter((id): id is number => id !== null);
    return new Tokenizer(buildTokenizer(json, config, { ids, merges }), config, bos, [...new Set(ends)]);
  }

  #vocabSize: number | undefined;
  /** Computed once: the library builds a map of the whole vocabulary to answer it, and decode checks every id against it. */
  get vocabSize(): number {
    return (this.#vocabSize ??= this.inner.get_vocab(true).size);
  }

  encode(text: string, { addSpecialTokens = true }: { addSpecialTokens?: boolean } = {}): number[] {
    if (typeof text !== "string") throw new SmeltError(`Tokenizer.encode: text must be a string, got ${typeof text}`);
    return this.inner.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: readonly number[], { skipSpecialTokens = false }: { skipSpecialTokens?: boolean } = {}): string {
    const size = this.vocabSize;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= size) throw new SmeltError(`Tokenizer.decode: ${id} is not a token id (the vocabulary has ${size})`);
    }
    // The library refuses an empty list; no tokens are the empty text.
    return ids.length === 0 ? "" : this.inner.decode([...ids], { skip_special_tokens: skipSpecialTokens });
  }

  /** The chat template's text for these messages, as transformers' apply_chat_template(tokenize=False). */
  applyChatTemplate(messages: readonly ChatMessage[], { addGenerationPrompt = false }: { addGenerationPrompt?: boolean } = {}): string {
    if (!this.template) throw new SmeltError("Tokenizer.applyChatTemplate: this tokenizer has no chat template");
    return this.template.render({
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: tokenText(this.config.bos_token) ?? "",
      eos_token: tokenText(this.config.eos_token) ?? "",
    });
  }
}
