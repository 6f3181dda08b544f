/**
 * Adapter folders: PEFT's (`adapter_config.json` + `adapter_model.safetensors`), which the rest of
 * the ecosystem reads, and mlx-lm's (`adapter_config.json` + `adapters.safetensors`, factors stored
 * transposed with a `scale` in place of alpha), which Mac users already have.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SmeltError } from "../errors.ts";
import { loadSafetensors, saveSafetensors } from "../io/safetensors.ts";
import { Module } from "../nn/module.ts";
import * as ops from "../tensor/ops.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { apply, configOf, type LoRAConfig, loraLayers } from "./lora.ts";

const PREFIX = "base_model.model.";
export const PEFT_CONFIG = "adapter_config.json";
export const PEFT_WEIGHTS = "adapter_model.safetensors";
export const MLX_WEIGHTS = "adapters.safetensors";

/** PEFT's adapter_config.json for these settings (the fields PEFT itself writes for plain LoRA). */
export function peftConfig(cfg: LoRAConfig, baseModel: string | null): Record<string, unknown> {
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: "none",
    exclude_modules: null,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: cfg.layers,
    loftq_config: {},
    lora_alpha: cfg.alpha,
    lora_bias: false,
    lora_dropout: cfg.dropout,
    megatron_config: null,
    megatron_core: "megatron.core",
    modules_to_save: null,
    peft_type: "LORA",
    r: cfg.rank,
    rank_pattern: {},
    revision: null,
    target_modules: cfg.targets,
    task_type: "CAUSAL_LM",
    use_dora: cfg.useDora,
    use_rslora: cfg.useRslora,
  };
}

function atomicWrite(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** The adapter tensors under PEFT's names. */
export function adapterTensors(model: Module): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [path, l] of loraLayers(model)) {
    out[`${PREFIX}${path}.lora_A.weight`] = l.lora_A.weight;
    out[`${PREFIX}${path}.lora_B.weight`] = l.lora_B.weight;
    if (l.lora_magnitude_vector) out[`${PREFIX}${path}.lora_magnitude_vector`] = l.lora_magnitude_vector;
  }
  return out;
}

/** Writes the model's adapters as a PEFT folder (each file replaced atomically, weights first). */
export async function save(model: Module, dir: string, opts: { baseModel?: string | undefined } = {}): Promise<void> {
  if (!(model instanceof Module)) throw new SmeltError("lora.save: model must be an nn.Module");
  if (typeof dir !== "string" || dir === "") throw new SmeltError("lora.save: dir must be a folder path");
  const cfg = configOf(model);
  if (!cfg) throw new SmeltError("lora.save: the model has no LoRA adapters (call sm.lora.apply or sm.lora.load first)");
  if (loraLayers(model).some(([, l]) => l.merged)) throw new SmeltError("lora.save: the adapters are merged into the base weights; unmerge first");
  mkdirSync(dir, { recursive: true });
  saveSafetensors(join(dir, PEFT_WEIGHTS), adapterTensors(model), { format: "pt" });
  atomicWrite(join(dir, PEFT_CONFIG), `${JSON.stringify(peftConfig(cfg, opts.baseModel ?? null), null, 2)}\n`);
}

function readJson(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch (e) {
    throw new SmeltError(`lora.load: cannot read ${path} (${(e as Error).message})`);
  }
}

interface Factors {
  a: Tensor;
  b: Tensor;
  m?: Tensor;
}

interface Found {
  cfg: { rank: number; alpha: number; dropout: number; targets: string[]; layers: number[] | undefined; useRslora: boolean; useDora: boolean };
  /** Per module path: A [r, in], B [out, r], and DoRA's magnitudes m [out]. */
  factors: Map<string, Factors>;
}

function readPeft(dir: string): Found {
  const c = readJson(join(dir, PEFT_CONFIG));
  if (c.peft_type !== "LORA") throw new SmeltError(`lora.load: ${dir} holds a ${String(c.peft_type)} adapter; only LORA is supported`);
  for (const k of ["rank_pattern", "alpha_pattern"]) {
    const v = c[k];
    if (v && typeof v === "object" && Object.keys(v).length > 0) throw new SmeltError(`lora.load: ${dir}: per-module ${k} is not supported`);
  }
  if (c.modules_to_save) throw new SmeltError(`lora.load: ${dir}: modules_to_save (fully trained extra modules) is not supported`);
  const { tensors } = loadSafetensors(join(dir, PEFT_WEIGHTS));
  const factors = new Map<string, Factors>();
  for (const [k, t] of Object.entries(tensors)) {
    const m = /^base_model\.model\.(.+)\.(lora_A|lora_B|lora_magnitude_vector)(?:\.default)?(?:\.weight)?$/.exec(k);
    if (!m) throw new SmeltError(`lora.load: ${dir}: unexpected tensor "${k}" in ${PEFT_WEIGHTS}`);
    const e = factors.get(m[1]!) ?? ({} as Factors);
    if (m[2] === "lora_A") e.a = t;
    else if (m[2] === "lora_B") e.b = t;
    else e.m = t;
    factors.set(m[1]!, e);
  }
  const rank = Number(c.r);
  const layers = Array.isArray(c.layers_to_transform) ? (c.layers_to_transform as number[]) : typeof c.layers_to_transform === "number" ? [c.layers_to_transform] : undefined;
  return {
    cfg: { rank, alpha: Number(c.lora_alpha ?? rank), dropout: Number(c.lora_dropout ?? 0), targets: [...factors.keys()], layers, useRslora: Boolean(c.use_rslora), useDora: Boolean(c.use_dora) },
    factors,
  };
}

