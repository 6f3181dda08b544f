/**
 * smelt lora: LoRA fine-tuning of a model on DIR/{train,valid,test}.jsonl, writing a PEFT adapter,
 * checkpoints, metrics.jsonl and loss.svg to --adapter-path. Settings come from flags, or from a
 * --config file (JSON or YAML, keys as the flags with - or _) that flags override.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { numberFlag, parseFlags, UsageError } from "./usage.ts";

const USAGE = `usage: smelt lora --model PATH --data DIR [options]

  --model PATH              a .gguf file or a Hugging Face model folder
  --data DIR                train.jsonl, valid.jsonl (and test.jsonl): {"text"}, {"prompt","completion"} or {"messages"}
  --iters N | --epochs E    optimizer steps, or passes over train.jsonl (default 1000 steps; 0 trains nothing)
  --batch-size B            examples per batch (default 4)
  --learning-rate LR        (default 1e-4)
  --lr-schedule cosine      cosine decay to zero (default constant)
  --warmup N                linear warmup steps
  --optimizer NAME          adamw (default), adam or sgd
  --weight-decay W          (AdamW's default 0.01)
  --rank R --alpha A        LoRA rank (8) and alpha (16)
  --dropout P               LoRA dropout (0)
  --targets LIST            comma-separated module names, or all-linear (default q_proj,v_proj)
  --num-layers N            adapt the last N layers only
  --mask-prompt             loss on the completion / last assistant turn only
  --grad-accumulation K     micro-batches per step (1)
  --max-seq-length L        truncate examples to L tokens (2048)
  --steps-per-report N      progress and metrics every N steps (10)
  --steps-per-eval N        validation loss every N steps (200)
  --val-batches N           validation batches per evaluation; -1 for all (25)
  --save-every N            checkpoint every N steps (100)
  --adapter-path DIR        where the adapter, checkpoints and metrics go (adapters)
  --resume                  continue from the latest checkpoint in --adapter-path
  --seed S                  data order, initialisation and dropout (0)
  --test                    report the loss and perplexity on test.jsonl at the end
  --config FILE             settings as JSON or YAML; flags override them`;

const OPTIONS = {
  model: { type: "string" },
  data: { type: "string" },
  iters: { type: "string" },
  epochs: { type: "string" },
  "batch-size": { type: "string" },
  "learning-rate": { type: "string" },
  "lr-schedule": { type: "string" },
  warmup: { type: "string" },
  optimizer: { type: "string" },
  "weight-decay": { type: "string" },
  rank: { type: "string" },
  alpha: { type: "string" },
  dropout: { type: "string" },
  targets: { type: "string" },
  "num-layers": { type: "string" },
  "mask-prompt": { type: "boolean" },
  "grad-accumulation": { type: "string" },
  "max-seq-length": { type: "string" },
  "steps-per-report": { type: "string" },
  "steps-per-eval": { type: "string" },
  "val-batches": { type: "string" },
  "save-every": { type: "string" },
  "adapter-path": { type: "string" },
  resume: { type: "boolean" },
  seed: { type: "string" },
  test: { type: "boolean" },
  config: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

type Flags = Record<string, string | boolean | undefined>;

/** A config file's settings as flag values (strings, booleans), keyed by flag name. */
function readConfig(path: string): Flags {
  if (!existsSync(path)) throw new UsageError(`no config file at ${path}`);
  const text = readFileSync(path, "utf8");
  let parsed: unknown;
  try {
    parsed = /\.ya?ml$/i.test(path) ? Bun.YAML.parse(text) : JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${path} is not valid ${/\.ya?ml$/i.test(path) ? "YAML" : "JSON"} (${(e as Error).message})`);
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new UsageError(`${path} must hold a mapping of settings`);
  const out: Flags = {};
  for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
    const flag = k.replace(/_/g, "-");
    const spec = (OPTIONS as Record<string, { type: string }>)[flag];
    if (!spec || flag === "config" || flag === "help") throw new UsageError(`${path}: unknown setting '${k}' (smelt lora --help lists them)`);
    if (spec.type === "boolean") {
      if (typeof v !== "boolean") throw new UsageError(`${path}: '${k}' must be true or false`);
      out[flag] = v;
    } else out[flag] = Array.isArray(v) ? v.join(",") : String(v);
  }
  return out;
}

export async function run(argv: string[]): Promise<void> {
  const given = parseFlags("lora", argv, OPTIONS) as Flags;
  if (given.help) {
    console.log(USAGE);
    return;
  }
  const f: Flags = { ...(given.config !== undefined ? readConfig(given.config as string) : {}), ...given };
  const str = (k: string) => f[k] as string | undefined;
  if (str("model") === undefined) throw new UsageError("--model PATH is required (a .gguf file or a model folder)");
  if (str("data") === undefined) throw new UsageError("--data DIR is required (a folder with train.jsonl and valid.jsonl)");
  if (f.iters !== undefined && f.epochs !== undefined) throw new UsageError("give --iters or --epochs, not both");
  const int = (k: string, min = 1) => numberFlag(k, str(k), { integer: true, min });
  const num = (k: string, min = 0) => numberFlag(k, str(k), { min });
  const iters = int("iters", 0);
  const epochs = int("epochs");
  const optimizer = str("optimizer") ?? "adamw";
  if (!["adamw", "adam", "sgd"].includes(optimizer)) throw new UsageError(`--optimizer must be adamw, adam or sgd, got '${optimizer}'`);
  const schedule = str("lr-schedule") ?? "constant";
  if (!["constant", "cosine"].includes(schedule)) throw new UsageError(`--lr-schedule must be cosine or constant, got '${schedule}'`);
  const targetsText = str("targets") ?? "q_proj,v_proj";
  const targets: "all-linear" | string[] = targetsText === "all-linear" ? "all-linear" : targetsText.split(",").map((s) => s.trim()).filter(Boolean);
  if (Array.isArray(targets) && targets.length === 0) throw new UsageError("--targets must name at least one module");
  const dropout = num("dropout");
  if (dropout !== undefined && dropout >= 1) throw new UsageError(`--dropout must be below 1, got '${str("dropout")}'`);
  const settings = {
    batchSize: int("batch-size"),
    gradAccumulation: int("grad-accumulation"),
    learningRate: num("learning-rate"),
    weightDecay: num("weight-decay"),
    warmup: int("warmup", 0),
    maxSeqLength: int("max-seq-length", 2),
    stepsPerReport: int("steps-per-report"),
    stepsPerEval: int("steps-per-eval"),
    valBatches: numberFlag("val-batches", str("val-batches"), { integer: true, min: -1 }),
    saveEvery: int("save-every"),
  };
  const lora = { rank: int("rank") ?? 8, alpha: num("alpha") ?? 16, dropout: dropout ?? 0, targets };
  const numLayers = int("num-layers");
  const data = str("data")!;
  const model = str("model")!;
  if (!existsSync(model)) throw new UsageError(`no model at ${model}`);
  if (!existsSync(join(data, "train.jsonl")) && (iters ?? 1) > 0) throw new UsageError(`no train.jsonl in ${data}`);
  const adapterPath = str("adapter-path") ?? "adapters";
  const seed = numberFlag("seed", str("seed"), { integer: true }) ?? 0;
  const maskPrompt = f["mask-prompt"] === true;

  // Loaded only now: flag mistakes are reported without building or loading the native backend.
  const sm = await import("../index.ts");
  const loaded = await sm.lm.load(model);
  const total = loaded.model.namedModules().filter(([p]) => /^model\.layers\.\d+$/.test(p)).length;
  const layers = numLayers === undefined ? undefined : Array.from({ length: Math.min(numLayers, total) }, (_, i) => total - Math.min(numLayers, total) + i);
  const encode = (split: "train" | "valid" | "test") => sm.lora.readSplit(data, split)?.map((r) => sm.lora.encodeRecord(loaded.tokenizer, r, { maskPrompt })) ?? [];
  const train = encode("train");
  const valid = encode("valid");
  sm.random.seed(seed);
  // A resumed or test-only run finds its adapter's weights in --adapter-path; its layers are the flags'.
  sm.lora.apply(loaded.model, { ...lora, layers });
  const trainer = new sm.lora.Trainer({
    model: loaded.model,
    train: train.length > 0 ? train : valid,
    valid,
    ...(epochs !== undefined ? { epochs } : { iters: iters === 0 ? 1 : (iters ?? 1000) }),
    ...settings,
    optimizer: optimizer as "adamw",
    lrSchedule: schedule as "cosine",
    padId: loaded.tokenizer.eosTokenIds[0] ?? 0,
    adapterPath,
    baseModel: model,
    seed,
    resume: f.resume === true,
    progress: true,
  });
  if (iters === 0) {
    if (existsSync(join(adapterPath, "adapter_config.json"))) await sm.lora.load(loaded.model, adapterPath);
  } else {
    const r = await trainer.run();
    console.error(`lora: ${r.steps} steps; train loss ${r.trainLoss.toFixed(4)}${r.validLoss === null ? "" : `, validation loss ${r.validLoss.toFixed(4)}`}; adapter in ${adapterPath}`);
  }
  if (f.test === true) {
    const test = encode("test");
    if (test.length === 0) throw new UsageError(`--test needs ${join(data, "test.jsonl")}`);
    const loss = trainer.evaluate(test, -1);
    console.log(`test loss ${loss.toFixed(4)}, perplexity ${Math.exp(loss).toFixed(3)}`);
  }
}
