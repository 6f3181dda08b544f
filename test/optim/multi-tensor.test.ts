// Multi-tensor kernels (exec/emit/multi.ts): an optimizer's per-parameter kernels, one source over
// parameters of many shapes, run as few dispatches, with the same bits as one kernel each.
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { execute, schedule } from "../../src/exec/realize.ts";
import { withTargetEnv } from "../../src/runtime/target.ts";

setDefaultTimeout(300_000);
const O = sm.optim;
const multi = <T>(on: boolean, fn: () => T): T => withTargetEnv(sm.device(), { SMELT_MULTI_TENSOR: on ? "1" : "0" }, fn);

// Eight parameters of 256 elements or more (threadgroups of 256), two of 5 and 6 (threadgroups of
// 4) and a scalar one (whose kernel reads its single element by a source of its own).
const SHAPES = [[300, 7], [64, 33], [1000], [3, 100], [17, 17], [256], [2, 2, 80], [513], [5], [6], [1]];

const tensor = (shape: number[], seed: number, scale = 1) => {
  const n = shape.reduce((a, b) => a * b, 1);
  return sm.array(Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 7.1 + i * 0.37) * scale)).reshape(shape).eval();
};

class Many extends sm.nn.Module {
  layers: sm.nn.Module[] = [];
  constructor(seed: number) {
    super();
    SHAPES.forEach((s, i) => {
      const m = new sm.nn.Module();
      (m as unknown as Record<string, sm.Tensor>).w = tensor(s, seed + i);
      this.layers.push(m);
    });
  }
}
const gradsFor = (step: number) => ({ layers: SHAPES.map((s, i) => ({ w: tensor(s, 1000 * step + i, 0.1) })) });

// Kernels a step: one per parameter, Lion's two (its new moment shares no work with the update).
// With multi-tensor kernels, members a dispatch are 30 buffer slots over a member's buffers: the 8
// large parameters, the 2 small ones and the scalar one are each a dispatch per that many.
const optimizers = [
  { make: () => new O.AdamW({ learningRate: 1e-2, weightDecay: 0.1 }), perParameter: 1, dispatches: 4 }, // 7 buffers: 4 a dispatch, 2 + 1 + 1
  { make: () => new O.Adam({ learningRate: 1e-2, weightDecay: 0.1 }), perParameter: 1, dispatches: 4 }, // 7: 4, 2 + 1 + 1
  { make: () => new O.SGD({ learningRate: 0.1, momentum: 0.9, nesterov: true }), perParameter: 1, dispatches: 4 }, // 5: 6, 2 + 1 + 1
  { make: () => new O.Lion({ learningRate: 1e-3, weightDecay: 0.1 }), perParameter: 2, dispatches: 7 }, // 4: 7, 2 + 1 + 1; 3: 10, 1 + 1 + 1
];

/** Three steps from the same start; the parameters and slots after each, and the dispatches of each. */
function run(make: () => sm.optim.Optimizer, on: boolean, mode: "lazy" | "eager" = "lazy") {
  return multi(on, () => {
    const model = new Many(1);
    const opt = make();
    const steps: { values: Float32Array[]; dispatches: number; compiles: number }[] = [];
    for (let t = 0; t < 3; t++) {
      const g = gradsFor(t);
      sm.resetStats();
      const step = () => {
        opt.update(model, g);
        sm.eval(model.parameters(), opt.state);
      };
      if (mode === "eager") sm.eager(step);
      else step();
      const s = sm.stats();
      const values = [...model.namedParameters().map(([, p]) => p), ...Object.values(opt.state).flatMap((x) => Object.values(x))].map((x) => Float32Array.from(x.raw()));
      steps.push({ values, dispatches: s.kernelsDispatched, compiles: s.kernelCompiles + s.kernelDiskCacheHits });
    }
    return steps;
  });
}

for (const { make, perParameter, dispatches } of optimizers) {
  const name = make().constructor.name;
  test(`${name} over ${SHAPES.length} parameters of different shapes: ${dispatches} dispatches, the bits of one kernel each`, () => {
    const one = run(make, false);
    const many = run(make, true);
    const eager = run(make, false, "eager");
    expect(one.map((s) => s.dispatches)).toEqual([1, 2, 3].map(() => perParameter * SHAPES.length));
    expect(many.map((s) => s.dispatches)).toEqual([dispatches, dispatches, dispatches]);
    // The learning rate and step are parameters: from step 2 on nothing compiles.
    expect(many[1]!.compiles + many[2]!.compiles).toBe(0);
    many.forEach((s, t) => s.values.forEach((v, i) => expect(v).toEqual(one[t]!.values[i]!)));
    // Eager runs op by op, in float32 like the fused kernels: the same values up to rounding.
    many.forEach((s, t) =>
      s.values.forEach((v, i) => {
        const e = eager[t]!.values[i]!;
        for (let j = 0; j < v.length; j++) expect(Math.abs(v[j]! - e[j]!)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(e[j]!)));
      }),
    );
  });
}

