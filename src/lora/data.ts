/**
 * Training data: JSONL records (`{"text"}`, `{"prompt","completion"}`, `{"messages"}`) turned into
 * token ids with the span the loss counts, then length-sorted, padded batches. Batch order is a
 * pure function of (seed, epoch), so a trainer resumes at any step without saving a data cursor.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { SmeltError } from "../errors.ts";
import type { ChatMessage } from "../lm/tokenizer.ts";
import * as ops from "../tensor/ops.ts";
import type { Tensor } from "../tensor/tensor.ts";

/** What the data pipeline needs of a tokenizer (sm.lm.Tokenizer has it). */
export interface TextTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  applyChatTemplate(messages: readonly ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
  readonly eosTokenIds?: readonly number[];
}

export type Record_ = { text: string } | { prompt: string; completion: string } | { messages: ChatMessage[] };

/** One tokenized example: the loss counts tokens from `start` on (0 without a prompt mask). */
export interface Example {
  ids: number[];
  start: number;
}

/** The records of DIR/<split>.jsonl, or null when the file does not exist. */
export function readSplit(dir: string, split: "train" | "valid" | "test"): Record_[] | null {
  const path = join(dir, `${split}.jsonl`);
  if (!existsSync(path)) return null;
  const out: Record_[] = [];
  readFileSync(path, "utf8")
    .split("\n")
    .forEach((line, i) => {
      if (line.trim() === "") return;
      let r: unknown;
      try {
        r = JSON.parse(line);
      } catch (e) {
        throw new SmeltError(`lora data: ${path}:${i + 1} is not JSON (${(e as Error).message})`);
      }
      out.push(checkRecord(r, `${path}:${i + 1}`));
    });
  return out;
}

function checkRecord(r: unknown, where: string): Record_ {
  const o = r as Record<string, unknown>;
  if (o && typeof o === "object") {
    if (typeof o.text === "string") return { text: o.text };
    if (typeof o.prompt === "string" && typeof o.completion === "string") return { prompt: o.prompt, completion: o.completion };
    if (Array.isArray(o.messages) && o.messages.length > 0 && o.messages.every((m) => m && typeof m.role === "string" && typeof m.content === "string"))
      return { messages: o.messages as ChatMessage[] };
  }
  throw new SmeltError(`lora data: ${where} must be {"text"}, {"prompt","completion"} or {"messages": [{role, content}, ...]}`);
}

const hasTemplate = (tok: TextTokenizer) => {
  try {
    tok.applyChatTemplate([{ role: "user", content: "" }]);
    return true;
  } catch {
    return false;
  }
};

/**
 * Tokenizes a record. Prompt/completion pairs become a user and an assistant turn when the tokenizer
 * has a chat template (as mlx-lm does), plain concatenation otherwise. With maskPrompt, the loss
 * starts where the last assistant turn does, found by rendering the conversation without it (with
 * the generation prompt) and tokenizing that: the template decides, not a guessed prefix.
 */
export function encodeRecord(tok: TextTokenizer, r: Record_, opts: { maskPrompt?: boolean | undefined; chat?: boolean } = {}): Example {
  const chat = opts.chat ?? hasTemplate(tok);
  if ("text" in r) {
    if (opts.maskPrompt) throw new SmeltError('lora data: maskPrompt needs {"prompt","completion"} or {"messages"} records, got {"text"}');
    return { ids: withEos(tok, tok.encode(r.text)), start: 0 };
  }
  if ("prompt" in r && !chat) {
    const prompt = tok.encode(r.prompt);
    const full = withEos(tok, tok.encode(r.prompt + r.completion));
    return { ids: full, start: opts.maskPrompt ? commonPrefix(prompt, full) : 0 };
  }
  const messages: ChatMessage[] = "prompt" in r ? [{ role: "user", content: r.prompt }, { role: "assistant", content: r.completion }] : r.messages;
  const full = tok.encode(tok.applyChatTemplate(messages), { addSpecialTokens: false });
  if (!opts.maskPrompt) return { ids: full, start: 0 };
  const last = messages[messages.length - 1]!;
  if (last.role !== "assistant") throw new SmeltError(`lora data: maskPrompt needs the last message to be the assistant's, got "${last.role}"`);
  const promptText = tok.applyChatTemplate(messages.slice(0, -1), { addGenerationPrompt: true });
  const prompt = tok.encode(promptText, { addSpecialTokens: false });
  const start = commonPrefix(prompt, full);
  if (start >= full.length) throw new SmeltError("lora data: the rendered conversation has no tokens after the prompt (is the assistant turn empty?)");
  return { ids: full, start };
}

