/**
 * Text generation: the prompt in one forward pass, then one token per forward pass with the
 * model's KV cache, each step's sampling evaluated with its forward pass. `stream` yields each
 * token with the text it adds; `generate` collects the same stream and adds throughput figures.
 */
import { SmeltError } from "../errors.ts";
import { getPeakMemory } from "../exec/memory.ts";
import { array, astype, reshape, slice } from "../tensor/ops.ts";
import * as randomReference from "../tensor/random-reference.ts";
import { asyncEval, Tensor, tidy } from "../tensor/tensor.ts";
import { resolveSampling, type Sampler, type SamplingOptions, sampleWith } from "./sample.ts";

/** What generation needs of a model: sm.lm.load's models have it. */
export interface CausalLM<Cache = unknown> {
  /**
   * int32 [B, T] token ids → logits [B, T, vocab]; with a cache, positions continue from it.
   * With lastOnly the model may return the last position's logits alone ([B, 1, vocab]); with
   * evaluate: false it may leave them and the cache's new entries lazy (generation evaluates
   * them with the sampled token).
   */
  forward(tokens: Tensor, cache?: Cache, opts?: { lastOnly?: boolean | undefined; evaluate?: boolean | undefined }): Tensor;
  makeCache(): Cache;
}

/** What generation needs of a tokenizer: sm.lm.Tokenizer has it. */
export interface TextTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
  readonly eosTokenIds: readonly number[];
}

export interface GenerateOptions extends SamplingOptions {
  /** The most tokens to generate (default 256), the end-of-sequence token included. */
  maxTokens?: number | undefined;
  /** Seeds the draws (with temperature above 0): the same seed gives the same tokens. Without it, the global key of sm.random. */
  seed?: number | bigint | undefined;
  /** Generation ends when the text contains one of these; the text ends before it. */
  stop?: string | readonly string[] | undefined;
}

export interface StreamChunk {
  /** The token generated (the end-of-sequence token too, last, when one ends generation). */
  token: number;
  /** The text it adds; empty while a character's bytes or a possible stop string are incomplete. */
  text: string;
}

export interface GenerateResult {
  text: string;
  /** The generated token ids, without the prompt; the end-of-sequence token, when one ended generation, is the last. */
  tokens: number[];
  /** How many tokens the prompt had. */
  promptTokens: number;
  /** Prompt tokens per second: the prompt's forward pass up to the first generated token. */
  promptTps: number;
  /** Tokens per second of the steps after the first token (0 when there were none). */
  generationTps: number;
  /** sm.getPeakMemory() at the end, in bytes: the weights and the largest working set since the last resetPeakMemory(). */
  peakMemory: number;
}

interface Plan {
  ids: number[];
  sampler: Sampler;
  maxTokens: number;
  seed: number | bigint | undefined;
  stop: string[];
}

function checkModel(op: string, model: unknown, tokenizer: unknown): void {
  const m = model as Partial<CausalLM> | null;
  if (!m || typeof m.forward !== "function" || typeof m.makeCache !== "function")
    throw new SmeltError(`${op}: model must have forward(tokens, cache) and makeCache() (a model from sm.lm.load), got ${String(model)}`);
  const t = tokenizer as Partial<TextTokenizer> | null;
  if (!t || typeof t.encode !== "function" || typeof t.decode !== "function" || !Array.isArray(t.eosTokenIds))
    throw new SmeltError(`${op}: tokenizer must have encode, decode and eosTokenIds (a tokenizer from sm.lm.load), got ${String(tokenizer)}`);
}

/** Checks everything the caller gave, before the first step, so errors come from the call itself. */
function plan(op: string, model: unknown, tokenizer: TextTokenizer, prompt: unknown, opts: GenerateOptions): Plan {
  checkModel(op, model, tokenizer);
  if (opts === null || typeof opts !== "object") throw new SmeltError(`${op}: options must be an object, got ${String(opts)}`);
  let ids: number[];
  if (typeof prompt === "string") ids = tokenizer.encode(prompt);
  else if (Array.isArray(prompt)) {
    const bad = prompt.find((t) => !Number.isInteger(t) || t < 0 || t > 0x7fffffff);
    if (bad !== undefined) throw new SmeltError(`${op}: prompt token ids must be non-negative integers, got ${String(bad)}`);
    ids = [...(prompt as number[])];
  } else throw new SmeltError(`${op}: prompt must be a string or an array of token ids, got ${String(prompt)}`);
  if (ids.length === 0) throw new SmeltError(`${op}: the prompt has no tokens`);
  const maxTokens = opts.maxTokens ?? 256;
  if (!Number.isSafeInteger(maxTokens) || maxTokens < 1) throw new SmeltError(`${op}: maxTokens must be an integer ≥ 1, got ${String(opts.maxTokens)}`);
  const seed = opts.seed;
  if (seed !== undefined && typeof seed !== "bigint" && !Number.isSafeInteger(seed))
    throw new SmeltError(`${op}: seed must be a safe integer or a bigint, got ${String(seed)}`);
  const stop = opts.stop === undefined ? [] : typeof opts.stop === "string" ? [opts.stop] : [...opts.stop];
  for (const s of stop) if (typeof s !== "string" || s === "") throw new SmeltError(`${op}: stop strings must be non-empty strings, got ${JSON.stringify(s)}`);
  return { ids, sampler: resolveSampling(op, opts), maxTokens, seed, stop };
}

