/**
 * Training workloads of `bun run bench` (issues 12 and 13): backward passes and optimizer updates,
 * lazy vs eager, and the same in bench/torch_train_peer.py. A Case returns one tensor; a workload
 * with several outputs (gradients, updated parameters and moments) evaluates them all together
 * inside fn, as a training step does, and returns one of them for the lazy/eager comparison.
 */
import * as sm from "smelt";
import type { Case } from "./workloads.ts";

export type TrainSpec =
  | { id: string; kind: "train-rmsnorm" | "train-softmax"; shape: number[]; dtype: "float32" }
  | { id: string; kind: "train-xent"; rows: number; classes: number; dtype: "float32" }
  | { id: string; kind: "train-lora"; x: number[]; d: number; rank: number; alpha: number; dtype: "float32" }
  | { id: string; kind: "train-mlp"; batch: number; dims: number[]; dtype: "float32" }
  | { id: string; kind: "train-adamw"; tensors: number; size: number; dtype: "float32" };

export const isTrainSpec = (s: { kind: string }): s is TrainSpec => s.kind.startsWith("train-");

const fmt = (s: readonly number[]) => `[${s.join(", ")}]`;
const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

export function trainSpecs(quick: boolean): TrainSpec[] {
  const f32 = "float32" as const;
  const norm = quick ? [4, 16, 512] : [32, 128, 4096];
  const out: TrainSpec[] = [
    { id: "train-rmsnorm-bwd", kind: "train-rmsnorm", shape: norm, dtype: f32 },
    { id: "train-softmax-bwd", kind: "train-softmax", shape: norm, dtype: f32 },
    { id: "train-xent", kind: "train-xent", rows: quick ? 64 : 512, classes: quick ? 4096 : 49152, dtype: f32 },
    { id: "train-lora-seed", kind: "train-lora", x: [4, 16, 512], d: 512, rank: 8, alpha: 16, dtype: f32 },
  ];
  if (!quick) out.push({ id: "train-lora-large", kind: "train-lora", x: [8, 128, 2048], d: 2048, rank: 16, alpha: 16, dtype: f32 });
  out.push(
    { id: "train-mlp-step", kind: "train-mlp", batch: quick ? 32 : 256, dims: quick ? [64, 128, 10] : [784, 512, 512, 10], dtype: f32 },
    { id: "train-adamw-100", kind: "train-adamw", tensors: 100, size: quick ? 1024 : 65536, dtype: f32 },
  );
  return out;
}

export function trainTitle(s: TrainSpec): string {
  switch (s.kind) {
    case "train-rmsnorm":
      return `RMS norm backward ${fmt(s.shape)}`;
    case "train-softmax":
      return `softmax backward ${fmt(s.shape)}`;
    case "train-xent":
      return `cross-entropy fwd+bwd [${s.rows}, ${s.classes}]`;
    case "train-lora":
      return `LoRA fwd+bwd x${fmt(s.x)} W[${s.d}, ${s.d}] r=${s.rank}`;
    case "train-mlp":
      return `MLP train step ${fmt(s.dims)} batch ${s.batch} (AdamW)`;
    case "train-adamw":
      return `AdamW update ${s.tensors} x [${s.size}]`;
  }
}

/** Uniform values in [-1, 1) · scale from a fixed seed (the same LCG as workloads.ts). */
function input(shape: number[], seed: number, scale = 1): sm.Tensor {
  const n = count(shape);
  const a = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 2 ** 31 - 1) * scale;
  }
  return sm.tidy(() => sm.array(a).reshape(shape)).eval();
}

/** Evaluates every output together (one evaluation in lazy mode) and returns the first. */
function all(outputs: sm.Tensor[]): sm.Tensor {
  sm.eval(outputs);
  return outputs[0]!;
}

/** A module whose parameters are the given tensors (as views, so an update leaves them alone). */
class Params extends sm.nn.Module {
  constructor(ps: Record<string, sm.Tensor>) {
    super();
    for (const [k, t] of Object.entries(ps)) (this as unknown as Record<string, sm.Tensor>)[k] = t.reshape(t.shape);
  }
}

/**
 * One AdamW update of params by grads from fixed moments at a fixed step, through sm.optim.AdamW:
 * every call does the same work, as step 10 of a run would.
 */
function adamwUpdate(params: Record<string, sm.Tensor>, grads: Record<string, sm.Tensor>, moments: Record<string, { m: sm.Tensor; v: sm.Tensor }>): sm.Tensor[] {
  const model = new Params(params);
  const opt = new sm.optim.AdamW({ learningRate: 1e-3 });
  opt.step = 9;
  for (const [k, s] of Object.entries(moments)) opt.state[k] = { m: s.m.reshape(s.m.shape), v: s.v.reshape(s.v.shape) };
  opt.update(model, grads);
  const next = model.parameters() as Record<string, sm.Tensor>;
  return [...Object.values(next), ...Object.values(opt.state).flatMap((s) => [s.m!, s.v!])];
}

function moments(params: Record<string, sm.Tensor>, seed: number): Record<string, { m: sm.Tensor; v: sm.Tensor }> {
  return Object.fromEntries(
    Object.entries(params).map(([k, p], i) => [k, { m: input(p.shape, seed + 2 * i, 1e-3), v: sm.tidy(() => sm.abs(input(p.shape, seed + 2 * i + 1, 1e-6))).eval() }]),
  );
}

