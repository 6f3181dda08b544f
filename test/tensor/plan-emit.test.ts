// Planning apart from emitting: what a kernel is (plan/) is plain data, read here without any MSL;
// every emitter (emit/) writes the signature that builder.ts's signature() builds.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { execute, schedule } from "../../src/exec/realize.ts";
import { attrsOf } from "../../src/graph/op.ts";
import { plainPlan } from "../../src/exec/plan/kernel.ts";
import { planRows } from "../../src/exec/plan/rows.ts";
import { planMatmul } from "../../src/exec/plan/matmul.ts";
import { readFromMemory } from "../../src/exec/plan/inline.ts";
import { emitKernel } from "../../src/exec/emit/kernel.ts";
import { ELEMENT_POSITION, ROW_POSITION, signature } from "../../src/exec/emit/builder.ts";
import { withTargetEnv } from "../../src/runtime/target.ts";

setDefaultTimeout(120_000);

function data(n: number, seed: number): number[] {
  let s = seed;
  return Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648 - 0.5;
  });
}

describe("plans", () => {
  test("a plain kernel's plan: its kind and one thread per element or line", () => {
    const x = sm.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13, 14, 15]], "float32").eval();
    const cases: [sm.Tensor, string, number][] = [
      [x.mul(2), "elementwise", 15],
      [x.sum(1), "reduce", 3],
      [x.cumsum(1), "scan", 3],
      [x.cumsum(0), "scan", 5],
      [sm.argsort(x, 0), "argsort", 5],
    ];
    for (const [t, kind, threads] of cases) {
      const p = plainPlan(t.node("test"));
      expect(p.kind).toBe(kind as never);
      expect(p.dispatch).toEqual({ threadgroups: false, size: [threads, 1, 1], group: [Math.min(threads, 256), 1, 1] });
    }
    const big = sm.zeros([3, 1000], "float32").add(1);
    expect(plainPlan(big.node("test")).dispatch.group).toEqual([256, 1, 1]);
  });

  test("softmax's row plan: its two reductions, rows, threads and the CPU thread's spill", () => {
    const vals = data(4 * 300, 3);
    const x = sm.reshape(sm.array(vals, "float32"), [4, 300]).eval();
    const y = sm.softmax(x, -1);
    const s = schedule([y.node("test")]);
    const n = s.order[s.order.length - 1]!;
    const g = s.rows.get(n)!;
    const serial = planRows(n, g, 1);
    expect(serial.kind).toBe("rows");
    expect(serial.group.reductions.map((r) => attrsOf(r, "reduce").kind)).toEqual(["max", "sum"]);
    expect([serial.rows, serial.rowLength]).toEqual([4, 300]);
    expect(serial.spill).toBe(g.reductions[1]!.inputs[0]!);
    expect(serial.dispatch).toEqual({ threadgroups: true, size: [4, 1, 1], group: [1, 1, 1] });
    const wide = planRows(n, g, 64);
    expect(wide.spill).toBeNull(); // GPU threads recompute the value instead
    expect(wide.dispatch).toEqual({ threadgroups: true, size: [4, 1, 1], group: [64, 1, 1] });
    expect(readFromMemory(x.node("test"), n)).toBe(true);
    expect(readFromMemory(n, n)).toBe(false);
    const code = emitKernel(serial);
    expect(code.source.startsWith(signature("float32", ["float32"], ROW_POSITION))).toBe(true);
    expect(code.dispatch).toBe(serial.dispatch);
    execute(s);
    const got = y.toArray() as number[];
    for (let r = 0; r < 4; r++) {
      const row = vals.slice(r * 300, r * 300 + 300).map((v) => Math.fround(v));
      const m = Math.max(...row);
      const total = row.reduce((a, v) => a + Math.exp(v - m), 0);
      row.forEach((v, j) => expect(Math.abs(got[r * 300 + j]! - Math.exp(v - m) / total)).toBeLessThan(1e-6));
    }
  });

  test("a panel matmul's plan: its layout, grid and the kernel packing B, emitted with the shared signature", () => {
    const [M, K, N] = [5, 40, 24];
    const a = data(M * K, 5), w = data(K * N, 7), bias = data(N, 11);
    const A = sm.reshape(sm.array(a, "float32"), [M, K]).eval();
    const W = sm.reshape(sm.array(w, "float32"), [K, N]).eval();
    const out = sm.matmul(A, W).add(sm.array(bias, "float32"));
    withTargetEnv(sm.device(), { SMELT_MATMUL: "panel" }, () => {
      const s = schedule([out.node("test")]);
      const n = s.order[s.order.length - 1]!;
      const mm = s.matmuls.get(n)!;
      const p = planMatmul(n, mm.main, mm.variant, mm.panels);
      expect(p.kind).toBe("matmul");
      expect(p.variant).toBe("panel");
      expect(p.shape).toEqual({ M, N, K, batchShape: [], batches: 1, folded: false });
      // rows of 6, panels of 16 columns; a product this small gets narrow threadgroups
      expect(p.dispatch).toEqual({ threadgroups: false, size: [1, 2, 1], group: [1, 1, 1] });
      expect(p.packs.length).toBe(1); // W's panels, filled by this evaluation
      expect(p.packs[0]!.B).toBe(W.node("test"));
      expect(p.packs[0]!.dispatch).toEqual({ threadgroups: false, size: [2, 3, 1], group: [2, 3, 1] });
      const code = emitKernel(p);
      expect(code.packs!.length).toBe(1);
      expect(code.packs![0]!.out).toBe(p.packs[0]!.out);
      expect(code.packs![0]!.code.source).toContain(signature("float32", ["float32"], ["uint3 gid [[thread_position_in_grid]]"]));
      // the inputs A and the bias (the kernel reads W's panels alone), then the panels in the slot after them
      expect(code.source).toContain(signature("float32", ["float32", "float32"], ["uint3 gid [[thread_position_in_grid]]"], ["device const float* pk"]));
      execute(s);
    });
    const got = out.toArray() as number[];
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let acc = bias[j]!;
        for (let k = 0; k < K; k++) acc += a[i * K + k]! * w[k * N + j]!;
        expect(Math.abs(got[i * N + j]! - acc)).toBeLessThan(1e-5);
      }
    }
  });

  test("an elementwise kernel's source starts with the shared signature", () => {
    const x = sm.array([1, 2, 3], "float32").eval();
    const y = x.mul(2).astype("bool");
    const code = emitKernel(plainPlan(y.node("test")));
    expect(code.source.startsWith(signature("bool", ["float32"], ELEMENT_POSITION))).toBe(true);
    expect(code.source).toContain("device uchar* out0 [[buffer(1)]]");
  });
});

test("a pad selects its value rather than branching around the padded input's loads", () => {
  // A branch around x's loads keeps a CPU's compiler from vectorizing the element loop.
  const y = sm.pad(sm.exp(sm.array(data(12, 5)).reshape([3, 4])), [[1, 0], [0, 2]], 0.5);
  const { source } = emitKernel(plainPlan((y as unknown as { node(why: string): import("../../src/graph/node.ts").Node }).node("test")));
  const body = source.slice(source.indexOf("kernel void"));
  expect(body).not.toMatch(/\bif \(/);
  expect(body).toMatch(/int j\d+ = inside\d+ \? .+ : 0;/);
  expect(body).toMatch(/v\d+ = inside\d+ \? /);
  const xs = data(12, 5);
  const got = y.toArray() as number[];
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 6; j++) expect(got[i * 6 + j]!).toBeCloseTo(i >= 1 && j < 4 ? Math.exp(Math.fround(xs[(i - 1) * 4 + j]!)) : 0.5, 5);
  }
});
