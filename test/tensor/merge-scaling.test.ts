// Merging kernels into multi-output ones costs time about linear in the schedule: a training
// step's hundreds of AdamW-like groups, each spanning most of the step's kernels, are merged
// without walking every kernel between a group's first and last member once per group.
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { execute, schedule } from "../../src/exec/realize.ts";
import { withTargetEnv } from "../../src/runtime/target.ts";
import type { Node } from "../../src/graph/node.ts";

setDefaultTimeout(120_000);

const nodeOf = (t: sm.Tensor) => (t as unknown as { node(why: string): Node }).node("eval");

/**
 * `runs` times, inside a tidy: make() builds a graph (its roots, in evaluation order), schedule()
 * plans it and it runs, then its check() sees the values and counts. The fewest ms of building
 * the graph and of schedule().
 */
function fewestMs(runs: number, make: () => { roots: sm.Tensor[]; check: () => void }): { build: number; schedule: number } {
  let build = Infinity, scheduling = Infinity;
  for (let r = 0; r < runs; r++) {
    // One dispatch per kernel, as on a CPU: a GPU target would run the groups' kernels of one
    // source as a multi-tensor dispatch, and the counts below are of kernels.
    withTargetEnv(sm.device(), { SMELT_MULTI_TENSOR: "0" }, () => sm.tidy(() => {
      const b0 = performance.now();
      const { roots, check } = make();
      const nodes = roots.map(nodeOf);
      sm.resetStats();
      const t0 = performance.now();
      const s = schedule(nodes);
      build = Math.min(build, t0 - b0);
      scheduling = Math.min(scheduling, performance.now() - t0);
      execute(s);
      check();
    }));
  }
  return { build, schedule: scheduling };
}

/**
 * n parameters, each with a gradient that is a kernel of its own (a long chain ending in a max
 * over rows: sums would merge), updated as AdamW does and evaluated as a trainer does (every
 * parameter, then every moment), so each (p, m, v) is one multi-output kernel placed after all
 * the gradients' kernels. Checks kernel count and values; returns the fewest ms over `runs` runs
 * of building the graph and of schedule().
 */
function updateTimes(n: number, runs: number): { build: number; schedule: number } {
  const rows = Array.from({ length: n }, (_, i) => sm.full([4, 8], (i % 5) + 1, "float32").eval());
  const times = fewestMs(runs, () => {
    const ps: sm.Tensor[] = [], ms: sm.Tensor[] = [], vs: sm.Tensor[] = [];
    for (let i = 0; i < n; i++) {
      let x = rows[i]!;
      for (let j = 0; j < 30; j++) x = x.mul(1.5).mul(1 / 1.5);
      const g = x.max(0);
      const m = g.mul(0.1);
      const v = g.square().mul(0.001);
      ps.push(sm.full([8], 1, "float32").sub(m.div(v.sqrt().add(1e-8)).mul(0.01)));
      ms.push(m);
      vs.push(v);
    }
    const check = () => {
      // n gradients and n merged updates.
      expect(sm.stats().kernelsDispatched).toBe(2 * n);
      const i = n - 1, g = (i % 5) + 1;
      const m = Math.fround(g * 0.1), v = Math.fround(Math.fround(g * g) * 0.001);
      expect(ms[i]!.toArray()[0]).toBeCloseTo(m, 4);
      expect(vs[i]!.toArray()[0]).toBeCloseTo(v, 4);
      expect(ps[i]!.toArray()[0]).toBeCloseTo(1 - (m / (Math.sqrt(v) + 1e-8)) * 0.01, 4);
    };
    return { roots: [...ps, ...ms, ...vs], check };
  });
  rows.forEach((t) => t.dispose());
  return times;
}

test("merging 320 AdamW-like groups costs a few times building their graph, not 70x", () => {
  updateTimes(8, 1); // compiles the kernels
  const t = updateTimes(320, 3);
  console.log(`320 groups: build ${t.build.toFixed(1)} ms, schedule ${t.schedule.toFixed(1)} ms`);
  // Walking the kernels between each group's members took about 70x the build; now 3x to 9x.
  expect(t.schedule).toBeLessThan(30 * t.build);
});

/**
 * n groups that merge at their first member's place: u = e*2 and w = e*3 (e = exp of a row block
 * of its own) share e, and the row sums of u read u between them, so (u, w) is one kernel before
 * the sums. Every u, then every sum, then every w, as a backward pass orders gradients: each
 * group spans most of the kernels, and every merge after the first relies on what the earlier
 * ones changed of which kernel reads what. Checks kernel count and values; returns the fewest ms over
 * `runs` runs of building the graph and of schedule().
 */
function earlyTimes(n: number, runs: number): { build: number; schedule: number } {
  const xs = Array.from({ length: n }, (_, i) => sm.full([4, 8], ((i % 7) - 3) / 4, "float32").eval());
  const times = fewestMs(runs, () => {
    const us: sm.Tensor[] = [], ss: sm.Tensor[] = [], ws: sm.Tensor[] = [];
    for (let i = 0; i < n; i++) {
      let e = xs[i]!;
      for (let j = 0; j < 10; j++) e = e.mul(1.5).mul(1 / 1.5);
      e = sm.exp(e);
      us.push(e.mul(2));
      ss.push(us[i]!.sum(1));
      ws.push(e.mul(3));
    }
    const check = () => {
      // n merged (u, w) kernels and n sums.
      expect(sm.stats().kernelsDispatched).toBe(2 * n);
      const i = n - 1, e = Math.exp(((i % 7) - 3) / 4);
      expect(us[i]!.toArray()[0]).toBeCloseTo(2 * e, 4);
      expect(ws[i]!.toArray()[0]).toBeCloseTo(3 * e, 4);
      expect(ss[i]!.toArray()[0]).toBeCloseTo(16 * e, 3);
    };
    return { roots: [...us, ...ss, ...ws], check };
  });
  xs.forEach((t) => t.dispose());
  return times;
}

test("after a merge at its first member's place, each later group still merges there, values right", () => {
  earlyTimes(8, 1); // compiles the kernels
  const t = earlyTimes(320, 2);
  console.log(`320 early groups: build ${t.build.toFixed(1)} ms, schedule ${t.schedule.toFixed(1)} ms`);
  expect(t.schedule).toBeLessThan(30 * t.build);
});
