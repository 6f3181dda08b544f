// sm.lm: language models.
export { type ChatMessage, Tokenizer } from "./tokenizer.ts";
export { applyRepetitionPenalty, filterLogits, sample, type SamplingOptions } from "./sample.ts";
export { type CausalLM, generate, type GenerateOptions, type GenerateResult, stream, type StreamChunk, type TextTokenizer } from "./generate.ts";
export { type Architecture, type ModelConfig, type RopeScaling } from "./config.ts";
export { KVCache } from "./cache.ts";
export { LlamaModel, type WeightSource } from "./llama.ts";
export { load, type LoadedModel, type LoadOptions } from "./load.ts";
