// sm.lora on a tiny Llama: apply/freeze, PEFT and mlx-lm adapters (fixtures from
// scripts/reference/lora.py), save/load round trip, merge/unmerge, and AdamW losses vs PEFT + torch.
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { errorMessage } from "../expect-error.ts";
import { adamwLosses, expectPeftLosses } from "./adamw-losses.ts";
import { TinyLlama, seededTiny } from "./tiny-llama.ts";

setDefaultTimeout(300_000);
const FIX = join(import.meta.dir, "..", "fixtures", "lora");
const expected = JSON.parse(readFileSync(join(FIX, "expected.json"), "utf8")) as {
  ids: number[][];
  mask: number[][];
  lr: number;
  weightDecay: number;
  logits: number[];
  logitsShape: number[];
  losses: number[];
};
const dir = mkdtempSync(join(tmpdir(), "smelt-lora-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function reference(): TinyLlama {
  const m = new TinyLlama();
  m.loadWeights(join(FIX, "base.safetensors"));
  return m;
}
const ids = sm.array(expected.ids, "int32");
const logitsOf = (m: TinyLlama) => Array.from(m.forward(ids).eval().raw());
/** The fixture's ids as next-token inputs and targets, with PEFT's loss mask. */
function fixtureBatch() {
  const L = expected.ids[0]!.length;
  return {
    x: sm.slice(ids, {}, { stop: L - 1 }),
    y: sm.slice(ids, {}, { start: 1 }),
    w: sm.array(expected.mask.map((r) => r.slice(1)), "float32"),
    count: expected.mask.reduce((n, r) => n + r.slice(1).reduce((a, b) => a + b, 0), 0),
  };
}
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
};

test("apply wraps the targets, freezes the rest and counts the adapter's parameters", () => {
  const m = seededTiny();
  const n = sm.lora.apply(m, { rank: 4 });
  // q_proj and v_proj of 2 layers: A [4, 32] + B [32, 4] each.
  expect(n).toBe(2 * 2 * (4 * 32 + 32 * 4));
  const trainable = m.namedParameters({ trainable: true }).map(([p]) => p);
  expect(trainable).toEqual([
    "model.layers.0.self_attn.q_proj.lora_A.weight",
    "model.layers.0.self_attn.q_proj.lora_B.weight",
    "model.layers.0.self_attn.v_proj.lora_A.weight",
    "model.layers.0.self_attn.v_proj.lora_B.weight",
    "model.layers.1.self_attn.q_proj.lora_A.weight",
    "model.layers.1.self_attn.q_proj.lora_B.weight",
    "model.layers.1.self_attn.v_proj.lora_A.weight",
    "model.layers.1.self_attn.v_proj.lora_B.weight",
  ]);
  const a = m.model.layers[0]!.self_attn.q_proj as unknown as sm.lora.LoRALinear;
  // A ~ U(±1/√in) as PEFT draws it, B zero.
  const av = Array.from(a.lora_A.weight.raw());
  expect(Math.max(...av.map(Math.abs))).toBeLessThanOrEqual(1 / Math.sqrt(32));
  expect(Math.max(...av.map(Math.abs))).toBeGreaterThan(0.1);
  expect(Array.from(a.lora_B.weight.raw()).every((v) => v === 0)).toBe(true);
  expect(a.scale).toBe(16 / 4);
});

