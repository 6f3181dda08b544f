/**
 * The target: what the scheduler needs to know about a device to lay out its kernels, and
 * nothing else about it. Built once per device from the limits it reports, the backend's kind
 * (a CPU or a GPU) and the test-only overrides SMELT_ROW_THREADS, SMELT_MATMUL,
 * SMELT_ELEMENTS_PER_THREAD and SMELT_ELEMENT_RUNS (0: none).
 */
import type { Device } from "./device.ts";
import { BACKENDS } from "./native.ts";

/** The matmul kernels: simdgroup_matrix tiles, a dot product per element, and the CPU kernels (B in panels, B of 16 columns or fewer read in place by the same blocks, or by columns). */
export type MatmulLayout = "simd" | "block" | "dot" | "panel" | "narrow" | "column" | "skinny";
const MATMUL_LAYOUTS: readonly string[] = ["simd", "block", "dot", "panel", "narrow", "column", "skinny"] satisfies MatmulLayout[];

export interface Target {
  /** The device is a CPU: a threadgroup's threads run one after another on one core. */
  cpu: boolean;
  /** The CPU and the device share memory. */
  unifiedMemory: boolean;
  /** The CPU can read and write buffer memory in place (else data moves through the ABI's copies). */
  hostVisible: boolean;
  simdWidth: number;
  maxThreadsPerThreadgroup: number;
  /**
   * Threads per row of a row kernel, or 0 for as many as suit the row's length. A CPU wants one
   * thread walking the row in a loop the compiler vectorizes (parallelism comes from the rows).
   */
  rowThreads: number;
  /**
   * Where a row kernel's threads can cover the row in at most this many steps each, each keeps
   * the elements it loads in registers for the kernel's later passes (plan/rows.ts RowPlan.steps);
   * 0 on a CPU, whose one thread per row walks it in chunks.
   */
  rowSteps: number;
  /**
   * Elements each thread of an elementwise kernel of at least `from` elements computes (when its
   * size is a multiple); multiples of 4 are runs of 4 consecutive elements, moved as vectors
   * (emit/plain.ts). A GPU keeps as many loads in flight as its threads issue, and one 4-byte
   * load per thread leaves its memory idle part of the time; a CPU thread's loop vectorizes anyway.
   * `run` (a CPU's, else 0): elements along the last axis each thread of a kernel that computes an
   * inline matmul at its own element computes in a loop (emit/plain.ts runKernel).
   */
  elementwise: { perThread: number; from: number; run: number };
  /**
   * The matmul layout for small products (at most `smallRows` rows, or fewer than `smallWork`
   * multiply-adds) and for the others.
   */
  matmul: { small: MatmulLayout; large: MatmulLayout; smallRows: number; smallWork: number; skinny: boolean };
  /**
   * Kernels of one source in an evaluation run as one multi-tensor dispatch (exec/emit/multi.ts):
   * on a GPU, where each dispatch costs a launch. Not on a CPU, whose launches are cheap and whose
   * compiler vectorizes a threadgroup's loop only over buffers fixed for the dispatch: picking a
   * member's buffers per threadgroup made it gather.
   */
  multiTensor: boolean;
}

type Env = Record<string, string | undefined>;

/** A CPU's elements per run (Target.elementwise.run): a vector register of 16 floats. */
const ELEMENT_RUN = 16;

/** The target of a device; env supplies the overrides (process.env unless a test gives its own). */
export function makeTarget(device: Pick<Device, "backend" | "limits">, env: Env = process.env): Target {
  const { cpu, floatMatrix } = BACKENDS[device.backend];
  const forcedRows = Number(env.SMELT_ROW_THREADS);
  const forcedMatmul = env.SMELT_MATMUL;
  const forcedPer = Number(env.SMELT_ELEMENTS_PER_THREAD);
  const forcedSteps = env.SMELT_ROW_STEPS === undefined ? NaN : Number(env.SMELT_ROW_STEPS);
  const matmul: Target["matmul"] = cpu
    ? { small: "column", large: "panel", smallRows: 5, smallWork: 1 << 15, skinny: false }
    : { small: "dot", large: floatMatrix ? "simd" : "block", smallRows: 16, smallWork: 0, skinny: true };
  if (forcedMatmul !== undefined && MATMUL_LAYOUTS.includes(forcedMatmul)) {
    matmul.small = matmul.large = forcedMatmul as MatmulLayout;
    matmul.skinny = false;
  }
  return {
    cpu,
    unifiedMemory: device.limits.unifiedMemory,
    hostVisible: device.limits.hostVisible,
    simdWidth: device.limits.simdWidth,
    maxThreadsPerThreadgroup: device.limits.maxThreadsPerThreadgroup,
    rowThreads: forcedRows >= 1 && forcedRows <= 1024 ? forcedRows : cpu ? 1 : 0,
    rowSteps: forcedSteps >= 0 ? Math.floor(forcedSteps) : cpu ? 0 : 16,
    elementwise: {
      ...(forcedPer >= 1 && forcedPer <= 16 ? { perThread: forcedPer, from: 0 } : cpu ? { perThread: 1, from: 0 } : { perThread: 4, from: 1 << 22 }),
      run: cpu && env.SMELT_ELEMENT_RUNS !== "0" ? ELEMENT_RUN : 0,
    },
    matmul,
    multiTensor: env.SMELT_MULTI_TENSOR === "1" || (env.SMELT_MULTI_TENSOR !== "0" && !cpu),
  };
}

const targets = new WeakMap<Device, Target>();
let replaced: { device: Device; target: Target } | null = null;

/** The device's target, made on first use. */
export function targetOf(device: Device): Target {
  if (replaced?.device === device) return replaced.target;
  let t = targets.get(device);
  if (!t) {
    t = makeTarget(device);
    targets.set(device, t);
  }
  return t;
}

/** @internal For tests: runs fn with device's target made with env's overrides added to process.env's. */
export function withTargetEnv<T>(device: Device, env: Env, fn: () => T): T {
  const saved = replaced;
  replaced = { device, target: makeTarget(device, { ...process.env, ...env }) };
  try {
    return fn();
  } finally {
    replaced = saved;
  }
}
