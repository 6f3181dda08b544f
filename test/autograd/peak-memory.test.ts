// Peak device memory of backward passes, read with sm.getPeakMemory after sm.resetPeakMemory:
// cross-entropy over a large vocabulary materialises only the logits and their gradient, and
// sm.checkpoint lowers the peak of a deep MLP's gradient.
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";

setDefaultTimeout(300_000);

/** Device bytes a fresh tensor of `shape` takes (storages come in power-of-two buckets). */
function bytesOf(make: () => sm.Tensor): { t: sm.Tensor; bytes: number } {
  const before = sm.stats().bytesAllocated;
  const t = make().eval();
  return { t, bytes: sm.stats().bytesAllocated - before };
}

test("cross-entropy forward + backward over [512, 49152] holds no more than the logits and their gradient", () => {
  const N = 512, C = 49152;
  // Tensors earlier tests left alive count towards the peak too: measure above them.
  const others = sm.getActiveMemory();
  const { t: logits, bytes } = bytesOf(() => sm.random.normal([N, C], "float32", 0, 2, sm.random.key(1)));
  const targets = sm.random.randint(0, C, [N], "int32", sm.random.key(2)).eval();
  for (const reduction of ["mean", "sum"] as const) {
    const step = sm.valueAndGrad((x: sm.Tensor) => sm.nn.losses.crossEntropy(x, targets, { reduction }));
    sm.resetPeakMemory();
    const [loss, g] = step(logits) as [sm.Tensor, sm.Tensor];
    sm.eval(loss, g);
    const peak = sm.getPeakMemory() - others;
    // Live: the logits and the gradient (one bucket each), the targets and per-row scalars.
    expect(peak).toBeLessThanOrEqual(2.2 * bytes + (1 << 20));
    // And the values: the gradient is (softmax - onehot) (/ N for the mean), so each row sums
    // to 0; the mean loss is about log(C) plus the logits' spread.
    const rows = sm.sum(g, 1).toArray() as number[];
    for (const r of rows) expect(Math.abs(r)).toBeLessThan(1e-5);
    const l = (loss.item() as number) / (reduction === "sum" ? N : 1);
    expect(l).toBeGreaterThan(Math.log(C));
    expect(l).toBeLessThan(Math.log(C) + 4);
    for (const t of [loss, g]) t.dispose();
  }
  for (const t of [logits, targets]) t.dispose();
});

/** Memory run() takes at its peak above what was in use before it, and the values it returns (then disposed). */
function peakOf(run: () => sm.Tensor[]): { peak: number; values: number[][] } {
  const base = sm.getActiveMemory();
  sm.resetPeakMemory();
  const outs = run();
  const peak = sm.getPeakMemory() - base;
  const values = outs.map((t) => t.toArray() as number[]);
  outs.forEach((t) => t.dispose());
  return { peak, values };
}

test("eager: sm.checkpoint lowers the peak memory of a deep MLP's gradient, same gradients", () => {
  const B = 512, W = 256, L = 16;
  const ws = Array.from({ length: L }, (_, i) => sm.random.normal([W, W], "float32", 0, 1 / Math.sqrt(W), sm.random.key(10 + i)).eval());
  const x = sm.random.normal([B, W], "float32", 0, 1, sm.random.key(99)).eval();
  const block = (h: sm.Tensor, w: sm.Tensor) => sm.tanh(sm.matmul(h, w));
  const measure = (useCheckpoint: boolean) =>
    sm.eager(() => {
      const blockC = sm.checkpoint(block);
      const loss = (ws: sm.Tensor[]) => {
        let h = x;
        for (const w of ws) h = useCheckpoint ? blockC(h, w) : block(h, w);
        return sm.mean(sm.square(h));
      };
      return peakOf(() => sm.grad(loss)(ws) as sm.Tensor[]);
    });
  const plain = measure(false);
  const checkpointed = measure(true);
  console.log(`deep MLP gradient, eager, peak above the inputs: ${(plain.peak / 2 ** 20).toFixed(1)} MiB plain, ${(checkpointed.peak / 2 ** 20).toFixed(1)} MiB with checkpoint`);
  // The activations inside each block (B x W floats, 2 per layer) are not kept.
  expect(checkpointed.peak).toBeLessThan(plain.peak * 0.75);
  plain.values.forEach((v, i) => expect(Array.from(checkpointed.values[i]!)).toEqual(Array.from(v)));
  for (const t of [...ws, x]) t.dispose();
});

