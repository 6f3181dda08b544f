// Gradients against PyTorch autograd: test/fixtures/torch/grads.json, written by
// scripts/torch_grad_reference.py, holds each case's inputs, a cotangent w, and the gradient of
// sum(f(inputs) * w) that torch computed; here f is built from smelt ops.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as sm from "../../src/index.ts";

setDefaultTimeout(120_000);

type T = sm.Tensor;
interface Values { shape: number[]; data: number[] }
interface Case { name: string; floats: Record<string, Values>; ints: Record<string, Values>; w: Values; grads: Record<string, number[]> }
const fixture = JSON.parse(readFileSync(join(import.meta.dir, "../fixtures/torch/grads.json"), "utf8")) as { cases: Case[] };

const rms = (x: T, w: T) => sm.fast.rmsNorm(x, w);
const F: Record<string, (f: Record<string, T>, i: Record<string, T>) => T> = {
  matmul: ({ a, b }) => sm.matmul(a!, b!),
  matmulBatchedBroadcast: ({ a, b }) => sm.matmul(a!, b!),
  matmulVector: ({ a, b }) => sm.matmul(a!, b!),
  matmulTransposed: ({ a, b }) => sm.matmul(a!.T, b!.T),
  softmax: ({ x }) => sm.softmax(x!, -1),
  softmaxAxis0: ({ x }) => sm.softmax(x!, 0),
  logSoftmax: ({ x }) => sm.logSoftmax(x!, -1),
  logsumexp: ({ x }) => sm.logsumexp(x!, 1),
  crossEntropy: ({ x }, { labels }) => sm.negative(sm.mean(sm.takeAlongAxis(sm.logSoftmax(x!, -1), labels!.reshape([-1, 1]), 1))),
  rmsNorm: ({ x, w }) => rms(x!, w!),
  layerNorm: ({ x, w, b }) => sm.fast.layerNorm(x!, w!, b!),
  gelu: ({ x }) => sm.gelu(x!),
  geluTanh: ({ x }) => sm.gelu(x!, "tanh"),
  silu: ({ x }) => sm.silu(x!),
  softplus: ({ x }) => sm.softplus(x!),
  maxTies: ({ x }) => sm.max(x!, 1),
  minTiesAll: ({ x }) => sm.min(x!),
  maximumTies: ({ a, b }) => sm.maximum(a!, b!),
  cumsum: ({ x }) => sm.cumsum(x!, 1),
  cumprod: ({ x }) => sm.cumprod(x!, 1),
  cumprodZeros: ({ x }) => sm.cumprod(x!, 1),
  prodZeros: ({ x }) => sm.prod(x!, 1),
  take: ({ x }, { ids }) => sm.take(x!, ids!, 1),
  embedding: ({ w }, { ids }) => sm.gather(w!, ids!),
  takeAlongAxis: ({ x }, { ids }) => sm.takeAlongAxis(x!, ids!, 1),
  scatterAdd: ({ x, v }, { ids }) => sm.scatterAdd(x!, ids!, v!, 1),
  scatterAddAxis0: ({ x, v }, { ids }) => sm.scatterAdd(x!, ids!, v!, 0),
  concatenate: ({ a, b }) => sm.concatenate([a!, b!, a!], 0),
  pad: ({ x }) => sm.pad(x!, [[0, 1], [1, 2]], 3),
  variance: ({ x }) => sm.variance(x!, 1),
  std: ({ x }) => sm.std(x!, -1, false, 1),
  sdpaCausal: ({ q, k, v }) => sm.fast.scaledDotProductAttention(q!, k!, v!, { mask: "causal" }),
  sdpaMaskGrouped: ({ q, k, v, m }) => sm.fast.scaledDotProductAttention(q!, k!, v!, { mask: m! }),
  powerDivide: ({ a, b }) => sm.divide(sm.power(a!, b!), sm.add(b!, 3)),
  sigmoidTanh: ({ x }) => sm.multiply(sm.sigmoid(x!), sm.tanh(x!)),
  mlp: ({ x, w1, w2 }) => sm.mean(sm.square(sm.matmul(sm.relu(sm.matmul(x!, w1!)), w2!))),
};

const tensor = (v: Values, dtype: sm.DType) => sm.array(v.data, dtype).reshape(v.shape);

describe("gradients against PyTorch autograd", () => {
  test("every fixture case has a smelt function", () => {
    expect(fixture.cases.map((c) => c.name).sort()).toEqual(Object.keys(F).sort());
  });
  for (const c of fixture.cases) {
    for (const mode of ["lazy", "eager"] as const) {
      test(`${c.name} (${mode})`, () => {
        const names = Object.keys(c.floats);
        const ints = Object.fromEntries(Object.entries(c.ints).map(([k, v]) => [k, tensor(v, "int32")]));
        const w = tensor(c.w, "float32");
        const run = () => {
          const gs = sm.grad(
            (...xs: T[]) => sm.sum(sm.multiply(F[c.name]!(Object.fromEntries(names.map((k, i) => [k, xs[i]!])), ints), w)),
            names.map((_, i) => i),
          )(...names.map((k) => tensor(c.floats[k]!, "float32"))) as T[];
          return gs.map((g) => g.toArray() as number[]);
        };
        const got = mode === "eager" ? sm.eager(run) : run();
        names.forEach((k, i) => {
          const want = c.grads[k]!;
          expect(got[i]!.length).toBe(want.length);
          const scale = Math.max(1, ...want.map(Math.abs));
          want.forEach((v, j) => {
            if (!(Math.abs(got[i]![j]! - v) <= 1e-5 * scale + 1e-4 * Math.abs(v))) throw new Error(`${k}[${j}]: got ${got[i]![j]}, torch ${v}`);
          });
        });
      });
    }
  }
});
