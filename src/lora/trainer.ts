/**
 * The LoRA trainer behind `smelt lora` and scripts alike. A step is one optimizer update over
 * gradAccumulation micro-batches. Everything a step depends on is a function of (seed, step): the
 * batch (data.batchOrder), the dropout key (sm.random is reseeded per step) and the learning rate
 * (the optimizer's step), so a checkpoint of adapter, optimizer state and step resumes bit for bit.
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SmeltError } from "../errors.ts";
import { getPeakMemory } from "../exec/memory.ts";
import { itemsize } from "../graph/dtype.ts";
import { Module, type ParamTree, valueAndGrad } from "../nn/module.ts";
import { Adam, AdamW, type Optimizer, SGD } from "../optim/optimizers.ts";
import { cosineDecay, joinSchedules, linearSchedule, type Schedule } from "../optim/schedules.ts";
import { accumulate, disposeTree } from "../optim/trees.ts";
import { keptBytesPerElement, QuantizedTensor } from "../tensor/quantized.ts";
import * as random from "../tensor/random.ts";
import { evalTensors, type Tensor } from "../tensor/tensor.ts";
import { load, save } from "./adapters.ts";
import { type Batch, batchOrder, type Example, makeBatch } from "./data.ts";
import { configOf, countTrainable } from "./lora.ts";
import { maskedLoss } from "./loss.ts";
import { lossSvg } from "./plot.ts";

export interface StepInfo {
  step: number;
  loss: number;
  learningRate: number;
  /** Target tokens counted by the loss, and real input tokens, in this step. */
  targets: number;
  tokens: number;
  seconds: number;
}
export interface ReportInfo {
  step: number;
  loss: number;
  learningRate: number;
  itPerSec: number;
  tokensPerSec: number;
  peakMemory: number;
}
export interface EvalInfo {
  step: number;
  loss: number;
  seconds: number;
}

export interface TrainerOptions {
  /** A model with adapters (sm.lora.apply or sm.lora.load). */
  model: Module;
  train: readonly Example[];
  valid?: readonly Example[] | undefined;
  /** ids [B, T] → logits [B, T, V]; model.forward(ids) by default. */
  forward?: ((model: Module, inputs: Tensor) => Tensor) | undefined;
  iters?: number | undefined;
  epochs?: number | undefined;
  batchSize?: number | undefined;
  gradAccumulation?: number | undefined;
  optimizer?: "adamw" | "adam" | "sgd" | undefined;
  learningRate?: number | undefined;
  weightDecay?: number | undefined;
  lrSchedule?: "constant" | "cosine" | undefined;
  warmup?: number | undefined;
  maxSeqLength?: number | undefined;
  padId?: number | undefined;
  /** Batch widths are rounded up to a multiple of this (8): a larger one means fewer shapes, so fewer kernels to compile. */
  padTo?: number | undefined;
  stepsPerReport?: number | undefined;
  stepsPerEval?: number | undefined;
  /** Validation batches per evaluation; -1 for all. */
  valBatches?: number | undefined;
  saveEvery?: number | undefined;
  /** Where adapters, checkpoints, metrics.jsonl and loss.svg go; nothing is written without it. */
  adapterPath?: string | undefined;
  baseModel?: string | undefined;
  seed?: number | undefined;
  /** Continue from the latest checkpoint under adapterPath. */
  resume?: boolean | undefined;
  /** A live progress line on stderr. */
  progress?: boolean | undefined;
  /** Called after every step; returning false stops training there (after a checkpoint). */
  onStep?: ((info: StepInfo) => void | boolean) | undefined;
  onReport?: ((info: ReportInfo) => void) | undefined;
  onEval?: ((info: EvalInfo) => void) | undefined;
}

export interface TrainResult {
  steps: number;
  /** The mean train loss of the last report window. */
  trainLoss: number;
  validLoss: number | null;
  stoppedEarly: boolean;
}

const CHECKPOINTS = "checkpoints";

/** The options that have defaults, resolved. */
interface Settled {
  batchSize: number;
  gradAccumulation: number;
  seed: number;
  stepsPerReport: number;
  stepsPerEval: number;
  valBatches: number;
  saveEvery: number;
  maxSeqLength: number;
}

function posInt(what: string, v: unknown): number {
  if (!Number.isInteger(v) || (v as number) <= 0) throw new SmeltError(`lora.Trainer: ${what} must be a positive integer, got ${String(v)}`);
  return v as number;
}

