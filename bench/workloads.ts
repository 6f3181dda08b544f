/**
 * The workloads of `bun run bench` (issue 6). Each is a plain description (a Spec, which
 * bench/torch_peer.py reads too, so both sides build the same shapes and dtypes) and a Case built
 * from it: inputs on the device, and `fn()`, the TypeScript function whose ops run lazily or
 * eagerly, returning the output tensor.
 */
import * as sm from "smelt";
import { buildTrain, isTrainSpec, type TrainSpec, trainSpecs, trainTitle } from "./workloads-train.ts";

export type Spec =
  | { id: string; kind: "lora"; x: number[]; d: number; rank: number; alpha: number; dtype: "float32" }
  | { id: string; kind: "rmsnorm" | "softmax"; shape: number[]; dtype: "float32" }
  | { id: string; kind: "chain"; n: number; dtype: "float32" }
  | { id: string; kind: "matmul"; n: number; dtype: "float32" | "float16" }
  | { id: string; kind: "overhead"; nodes: number; size: number; dtype: "float32" }
  | TrainSpec;

export interface Case {
  fn(): sm.Tensor;
  /** Floating-point operations of one run (matmuls: 2MNK), for GFLOP/s. */
  flops?: number;
  /** Bytes one run must move at the least (each input read once, the output written once). */
  bytes?: number;
  /** Largest accepted max relative error between the lazy and the eager output. */
  tolerance: number;
  /** The device's copy bandwidth over the same bytes: one copy, waited for. */
  copy?: () => void;
  dispose(): void;
}

const EPS = 1e-5;
const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const fmtShape = (s: readonly number[]) => `[${s.join(", ")}]`;
const size = (n: number) => (n >= 1 << 20 ? `${n / (1 << 20)}M` : n >= 1024 ? `${n / 1024}K` : `${n}`);

/** The workloads of a full run or of `--quick`, in the order they run. */
export function specs(quick: boolean): Spec[] {
  const f32 = "float32" as const;
  const loras: Spec[] = [{ id: "lora-seed", kind: "lora", x: [4, 16, 512], d: 512, rank: 8, alpha: 16, dtype: f32 }];
  if (!quick) loras.push({ id: "lora-large", kind: "lora", x: [8, 128, 2048], d: 2048, rank: 16, alpha: 16, dtype: f32 });
  const normShapes = quick ? [[4, 16, 512]] : [[4, 16, 4096], [32, 128, 4096]];
  const norms: Spec[] = normShapes.flatMap((shape) =>
    (["rmsnorm", "softmax"] as const).map((kind) => ({ id: `${kind}-${shape.join("x")}`, kind, shape, dtype: f32 })),
  );
  const chains: Spec[] = (quick ? [1 << 18] : [1 << 22, 1 << 26]).map((n) => ({ id: `chain-${size(n)}`, kind: "chain", n, dtype: f32 }));
  const mms: Spec[] = (quick ? [128] : [512, 1024, 2048]).flatMap((n) =>
    (["float32", "float16"] as const).map((dtype) => ({ id: `matmul-${n}-${dtype === "float32" ? "f32" : "f16"}`, kind: "matmul", n, dtype })),
  );
  const overhead: Spec = { id: "overhead-1000", kind: "overhead", nodes: 1000, size: 16, dtype: f32 };
  return [...loras, ...norms, ...chains, ...mms, overhead, ...trainSpecs(quick)];
}

/** A one-line description for tables. */
export function title(s: Spec): string {
  if (isTrainSpec(s)) return trainTitle(s);
  switch (s.kind) {
    case "lora":
      return `LoRA forward x${fmtShape(s.x)} W[${s.d}, ${s.d}] r=${s.rank}`;
    case "rmsnorm":
      return `RMS norm ${fmtShape(s.shape)}`;
    case "softmax":
      return `softmax ${fmtShape(s.shape)}`;
    case "chain":
      return `8-op chain ${size(s.n)} f32`;
    case "matmul":
      return `matmul ${s.n} ${s.dtype === "float32" ? "f32" : "f16"}`;
    case "overhead":
      return `${s.nodes} tiny ops [${s.size}]`;
  }
}

/** Uniform values in [-1, 1) from a fixed seed (a 32-bit LCG), so every run sees the same data. */
export function values(n: number, seed: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 2 ** 31 - 1) * scale;
  }
  return a;
}

function input(shape: number[], seed: number, scale = 1, dtype: sm.DType = "float32"): sm.Tensor {
  const t = sm.tidy(() => {
    const x = sm.array(values(count(shape), seed, scale)).reshape(shape);
    return dtype === "float32" ? x : x.astype(dtype);
  });
  return t.eval();
}

