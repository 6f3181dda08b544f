// smelt's fused kernels against PyTorch: test/fixtures/torch/fused.json, written by
// scripts/torch_fused_reference.py, holds how each case's inputs are made and torch's output.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as sm from "../../src/index.ts";

setDefaultTimeout(120_000);

interface Made { shape: number[]; seed: number; scale: number; dtype: sm.DType }
interface Given { shape: number[]; values: number[] }
interface Case {
  name: string;
  dtype: sm.DType;
  inputs: Record<string, Made | Given>;
  params: Record<string, number | boolean>;
  output: { shape: number[]; step: number; data: number[] };
}
const fixture = JSON.parse(readFileSync(join(import.meta.dir, "../fixtures/torch/fused.json"), "utf8")) as { torch: string; cases: Case[] };

/** The script's generator, exactly: an LCG modulo 2^31 (low bits of the product) mapped to k/1000. */
function gen(n: number, seed: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) & 0x7fffffff;
    out[i] = ((((s >> 8) % 2001) - 1000) / 1000) * scale;
  }
  return out;
}
function input(c: Case, name: string): sm.Tensor {
  const i = c.inputs[name]!;
  if ("values" in i) return sm.array(i.values, "int32").reshape(i.shape);
  const n = i.shape.reduce((a, b) => a * b, 1);
  return sm.array(gen(n, i.seed, i.scale)).reshape(i.shape).astype(i.dtype);
}

const tolerance: Record<string, number> = { float32: 2e-5, float16: 2e-3, bfloat16: 1.6e-2 };

function run(c: Case): sm.Tensor {
  const x = (n: string) => input(c, n);
  const p = c.params;
  switch (c.name) {
    case "softmax": {
      const v = x("x");
      const e = sm.exp(v.sub(v.max(-1, true)));
      return e.div(e.sum(-1, true));
    }
    case "logsumexp": return sm.logsumexp(x("x"), -1);
    case "rmsNorm": return sm.fast.rmsNorm(x("x"), x("w"), 1e-5);
    case "layerNorm": return sm.fast.layerNorm(x("x"), x("w"), x("b"), 1e-5);
    case "matmulBiasGelu": return sm.gelu(sm.matmul(x("a"), x("m")).add(x("bias")));
    case "rope":
      return sm.fast.rope(x("x"), p.dims as number, { traditional: p.traditional as boolean, base: p.base as number, scale: p.scale as number, offset: p.offset as number });
    case "crossEntropy":
    case "crossEntropyMean": {
      const logits = x("logits"), targets = x("targets").reshape([-1, 1]);
      const valid = targets.ne(p.ignore as number);
      const picked = sm.takeAlongAxis(logits, sm.where(valid, targets, 0), -1);
      const loss = sm.where(valid, sm.logsumexp(logits, -1, true).sub(picked), 0);
      return c.name === "crossEntropy" ? loss.reshape([-1]) : loss.sum().div(valid.astype("float32").sum());
    }
    case "sdpa":
      return sm.fast.scaledDotProductAttention(x("q"), x("k"), x("v"), { scale: p.scale as number, mask: p.causal ? "causal" : x("mask") });
    case "lora": {
      const s = (p.alpha as number) / (p.rank as number);
      return sm.matmul(x("x"), x("W")).add(sm.matmul(sm.matmul(x("x"), x("A")), x("B")).mul(s));
    }
  }
  throw new Error(`no runner for ${c.name}`);
}

describe(`fused kernels against PyTorch ${fixture.torch}`, () => {
  for (const c of fixture.cases) {
    const label = `${c.name} ${c.dtype} [${c.output.shape}]${"traditional" in c.params ? ` traditional=${c.params.traditional}` : ""}${"causal" in c.params ? ` causal=${c.params.causal}` : ""}`;
    test(label, () => {
      const got = sm.tidy(() => {
        const out = run(c);
        expect(out.shape).toEqual(c.output.shape);
        return out.astype("float32").toArray() as number[];
      });
      const tol = tolerance[c.dtype]!;
      c.output.data.forEach((want, k) => {
        const i = k * c.output.step;
        if (!(Math.abs(got[i]! - want) <= tol * (1 + Math.abs(want)))) throw new Error(`element ${i}: smelt ${got[i]}, torch ${want}`);
      });
    });
  }
});
