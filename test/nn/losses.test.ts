// Losses against torch.nn.functional in float64 (scripts/torch_losses_reference.py).
import { expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as sm from "../../src/index.ts";

setDefaultTimeout(120_000);
const L = sm.nn.losses;
const ref = JSON.parse(readFileSync(join(import.meta.dir, "../fixtures/nn/losses.json"), "utf8"));
const I = ref.inputs;
const logits = sm.array(I.logits).reshape([6, 5]);
const idx = sm.array(I.idx, "int32");
const probs = sm.array(I.probs).reshape([6, 5]);
const w = sm.array(I.w);
const pred = sm.array(I.pred).reshape([4, 3]);
const tgt = sm.array(I.tgt).reshape([4, 3]);
const bin = sm.array(I.bin).reshape([4, 3]);

function close(t: sm.Tensor, want: number | number[]) {
  const got = t.toArray();
  const w = Array.isArray(want) ? want : [want];
  expect(got.length).toBe(w.length);
  for (let i = 0; i < w.length; i++) expect(Math.abs(got[i]! - w[i]!)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(w[i]!)));
}

test("crossEntropy: index targets with reductions, smoothing, weights and ignoreIndex", () => {
  close(L.crossEntropy(logits, idx), ref.ce_none);
  close(L.crossEntropy(logits, idx, { reduction: "mean" }), ref.ce_mean);
  close(L.crossEntropy(logits, idx, { reduction: "sum", labelSmoothing: 0.1 }), ref.ce_sum_smooth);
  close(L.crossEntropy(logits, idx, { reduction: "mean", weights: w }), ref.ce_weighted_mean);
  close(L.crossEntropy(logits, idx, { reduction: "mean", weights: w, labelSmoothing: 0.2, ignoreIndex: 2 }), ref.ce_weighted_smooth_ignore_mean);
  close(L.crossEntropy(logits, idx, { ignoreIndex: 2 }), ref.ce_ignore_none);
});

test("crossEntropy: probability targets", () => {
  close(L.crossEntropy(logits, probs, { reduction: "mean" }), ref.ce_probs_mean);
  close(L.crossEntropy(logits, probs, { weights: w, labelSmoothing: 0.1 }), ref.ce_probs_weighted_smooth_none);
});

test("nll, mse, l1 and binaryCrossEntropy", () => {
  close(L.nll(sm.logSoftmax(logits, -1), idx), ref.nll_none);
  close(L.mse(pred, tgt), ref.mse);
  close(L.l1(pred, tgt, { reduction: "sum" }), ref.l1_sum);
  close(L.binaryCrossEntropy(pred, bin), ref.bce_logits);
  close(L.binaryCrossEntropy(sm.sigmoid(pred), bin, { withLogits: false, reduction: "none" }), ref.bce_probs_none);
});

test("losses name the problem at the call", () => {
  expect(() => L.crossEntropy(logits, sm.array([1, 2], "int32"))).toThrow(/crossEntropy: class-index targets must have shape \[6\]/);
  expect(() => L.crossEntropy(logits, idx, { weights: sm.ones([4]) })).toThrow(/weights must have shape \[5\]/);
  expect(() => L.crossEntropy(logits, idx, { reduction: "avg" as never })).toThrow(/reduction must be/);
  expect(() => L.mse(pred, sm.ones([3, 4]))).toThrow(/mse: predictions \[4,3\] and targets \[3,4\]/);
});
