// Optimizer mechanics: kernels and compiles per step, state save/load, schedules, accumulation.
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sm from "../../src/index.ts";

setDefaultTimeout(300_000);
const O = sm.optim;
const dir = mkdtempSync(join(tmpdir(), "smelt-optim-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

class Two extends sm.nn.Module {
  a = sm.random.normal([16, 8], "float32", 0, 1, sm.random.key(1)).eval();
  b = sm.random.normal([8], "float32", 0, 1, sm.random.key(2)).eval();
}
const gradsFor = (i: number) => ({
  a: sm.random.normal([16, 8], "float32", 0, 1, sm.random.key(100 + i)).eval(),
  b: sm.random.normal([8], "float32", 0, 1, sm.random.key(200 + i)).eval(),
});

for (const make of [
  () => new O.AdamW({ learningRate: O.cosineDecay(1e-2, 50) }),
  () => new O.SGD({ learningRate: 0.1, momentum: 0.9, nesterov: true }),
  () => new O.Lion({ learningRate: O.exponentialDecay(1e-3, 0.9) }),
  () => new O.Adafactor(),
]) {
  const name = make().constructor.name;
  test(`${name}: after the first step nothing compiles, whatever the rate`, () => {
    const m = new Two();
    const opt = make();
    opt.update(m, gradsFor(0));
    sm.eval(m.parameters(), opt.state);
    const compiles = sm.stats().kernelCompiles + sm.stats().kernelDiskCacheHits;
    for (let i = 1; i < 6; i++) {
      opt.update(m, gradsFor(i));
      sm.eval(m.parameters(), opt.state);
    }
    expect(sm.stats().kernelCompiles + sm.stats().kernelDiskCacheHits).toBe(compiles);
    expect(opt.step).toBe(6);
  });
}

test("an AdamW step of one parameter is one kernel writing the parameter, m and v", () => {
  const m = new Two();
  m.freeze({ keys: "b" });
  const opt = new O.AdamW({ learningRate: 1e-3 });
  const g = { a: gradsFor(0).a };
  opt.update(m, g);
  sm.eval(m.parameters(), opt.state);
  opt.update(m, g);
  sm.resetStats();
  sm.eval(m.parameters(), opt.state);
  const k = sm.stats().kernelsDispatched;
  console.log(`AdamW step of one [16, 8] parameter: ${k} kernel(s)`);
  // New m, v and parameter share their inputs and work: one multi-output kernel.
  expect(k).toBe(1);
});

test("saveState and loadState resume exactly", () => {
  const run = (steps: number, opt: sm.optim.Optimizer, m: Two, from = 0) => {
    for (let i = from; i < from + steps; i++) {
      opt.update(m, gradsFor(i));
      sm.eval(m.parameters(), opt.state);
    }
  };
  const straight = new Two();
  const o1 = new O.AdamW({ learningRate: O.cosineDecay(1e-2, 10) });
  run(6, o1, straight);

  const first = new Two();
  const o2 = new O.AdamW({ learningRate: O.cosineDecay(1e-2, 10) });
  run(3, o2, first);
  const path = join(dir, "opt.safetensors");
  o2.saveState(path);
  first.saveWeights(join(dir, "model.safetensors"));

  const resumed = new Two().loadWeights(join(dir, "model.safetensors"));
  const o3 = new O.AdamW({ learningRate: O.cosineDecay(1e-2, 10) });
  o3.loadState(path);
  expect(o3.step).toBe(3);
  expect(o3.learningRate).toBe(o2.learningRate);
  run(3, o3, resumed, 3);
  expect(resumed.a.toArray()).toEqual(straight.a.toArray());
  expect(resumed.b.toArray()).toEqual(straight.b.toArray());
  expect(() => new O.SGD().loadState(path)).toThrow(/SGD.loadState: .* holds AdamW state/);
});

test("schedules", () => {
  expect(O.linearSchedule(0, 1, 4)(1)).toBe(0.25);
  expect(O.linearSchedule(0, 1, 4)(9)).toBe(1);
  expect(O.cosineDecay(1, 10)(0)).toBe(1);
  expect(O.cosineDecay(1, 10)(5)).toBeCloseTo(0.5, 12);
  expect(O.cosineDecay(1, 10, 0.1)(20)).toBeCloseTo(0.1, 12);
  expect(O.exponentialDecay(2, 0.5)(3)).toBe(0.25);
  expect(O.stepDecay(1, 0.1, 10)(25)).toBeCloseTo(0.01, 12);
  const warm = O.joinSchedules([O.linearSchedule(0, 1, 10), O.cosineDecay(1, 100)], [10]);
  expect(warm(5)).toBe(0.5);
  expect(warm(10)).toBe(1);
  expect(warm(60)).toBeCloseTo(0.5, 12);
  expect(() => O.joinSchedules([O.linearSchedule(0, 1, 10)], [10])).toThrow(/1 schedules need 0 boundaries, got 1/);
  const opt = new O.SGD({ learningRate: warm });
  expect(opt.learningRate).toBe(0);
});

test("clipGradNorm returns the norm; accumulate sums micro-batches in flat memory", () => {
  const [clipped, norm] = O.clipGradNorm({ x: sm.array([3, 4], "float32"), y: [sm.array([12], "float32")] }, 6.5);
  expect(norm.item()).toBeCloseTo(13, 5);
  expect((clipped.x as sm.Tensor).toArray()[0]).toBeCloseTo(1.5, 5);
  expect((clipped.y[0] as sm.Tensor).toArray()[0]).toBeCloseTo(6, 5);
  const [same] = O.clipGradNorm({ x: sm.array([0.3, 0.4]) }, 1);
  expect((same.x as sm.Tensor).toArray()[1]).toBeCloseTo(0.4, 6);

  let acc: { g: sm.Tensor } | undefined;
  sm.eval(sm.ones([64]));
  const before = sm.stats().bytesAllocated;
  for (let i = 0; i < 50; i++) {
    acc = O.accumulate(acc, { g: sm.full([64], i) }, 0.5);
    sm.eval(acc);
  }
  expect(acc!.g.toArray()[0]).toBe((49 * 50) / 4);
  expect(sm.stats().bytesAllocated - before).toBeLessThanOrEqual(64 * 4);
});

test("optimizers check their options and gradients", () => {
  expect(() => new O.Adam({ betas: [0.9, 1] })).toThrow(/Adam: betas\[1\] must be in \[0, 1\), got 1/);
  expect(() => new O.SGD({ learningRate: -1 })).toThrow(/SGD: learningRate must be a non-negative number/);
  expect(() => new O.SGD({ nesterov: true })).toThrow(/nesterov needs a momentum/);
  const m = new Two();
  expect(() => new O.SGD().update(m, { a: sm.ones([8, 16]) })).toThrow(/SGD.update: gradient a has shape \[8,16\], the parameter \[16,8\]/);
  expect(() => new O.SGD().update(m, { c: sm.ones([1]) })).toThrow(/the model has no parameter c/);
});
