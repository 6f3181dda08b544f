// sm.lm: language models.
export { type ChatMessage, Tokenizer } from "./tokenizer.ts";
export { applyRepetitionPenalty, filterLogits, sample, type SamplingOptions } from "./sample.ts";
