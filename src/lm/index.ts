// sm.lm: language models.
export { type ChatMessage, Tokenizer } from "./tokenizer.ts";
export { applyRepetitionPenalty, filterLogits, sample, type SamplingOptions } from "./sample.ts";
export { type CausalLM, generate, type GenerateOptions, type GenerateResult, stream, type StreamChunk, type TextTokenizer } from "./generate.ts";
