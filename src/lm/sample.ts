/**
 * Choosing the next token from a row of logits: greedy, or a seeded draw from the logits after
 * temperature, top-k, top-p (nucleus) and min-p filtering, with transformers' repetition penalty.
 * Everything is lazy tensor ops over the last axis, so a step's sampling joins the evaluation of
 * the model's forward pass, and rows of a batch are sampled independently.
 *
 * The filters are applied in transformers' order (top-k, then top-p over what top-k kept, then
 * min-p) and each keeps every token whose logit reaches a threshold, so tokens tied with the last
 * one kept are kept too and the result does not depend on how a sort orders equal logits.
 */
import { SmeltError } from "../errors.ts";
import {
  add,
  argmax,
  astype,
  cumsum,
  divide,
  fromBytes,
  greater,
  less,
  lessEqual,
  max,
  maximum,
  multiply,
  slice,
  softmax,
  sum,
  where,
} from "../tensor/ops.ts";
import { sort } from "../tensor/ops-sort.ts";
import { takeAlongAxis } from "../tensor/ops-structure.ts";
import { categorical } from "../tensor/random.ts";
import { composite, Tensor } from "../tensor/tensor.ts";

export interface SamplingOptions {
  /** 0 (the default) picks the most likely token; above 0 divides the logits before drawing. */
  temperature?: number | undefined;
  /** Keep the k most likely tokens (and those tied with the k-th). */
  topK?: number | undefined;
  /** Keep the most likely tokens until their probabilities sum to at least p, 0 < p ≤ 1. */
  topP?: number | undefined;
  /** Keep tokens at least minP times as likely as the most likely one, 0 ≤ minP ≤ 1. */
  minP?: number | undefined;
  /**
   * Seen tokens' logits are divided by this when positive and multiplied by it when negative
   * (transformers' repetition_penalty); 1 leaves them alone.
   */
  repetitionPenalty?: number | undefined;
}

/** The options resolved: every filter that does nothing is left out. */
export interface Sampler {
  temperature: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
}

const fmt = (v: unknown) => (typeof v === "number" ? String(v) : typeof v === "string" ? JSON.stringify(v) : String(v));

/** Checks sampling options where the caller gave them, so a bad value names the call that took it. */
export function resolveSampling(op: string, o: SamplingOptions): Sampler {
  const num = (name: string, v: unknown, ok: (x: number) => boolean, what: string): number | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v) || !ok(v)) throw new SmeltError(`${op}: ${name} must be ${what}, got ${fmt(v)}`);
    return v;
  };
  const temperature = num("temperature", o.temperature, (x) => x >= 0, "a number ≥ 0") ?? 0;
  const topK = num("topK", o.topK, (x) => Number.isInteger(x) && x >= 1, "an integer ≥ 1");
  const topP = num("topP", o.topP, (x) => x > 0 && x <= 1, "a number in (0, 1]");
  const minP = num("minP", o.minP, (x) => x >= 0 && x <= 1, "a number in [0, 1]");
  const repetitionPenalty = num("repetitionPenalty", o.repetitionPenalty, (x) => x > 0, "a number > 0");
  const s: Sampler = { temperature };
  if (topK !== undefined) s.topK = topK;
  if (topP !== undefined && topP < 1) s.topP = topP;
  if (minP !== undefined && minP > 0) s.minP = minP;
  if (repetitionPenalty !== undefined && repetitionPenalty !== 1) s.repetitionPenalty = repetitionPenalty;
  return s;
}

function checkLogits(op: string, logits: unknown): Tensor {
  if (!(logits instanceof Tensor)) throw new SmeltError(`${op}: logits must be a Tensor, got ${String(logits)}`);
  if (logits.ndim === 0 || logits.shape[logits.ndim - 1] === 0)
    throw new SmeltError(`${op}: logits need a last axis of tokens, got shape [${logits.shape.join(", ")}]`);
  if (logits.dtype !== "float32" && logits.dtype !== "float16" && logits.dtype !== "bfloat16")
    throw new SmeltError(`${op}: logits must be floating point, got ${logits.dtype}`);
  return logits;
}