function readMlx(dir: string): Found {
  const c = readJson(join(dir, PEFT_CONFIG));
  const type = c.fine_tune_type ?? "lora";
  if (type !== "lora") throw new SmeltError(`lora.load: ${dir} holds an mlx-lm "${String(type)}" adapter; only "lora" is supported`);
  const p = (c.lora_parameters ?? {}) as { rank?: number; scale?: number; dropout?: number };
  const { tensors } = loadSafetensors(join(dir, MLX_WEIGHTS));
  const factors = new Map<string, Factors>();
  for (const [k, t] of Object.entries(tensors)) {
    const m = /^(.+)\.lora_([ab])$/.exec(k);
    if (!m) throw new SmeltError(`lora.load: ${dir}: unexpected tensor "${k}" in ${MLX_WEIGHTS}`);
    const e = factors.get(m[1]!) ?? ({} as Factors);
    // mlx-lm keeps lora_a [in, r] and lora_b [r, out]: PEFT's factors transposed.
    const tt = ops.transpose(t).eval();
    t.dispose();
    if (m[2] === "a") e.a = tt;
    else e.b = tt;
    factors.set(m[1]!, e);
  }
  const first = [...factors.values()][0];
  const rank = p.rank ?? first?.a?.shape[0] ?? 0;
  // y = base + scale·(x a) b, so alpha = scale·rank gives the same update under alpha / rank.
  const scale = p.scale ?? 20;
  return { cfg: { rank, alpha: scale * rank, dropout: p.dropout ?? 0, targets: [...factors.keys()], layers: undefined, useRslora: false, useDora: false }, factors };
}

/**
 * Loads an adapter folder into the model: PEFT's, or mlx-lm's (recognised by adapters.safetensors).
 * A model without adapters gets them applied first; one that has them must have the same layers.
 */
export async function load(model: Module, dir: string): Promise<void> {
  if (!(model instanceof Module)) throw new SmeltError("lora.load: model must be an nn.Module");
  if (typeof dir !== "string" || !existsSync(join(dir, PEFT_CONFIG))) throw new SmeltError(`lora.load: ${String(dir)} has no ${PEFT_CONFIG}`);
  const mlx = existsSync(join(dir, MLX_WEIGHTS)) && !existsSync(join(dir, PEFT_WEIGHTS));
  if (!mlx && !existsSync(join(dir, PEFT_WEIGHTS))) throw new SmeltError(`lora.load: ${dir} has neither ${PEFT_WEIGHTS} nor ${MLX_WEIGHTS}`);
  const found = mlx ? readMlx(dir) : readPeft(dir);
  const { cfg, factors } = found;
  const dispose = () => factors.forEach((f) => (f.a?.dispose(), f.b?.dispose(), f.m?.dispose()));
  for (const [path, f] of factors) {
    const missing = !f.a ? "A factor" : !f.b ? "B factor" : cfg.useDora && !f.m ? "DoRA magnitude vector" : null;
    const extra = !cfg.useDora && f.m ? "a DoRA magnitude vector, but use_dora is false" : null;
    if (missing || extra) {
      dispose();
      throw new SmeltError(`lora.load: ${dir}: ${path} ${missing ? `lacks its ${missing}` : `has ${extra}`}`);
    }
  }
  try {
    if (!configOf(model)) apply(model, { rank: cfg.rank, alpha: cfg.alpha, dropout: cfg.dropout, targets: cfg.targets, useRslora: cfg.useRslora, useDora: cfg.useDora });
  } catch (e) {
    dispose();
    throw e;
  }
  const layers = new Map(loraLayers(model));
  const problems: string[] = [];
  for (const [path, f] of factors) {
    const l = layers.get(path);
    if (!l) problems.push(`${path} is not an adapted layer of the model`);
    else {
      if (f.a.shape.join() !== l.lora_A.weight.shape.join()) problems.push(`${path} A has shape [${f.a.shape}], the model's is [${l.lora_A.weight.shape}]`);
      if (f.b.shape.join() !== l.lora_B.weight.shape.join()) problems.push(`${path} B has shape [${f.b.shape}], the model's is [${l.lora_B.weight.shape}]`);
      if (l.dora !== (f.m !== undefined)) problems.push(`${path} is ${l.dora ? "" : "not "}a DoRA layer in the model but ${f.m ? "is" : "is not"} in the adapter`);
      else if (f.m && f.m.shape.join() !== l.lora_magnitude_vector!.shape.join()) problems.push(`${path} magnitude has shape [${f.m.shape}], the model's is [${l.lora_magnitude_vector!.shape}]`);
    }
  }
  for (const path of layers.keys()) if (!factors.has(path)) problems.push(`the adapter has nothing for ${path}`);
  if (problems.length > 0) {
    dispose();
    throw new SmeltError(`lora.load: ${dir}: ${problems.join("; ")}`);
  }
  for (const [path, f] of factors) {
    const l = layers.get(path)!;
    if (l.merged) throw new SmeltError(`lora.load: ${path} is merged; unmerge before loading adapters`);
    l.lora_A.weight.dispose();
    l.lora_B.weight.dispose();
    l.lora_A.weight = f.a;
    l.lora_B.weight = f.b;
    if (f.m) {
      l.lora_magnitude_vector!.dispose();
      l.lora_magnitude_vector = f.m;
    }
  }
}