export class Trainer {
  readonly model: Module;
  readonly optimizer: Optimizer;
  readonly totalSteps: number;
  readonly opts: TrainerOptions & Settled;
  /** Optimizer steps done. */
  step = 0;
  readonly #train: readonly Example[];
  readonly #valid: readonly Example[];
  readonly #batchesPerEpoch: number;
  #order: { epoch: number; batches: number[][] } | null = null;
  #metrics: Record<string, unknown>[] = [];

  constructor(opts: TrainerOptions) {
    if (!(opts.model instanceof Module)) throw new SmeltError("lora.Trainer: model must be an nn.Module");
    if (!configOf(opts.model)) throw new SmeltError("lora.Trainer: the model has no LoRA adapters (call sm.lora.apply or sm.lora.load first)");
    if (!Array.isArray(opts.train) || opts.train.length === 0) throw new SmeltError("lora.Trainer: train must be a non-empty list of examples");
    const batchSize = posInt("batchSize", opts.batchSize ?? 4);
    const gradAccumulation = posInt("gradAccumulation", opts.gradAccumulation ?? 1);
    this.opts = {
      ...opts,
      batchSize,
      gradAccumulation,
      seed: opts.seed ?? 0,
      stepsPerReport: posInt("stepsPerReport", opts.stepsPerReport ?? 10),
      stepsPerEval: posInt("stepsPerEval", opts.stepsPerEval ?? 200),
      valBatches: opts.valBatches ?? 25,
      saveEvery: posInt("saveEvery", opts.saveEvery ?? 100),
      maxSeqLength: posInt("maxSeqLength", opts.maxSeqLength ?? 2048),
    };
    if (!Number.isSafeInteger(this.opts.seed)) throw new SmeltError(`lora.Trainer: seed must be an integer, got ${opts.seed}`);
    this.model = opts.model;
    this.#train = opts.train;
    this.#valid = opts.valid ?? [];
    this.#batchesPerEpoch = Math.floor(this.#train.length / batchSize);
    if (this.#batchesPerEpoch === 0) throw new SmeltError(`lora.Trainer: ${this.#train.length} training examples cannot fill a batch of ${batchSize}`);
    if (opts.iters !== undefined && opts.epochs !== undefined) throw new SmeltError("lora.Trainer: give iters or epochs, not both");
    this.totalSteps =
      opts.epochs !== undefined
        ? posInt("epochs", opts.epochs) * Math.max(1, Math.floor(this.#batchesPerEpoch / gradAccumulation))
        : posInt("iters", opts.iters ?? 1000);
    this.optimizer = this.#makeOptimizer();
  }

  #makeOptimizer(): Optimizer {
    const lr = this.opts.learningRate ?? 1e-4;
    if (!(lr > 0)) throw new SmeltError(`lora.Trainer: learningRate must be positive, got ${lr}`);
    const warmup = this.opts.warmup ?? 0;
    if (!Number.isInteger(warmup) || warmup < 0) throw new SmeltError(`lora.Trainer: warmup must be a non-negative integer, got ${warmup}`);
    let rate: number | Schedule = lr;
    const kind = this.opts.lrSchedule ?? "constant";
    if (kind === "cosine") {
      const decay = cosineDecay(lr, Math.max(1, this.totalSteps - warmup));
      rate = warmup > 0 ? joinSchedules([linearSchedule(0, lr, warmup), decay], [warmup]) : decay;
    } else if (kind !== "constant") throw new SmeltError(`lora.Trainer: lrSchedule must be "constant" or "cosine", got ${String(kind)}`);
    else if (warmup > 0) rate = joinSchedules([linearSchedule(0, lr, warmup), () => lr], [warmup]);
    const wd = this.opts.weightDecay;
    switch (this.opts.optimizer ?? "adamw") {
      case "adamw":
        return new AdamW({ learningRate: rate, ...(wd === undefined ? {} : { weightDecay: wd }) });
      case "adam":
        return new Adam({ learningRate: rate, weightDecay: wd ?? 0 });
      case "sgd":
        return new SGD({ learningRate: rate, weightDecay: wd ?? 0 });
      default:
        throw new SmeltError(`lora.Trainer: optimizer must be "adamw", "adam" or "sgd", got ${String(this.opts.optimizer)}`);
    }
  }

  /** The micro-batch with this global index: epoch order by (seed, epoch), then position. */
  #batchAt(index: number): Batch {
    const epoch = Math.floor(index / this.#batchesPerEpoch);
    if (this.#order?.epoch !== epoch) this.#order = { epoch, batches: batchOrder(this.#train, this.opts.batchSize, this.opts.seed, epoch) };
    const idx = this.#order.batches[index % this.#batchesPerEpoch]!;
    return makeBatch(
      idx.map((i) => this.#train[i]!),
      { maxSeqLength: this.opts.maxSeqLength, padId: this.opts.padId, padTo: this.opts.padTo },
    );
  }

  #forward(inputs: Tensor): Tensor {
    return this.opts.forward ? this.opts.forward(this.model, inputs) : (this.model.forward(inputs) as Tensor);
  }

  /**
   * Bytes of weights, of what steps keep of quantized weights (their float forms, or the panels
   * the products read), and of adapter + gradients + optimizer slots: the floor of the peak
   * before activations, once the first step is done (while it runs it holds the float forms beside the panels).
   */
  memoryEstimate(): { weights: number; kept: number; training: number } {
    let weights = this.model.namedParameters().reduce((n, [, t]) => n + t.size * itemsize(t.dtype), 0);
    // Quantized weights are not parameters (nothing trains them) but they take memory all the same.
    // Kept for the products that read them: an embedding's only where it is the output layer too.
    const modules = this.model.namedModules();
    const tied = !modules.some(([path]) => path === "lm_head" || path.endsWith(".lm_head"));
    const seen = new Set<QuantizedTensor>();
    let kept = 0;
    for (const [, m] of modules) {
      const w = (m as { weight?: unknown }).weight;
      if (!(w instanceof QuantizedTensor) || seen.has(w)) continue;
      seen.add(w);
      weights += w.nbytes;
      if (tied || !("asLinear" in m)) kept += w.size * keptBytesPerElement();
    }
    const slots = this.opts.optimizer === "sgd" ? 0 : 2;
    return { weights, kept, training: countTrainable(this.model) * 4 * (2 + slots) };
  }

  /** Token-weighted mean loss over the first `batches` validation batches (-1: all). */
  evaluate(examples: readonly Example[] = this.#valid, batches = this.opts.valBatches): number {
    if (examples.length < this.opts.batchSize) throw new SmeltError(`lora.Trainer.evaluate: ${examples.length} examples cannot fill a batch of ${this.opts.batchSize}`);
    const order = batchOrder(examples, this.opts.batchSize, null);
    const use = batches < 0 ? order : order.slice(0, batches);
    const wasTraining = this.model.training;
    this.model.eval();
    let sum = 0;
    let count = 0;
    try {
      for (const idx of use) {
        const b = makeBatch(
          idx.map((i) => examples[i]!),
          { maxSeqLength: this.opts.maxSeqLength, padId: this.opts.padId, padTo: this.opts.padTo },
        );
        if (b.count > 0) {
          const loss = maskedLoss(this.#forward(b.inputs), b.targets, b.weights, b.count).eval();
          sum += loss.raw()[0]! * b.count;
          count += b.count;
          loss.dispose();
        }
        b.inputs.dispose(), b.targets.dispose(), b.weights.dispose();
      }
    } finally {
      this.model.train(wasTraining);
    }
    return count > 0 ? sum / count : Number.NaN;
  }

  #checkpointDir(step: number): string {
    return join(this.opts.adapterPath!, CHECKPOINTS, String(step).padStart(7, "0"));
  }

  /** The identity of a run: resuming with other settings would not continue the same trajectory. */
  #runKey(): Record<string, unknown> {
    const o = this.opts;
    return { seed: o.seed, batchSize: o.batchSize, gradAccumulation: o.gradAccumulation, totalSteps: this.totalSteps, optimizer: o.optimizer ?? "adamw", learningRate: o.learningRate ?? 1e-4, lrSchedule: o.lrSchedule ?? "constant", warmup: o.warmup ?? 0, maxSeqLength: o.maxSeqLength, examples: this.#train.length };
  }

  async #checkpoint(): Promise<void> {
    const root = this.opts.adapterPath;
    if (!root) return;
    const dir = this.#checkpointDir(this.step);
    const tmp = `${dir}.tmp-${process.pid}`;
    mkdirSync(tmp, { recursive: true });
    await save(this.model, tmp, { baseModel: this.opts.baseModel });
    this.optimizer.saveState(join(tmp, "optimizer.safetensors"));
    writeFileSync(join(tmp, "trainer.json"), `${JSON.stringify({ step: this.step, run: this.#runKey() }, null, 2)}\n`);
    // The folder appears whole or not at all: a crash mid-save leaves only a .tmp folder.
    renameSync(tmp, dir);
    await save(this.model, root, { baseModel: this.opts.baseModel });
  }

  /**
   * A run from step 0 into a folder that an earlier run wrote would append to its metrics.jsonl
   * and meet its checkpoints (which a later resume would take for this run's): refused, naming
   * the ways on, rather than mixing the two or deleting the earlier one.
   */
  #refuseEarlierRun(): void {
    const root = this.opts.adapterPath;
    if (!root) return;
    const base = join(root, CHECKPOINTS);
    const checkpoints = existsSync(base) ? readdirSync(base).filter((n) => /^\d{7}$/.test(n)).sort() : [];
    const metrics = existsSync(join(root, "metrics.jsonl"));
    if (checkpoints.length === 0 && !metrics) return;
    const what = checkpoints.length ? `checkpoints of an earlier run (the latest at step ${Number(checkpoints.at(-1))})` : "the metrics.jsonl of an earlier run";
    throw new SmeltError(
      `lora.Trainer.run: ${root} holds ${what}; pass resume: true (smelt lora --resume) to continue that run, or another adapterPath, or remove the folder, to start over`,
    );
  }

  /** Restores adapter, optimizer state and step from the latest checkpoint; false when there is none. */
  async resume(): Promise<boolean> {
    const root = this.opts.adapterPath;
    if (!root) throw new SmeltError("lora.Trainer.resume: needs adapterPath");
    const base = join(root, CHECKPOINTS);
    if (!existsSync(base)) return false;
    const steps = readdirSync(base).filter((n) => /^\d{7}$/.test(n)).sort();
    if (steps.length === 0) return false;
    const dir = join(base, steps[steps.length - 1]!);
    const saved = JSON.parse(readFileSync(join(dir, "trainer.json"), "utf8")) as { step: number; run: Record<string, unknown> };
    const want = this.#runKey();
    const differ = Object.keys(want).filter((k) => JSON.stringify(want[k]) !== JSON.stringify(saved.run[k]));
    if (differ.length > 0)
      throw new SmeltError(`lora.Trainer.resume: ${dir} was made with other settings (${differ.map((k) => `${k} ${JSON.stringify(saved.run[k])} ≠ ${JSON.stringify(want[k])}`).join(", ")})`);
    await load(this.model, dir);
    this.optimizer.loadState(join(dir, "optimizer.safetensors"));
    this.step = saved.step;
    const metrics = join(root, "metrics.jsonl");
    if (existsSync(metrics)) {
      this.#metrics = readFileSync(metrics, "utf8")
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((m) => (m.step as number) <= this.step);
      writeFileSync(metrics, this.#metrics.map((m) => `${JSON.stringify(m)}\n`).join(""));
    }
    return true;
  }

  #record(entry: Record<string, unknown>): void {
    this.#metrics.push(entry);
    const root = this.opts.adapterPath;
    if (!root) return;
    mkdirSync(root, { recursive: true });
    appendFileSync(join(root, "metrics.jsonl"), `${JSON.stringify(entry)}\n`);
    const series = (type: string) => this.#metrics.filter((m) => m.type === type).map((m) => [m.step as number, m.loss as number] as const);
    writeFileSync(join(root, "loss.svg"), lossSvg(series("train"), series("valid")));
  }

  /** One optimizer step over gradAccumulation micro-batches. */
  #step(lossAndGrad: (m: Module, x: Tensor, y: Tensor, w: Tensor, n: number) => [Tensor | unknown[], ParamTree]): StepInfo {
    const k = this.opts.gradAccumulation;
    const t0 = performance.now();
    // Dropout draws from the global key: a key per step makes the step reproducible on resume.
    random.seed(this.opts.seed * 1000003 + this.step + 1);
    const lr = this.optimizer.learningRate;
    let grads: ParamTree | undefined;
    let lossSum = 0;
    let targets = 0;
    let tokens = 0;
    for (let j = 0; j < k; j++) {
      const b = this.#batchAt(this.step * k + j);
      if (b.count === 0) throw new SmeltError(`lora.Trainer: batch ${this.step * k + j} has no target tokens (every completion is masked or truncated)`);
      const [loss, g] = lossAndGrad(this.model, b.inputs, b.targets, b.weights, b.count);
      grads = k === 1 ? g : accumulate(grads, g, 1 / k);
      evalTensors(loss as Tensor, grads);
      lossSum += (loss as Tensor).raw()[0]! / k;
      targets += b.count;
      tokens += b.tokens;
      (loss as Tensor).dispose();
      b.inputs.dispose(), b.targets.dispose(), b.weights.dispose();
    }
    this.optimizer.update(this.model, grads!);
    evalTensors(this.model.trainableParameters(), this.optimizer.state);
    // The optimizer disposes what it replaces, not the gradients it was given.
    disposeTree(grads);
    this.step++;
    return { step: this.step, loss: lossSum, learningRate: lr, targets, tokens, seconds: (performance.now() - t0) / 1000 };
  }