test("kernels of one source that read each other, or that a kernel between them reads, are not one dispatch", () => {
  multi(true, () => {
    const x = tensor([600], 1), y = tensor([700], 2);
    // a1 and a2 share a source and are one dispatch, before b, which reads a1; c has their source
    // too but reads a2, so it runs after them.
    const a1 = sm.add(x, 1), a2 = sm.add(y, 1), b = sm.exp(a1), c = sm.add(a2, 1);
    sm.resetStats();
    sm.eval([a1, a2, b, c]);
    expect(sm.stats().kernelsDispatched).toBe(3);
    const got = [a1, b, a2, c].map((t) => Float32Array.from(t.raw()));
    const xs = Float32Array.from(x.raw()), ys = Float32Array.from(y.raw());
    const f = Math.fround;
    const want = [
      Array.from(xs, (v) => f(v + 1)),
      Array.from(xs, (v) => Math.exp(f(v + 1))),
      Array.from(ys, (v) => f(v + 1)),
      Array.from(ys, (v) => f(f(v + 1) + 1)),
    ];
    got.forEach((g, i) => g.forEach((v, j) => expect(Math.abs(v - want[i]![j]!)).toBeLessThanOrEqual(2e-7 * Math.max(1, Math.abs(want[i]![j]!)))));
  });
});

test("scheduling an update of 1,000 parameters, new parameters before moments, takes time linear in them", () => {
  // sm.eval(model.parameters(), opt.state) orders every new parameter before every new moment: each
  // parameter's multi-output kernel then spans the schedule, and merging them once walked it all.
  const ps = Array.from({ length: 1000 }, (_, i) => tensor([8], i));
  const gs = ps.map((p, i) => tensor([8], 5000 + i, 0.1));
  const model = new sm.nn.Module();
  ps.forEach((p, i) => ((model as unknown as Record<string, sm.Tensor>)[`p${i}`] = p));
  const opt = new O.AdamW({ learningRate: 1e-3 });
  const grads = Object.fromEntries(gs.map((g, i) => [`p${i}`, g]));
  opt.update(model, grads);
  sm.eval(model.parameters(), opt.state);
  opt.update(model, grads);
  const nodes = [...Object.values(model.parameters() as Record<string, sm.Tensor>), ...Object.values(opt.state).flatMap((s) => [s.m!, s.v!])].map((t) => t.node("test"));
  const t0 = performance.now();
  const s = schedule(nodes);
  const ms = performance.now() - t0;
  execute(s);
  console.log(`schedule of an AdamW update of 1,000 parameters: ${ms.toFixed(1)} ms, ${s.order.length} kernels`);
  expect(s.order.length).toBe(1000);
  // Quadratic, it took seconds; linear, tens of milliseconds.
  expect(ms).toBeLessThan(2000);
});

test("only kernels writing each element once from their inputs share a dispatch (not scatter-adds)", () => {
  multi(true, () => {
    // Two scatter-adds of one source, computed before the kernel adding them: a member's repeated
    // threads would add their values twice, so they stay two dispatches (one would do otherwise).
    const x = tensor([300, 4], 30);
    const idx = [0, 1].map((k) => Array.from({ length: 600 }, (_, i) => [(i * 7 + k) % 300, (i * 3) % 300, i % 300, (i * 5 + k) % 300]));
    const vals = [0, 1].map((k) => tensor([600, 4], 40 + k));
    const parts = [0, 1].map((k) => sm.scatterAdd(x, sm.array(idx[k]!.flat(), "int32").reshape([600, 4]), vals[k]!, 0));
    const out = sm.add(parts[0]!, parts[1]!);
    sm.resetStats();
    out.eval();
    expect(sm.stats().kernelsDispatched).toBe(3);
    const want = [0, 1].map((k) => {
      const w = Array.from(x.raw());
      const v = vals[k]!.raw();
      idx[k]!.forEach((row, i) => row.forEach((r, c) => (w[r * 4 + c] = w[r * 4 + c]! + v[i * 4 + c]!)));
      return w;
    });
    const got = out.raw();
    want[0]!.forEach((w, j) => {
      const e = w + want[1]![j]!;
      expect(Math.abs(got[j]! - e)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(e)));
    });
  });
});