function withEos(tok: TextTokenizer, ids: number[]): number[] {
  const eos = tok.eosTokenIds?.[0];
  return eos === undefined || ids[ids.length - 1] === eos ? ids : [...ids, eos];
}

// Tokens may merge across the prompt/answer boundary: count only the tokens both agree on.
function commonPrefix(a: number[], b: number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

/** A padded batch: inputs and targets [B, T], weights [B, T] with 1 where the loss counts. */
export interface Batch {
  inputs: Tensor;
  targets: Tensor;
  weights: Tensor;
  /** Target tokens counted by the loss. */
  count: number;
  /** Real (unpadded) input tokens. */
  tokens: number;
}

/** A small seeded generator (mulberry32): batch order must not depend on sm.random's global key. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Length-sorted batches of examples as index lists. Sorting keeps padding small; the batches'
 * order is shuffled by (seed, epoch) for training, kept for evaluation (seed null).
 */
export function batchOrder(examples: readonly Example[], batchSize: number, seed: number | null, epoch = 0): number[][] {
  if (examples.length < batchSize) throw new SmeltError(`lora data: ${examples.length} examples cannot fill a batch of ${batchSize}`);
  const sorted = examples.map((e, i) => [e.ids.length, i] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map(([, i]) => i);
  const batches: number[][] = [];
  for (let i = 0; i + batchSize <= sorted.length; i += batchSize) batches.push(sorted.slice(i, i + batchSize));
  if (seed !== null) {
    const rand = prng(seed * 1000003 + epoch);
    for (let i = batches.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [batches[i], batches[j]] = [batches[j]!, batches[i]!];
    }
  }
  return batches;
}

/**
 * Pads the examples into a batch, truncated to maxSeqLength tokens. The padded width is rounded up
 * to a multiple of `padTo`, so few distinct shapes (and kernels) occur over a run.
 */
export function makeBatch(examples: readonly Example[], opts: { maxSeqLength?: number | undefined; padTo?: number | undefined; padId?: number | undefined } = {}): Batch {
  const maxLen = opts.maxSeqLength ?? 2048;
  const padTo = opts.padTo ?? 8;
  const seqs = examples.map((e) => ({ ids: e.ids.slice(0, maxLen), start: e.start }));
  const longest = Math.max(...seqs.map((s) => s.ids.length));
  if (longest < 2) throw new SmeltError("lora data: every example in the batch has fewer than 2 tokens");
  const width = Math.min(Math.ceil((longest - 1) / padTo) * padTo, Math.max(maxLen - 1, longest - 1));
  const b = seqs.length;
  const inputs = new Int32Array(b * width).fill(opts.padId ?? 0);
  const targets = new Int32Array(b * width).fill(opts.padId ?? 0);
  const weights = new Float32Array(b * width);
  let count = 0;
  let tokens = 0;
  seqs.forEach(({ ids, start }, r) => {
    tokens += ids.length;
    for (let t = 0; t + 1 < ids.length; t++) {
      inputs[r * width + t] = ids[t]!;
      targets[r * width + t] = ids[t + 1]!;
      // Target t is token t + 1: it counts when it lies past the prompt.
      if (t + 1 >= Math.max(start, 1)) {
        weights[r * width + t] = 1;
        count++;
      }
    }
  });
  return {
    inputs: ops.fromBytes(inputs, [b, width], "int32"),
    targets: ops.fromBytes(targets, [b, width], "int32"),
    weights: ops.fromBytes(weights, [b, width], "float32"),
    count,
    tokens,
  };
}
