// PEFT parity on SmolLM2-135M-Instruct (the Q4_1 GGUF scripts/fetch-model.sh fetches): the PEFT
// adapter in test/fixtures/lora/smollm2 (made by scripts/reference/lora.py smollm2 on transformers'
// dequantization of the same file) gives PEFT's logits, and AdamW steps give PEFT + torch's losses.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { modelPath, SMOLLM2_GGUF } from "../models.ts";
import { adamwLosses, expectPeftLosses } from "./adamw-losses.ts";

setDefaultTimeout(300_000);
const FIX = join(import.meta.dir, "..", "fixtures", "lora", "smollm2");
const want = JSON.parse(readFileSync(join(FIX, "expected.json"), "utf8")) as {
  ids: number[][];
  lr: number;
  weightDecay: number;
  logitsHead: number[];
  logsumexp: number[];
  losses: number[];
};
const gguf = modelPath(SMOLLM2_GGUF);

describe.skipIf(!gguf)("SmolLM2-135M-Instruct with a PEFT adapter", () => {
  test("logits equal PEFT's; AdamW losses within 0.2% of PEFT + torch.optim.AdamW", async () => {
    const { model } = await sm.lm.load(gguf!);
    await sm.lora.load(model, join(FIX));
    const wrapped = sm.lora.loraLayers(model).map(([p]) => p);
    expect(wrapped).toEqual(["model.layers.28.self_attn.q_proj", "model.layers.28.self_attn.v_proj", "model.layers.28.mlp.down_proj", "model.layers.29.self_attn.q_proj", "model.layers.29.self_attn.v_proj", "model.layers.29.mlp.down_proj"]);
    const ids = sm.array(want.ids, "int32");
    const L = want.ids[0]!.length;
    model.eval();
    const logits = model.forward(ids).reshape([L, -1]);
    const head = logits.slice({}, { stop: 256 }).eval();
    const lse = sm.logsumexp(logits, -1).eval();
    const V = 256;
    let d = 0;
    const h = head.raw();
    for (let i = 0; i < L * V; i++) d = Math.max(d, Math.abs(h[i]! - want.logitsHead[i]!));
    const l = lse.raw();
    for (let i = 0; i < L; i++) d = Math.max(d, Math.abs(l[i]! - want.logsumexp[i]!));
    console.log(`SmolLM2 + PEFT adapter: logits max abs diff ${d.toExponential(2)}`);
    expect(d).toBeLessThanOrEqual(1e-2);

    // Merging into a quantized layer dequantizes it: the logits stay the adapter's.
    sm.lora.merge(model);
    expect(sm.lora.loraLayers(model)[0]![1].base_layer).toBeInstanceOf(sm.nn.Linear);
    const merged = model.forward(ids).reshape([L, -1]).slice({}, { stop: 256 }).eval().raw();
    let dm = 0;
    for (let i = 0; i < L * V; i++) dm = Math.max(dm, Math.abs(merged[i]! - h[i]!));
    expect(dm).toBeLessThanOrEqual(1e-3);
    sm.lora.unmerge(model);

    model.train();
    const x = ids.slice({}, { stop: L - 1 });
    const y = ids.slice({}, { start: 1 });
    const w = sm.full([1, L - 1], 1, "float32");
    expectPeftLosses("losses", adamwLosses(model, { x, y, w, count: L - 1 }, { ...want, steps: want.losses.length }), want.losses);
  });
});