/**
 * The tensors a cache holds: its tensors() (sm.lm's KVCache keeps them in private fields), else
 * those found through its objects and arrays (once each, so cycles end).
 */
function cacheTensors(cache: unknown): Tensor[] {
  const own = (cache as { tensors?: unknown } | null)?.tensors;
  return typeof own === "function" ? (own.call(cache) as Tensor[]) : tensorsIn(cache);
}
function tensorsIn(x: unknown, out: Tensor[] = [], seen = new Set<unknown>()): Tensor[] {
  if (x instanceof Tensor) out.push(x);
  else if (x && typeof x === "object" && !ArrayBuffer.isView(x) && !seen.has(x)) {
    seen.add(x);
    for (const v of Object.values(x)) tensorsIn(v, out, seen);
  }
  return out;
}

/** The end of `text` that starts one of `stop` without being all of it: held back until it is decided. */
function stopPrefixLength(text: string, stop: readonly string[]): number {
  let held = 0;
  for (const s of stop)
    for (let n = Math.min(s.length - 1, text.length); n > held; n--)
      if (text.endsWith(s.slice(0, n))) {
        held = n;
        break;
      }
  return held;
}

/**
 * The text of a growing list of tokens, decoding a few tokens a step rather than all of them
 * (which made a long generation quadratic). Tokens up to `read` are settled: their text ended
 * in a whole character. A step decodes the window from the settling point before (`prefix`) to
 * the end and keeps what follows the text of prefix..read decoded alone: both start at the same
 * token, so a decoder that treats a text's start specially (dropping a leading space) does so
 * in both. Where the window's text does not start with that part's (a decoder whose output
 * depends on tokens further back), everything is decoded.
 */
class Detokenizer {
  readonly #ids: number[] = [];
  /** The text of ids[0, read). */
  #settled = "";
  #prefix = 0;
  #read = 0;
  /** The text of ids[prefix, read) decoded alone. */
  #prefixText = "";
  constructor(readonly tokenizer: TextTokenizer) {}