  /** Trains to totalSteps (or until onStep returns false), evaluating, reporting and saving on the way. */
  async run(): Promise<TrainResult> {
    if (this.opts.resume && !(await this.resume()) && this.opts.progress) console.error("lora: no checkpoint to resume from; starting at step 0");
    if (this.step === 0) this.#refuseEarlierRun();
    const lossAndGrad = valueAndGrad(this.model, (m: Module, x: Tensor, y: Tensor, w: Tensor, n: number) => maskedLoss(this.#forward(x), y, w, n));
    this.model.train();
    if (this.opts.progress && this.step === 0) {
      const m = this.memoryEstimate();
      const mb = (b: number) => `${(b / 2 ** 20).toFixed(1)} MB`;
      console.error(
        `lora: ${countTrainable(this.model)} trainable parameters; expected peak ≥ ${mb(m.weights + m.kept + m.training)} (weights ${mb(m.weights)}, ` +
          `kept for the steps ${mb(m.kept)}, adapter + gradients + optimizer ${mb(m.training)}) plus activations`,
      );
    }
    let window = { loss: 0, targets: 0, tokens: 0, seconds: 0, steps: 0 };
    let trainLoss = Number.NaN;
    let validLoss: number | null = null;
    let stopped = false;
    const evalNow = () => {
      if (this.#valid.length < this.opts.batchSize) return;
      const t0 = performance.now();
      const loss = this.evaluate();
      const info = { step: this.step, loss, seconds: (performance.now() - t0) / 1000 };
      validLoss = loss;
      this.#record({ type: "valid", ...info });
      this.opts.onEval?.(info);
      if (this.opts.progress) console.error(`${this.opts.progress && process.stderr.isTTY ? "\n" : ""}step ${this.step}: validation loss ${loss.toFixed(4)} (${info.seconds.toFixed(1)} s)`);
    };
    if (this.step === 0) evalNow();
    while (this.step < this.totalSteps) {
      const info = this.#step(lossAndGrad);
      window = { loss: window.loss + info.loss * info.targets, targets: window.targets + info.targets, tokens: window.tokens + info.tokens, seconds: window.seconds + info.seconds, steps: window.steps + 1 };
      const goOn = this.opts.onStep?.(info);
      const last = this.step === this.totalSteps || goOn === false;
      if (this.step % this.opts.stepsPerReport === 0 || last) {
        trainLoss = window.loss / window.targets;
        const report: ReportInfo = { step: this.step, loss: trainLoss, learningRate: info.learningRate, itPerSec: window.steps / window.seconds, tokensPerSec: window.tokens / window.seconds, peakMemory: getPeakMemory() };
        this.#record({ type: "train", ...report });
        this.opts.onReport?.(report);
        if (this.opts.progress) {
          const line = `step ${this.step}/${this.totalSteps}  loss ${trainLoss.toFixed(4)}  lr ${report.learningRate.toExponential(2)}  ${report.itPerSec.toFixed(2)} it/s  ${report.tokensPerSec.toFixed(0)} tok/s  peak ${(report.peakMemory / 2 ** 20).toFixed(0)} MB`;
          if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${line}`);
          else console.error(line);
        }
        window = { loss: 0, targets: 0, tokens: 0, seconds: 0, steps: 0 };
      }
      if (this.step % this.opts.stepsPerEval === 0 || (last && this.step === this.totalSteps)) evalNow();
      if (this.step % this.opts.saveEvery === 0 || last) await this.#checkpoint();
      if (goOn === false) {
        stopped = this.step < this.totalSteps;
        break;
      }
    }
    if (this.opts.progress && process.stderr.isTTY) process.stderr.write("\n");
    return { steps: this.step, trainLoss, validLoss, stoppedEarly: stopped };
  }
}

/** Builds a Trainer and runs it. */
export async function train(opts: TrainerOptions): Promise<TrainResult> {
  return new Trainer(opts).run();
}