/** x (1 + tanh(0.79788456 (x + 0.044715 x^3))): eight elementwise ops, a GELU-like expression. */
export function chain(x: sm.Tensor): sm.Tensor {
  const inner = x.mul(x).mul(x).mul(0.044715).add(x);
  return sm.tanh(inner.mul(0.79788456)).add(1).mul(x);
}

const COPY_MSL = `
#include <metal_stdlib>
using namespace metal;
kernel void copy4(device const float4* src [[buffer(0)]], device float4* dst [[buffer(1)]],
                  constant uint& n [[buffer(2)]], uint i [[thread_position_in_grid]]) {
  if (i < n) dst[i] = src[i];
}`;
let copyPipeline: sm.Pipeline | null = null;

/** A float4 copy of n float32 through the raw API, dispatched like the engine's elementwise kernels. */
function copyKernel(n: number): { run: () => void; dispose: () => void } {
  const dev = sm.device();
  copyPipeline ??= dev.compile(COPY_MSL).pipeline("copy4");
  const pipe = copyPipeline;
  const src = dev.buffer(values(n, 99));
  const dst = dev.buffer(n * 4);
  const n4 = n / 4;
  const args = [src, dst, new Uint32Array([n4])];
  return {
    run() {
      const cmd = dev.commandBuffer();
      cmd.dispatchThreads(pipe, { args, grid: [n4], threadgroup: [Math.min(256, n4)] });
      cmd.commit();
      cmd.wait();
    },
    dispose() {
      src.dispose();
      dst.dispose();
    },
  };
}

const tol = (dtype: sm.DType) => (dtype === "float16" ? 1e-2 : 1e-4);

export function build(s: Spec): Case {
  if (isTrainSpec(s)) return buildTrain(s);
  switch (s.kind) {
    case "lora": {
      // forward = x W + (alpha / rank) (x A) B; A and B scaled as after a few training steps
      const x = input(s.x, 1);
      const W = input([s.d, s.d], 2, 1 / Math.sqrt(s.d));
      const A = input([s.d, s.rank], 3, 1 / Math.sqrt(s.d));
      const B = input([s.rank, s.d], 4, 0.1);
      const scale = s.alpha / s.rank;
      const m = count(s.x) / s.d;
      return {
        fn: () => sm.matmul(x, W).add(sm.matmul(sm.matmul(x, A), B).mul(scale)),
        flops: 2 * m * s.d * s.d + 4 * m * s.d * s.rank,
        tolerance: tol(s.dtype),
        dispose: () => [x, W, A, B].forEach((t) => t.dispose()),
      };
    }
    case "rmsnorm": {
      const x = input(s.shape, 5, 3);
      const w = input([s.shape.at(-1)!], 6);
      const n = count(s.shape);
      return {
        fn: () => x.mul(sm.rsqrt(x.mul(x).mean(-1, true).add(EPS))).mul(w),
        bytes: 8 * n,
        tolerance: tol(s.dtype),
        dispose: () => [x, w].forEach((t) => t.dispose()),
      };
    }
    case "softmax": {
      const x = input(s.shape, 7, 4);
      return {
        fn: () => {
          const e = sm.exp(x.sub(x.max(-1, true)));
          return e.div(e.sum(-1, true));
        },
        bytes: 8 * count(s.shape),
        tolerance: tol(s.dtype),
        dispose: () => x.dispose(),
      };
    }
    case "chain": {
      const x = input([s.n], 8, 2);
      const copy = copyKernel(s.n);
      return {
        fn: () => chain(x),
        bytes: 8 * s.n,
        tolerance: tol(s.dtype),
        copy: copy.run,
        dispose: () => (x.dispose(), copy.dispose()),
      };
    }
    case "matmul": {
      const a = input([s.n, s.n], 9, 1, s.dtype);
      const b = input([s.n, s.n], 10, 1 / Math.sqrt(s.n), s.dtype);
      return {
        fn: () => sm.matmul(a, b),
        flops: 2 * s.n ** 3,
        tolerance: tol(s.dtype),
        dispose: () => [a, b].forEach((t) => t.dispose()),
      };
    }
    case "overhead": {
      // each op takes a tensor operand, so every node of the graph is an op with a kernel in eager
      const x = input([s.size], 11);
      const a = input([s.size], 12, 0.5);
      const b = input([s.size], 13, 0.5);
      return {
        fn: () => {
          let y = x;
          for (let i = 0; i < s.nodes; i++) y = i % 2 ? y.add(b) : y.mul(a);
          return y;
        },
        tolerance: tol(s.dtype),
        dispose: () => [x, a, b].forEach((t) => t.dispose()),
      };
    }
  }
}