  /** Adds a token; returns the text of all of them, as decode() of the whole list gives it. */
  push(token: number): string {
    const ids = this.#ids;
    ids.push(token);
    const window = this.tokenizer.decode(ids.slice(this.#prefix));
    const text = window.startsWith(this.#prefixText) ? this.#settled + window.slice(this.#prefixText.length) : this.tokenizer.decode(ids);
    if (!text.endsWith("\uFFFD")) {
      this.#settled = text;
      this.#prefix = this.#read;
      this.#read = ids.length;
      this.#prefixText = this.tokenizer.decode(ids.slice(this.#prefix, this.#read));
    }
    return text;
  }
}

/** A submitted step: its token (in flight) and the evaluation's promise. */
interface Step {
  next: Tensor;
  done: Promise<unknown>;
}

interface Timing {
  promptTokens: number;
  promptMs: number;
  decodeMs: number;
  decodeSteps: number;
}

/** The generation loop; `timing` is filled in as it goes. */
async function* steps(model: CausalLM, tokenizer: TextTokenizer, p: Plan, timing: Timing): AsyncGenerator<StreamChunk> {
  const cache = model.makeCache();
  const eos = new Set(tokenizer.eosTokenIds);
  const seen = p.sampler.repetitionPenalty !== undefined ? new Set(p.ids) : undefined;
  let key = p.seed !== undefined ? randomReference.key(p.seed) : undefined;
  const longestStop = Math.max(0, ...p.stop.map((s) => s.length));
  const detokenizer = new Detokenizer(tokenizer);
  let text = "";
  let emitted = 0;
  timing.promptTokens = p.ids.length;
  // A step's graph, built from the ids or from the previous step's token tensor, and submitted.
  const submit = (input: readonly number[] | Tensor): Step => {
    const [next] = tidy(() => {
      const ids = input instanceof Tensor ? astype(reshape(input, [1, 1]), "int32") : array([input], "int32");
      const logits = model.forward(ids, cache, { lastOnly: true, evaluate: false });
      const last = slice(logits, 0, -1);
      let k: Tensor | undefined;
      if (key) {
        // Split on the host (the reference is the kernel's split, bit for bit): the key chain
        // never becomes a graph that grows with the steps.
        const pair = randomReference.split(key, 2);
        key = pair.slice(0, 2);
        k = array(pair.slice(2, 4), "uint32");
      }
      // The cache's tensors are returned so that tidy keeps what forward put in it.
      return [sampleWith(last, p.sampler, k, seen ?? []), cacheTensors(cache)] as const;
    });
    // The cache is evaluated with the token: left lazy, each step's entries would be a graph
    // over the previous step's, recomputed and kept alive for the whole generation.
    return { next, done: asyncEval(next, cacheTensors(cache)) };
  };
  // The next step is built on this step's token tensor and submitted before the token is read,
  // so the host builds step n + 1 while the device computes step n (what mlx-lm does); a
  // repetition penalty needs the token's value first. A step past the end is computed and dropped.
  const ahead = seen === undefined;
  let last = performance.now();
  let current: Step | undefined = submit(p.ids);
  let following: Step | undefined;
  try {
    for (let step = 0; step < p.maxTokens; step++) {
      const now: Step = current!;
      following = ahead && step + 1 < p.maxTokens ? submit(now.next) : undefined;
      await now.done;
      const token = now.next.item();
      now.next.dispose();
      current = undefined;
      const arrived = performance.now();
      if (step === 0) timing.promptMs = arrived - last;
      else {
        timing.decodeMs += arrived - last;
        timing.decodeSteps++;
      }
      last = arrived;
      seen?.add(token);
      if (eos.has(token)) {
        yield { token, text: text.slice(emitted) };
        return;
      }
      const before = text;
      text = detokenizer.push(token);
      // A stop string can only newly appear where this token's text meets what came before.
      const from = Math.max(0, before.length - longestStop);
      let cut = -1;
      for (const s of p.stop) {
        const at = text.indexOf(s, from);
        if (at >= 0 && (cut < 0 || at < cut)) cut = at;
      }
      if (cut >= 0) {
        yield { token, text: text.slice(emitted, Math.max(emitted, cut)) };
        return;
      }
      if (step === p.maxTokens - 1) {
        yield { token, text: text.slice(emitted) };
        return;
      }
      // Hold back an incomplete character (decoded as U+FFFD) and a possible start of a stop string.
      let safe = text.length;
      while (safe > emitted && text.charCodeAt(safe - 1) === 0xfffd) safe--;
      safe = Math.max(emitted, safe - stopPrefixLength(text.slice(0, safe), p.stop));
      yield { token, text: text.slice(emitted, safe) };
      emitted = safe;
      current = following ?? submit([token]);
      following = undefined;
    }
  } finally {
    // A step submitted ahead and not needed (an end token, a stop string, the consumer stopped).
    for (const s of [current, following]) {
      if (!s) continue;
      await s.done.catch(() => {});
      s.next.dispose();
    }
    // The cache was made for this generation and nothing else sees it.
    for (const t of cacheTensors(cache)) t.dispose();
  }
}

/**
 * Generates from `prompt` (text, encoded with the tokenizer's special tokens, or token ids) and
 * yields each token with the text it adds; the chunks' texts join into generate()'s text. Ends at
 * an end-of-sequence token, a stop string or maxTokens. Options are checked at the call.
 */
export function stream(model: CausalLM, tokenizer: TextTokenizer, prompt: string | readonly number[], opts: GenerateOptions = {}): AsyncGenerator<StreamChunk> {
  const p = plan("lm.stream", model, tokenizer, prompt, opts);
  return steps(model, tokenizer, p, { promptTokens: 0, promptMs: 0, decodeMs: 0, decodeSteps: 0 });
}

/** stream() collected: the text, the tokens, and prompt and generation throughput. */
export function generate(model: CausalLM, tokenizer: TextTokenizer, prompt: string | readonly number[], opts: GenerateOptions = {}): Promise<GenerateResult> {
  const p = plan("lm.generate", model, tokenizer, prompt, opts);
  return (async () => {
    const timing: Timing = { promptTokens: 0, promptMs: 0, decodeMs: 0, decodeSteps: 0 };
    let text = "";
    const tokens: number[] = [];
    for await (const chunk of steps(model, tokenizer, p, timing)) {
      text += chunk.text;
      tokens.push(chunk.token);
    }
    return {
      text,
      tokens,
      promptTokens: timing.promptTokens,
      promptTps: timing.promptTokens / (timing.promptMs / 1000),
      generationTps: timing.decodeSteps === 0 ? 0 : timing.decodeSteps / (timing.decodeMs / 1000),
      peakMemory: getPeakMemory(),
    };
  })();
}
