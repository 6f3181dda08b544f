// A training loop of valueAndGrad steps holds device memory flat: the transforms keep no graph,
// tape or handle past the step that made it.
import { expect, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { randn } from "../tensor/helpers.ts";

type T = sm.Tensor;
type Params = { w1: T; b1: T; w2: T };
const init = (shape: number[], seed: number) => sm.tidy(() => sm.array(randn(shape.reduce((a, b) => a * b, 1), seed).map((v) => v * 0.3), "float32").reshape(shape).eval());

function train(steps: number, mode: "lazy" | "eager"): { bytes: number[]; losses: number[] } {
  const x = init([16, 4], 1);
  const y = sm.tidy(() => sm.sin(sm.sum(x, 1, true)).eval());
  let p: Params = { w1: init([4, 8], 2), b1: sm.zeros([8]).eval(), w2: init([8, 1], 3) };
  const loss = (p: Params, x: T, y: T) => sm.mean(sm.square(sm.subtract(sm.matmul(sm.tanh(sm.add(sm.matmul(x, p.w1), p.b1)), p.w2), y)));
  const step = sm.valueAndGrad(loss);
  const bytes: number[] = [];
  const losses: number[] = [];
  const body = () => {
    for (let i = 0; i < steps; i++) {
      // No tidy: only what the loop itself holds is disposed, so the transform must free the rest.
      const [l, g] = step(p, x, y) as [T, Params];
      const sgd = (w: T, d: T) => {
        const scaled = d.mul(0.1);
        const out = w.sub(scaled);
        scaled.dispose();
        d.dispose();
        return out;
      };
      const next = { w1: sgd(p.w1, g.w1), b1: sgd(p.b1, g.b1), w2: sgd(p.w2, g.w2) };
      sm.eval(l, next);
      for (const t of [p.w1, p.b1, p.w2]) t.dispose();
      p = next;
      if (i % 500 === 0 || i === steps - 1) {
        losses.push(l.item() as number);
        bytes.push(sm.stats().bytesAllocated);
      }
      l.dispose();
    }
  };
  if (mode === "eager") sm.eager(body);
  else body();
  for (const t of [p.w1, p.b1, p.w2, x, y]) t.dispose();
  return { bytes, losses };
}

for (const mode of ["lazy", "eager"] as const) {
  test(`${mode}: 10,000 valueAndGrad steps on a small MLP keep bytesAllocated flat`, () => {
    const before = sm.stats().bytesAllocated;
    const { bytes, losses } = train(10_000, mode);
    expect(new Set(bytes).size).toBe(1);
    expect(sm.stats().bytesAllocated).toBe(before);
    expect(losses[losses.length - 1]!).toBeLessThan(losses[0]! / 2); // it trains
  }, 300_000);
}