/**
 * transformers' repetition penalty over the last axis: the logits of the tokens in `seen` (ids of
 * the prompt and of what was generated) are divided by penalty where positive, multiplied where not.
 */
export function applyRepetitionPenalty(logits: Tensor, seen: Iterable<number>, penalty: number): Tensor {
  const op = "lm.applyRepetitionPenalty";
  const l = checkLogits(op, logits);
  if (typeof penalty !== "number" || !Number.isFinite(penalty) || penalty <= 0)
    throw new SmeltError(`${op}: penalty must be a number > 0, got ${fmt(penalty)}`);
  const vocab = l.shape[l.ndim - 1]!;
  const mask = new Uint8Array(vocab);
  for (const t of seen) {
    if (!Number.isInteger(t) || t < 0 || t >= vocab) throw new SmeltError(`${op}: token id ${t} is outside the vocabulary of ${vocab}`);
    mask[t] = 1;
  }
  return composite(() => {
    const m = fromBytes(mask, [vocab], "bool");
    return where(m, where(greater(l, 0), divide(l, penalty), multiply(l, penalty)), l);
  });
}

/**
 * The logits over the last axis with every token that top-k, top-p or min-p removes set to -∞
 * (after dividing by the temperature when it is above 0). The others are unchanged.
 */
export function filterLogits(logits: Tensor, opts: SamplingOptions = {}): Tensor {
  const op = "lm.filterLogits";
  const l = checkLogits(op, logits);
  const s = resolveSampling(op, opts);
  return composite(() => filtered(l, s));
}

function filtered(logits: Tensor, s: Sampler): Tensor {
  const l = astype(s.temperature > 0 && s.temperature !== 1 ? divide(logits, s.temperature) : logits, "float32");
  const vocab = l.shape[l.ndim - 1]!;
  const last = l.ndim - 1;
  const topK = s.topK !== undefined && s.topK < vocab ? s.topK : undefined;
  let threshold: Tensor | undefined;
  if (topK !== undefined || s.topP !== undefined) {
    // One ascending sort serves both: top-k's threshold is the k-th largest logit, and top-p's
    // cumulative sums run over the sorted row with top-k's removals already at -∞.
    let sorted = sort(l, last);
    if (topK !== undefined) {
      threshold = slice(sorted, "...", { start: vocab - topK, stop: vocab - topK + 1 });
      sorted = where(less(sorted, threshold), -Infinity, sorted);
    }
    if (s.topP !== undefined) {
      // The tokens dropped are those whose ascending cumulative probability stays ≤ 1 - p; the
      // largest token's sum is 1, so at least one is kept.
      const dropped = sum(lessEqual(cumsum(softmax(sorted, last), last), 1 - s.topP), last, true);
      const p = takeAlongAxis(sorted, astype(dropped, "uint32"), last);
      threshold = threshold ? maximum(threshold, p) : p;
    }
  }
  if (s.minP !== undefined) {
    // p_i ≥ minP · p_max ⇔ logit_i ≥ max logit + log(minP); top-k and top-p never drop the
    // largest, so the ratio is the same before and after them.
    const m = add(max(l, last, true), Math.log(s.minP));
    threshold = threshold ? maximum(threshold, m) : m;
  }
  return threshold ? where(less(l, threshold), -Infinity, l) : l;
}

/**
 * The next token of every row of logits (uint32, logits' shape without the last axis): argmax at
 * temperature 0, else a draw under `key` (a key of sm.random; the global key when left out).
 * `seen` gives the token ids the repetition penalty applies to.
 */
export function sample(logits: Tensor, opts: SamplingOptions = {}, key?: Tensor, seen: Iterable<number> = []): Tensor {
  const op = "lm.sample";
  const l = checkLogits(op, logits);
  return sampleWith(l, resolveSampling(op, opts), key, seen);
}

/** sample() with options already checked, for the generation loop. */
export function sampleWith(logits: Tensor, s: Sampler, key: Tensor | undefined, seen: Iterable<number>): Tensor {
  return composite(() => {
    const l = s.repetitionPenalty !== undefined ? applyRepetitionPenalty(logits, seen, s.repetitionPenalty) : logits;
    if (s.temperature === 0) return argmax(l, -1);
    return categorical(filtered(l, s), -1, undefined, key);
  });
}