test("lazy: sm.checkpoint around each layer lowers the peak of an 8-layer MLP's gradient, same gradients", () => {
  // Residual layers h + tanh(h W1) W2 with a hidden width of 4W: without checkpoints the backward
  // pass needs every layer's tanh(h W1) (4 units of B x W each) beside its input (1 unit); with
  // them, the inputs only, and one layer's values at a time. The weights (and so their gradients)
  // are small beside the values: 16 of half a unit.
  const B = 512, W = 64, L = 8;
  const key = (i: number) => sm.random.key(200 + i);
  const w1 = Array.from({ length: L }, (_, i) => sm.random.normal([W, 4 * W], "float32", 0, 1 / Math.sqrt(W), key(i)).eval());
  const w2 = Array.from({ length: L }, (_, i) => sm.random.normal([4 * W, W], "float32", 0, 0.5 / Math.sqrt(4 * W), key(L + i)).eval());
  const x = sm.random.normal([B, W], "float32", 0, 1, key(99)).eval();
  const layer = (h: sm.Tensor, a: sm.Tensor, b: sm.Tensor) => sm.add(h, sm.matmul(sm.tanh(sm.matmul(h, a)), b));
  const layerC = sm.checkpoint(layer);
  const measure = (useCheckpoint: boolean) => {
    const step = sm.valueAndGrad((ws: sm.Tensor[]) => {
      let h = x;
      for (let i = 0; i < L; i++) h = (useCheckpoint ? layerC : layer)(h, ws[i]!, ws[L + i]!);
      return sm.mean(sm.square(h));
    });
    const run = () => {
      const [loss, gs] = step([...w1, ...w2]) as [sm.Tensor, sm.Tensor[]];
      sm.eval(loss, ...gs);
      return [loss, ...gs];
    };
    // Once first, so that the weights' packed operands are made and kept outside the measurement.
    run().forEach((t) => t.dispose());
    return peakOf(run);
  };
  const plain = measure(false);
  const checkpointed = measure(true);
  const unit = B * W * 4;
  console.log(`8-layer MLP gradient, lazy, peak above the inputs: ${plain.peak / unit} units of B x W plain, ${checkpointed.peak / unit} with checkpoint`);
  expect(checkpointed.peak).toBeLessThan(plain.peak * 0.6);
  plain.values.forEach((v, i) => {
    const c = checkpointed.values[i]!;
    v.forEach((want, j) => expect(Math.abs(c[j]! - want)).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(want))));
  });
  for (const t of [...w1, ...w2, x]) t.dispose();
});

test("eager: the last backward pass frees each forward value once its rule has run", () => {
  const x = sm.random.normal([1 << 18], "float32", 0, 1, sm.random.key(1)).eval();
  const f = (x: sm.Tensor) => {
    let h = x;
    for (let i = 0; i < 32; i++) h = sm.tanh(sm.multiply(h, 1.1));
    return sm.sum(h);
  };
  const { peak, g } = sm.eager(() => {
    const base = sm.getActiveMemory();
    sm.resetPeakMemory();
    const g = sm.grad(f)(x) as sm.Tensor;
    return { peak: sm.getPeakMemory() - base, g };
  });
  const MiB = 2 ** 20;
  console.log(`eager gradient of 32 layers of 1 MiB: peak ${(peak / MiB).toFixed(0)} MiB above the input`);
  // The forward values are 64 MiB (a product and a tanh per layer), all alive when the backward
  // starts; each cotangent and temporary of the backward is freed once used. Holding them until
  // the transform returned peaked at 226 MiB.
  expect(peak).toBeLessThan(80 * MiB);
  // The gradient, checked against the chain rule in float64 on a few elements.
  const xs = x.toArray() as number[];
  const gs = g.toArray() as number[];
  for (const i of [0, 1, 1000, 200_000]) {
    let h = xs[i]!, d = 1;
    for (let k = 0; k < 32; k++) {
      const t = Math.tanh(h * 1.1);
      d *= 1.1 * (1 - t * t);
      h = t;
    }
    expect(Math.abs(gs[i]! - d)).toBeLessThan(1e-5 + 1e-4 * Math.abs(d));
  }
  g.dispose();
  x.dispose();
});
