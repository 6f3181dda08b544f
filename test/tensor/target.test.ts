/**
 * The scheduler knows a device through its Target: what the device reports, its backend's kind,
 * and the test-only overrides, read once when the target is made.
 */
import { describe, expect, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { execute, planOf, schedule } from "../../src/exec/realize.ts";
import { BACKENDS, isBackendName } from "../../src/runtime/native.ts";
import { makeTarget, targetOf, withTargetEnv } from "../../src/runtime/target.ts";

const limits = { unifiedMemory: true, hostVisible: true, simdWidth: 32, maxThreadsPerThreadgroup: 1024, maxThreadgroupMemory: 32768, maxBufferLength: 2 ** 32, maxBufferSlots: 31 };

describe("Target", () => {
  test("a GPU and a CPU get their own layouts; the device's limits pass through", () => {
    const gpu = makeTarget({ backend: "metal", limits }, {});
    expect(gpu).toEqual({
      cpu: false, unifiedMemory: true, hostVisible: true, simdWidth: 32, maxThreadsPerThreadgroup: 1024, rowThreads: 0,
      elementwise: { perThread: 4, from: 1 << 22, run: 0 },
      matmul: { small: "dot", large: "simd", smallRows: 16, smallWork: 0, skinny: true }, multiTensor: true, rowSteps: 16,
    });
    // CUDA emulates float SIMD-group matrices: its large products take register blocks instead.
    expect(makeTarget({ backend: "cuda", limits }, {}).matmul).toEqual({ small: "dot", large: "block", smallRows: 16, smallWork: 0, skinny: true });
    const cpu = makeTarget({ backend: "host", limits: { ...limits, simdWidth: 8, unifiedMemory: false } }, {});
    expect([cpu.cpu, cpu.rowThreads, cpu.simdWidth, cpu.unifiedMemory, cpu.matmul.small, cpu.matmul.large, cpu.multiTensor]).toEqual([true, 1, 8, false, "column", "panel", false]);
    expect(cpu.elementwise).toEqual({ perThread: 1, from: 0, run: 16 });
    expect(makeTarget({ backend: "host", limits }, { SMELT_ELEMENT_RUNS: "0" }).elementwise.run).toBe(0);
  });

  test("SMELT_ROW_THREADS, SMELT_MATMUL and SMELT_MULTI_TENSOR are read when the target is made; bad values are ignored", () => {
    const t = makeTarget({ backend: "host", limits }, { SMELT_ROW_THREADS: "64", SMELT_MATMUL: "dot" });
    expect([t.rowThreads, t.matmul.small, t.matmul.large]).toEqual([64, "dot", "dot"]);
    const bad = makeTarget({ backend: "metal", limits }, { SMELT_ROW_THREADS: "0", SMELT_MATMUL: "tiles" });
    expect([bad.rowThreads, bad.matmul.small, bad.matmul.large]).toEqual([0, "dot", "simd"]);
    const on = makeTarget({ backend: "host", limits }, { SMELT_MULTI_TENSOR: "1" });
    const off = makeTarget({ backend: "metal", limits }, { SMELT_MULTI_TENSOR: "0" });
    expect([on.multiTensor, off.multiTensor]).toEqual([true, false]);
  });

  test("the scheduler reads the target, not the environment", () => {
    const x = sm.array(Array.from({ length: 4 * 300 }, (_, i) => Math.sin(i)), "float32").reshape([4, 300]).eval();
    const plan = () =>
      sm.tidy(() => {
        const s = schedule([sm.softmax(x, -1).node("test")]);
        const p = planOf(s, s.order[0]!);
        execute(s);
        return p;
      });
    const before = plan();
    targetOf(sm.device()); // made already: the variable below comes too late
    process.env.SMELT_ROW_THREADS = "32";
    try {
      expect(plan().dispatch.group).toEqual(before.dispatch.group);
    } finally {
      delete process.env.SMELT_ROW_THREADS;
    }
    const wide = withTargetEnv(sm.device(), { SMELT_ROW_THREADS: "32" }, plan);
    expect(wide.dispatch.group).toEqual([32, 1, 1]);
    expect(before.dispatch.group).toEqual([targetOf(sm.device()).cpu ? 1 : 32 * 2, 1, 1]);
    x.dispose();
  });

  test("the backends are listed once", () => {
    expect(Object.keys(BACKENDS).sort()).toEqual(["cuda", "host", "metal"]);
    expect(["host", "metal", "cuda", "vulkan", ""].map(isBackendName)).toEqual([true, true, true, false, false]);
    expect(() => sm.openDevice({ backend: "vulkan" as never })).toThrow('openDevice: backend must be "metal", "cuda" or "host", got "vulkan"');
  });
});
