/**
 * smelt generate: streams a model's continuation of a prompt to stdout, then reports prompt and
 * generation throughput and peak memory on stderr (so redirecting stdout keeps only the text).
 */
import { existsSync, readFileSync } from "node:fs";
import { numberFlag, parseFlags, UsageError } from "./usage.ts";

const USAGE = `usage: smelt generate --model PATH --prompt TEXT [options]

  --model PATH              a .gguf file or a Hugging Face model folder
  --prompt TEXT             the prompt ('-' reads it from stdin)
  --adapter DIR             a LoRA adapter to apply (sm.lora)
  --chat                    wrap the prompt in the model's chat template as a user message
  --system TEXT             with --chat, a system message first
  --max-tokens N            the most tokens to generate (default 256)
  --temp T                  sampling temperature; 0 (the default) is greedy
  --top-p P                 nucleus sampling: keep the likeliest tokens up to probability P
  --top-k K                 keep the K likeliest tokens
  --min-p P                 keep tokens at least P times as likely as the likeliest
  --repetition-penalty R    penalise tokens already seen (transformers' repetition_penalty)
  --seed S                  seed the sampling, for the same text every time`;

const OPTIONS = {
  model: { type: "string" },
  prompt: { type: "string" },
  adapter: { type: "string" },
  chat: { type: "boolean" },
  system: { type: "string" },
  "max-tokens": { type: "string" },
  temp: { type: "string" },
  "top-p": { type: "string" },
  "top-k": { type: "string" },
  "min-p": { type: "string" },
  "repetition-penalty": { type: "string" },
  seed: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

export async function run(argv: string[]): Promise<void> {
  const f = parseFlags("generate", argv, OPTIONS);
  if (f.help) {
    console.log(USAGE);
    return;
  }
  if (f.model === undefined) throw new UsageError("--model PATH is required (a .gguf file or a model folder)");
  if (f.prompt === undefined) throw new UsageError("--prompt TEXT is required");
  if (f.system !== undefined && !f.chat) throw new UsageError("--system needs --chat");
  const opts = {
    maxTokens: numberFlag("max-tokens", f["max-tokens"], { integer: true, min: 1 }) ?? 256,
    temperature: numberFlag("temp", f.temp, { min: 0 }),
    topP: numberFlag("top-p", f["top-p"], { min: Number.MIN_VALUE, max: 1 }),
    topK: numberFlag("top-k", f["top-k"], { integer: true, min: 1 }),
    minP: numberFlag("min-p", f["min-p"], { min: 0, max: 1 }),
    repetitionPenalty: numberFlag("repetition-penalty", f["repetition-penalty"], { min: Number.MIN_VALUE }),
    seed: numberFlag("seed", f.seed, { integer: true }),
  };
  if (!existsSync(f.model)) throw new UsageError(`no model at ${f.model}`);
  if (f.adapter !== undefined && !existsSync(f.adapter)) throw new UsageError(`no adapter at ${f.adapter}`);
  const prompt = f.prompt === "-" ? readFileSync(0, "utf8") : f.prompt;

  // Loaded only now: flag mistakes are reported without building or loading the native backend.
  const sm = await import("../index.ts");
  // sm.lora (its own module) applies adapters; a build without it says so rather than ignoring the flag.
  const lora = (sm as { lora?: { load(model: unknown, dir: string): unknown } }).lora;
  if (f.adapter !== undefined && !lora) throw new UsageError("--adapter needs sm.lora, which this build of smelt does not have");
  const { model, tokenizer } = await sm.lm.load(f.model);
  if (f.adapter !== undefined) await lora!.load(model, f.adapter);
  let ids: number[];
  if (f.chat) {
    const messages = [...(f.system !== undefined ? [{ role: "system", content: f.system }] : []), { role: "user", content: prompt }];
    // The template writes the special tokens itself.
    ids = tokenizer.encode(tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true }), { addSpecialTokens: false });
  } else ids = tokenizer.encode(prompt);

  const start = performance.now();
  let first = 0;
  let last = 0;
  let count = 0;
  for await (const chunk of sm.lm.stream(model, tokenizer, ids, opts)) {
    if (count === 0) first = performance.now();
    last = performance.now();
    count++;
    if (chunk.text) process.stdout.write(chunk.text);
  }
  process.stdout.write("\n");
  const promptTps = ids.length / ((first - start) / 1000);
  const generationTps = count > 1 ? (count - 1) / ((last - first) / 1000) : 0;
  console.error("==========");
  console.error(`Prompt: ${ids.length} tokens, ${promptTps.toFixed(3)} tokens-per-sec`);
  console.error(`Generation: ${count} tokens, ${generationTps.toFixed(3)} tokens-per-sec`);
  console.error(`Peak memory: ${(sm.getPeakMemory() / 1e9).toFixed(3)} GB`);
}
