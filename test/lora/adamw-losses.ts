// The AdamW loop the PEFT parity tests share: masked next-token loss of `model` on (x, y, w),
// `steps` updates, the loss before each update; and the 0.2%-per-step comparison with PEFT.
import { expect } from "bun:test";
import * as sm from "../../src/index.ts";

export interface AdamwRun {
  lr: number;
  weightDecay: number;
  steps: number;
}

export function adamwLosses<M extends sm.nn.Module>(
  model: M,
  batch: { x: sm.Tensor; y: sm.Tensor; w: sm.Tensor; count: number },
  run: AdamwRun,
): number[] {
  const step = sm.nn.valueAndGrad(model, (m: M) => sm.lora.maskedLoss(m.forward(batch.x) as sm.Tensor, batch.y, batch.w, batch.count));
  const opt = new sm.optim.AdamW({ learningRate: run.lr, weightDecay: run.weightDecay });
  const losses: number[] = [];
  for (let i = 0; i < run.steps; i++) {
    const [loss, grads] = step(model);
    opt.update(model, grads);
    sm.eval(loss as sm.Tensor, model.trainableParameters(), opt.state);
    losses.push((loss as sm.Tensor).raw()[0]!);
  }
  return losses;
}

export function expectPeftLosses(label: string, got: number[], want: number[]): void {
  console.log(`${label} smelt ${got.map((v) => v.toFixed(5)).join(" ")}\n${" ".repeat(label.length)} PEFT  ${want.map((v) => v.toFixed(5)).join(" ")}`);
  expect(got.length).toBe(want.length);
  for (let i = 0; i < got.length; i++) expect(Math.abs(got[i]! - want[i]!) / want[i]!).toBeLessThanOrEqual(0.002);
}
