// Train a small MLP classifier with sm.nn and sm.optim, save it, load it back.
//   bun examples/train-mlp.ts
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sm from "smelt";

const { nn, optim } = sm;

// Three interleaved spirals in the plane: a classic toy dataset, generated here.
function spirals(perClass: number, classes: number, phase: number): { x: number[][]; y: number[] } {
  const x: number[][] = [];
  const y: number[] = [];
  for (let c = 0; c < classes; c++) {
    for (let i = 0; i < perClass; i++) {
      const r = (i + phase) / perClass;
      const t = 4 * r + (2 * Math.PI * c) / classes;
      x.push([r * Math.sin(t), r * Math.cos(t)]);
      y.push(c);
    }
  }
  return { x, y };
}

class MLP extends nn.Module {
  hidden = [new nn.Linear(2, 64), new nn.Linear(64, 64)];
  out = new nn.Linear(64, 3);
  override forward(x: sm.Tensor): sm.Tensor {
    let h = x;
    for (const layer of this.hidden) h = nn.relu(layer.forward(h));
    return this.out.forward(h);
  }
}

sm.random.seed(0);
const train = spirals(200, 3, 0);
const heldOut = spirals(200, 3, 0.5);
const x = sm.array(train.x);
const y = sm.array(train.y, "int32");

const model = new MLP();
const steps = 400;
const opt = new optim.AdamW({
  learningRate: optim.joinSchedules([optim.linearSchedule(1e-3, 2e-2, 20), optim.cosineDecay(2e-2, steps - 20, 1e-3)], [20]),
  weightDecay: 1e-4,
});
const lossAndGrad = nn.valueAndGrad(model, (m: MLP, xs: sm.Tensor, ys: sm.Tensor) =>
  nn.losses.crossEntropy(m.forward(xs), ys, { reduction: "mean" }),
);

const accuracy = (data: { x: number[][]; y: number[] }) => {
  const pred = model.forward(sm.array(data.x)).argmax(-1).toArray();
  return pred.filter((p, i) => p === data.y[i]).length / data.y.length;
};

const t0 = performance.now();
for (let step = 1; step <= steps; step++) {
  const [loss, grads] = lossAndGrad(model, x, y);
  const [clipped, norm] = optim.clipGradNorm(grads, 1.0);
  opt.update(model, clipped);
  sm.eval(model.parameters(), opt.state, loss, norm);
  if (step % 100 === 0) {
    console.log(`step ${step}: loss ${(loss as sm.Tensor).item().toFixed(4)}, grad norm ${norm.item().toFixed(3)}, lr ${opt.learningRate.toExponential(2)}`);
  }
  // The optimizer disposes the parameters and state it replaces; the rest is ours to free.
  (loss as sm.Tensor).dispose();
  norm.dispose();
  optim.disposeTree(grads);
  optim.disposeTree(clipped);
}
console.log(`trained in ${((performance.now() - t0) / 1000).toFixed(1)} s; held-out accuracy ${(accuracy(heldOut) * 100).toFixed(1)}%`);

const dir = mkdtempSync(join(tmpdir(), "smelt-example-"));
const path = join(dir, "mlp.safetensors");
model.saveWeights(path);
const copy = new MLP().loadWeights(path);
const probe = sm.array([[0.3, -0.2]]);
console.log(`saved and reloaded: same logits ${JSON.stringify(copy.forward(probe).toArray()) === JSON.stringify(model.forward(probe).toArray())}`);
rmSync(dir, { recursive: true, force: true });