test("apply: all-linear skips lm_head, layers and rsLoRA, RegExp targets, bad input", () => {
  const m = seededTiny();
  const n = sm.lora.apply(m, { rank: 2, alpha: 8, targets: "all-linear", layers: [1], useRslora: true });
  const wrapped = sm.lora.loraLayers(m).map(([p]) => p);
  expect(wrapped.length).toBe(7);
  expect(wrapped.every((p) => p.startsWith("model.layers.1."))).toBe(true);
  expect(n).toBe(2 * (4 * 64 + 2 * (32 + 48) + (48 + 32)));
  expect(sm.lora.loraLayers(m)[0]![1].scale).toBeCloseTo(8 / Math.SQRT2, 12);
  const r = seededTiny();
  sm.lora.apply(r, { targets: /model\.layers\.0\.mlp\..*_proj/ });
  expect(sm.lora.loraLayers(r).map(([p]) => p)).toEqual(["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"]);
  expect(errorMessage(() => sm.lora.apply(seededTiny(), { targets: ["nope"] }))).toContain("no linear layer matches");
  expect(errorMessage(() => sm.lora.apply(seededTiny(), { rank: 0 }))).toContain("rank must be a positive integer");
  // DoRA adds a magnitude [out] per layer, trainable, starting at W's row norms.
  const dm = seededTiny();
  expect(sm.lora.apply(dm, { rank: 4, useDora: true })).toBe(2 * 2 * (4 * 32 + 32 * 4 + 32));
  const dl = sm.lora.loraLayers(dm)[0]![1];
  const W = Array.from((dl.base_layer as sm.nn.Linear).weight.raw());
  const norm0 = Math.sqrt(W.slice(0, 32).reduce((a, v) => a + v * v, 0));
  expect(dl.lora_magnitude_vector!.raw()[0]!).toBeCloseTo(norm0, 5);
  expect(errorMessage(() => sm.lora.apply(r))).toContain("already has LoRA adapters");
});

test("a PEFT adapter with non-zero A and B gives PEFT's logits", async () => {
  const m = reference();
  await sm.lora.load(m, join(FIX, "peft"));
  const got = logitsOf(m);
  expect(got.length).toBe(expected.logits.length);
  const d = maxDiff(got, expected.logits);
  console.log(`PEFT adapter logits: max abs diff ${d.toExponential(2)}`);
  expect(d).toBeLessThanOrEqual(1e-4);
  // Without the adapter the logits differ: the check above sees the adapter.
  expect(maxDiff(logitsOf(reference()), expected.logits)).toBeGreaterThan(1e-2);
});

test("an mlx-lm adapter (transposed factors, scale) gives the same logits", async () => {
  const m = reference();
  await sm.lora.load(m, join(FIX, "mlx"));
  expect(sm.lora.loraLayers(m)[0]![1].scale).toBe(2);
  expect(maxDiff(logitsOf(m), expected.logits)).toBeLessThanOrEqual(1e-4);
});

test("save writes PEFT's folder; load reads it back exactly; merge and unmerge keep the logits", async () => {
  const m = reference();
  await sm.lora.load(m, join(FIX, "peft"));
  const out = process.env.SMELT_LORA_EXPORT ?? join(dir, "saved");
  await sm.lora.save(m, out, { baseModel: "tiny-llama" });
  const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
  const peftCfg = JSON.parse(readFileSync(join(FIX, "peft", "adapter_config.json"), "utf8"));
  for (const k of ["peft_type", "r", "lora_alpha", "lora_dropout", "bias", "task_type", "use_dora", "use_rslora", "layers_to_transform", "fan_in_fan_out"])
    expect([k, cfg[k]]).toEqual([k, peftCfg[k]]);
  expect([...cfg.target_modules].sort()).toEqual([...peftCfg.target_modules].sort());
  expect(cfg.base_model_name_or_path).toBe("tiny-llama");
  const saved = sm.io.loadSafetensors(join(out, "adapter_model.safetensors"));
  const ref = sm.io.loadSafetensors(join(FIX, "peft", "adapter_model.safetensors"));
  expect(Object.keys(saved.tensors).sort()).toEqual(Object.keys(ref.tensors).sort());
  expect(saved.metadata).toEqual({ format: "pt" });
  for (const [k, t] of Object.entries(ref.tensors)) expect([k, Array.from(saved.tensors[k]!.raw())]).toEqual([k, Array.from(t.raw())]);

  const before = logitsOf(m);
  if (process.env.SMELT_LORA_EXPORT) writeFileSync(join(out, "smelt-logits.json"), JSON.stringify({ ids: expected.ids, logits: before }));
  const again = reference();
  await sm.lora.load(again, out);
  expect(maxDiff(logitsOf(again), before)).toBe(0);

  sm.lora.merge(m);
  expect(maxDiff(logitsOf(m), before)).toBeLessThanOrEqual(1e-5);
  await expect(sm.lora.save(m, join(dir, "merged"))).rejects.toThrow("unmerge first");
  sm.lora.unmerge(m);
  expect(maxDiff(logitsOf(m), before)).toBeLessThanOrEqual(1e-5);
  expect(existsSync(join(dir, "merged"))).toBe(false);
});

