// sm.lm: language models.
export { type ChatMessage, Tokenizer } from "./tokenizer.ts";
