// The tensor engine's headline numbers, each measured in one run (ratios within the run):
//  1. an 8-op elementwise chain over 4M float32, lazy (one fused kernel) against eager (8 kernels),
//     timed from the first op to the device finishing;
//  2. graph build and scheduling time per node for a 10,000-node graph;
//  3. tensor memory and process RSS over a 10,000-step training-style loop.
//   bun bench/engine.ts [--quick]
import * as sm from "smelt";
import { schedule, execute } from "../src/exec/realize.ts";

const quick = process.argv.includes("--quick");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function chain(x: sm.Tensor): sm.Tensor {
  // a GELU-like expression of 8 elementwise ops: x (1 + tanh(0.79788456 (x + 0.044715 x^3)))
  const inner = x.mul(x).mul(x).mul(0.044715).add(x);
  return sm.tanh(inner.mul(0.79788456)).add(1).mul(x);
}

function timeIt(fn: () => sm.Tensor, reps: number): number {
  sm.tidy(() => fn().eval()).dispose();
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    const t = sm.tidy(() => fn().eval()); // eval waits for the device
    times.push(performance.now() - t0);
    t.dispose();
  }
  return median(times);
}

const n = quick ? 1 << 18 : 1 << 22;
const x = sm.array(Float32Array.from({ length: n }, (_, i) => Math.sin(i)));
const reps = quick ? 3 : 10;
sm.resetStats();
const lazyMs = timeIt(() => chain(x), reps);
const lazyKernels = sm.stats().kernelsDispatched / (reps + 1);
sm.resetStats();
const eagerMs = timeIt(() => sm.eager(() => chain(x)), reps);
const eagerKernels = sm.stats().kernelsDispatched / (reps + 1);
const lz = sm.tidy(() => chain(x).toArray() as number[]);
const ez = sm.tidy(() => sm.eager(() => chain(x)).toArray() as number[]);
let maxDiff = 0;
for (let i = 0; i < n; i++) maxDiff = Math.max(maxDiff, Math.abs(lz[i]! - ez[i]!));
console.log(`elementwise chain of 8 ops over ${n} float32 (${sm.device().backend}):`);
console.log(`  lazy  ${lazyMs.toFixed(2)} ms (${lazyKernels} kernel per run)`);
console.log(`  eager ${eagerMs.toFixed(2)} ms (${eagerKernels} kernels per run)`);
console.log(`  lazy is ${(eagerMs / lazyMs).toFixed(2)}x faster; max |lazy - eager| = ${maxDiff}`);

// 2. graph build and scheduling
const nodes = quick ? 2000 : 10000;
const base = sm.ones([16]);
base.eval();
const builds: number[] = [], scheds: number[] = [];
for (let r = 0; r < (quick ? 2 : 7); r++) {
  const t0 = performance.now();
  let t = base;
  for (let i = 0; i < nodes / 2; i++) t = i % 2 ? t.add(1) : t.mul(0.5); // 2 nodes per op: scalar, op
  const t1 = performance.now();
  const s = schedule([t.node("bench")]);
  const t2 = performance.now();
  execute(s);
  t.dispose();
  builds.push(((t1 - t0) * 1000) / nodes);
  scheds.push(((t2 - t1) * 1000) / nodes);
}
console.log(`graph of ${nodes} nodes: build ${median(builds).toFixed(2)} us/node, schedule ${median(scheds).toFixed(2)} us/node, together ${(median(builds) + median(scheds)).toFixed(2)} us/node (median of ${builds.length})`);

// 3. a training-style loop: w -= lr * grad(w) for a quadratic loss, each step in tidy
const steps = quick ? 500 : 10000;
let w = sm.zeros([256, 64]);
const target = sm.full([256, 64], 3);
x.dispose();
const bytes0 = sm.stats().bytesAllocated;
const rss0 = process.memoryUsage().rss;
let bytesAt100 = 0;
for (let step = 0; step < steps; step++) {
  const next = sm.tidy(() => {
    const grad = w.sub(target).mul(2);
    return w.sub(grad.mul(0.01)).eval();
  });
  w.dispose();
  w = next;
  if (step === 100) bytesAt100 = sm.stats().bytesAllocated;
}
const rss1 = process.memoryUsage().rss;
console.log(`${steps}-step loop: tensor memory ${bytes0} bytes before, ${bytesAt100} at step 100, ${sm.stats().bytesAllocated} at the end (peak ${sm.stats().peakBytes}); process RSS ${(rss0 / 2 ** 20).toFixed(1)} -> ${(rss1 / 2 ** 20).toFixed(1)} MiB; w[0] = ${(w.slice("0, 0").item() as number).toFixed(4)}`);