test("load rejects a folder that does not fit the model", async () => {
  mkdirSync(join(dir, "bad"), { recursive: true });
  await expect(sm.lora.load(reference(), join(dir, "bad"))).rejects.toThrow("has no adapter_config.json");
  const m = reference();
  sm.lora.apply(m, { rank: 4, targets: ["q_proj"] });
  await expect(sm.lora.load(m, join(FIX, "peft"))).rejects.toThrow("is not an adapted layer of the model");
});

test("AdamW on the adapter: losses equal PEFT + torch.optim.AdamW within 0.2% at every step", async () => {
  const m = reference();
  await sm.lora.load(m, join(FIX, "peft"));
  expectPeftLosses("losses", adamwLosses(m, fixtureBatch(), { ...expected, steps: expected.losses.length }), expected.losses);
  // The reference losses fall: the steps train the adapter, not a no-op.
  expect(expected.losses[expected.losses.length - 1]!).toBeLessThan(expected.losses[0]! - 0.1);
});

test("a LoRALinear forward costs the kernels of the bare expression x Wᵀ + s (x Aᵀ) Bᵀ", () => {
  class One extends sm.nn.Module {
    q_proj = new sm.nn.Linear(64, 64, { bias: false, key: sm.random.key(1) });
  }
  const m = new One();
  sm.eval(m.parameters());
  sm.lora.apply(m, { rank: 4, targets: ["q_proj"] });
  const l = m.q_proj as unknown as sm.lora.LoRALinear;
  l.lora_B.weight = sm.random.normal([64, 4], "float32", 0, 1, sm.random.key(2)).eval();
  const x = sm.random.normal([2, 8, 64], "float32", 0, 1, sm.random.key(3)).eval();
  const W = (l.base_layer as sm.nn.Linear).weight;
  const bare = () => sm.add(sm.matmul(x, sm.transpose(W)), sm.multiply(sm.matmul(sm.matmul(x, sm.transpose(l.lora_A.weight)), sm.transpose(l.lora_B.weight)), l.scale));
  const count = (f: () => sm.Tensor) => {
    f().eval();
    sm.resetStats();
    const y = f().eval();
    return [sm.stats().kernelsDispatched, Array.from(y.raw())] as const;
  };
  const [k, y] = count(() => l.forward(x));
  const [kb, yb] = count(bare);
  console.log(`LoRALinear forward: ${k} kernel(s), the bare expression ${kb}`);
  expect(k).toBeLessThanOrEqual(kb);
  expect(maxDiff(y, yb)).toBeLessThanOrEqual(1e-5);
});

test("DoRA: a PEFT DoRA adapter gives PEFT's logits, saves as PEFT does, trains as PEFT + AdamW, merges", async () => {
  const want = JSON.parse(readFileSync(join(FIX, "dora", "expected.json"), "utf8")) as { logits: number[]; losses: number[] };
  const m = reference();
  await sm.lora.load(m, join(FIX, "dora"));
  expect(sm.lora.loraLayers(m).every(([, l]) => l.dora)).toBe(true);
  const got = logitsOf(m);
  const d = maxDiff(got, want.logits);
  console.log(`PEFT DoRA adapter logits: max abs diff ${d.toExponential(2)}`);
  expect(d).toBeLessThanOrEqual(1e-4);
  expect(maxDiff(got, expected.logits)).toBeGreaterThan(1e-2);

  const out = join(dir, "dora-saved");
  await sm.lora.save(m, out);
  expect(JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8")).use_dora).toBe(true);
  const saved = sm.io.loadSafetensors(join(out, "adapter_model.safetensors")).tensors;
  const ref = sm.io.loadSafetensors(join(FIX, "dora", "adapter_model.safetensors")).tensors;
  expect(Object.keys(saved).sort()).toEqual(Object.keys(ref).sort());
  expect(Object.keys(ref).some((k) => k.endsWith(".lora_magnitude_vector"))).toBe(true);

  sm.lora.merge(m);
  expect(maxDiff(logitsOf(m), got)).toBeLessThanOrEqual(1e-5);
  sm.lora.unmerge(m);
  expect(maxDiff(logitsOf(m), got)).toBeLessThanOrEqual(1e-5);

  expectPeftLosses("DoRA losses", adamwLosses(m, fixtureBatch(), { ...expected, steps: want.losses.length }), want.losses);
});
