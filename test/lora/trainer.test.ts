// The LoRA data pipeline and trainer on a tiny Llama: prompt masks from the chat template, padded
// length-sorted batches, metrics/loss.svg/checkpoints, and exact resume.
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { modelPath } from "../models.ts";
import { seededTiny } from "./tiny-llama.ts";

setDefaultTimeout(300_000);
const dir = mkdtempSync(join(tmpdir(), "smelt-lora-train-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// A character tokenizer with a chat template that wraps turns in markers, so masks are checkable by eye.
const charTok: sm.lora.TextTokenizer = {
  encode: (t) => [...t].map((c) => c.charCodeAt(0) % 64),
  applyChatTemplate: (msgs, o) => msgs.map((m) => `<${m.role[0]}>${m.content}|`).join("") + (o?.addGenerationPrompt ? "<a>" : ""),
  eosTokenIds: [1],
};

test("encodeRecord: the prompt mask starts where the template's assistant turn does", () => {
  const full = sm.lora.encodeRecord(charTok, { prompt: "hi", completion: "yo" }, { maskPrompt: true });
  // "<u>hi|<a>yo|": the loss counts "yo|", the tokens after "<u>hi|<a>".
  expect(full.ids.length).toBe(12);
  expect(full.start).toBe(9);
  expect(sm.lora.encodeRecord(charTok, { prompt: "hi", completion: "yo" }).start).toBe(0);
  const msgs = sm.lora.encodeRecord(charTok, { messages: [{ role: "system", content: "s" }, { role: "user", content: "q" }, { role: "assistant", content: "ans" }] }, { maskPrompt: true });
  expect(msgs.start).toBe("<s>s|<u>q|<a>".length);
  const text = sm.lora.encodeRecord(charTok, { text: "abc" });
  expect(text).toEqual({ ids: [97 % 64, 98 % 64, 99 % 64, 1], start: 0 });
  expect(() => sm.lora.encodeRecord(charTok, { text: "abc" }, { maskPrompt: true })).toThrow("maskPrompt needs");
  expect(() => sm.lora.encodeRecord(charTok, { messages: [{ role: "user", content: "q" }] }, { maskPrompt: true })).toThrow("assistant's");
});

const tokFolder = modelPath("SmolLM2-135M-Instruct-tokenizer");
describe.skipIf(!tokFolder)("with SmolLM2's tokenizer", () => {
  test("the masked span decodes to the assistant's answer and end of turn", () => {
    const tok = sm.lm.Tokenizer.fromFile(join(tokFolder!, "tokenizer.json"));
    const e = sm.lora.encodeRecord(tok, { prompt: "Spell cat", completion: "C A T" }, { maskPrompt: true });
    const answer = tok.decode(e.ids.slice(e.start));
    expect(answer.startsWith("C A T")).toBe(true);
    expect(answer).toContain("<|im_end|>");
    expect(tok.decode(e.ids.slice(0, e.start))).toEndWith("<|im_start|>assistant\n");
  });
});

test("makeBatch pads, shifts and masks; batchOrder sorts by length and shuffles by seed", () => {
  const ex = [
    { ids: [5, 6, 7, 8, 9], start: 2 },
    { ids: [10, 11, 12], start: 0 },
  ];
  const b = sm.lora.makeBatch(ex, { padTo: 8 });
  expect(b.inputs.shape).toEqual([2, 8]);
  expect(Array.from(b.inputs.raw()).slice(0, 8)).toEqual([5, 6, 7, 8, 0, 0, 0, 0]);
  expect(Array.from(b.targets.raw()).slice(0, 8)).toEqual([6, 7, 8, 9, 0, 0, 0, 0]);
  // Targets 7, 8, 9 lie past the prompt [5, 6]; the second row counts 11 and 12; padding counts nothing.
  expect(Array.from(b.weights.raw())).toEqual([0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0]);
  expect(b.count).toBe(5);
  expect(b.tokens).toBe(8);
  expect(sm.lora.makeBatch(ex, { maxSeqLength: 4 }).inputs.shape).toEqual([2, 3]);
  const many = Array.from({ length: 12 }, (_, i) => ({ ids: Array.from({ length: 2 + ((i * 7) % 12) }, () => 3), start: 0 }));
  const order = sm.lora.batchOrder(many, 3, null);
  const lens = order.flat().map((i) => many[i]!.ids.length);
  expect(lens).toEqual([...lens].sort((a, b) => a - b));
  const a = sm.lora.batchOrder(many, 3, 7, 0);
  expect(sm.lora.batchOrder(many, 3, 7, 0)).toEqual(a);
  expect(new Set(a.flat()).size).toBe(12);
  expect([0, 1, 2, 3].some((e) => JSON.stringify(sm.lora.batchOrder(many, 3, 7, e)) !== JSON.stringify(a))).toBe(true);
});

// Sequences from a simple rule (next = prev + 3 mod 60), so a few steps lower the loss.
function examples(n: number, seed: number): sm.lora.Example[] {
  let s = seed;
  const rand = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  return Array.from({ length: n }, () => {
    const len = 6 + Math.floor(rand() * 10);
    let v = Math.floor(rand() * 60);
    const ids = Array.from({ length: len }, () => (v = (v + 3) % 60));
    return { ids, start: 2 };
  });
}

function setup(dropout = 0.1) {
  const m = seededTiny(3);
  sm.random.seed(4);
  sm.lora.apply(m, { rank: 4, alpha: 8, dropout, targets: "all-linear" });
  return m;
}
const adapterOf = (m: sm.nn.Module) => m.namedParameters({ trainable: true }).map(([p, t]) => [p, Array.from(t.raw())] as const);

test("train: loss falls, metrics.jsonl, loss.svg, checkpoints; stop at k + resume equals the uninterrupted run bit for bit", async () => {
  const train = examples(24, 1);
  const valid = examples(8, 2);
  const common = { train, valid, batchSize: 4, gradAccumulation: 2, iters: 6, learningRate: 5e-2, lrSchedule: "cosine" as const, warmup: 2, stepsPerReport: 2, stepsPerEval: 3, saveEvery: 2, seed: 11 };

  const full = setup();
  const out = join(dir, "full");
  const evals: number[] = [];
  const steps: number[] = [];
  const r = await sm.lora.train({ model: full, ...common, adapterPath: out, onStep: (s) => void steps.push(s.loss), onEval: (e) => void evals.push(e.loss) });
  expect(r.steps).toBe(6);
  expect(steps.length).toBe(6);
  // Validation at step 0, 3 and 6; the trained adapter predicts the rule better.
  expect(evals.length).toBe(3);
  expect(evals[2]!).toBeLessThan(evals[0]! - 0.05);
  const metrics = readFileSync(join(out, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  expect(metrics.filter((m) => m.type === "train").map((m) => m.step)).toEqual([2, 4, 6]);
  expect(metrics.filter((m) => m.type === "valid").map((m) => m.step)).toEqual([0, 3, 6]);
  for (const k of ["loss", "learningRate", "itPerSec", "tokensPerSec", "peakMemory"]) expect(Number.isFinite(metrics[1][k])).toBe(true);
  const svg = readFileSync(join(out, "loss.svg"), "utf8");
  expect(svg.startsWith("<svg")).toBe(true);
  expect(svg.match(/<path /g)?.length).toBe(2);
  expect(existsSync(join(out, "checkpoints", "0000004", "optimizer.safetensors"))).toBe(true);
  expect(existsSync(join(out, "adapter_model.safetensors"))).toBe(true);

  // Stopped after step 3 (not a save or report step), then resumed by a fresh process-like setup.
  const part = join(dir, "part");
  const first = setup();
  const r1 = await sm.lora.train({ model: first, ...common, adapterPath: part, onStep: (s) => s.step < 3 });
  expect(r1).toMatchObject({ steps: 3, stoppedEarly: true });
  const resumed = setup();
  const t = new sm.lora.Trainer({ model: resumed, ...common, adapterPath: part, resume: true });
  const r2 = await t.run();
  expect(r2.steps).toBe(6);
  expect(adapterOf(resumed)).toEqual(adapterOf(full));
  expect(t.optimizer.step).toBe(6);
  // A resume with other settings is refused rather than silently diverging.
  await expect(sm.lora.train({ model: setup(), ...common, seed: 12, adapterPath: part, resume: true })).rejects.toThrow("other settings");
  // So is a run from step 0 into a folder an earlier run wrote: its metrics and checkpoints stay
  // as they were, not mixed with a second run's.
  const before = readFileSync(join(part, "metrics.jsonl"), "utf8");
  const refused = sm.lora.train({ model: setup(), ...common, adapterPath: part });
  await expect(refused).rejects.toBeInstanceOf(sm.SmeltError);
  await expect(sm.lora.train({ model: setup(), ...common, adapterPath: part })).rejects.toThrow(
    `lora.Trainer.run: ${part} holds checkpoints of an earlier run (the latest at step 6); pass resume: true`,
  );
  expect(readFileSync(join(part, "metrics.jsonl"), "utf8")).toBe(before);
});

test("memory does not grow from step to step", async () => {
  const m = setup(0.1);
  const active: number[] = [];
  await sm.lora.train({ model: m, train: examples(16, 5), batchSize: 4, gradAccumulation: 2, iters: 24, learningRate: 1e-3, stepsPerReport: 24, stepsPerEval: 24, seed: 1, onStep: () => void active.push(sm.getActiveMemory()) });
  console.log(`active memory after steps 5, 12, 24: ${[active[4], active[11], active[23]].map((b) => `${((b ?? 0) / 1024).toFixed(0)} KB`).join(", ")}`);
  expect(active[23]!).toBeLessThanOrEqual(active[4]!);
});
