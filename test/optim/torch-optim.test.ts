// 100-step trajectories against torch.optim (scripts/torch_optim_reference.py), fed torch's gradients.
import { expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as sm from "../../src/index.ts";

setDefaultTimeout(300_000);
const O = sm.optim;
type Step = { gW: number[]; gB: number[]; W: number[]; B: number[] };
const ref = JSON.parse(readFileSync(join(import.meta.dir, "../fixtures/optim/trajectories.json"), "utf8")) as { W0: number[]; B0: number[]; cases: Record<string, Step[]> };

class Affine extends sm.nn.Module {
  w = sm.array(ref.W0).reshape([3, 2]);
  b = sm.array(ref.B0);
}

const cases: Record<string, { make: () => sm.optim.Optimizer; clipNorm?: number; clipValue?: number }> = {
  sgd: { make: () => new O.SGD({ learningRate: 0.05 }) },
  sgd_momentum_dampening_decay: { make: () => new O.SGD({ learningRate: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 0.01 }) },
  sgd_nesterov_clip_value: { make: () => new O.SGD({ learningRate: 0.05, momentum: 0.9, nesterov: true, weightDecay: 0.01 }), clipValue: 0.1 },
  adam_decay_warmup_cosine: {
    make: () => new O.Adam({ learningRate: O.joinSchedules([O.linearSchedule(0.001, 0.01, 10), O.cosineDecay(0.01, 90)], [10]), weightDecay: 0.01 }),
  },
  adamw_cosine: { make: () => new O.AdamW({ learningRate: O.cosineDecay(0.01, 100, 0.001), weightDecay: 0.1 }) },
  adamw_clip_norm: { make: () => new O.AdamW({ learningRate: 0.01, betas: [0.8, 0.99], eps: 1e-6 }), clipNorm: 0.5 },
  lion: { make: () => new O.Lion({ learningRate: 0.001, weightDecay: 0.1 }) },
  adafactor: { make: () => new O.Adafactor() },
  adafactor_decay: { make: () => new O.Adafactor({ learningRate: 0.05, weightDecay: 0.01, beta2Decay: -0.5, d: 2 }) },
};

for (const [name, c] of Object.entries(cases)) {
  test(`${name}: 100 steps match torch.optim within 1e-5 relative`, () => {
    const model = new Affine();
    const opt = c.make();
    let worst = 0;
    for (const [k, s] of ref.cases[name]!.entries()) {
      let grads: sm.nn.ParamTree = { w: sm.array(s.gW).reshape([3, 2]), b: sm.array(s.gB) };
      if (c.clipNorm) grads = O.clipGradNorm(grads, c.clipNorm)[0];
      if (c.clipValue) grads = O.clipGradValue(grads, c.clipValue);
      opt.update(model, grads);
      const got = [...model.w.toArray(), ...model.b.toArray()];
      const want = [...s.W, ...s.B];
      for (let i = 0; i < want.length; i++) {
        // Relative to the parameter's scale; parameters here are of order 0.1 to 1.
        const err = Math.abs(got[i]! - want[i]!) / Math.max(Math.abs(want[i]!), 0.1);
        worst = Math.max(worst, err);
        if (err > 1e-5) throw new Error(`${name}: step ${k + 1}, element ${i}: got ${got[i]}, torch ${want[i]} (relative error ${err})`);
      }
    }
    expect(opt.step).toBe(100);
    expect(worst).toBeLessThanOrEqual(1e-5);
  });
}