export function buildTrain(s: TrainSpec): Case {
  const tol = 1e-4;
  switch (s.kind) {
    case "train-rmsnorm": {
      const x = input(s.shape, 21, 3);
      const w = input([s.shape.at(-1)!], 22);
      const ct = input(s.shape, 23);
      return {
        fn: () => {
          const [, [dx, dw]] = sm.vjp((x: sm.Tensor, w: sm.Tensor) => sm.fast.rmsNorm(x, w, 1e-5), [x, w], [ct]);
          return all([dx as sm.Tensor, dw as sm.Tensor]);
        },
        bytes: 4 * (3 * count(s.shape)),
        tolerance: tol,
        dispose: () => [x, w, ct].forEach((t) => t.dispose()),
      };
    }
    case "train-softmax": {
      const x = input(s.shape, 24, 4);
      const ct = input(s.shape, 25);
      return {
        fn: () => sm.vjp((x: sm.Tensor) => sm.softmax(x, -1), [x], [ct])[1][0] as sm.Tensor,
        bytes: 4 * (3 * count(s.shape)),
        tolerance: tol,
        dispose: () => [x, ct].forEach((t) => t.dispose()),
      };
    }
    case "train-xent": {
      const logits = input([s.rows, s.classes], 26, 4);
      const targets = sm.tidy(() => sm.array(Array.from({ length: s.rows }, (_, i) => (i * 7919) % s.classes), "int32")).eval();
      const step = sm.valueAndGrad((l: sm.Tensor) => sm.nn.losses.crossEntropy(l, targets, { reduction: "mean" }));
      return {
        fn: () => {
          const [loss, g] = step(logits) as [sm.Tensor, sm.Tensor];
          return all([g, loss]);
        },
        bytes: 4 * 2 * s.rows * s.classes,
        tolerance: tol,
        dispose: () => [logits, targets].forEach((t) => t.dispose()),
      };
    }
    case "train-lora": {
      const x = input(s.x, 1);
      const W = input([s.d, s.d], 2, 1 / Math.sqrt(s.d));
      const A = input([s.d, s.rank], 3, 1 / Math.sqrt(s.d));
      const B = input([s.rank, s.d], 4, 0.1);
      const ct = input(s.x, 27);
      const scale = s.alpha / s.rank;
      const m = count(s.x) / s.d;
      const layer = (x: sm.Tensor, A: sm.Tensor, B: sm.Tensor) => sm.matmul(x, W).add(sm.matmul(sm.matmul(x, A), B).mul(scale));
      return {
        fn: () => {
          const [[y], grads] = sm.vjp(layer, [x, A, B], [ct]);
          return all([...(grads as sm.Tensor[]), y!]);
        },
        // forward (x W, the low-rank path) and backward (dx = ct W^T + ..., dA, dB)
        flops: 4 * m * s.d * s.d + 12 * m * s.d * s.rank,
        tolerance: tol,
        dispose: () => [x, W, A, B, ct].forEach((t) => t.dispose()),
      };
    }
    case "train-mlp": {
      const x = input([s.batch, s.dims[0]!], 30);
      const y = sm.tidy(() => sm.array(Array.from({ length: s.batch }, (_, i) => (i * 31) % s.dims.at(-1)!), "int32")).eval();
      const params: Record<string, sm.Tensor> = {};
      s.dims.slice(1).forEach((d, i) => {
        params[`w${i}`] = input([s.dims[i]!, d], 31 + 2 * i, 1 / Math.sqrt(s.dims[i]!));
        params[`b${i}`] = input([d], 32 + 2 * i, 0.01);
      });
      const mom = moments(params, 100);
      const layers = s.dims.length - 1;
      const loss = (p: Record<string, sm.Tensor>) => {
        let h = x;
        for (let i = 0; i < layers; i++) {
          h = sm.add(sm.matmul(h, p[`w${i}`]!), p[`b${i}`]!);
          if (i < layers - 1) h = sm.nn.relu(h);
        }
        return sm.nn.losses.crossEntropy(h, y, { reduction: "mean" });
      };
      const step = sm.valueAndGrad(loss);
      return {
        fn: () => {
          const [l, g] = step(params) as [sm.Tensor, Record<string, sm.Tensor>];
          return all([...adamwUpdate(params, g, mom), l]);
        },
        flops: 6 * s.batch * s.dims.slice(1).reduce((a, d, i) => a + s.dims[i]! * d, 0),
        tolerance: tol,
        dispose: () => [x, y, ...Object.values(params), ...Object.values(mom).flatMap((m) => [m.m, m.v])].forEach((t) => t.dispose()),
      };
    }
    case "train-adamw": {
      const params: Record<string, sm.Tensor> = {};
      const grads: Record<string, sm.Tensor> = {};
      for (let i = 0; i < s.tensors; i++) {
        params[`p${i}`] = input([s.size], 200 + i);
        grads[`p${i}`] = input([s.size], 400 + i, 0.1);
      }
      const mom = moments(params, 600);
      return {
        fn: () => all(adamwUpdate(params, grads, mom)),
        // read p, g, m, v; write p, m, v
        bytes: 4 * 7 * s.tensors * s.size,
        tolerance: tol,
        dispose: () => [...Object.values(params), ...Object.values(grads), ...Object.values(mom).flatMap((m) => [m.m, m.v])].forEach((t) => t.dispose()),
      };
    }
  }
}
