/**
 * The training loops of memory.test.ts, run as a child process (`bun test/autograd/loops.ts
 * lazy|eager|module`) so that the process's RSS is the loop's alone, not the test runner's after
 * every earlier test file. Prints one JSON line: bytesAllocated every 500 steps, losses, the RSS
 * growth over steps 500..10,000 and bytesAllocated before and after.
 */
import * as sm from "../../src/index.ts";
import { randn } from "../tensor/helpers.ts";

export interface LoopResult {
  bytes: number[];
  losses: number[];
  rssGrowth: number;
}

type T = sm.Tensor;
type Params = { w1: T; b1: T; w2: T };
const init = (shape: number[], seed: number) => sm.tidy(() => sm.array(randn(shape.reduce((a, b) => a * b, 1), seed).map((v) => v * 0.3), "float32").reshape(shape).eval());

/** RSS in MiB after a full collection. */
function rssMiB(): number {
  Bun.gc(true);
  return process.memoryUsage().rss / 2 ** 20;
}

export function train(steps: number, mode: "lazy" | "eager"): { bytes: number[]; losses: number[]; rssGrowth: number } {
  const x = init([16, 4], 1);
  const y = sm.tidy(() => sm.sin(sm.sum(x, 1, true)).eval());
  let p: Params = { w1: init([4, 8], 2), b1: sm.zeros([8]).eval(), w2: init([8, 1], 3) };
  const loss = (p: Params, x: T, y: T) => sm.mean(sm.square(sm.subtract(sm.matmul(sm.tanh(sm.add(sm.matmul(x, p.w1), p.b1)), p.w2), y)));
  const step = sm.valueAndGrad(loss);
  const bytes: number[] = [];
  const losses: number[] = [];
  let rss0 = 0;
  const body = () => {
    for (let i = 0; i < steps; i++) {
      // From step 500 on: the kernels are compiled and the caches warm by then.
      if (i === 500) rss0 = rssMiB();
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
  const rssGrowth = rssMiB() - rss0;
  for (const t of [p.w1, p.b1, p.w2, x, y]) t.dispose();
  return { bytes, losses, rssGrowth };
}

class MLP extends sm.nn.Module {
  layers = [new sm.nn.Linear(4, 16), new sm.nn.Linear(16, 16), new sm.nn.Linear(16, 3)];
  override forward(x: T): T {
    let h = x;
    this.layers.forEach((l, i) => {
      h = l.forward(h);
      if (i < this.layers.length - 1) h = sm.nn.relu(h);
    });
    return h;
  }
}

export function trainModule(): LoopResult {
  const x = init([32, 4], 5);
  const y = sm.tidy(() => sm.argmax(sm.matmul(x, init([4, 3], 6)), 1).astype("int32").eval());
  const model = new MLP();
  sm.eval(model.parameters());
  const opt = new sm.optim.AdamW({ learningRate: sm.optim.cosineDecay(1e-2, 10_000) });
  const lossAndGrad = sm.nn.valueAndGrad(model, (m: MLP, x: T, y: T) => sm.nn.losses.crossEntropy(m.forward(x), y, { reduction: "mean" }));
  const bytes: number[] = [];
  const losses: number[] = [];
  let rss0 = 0;
  for (let i = 0; i < 10_000; i++) {
    if (i === 500) rss0 = rssMiB();
    const [loss, grads] = lossAndGrad(model, x, y) as [T, unknown];
    const [clipped, norm] = sm.optim.clipGradNorm(grads, 1.0);
    opt.update(model, clipped as never);
    sm.eval(model.parameters(), opt.state, loss);
    if (i % 500 === 0 || i === 9_999) {
      losses.push(loss.item() as number);
      bytes.push(sm.stats().bytesAllocated);
    }
    sm.optim.disposeTree([loss, grads, clipped, norm]);
  }
  const rssGrowth = rssMiB() - rss0;
  sm.optim.disposeTree([model.parameters(), opt.state, x, y]);
  return { bytes, losses, rssGrowth };
}

if (import.meta.main) {
  const which = process.argv[2];
  const before = sm.stats().bytesAllocated;
  const r = which === "module" ? trainModule() : which === "lazy" || which === "eager" ? train(10_000, which) : null;
  if (!r) throw new Error(`loops.ts: expected lazy, eager or module, got ${which}`);
  console.log(JSON.stringify({ ...r, before, after: sm.stats().bytesAllocated }));
}
