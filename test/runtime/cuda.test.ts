// The CUDA backend (docs/cuda.md). Without an NVIDIA driver and device these tests are skipped
// with the reason printed; the offline check of the translator (scripts/check-cuda.sh) needs only
// NVRTC. On a GPU machine they run the SIMT behaviour the host backend cannot show: SIMD-group
// functions over partial warps, simdgroup_matrix spread over a warp, barriers with threadgroups cut
// at a non-uniform grid's edge, atomics, and the kernel cache.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { cudaDeviceCount, platformBackend } from "../../src/runtime/native.ts";

const devices = process.platform === "linux" ? cudaDeviceCount() : 0;
if (devices === 0) {
  console.log("cuda.test.ts: SKIPPED: no CUDA device here (libcuda.so.1 did not open or reports no device); see docs/cuda.md");
}
const gpu = devices > 0 ? describe : describe.skip;

const KERNELS = `#include <metal_stdlib>
using namespace metal;
kernel void simd_ops(device const float* x [[buffer(0)]], device float* out [[buffer(1)]],
                     uint i [[thread_position_in_grid]], uint lane [[thread_index_in_simdgroup]]) {
  float v = x[i];
  out[6 * i + 0] = simd_sum(v);
  out[6 * i + 1] = simd_max(v);
  out[6 * i + 2] = simd_prefix_exclusive_sum(v);
  out[6 * i + 3] = simd_prefix_inclusive_sum(v);
  out[6 * i + 4] = simd_shuffle_down(v, ushort(3));
  out[6 * i + 5] = simd_shuffle_xor(v, ushort(5));
}
template <typename E>
kernel void mma16(device const float* a [[buffer(0)]], device const float* b [[buffer(1)]], device float* c [[buffer(2)]]) {
  simdgroup_matrix<E, 8, 8> ma, mb;
  simdgroup_float8x8 mc = make_filled_simdgroup_matrix<float, 8, 8>(1.0f);
  simdgroup_matrix<E, 8, 8> mh;
  simdgroup_load(ma, a, 8);
  simdgroup_load(mb, b, 8, ulong2(0, 0), true);
  simdgroup_multiply_accumulate(mc, ma, mb, mc);
  simdgroup_multiply(mh, ma, mb);
  simdgroup_store(mc, c, 8);
  simdgroup_store(mh, c + 64, 8);
}
template [[host_name("mma_half")]] kernel void mma16<half>(device const float*, device const float*, device float*);
template [[host_name("mma_bfloat")]] kernel void mma16<bfloat>(device const float*, device const float*, device float*);
kernel void mma(device const float* a [[buffer(0)]], device const float* b [[buffer(1)]], device float* c [[buffer(2)]]) {
  simdgroup_float8x8 ma, mb, mc = make_filled_simdgroup_matrix<float, 8, 8>(1.0f);
  simdgroup_load(ma, a, 8);
  simdgroup_load(mb, b, 8, ulong2(0, 0), true);
  simdgroup_multiply_accumulate(mc, ma, mb, mc);
  simdgroup_store(mc, c, 8);
}
kernel void edge_sum(device const uint* x [[buffer(0)]], device uint* out [[buffer(1)]],
                     uint2 gid [[thread_position_in_grid]], uint2 tid [[thread_position_in_threadgroup]],
                     uint2 tptg [[threads_per_threadgroup]], uint2 group [[threadgroup_position_in_grid]],
                     uint2 groups [[threadgroups_per_grid]], uint2 grid [[threads_per_grid]]) {
  threadgroup uint partial[64];
  uint t = tid.y * tptg.x + tid.x;
  partial[t] = x[gid.y * grid.x + gid.x];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (t == 0) {
    uint s = 0;
    for (uint k = 0; k < tptg.x * tptg.y; ++k) s += partial[k];
    out[group.y * groups.x + group.x] = s;
  }
}
kernel void atomics(device atomic_uint* counts [[buffer(0)]], device atomic_float* total [[buffer(1)]],
                    device atomic_int* low [[buffer(2)]], uint i [[thread_position_in_grid]]) {
  atomic_fetch_add_explicit(&counts[i % 4], 1u, memory_order_relaxed);
  atomic_fetch_add_explicit(total, 0.5f, memory_order_relaxed);
  atomic_fetch_min_explicit(low, -int(i), memory_order_relaxed);
}
kernel void scratch(device const float* x [[buffer(0)]], device float* out [[buffer(1)]],
                    threadgroup float* a [[threadgroup(0)]], threadgroup float* b [[threadgroup(1)]],
                    uint i [[thread_position_in_grid]], uint t [[thread_position_in_threadgroup]],
                    uint n [[threads_per_threadgroup]]) {
  a[t] = x[i];
  b[t] = 2.0f * x[i];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[i] = a[n - 1 - t] + b[t];
}
`;

describe("without a CUDA device", () => {
  test.skipIf(devices > 0)("naming the cuda backend fails with the reason, and the default stays host", () => {
    expect(platformBackend()).toBe(process.platform === "darwin" && process.arch === "arm64" ? "metal" : "host");
    expect(() => sm.openDevice({ backend: "cuda" })).toThrow(
      process.platform === "linux" ? /CUDA backend: (cannot open libcuda\.so\.1|no CUDA device|cannot open NVRTC)/ : /cuda backend needs Linux/,
    );
  });
});

gpu("the CUDA backend", () => {
  test("is chosen by default on a machine with an NVIDIA GPU, and reports a discrete GPU", () => {
    expect(platformBackend()).toBe("cuda");
    using dev = sm.openDevice({ backend: "cuda" });
    expect(dev.backend).toBe("cuda");
    expect(dev.name).toContain("CUDA");
    expect(dev.limits.hostVisible).toBe(false);
    expect(dev.limits.unifiedMemory).toBe(false);
    expect(dev.limits.simdWidth).toBe(32);
  });

  test("SIMD-group functions over full and partial warps (40 threads: 32 + 8)", () => {
    using dev = sm.openDevice({ backend: "cuda" });
    const pipe = dev.compile(KERNELS).pipeline("simd_ops");
    const n = 40;
    const x = Float32Array.from({ length: n }, (_, i) => ((i * 7) % 11) - 5 + i / 64);
    using xb = dev.buffer(x);
    using out = dev.buffer(n * 6 * 4);
    using cmd = dev.commandBuffer();
    cmd.dispatchThreads(pipe, { args: [xb, out], grid: [n], threadgroup: [n] });
    cmd.commit();
    cmd.wait();
    const got = out.read(Float32Array);
    for (let i = 0; i < n; i++) {
      const first = i < 32 ? 0 : 32, end = i < 32 ? 32 : n, lane = i - first;
      const group = Array.from(x.subarray(first, end), Number);
      const sum = group.reduce((s, v) => s + v, 0);
      const before = group.slice(0, lane).reduce((s, v) => s + v, 0);
      expect(got[6 * i]!).toBeCloseTo(sum, 4);
      expect(got[6 * i + 1]!).toBe(Math.max(...group));
      expect(got[6 * i + 2]!).toBeCloseTo(before, 4);
      expect(got[6 * i + 3]!).toBeCloseTo(before + group[lane]!, 4);
      // A missing lane yields the caller's own value, as Metal does.
      expect(got[6 * i + 4]!).toBe(lane + 3 < group.length ? group[lane + 3]! : group[lane]!);
      expect(got[6 * i + 5]!).toBe((lane ^ 5) < group.length ? group[lane ^ 5]! : group[lane]!);
    }
  });

  /** Runs a simdgroup_matrix kernel of KERNELS on one SIMD-group: C (out floats) from 8x8 A and B. */
  function product(kernel: string, a: Float32Array, b: Float32Array, out: number): Float32Array {
    using dev = sm.openDevice({ backend: "cuda" });
    const pipe = dev.compile(KERNELS).pipeline(kernel);
    using ab = dev.buffer(a);
    using bb = dev.buffer(b);
    using cb = dev.buffer(out * 4);
    using cmd = dev.commandBuffer();
    cmd.dispatchThreadgroups(pipe, { args: [ab, bb, cb], threadgroups: [1], threadgroup: [32] });
    cmd.commit();
    cmd.wait();
    return cb.read(Float32Array);
  }
  /** Sum over k of A[i, k] B[j, k] (B is loaded transposed), each step as add(s, multiply(a, b)). */
  function rowDot(a: Float32Array, b: Float32Array, i: number, j: number, s: number, add = (x: number, y: number) => x + y, multiply = (x: number, y: number) => x * y) {
    for (let k = 0; k < 8; k++) s = add(s, multiply(a[i * 8 + k]!, b[j * 8 + k]!));
    return s;
  }

  // Small integers are half values: from sm_80 this product runs on the tensor cores.
  test("simdgroup_matrix 8x8 multiply-accumulate, B loaded transposed", () => {
    const a = Float32Array.from({ length: 64 }, (_, i) => (i % 9) - 4);
    const b = Float32Array.from({ length: 64 }, (_, i) => ((i * 5) % 7) - 3);
    const c = product("mma", a, b, 64);
    for (let i = 0; i < 8; i++) for (let j = 0; j < 8; j++) expect(c[i * 8 + j]!).toBe(rowDot(a, b, i, j, 1));
  });

  test("simdgroup_matrix of float whose values half cannot hold: the exact product in k order", () => {
    const a = Float32Array.from({ length: 64 }, (_, i) => ((i % 9) - 4) / 3);
    const b = Float32Array.from({ length: 64 }, (_, i) => (((i * 5) % 7) - 3) / 7);
    const c = product("mma", a, b, 64);
    const f = Math.fround;
    const add = (x: number, y: number) => f(x + y), multiply = (x: number, y: number) => f(x * y);
    for (let i = 0; i < 8; i++) for (let j = 0; j < 8; j++) expect(c[i * 8 + j]!).toBe(rowDot(a, b, i, j, 1, add, multiply));
  });

  // On sm_80 and later these run on the tensor cores (mma.sync m16n8k8); small integers keep every
  // product and sum exact, so the results are exact in any order of summation.
  for (const [kernel, bound] of [["mma_half", 2048], ["mma_bfloat", 256]] as const) {
    test(`simdgroup_matrix of ${kernel.slice(4)}: float and ${kernel.slice(4)} accumulators, B loaded transposed`, () => {
      const a = Float32Array.from({ length: 64 }, (_, i) => ((i * 7) % 15) - 7);
      const b = Float32Array.from({ length: 64 }, (_, i) => ((i * 5) % 9) - 4);
      const c = product(kernel, a, b, 128);
      for (let i = 0; i < 8; i++)
        for (let j = 0; j < 8; j++) {
          const s = rowDot(a, b, i, j, 0);
          expect(Math.abs(s)).toBeLessThan(bound); // exact in the 16-bit accumulator too
          expect(c[i * 8 + j]!).toBe(s + 1);
          expect(c[64 + i * 8 + j]!).toBe(s);
        }
    });
  }

  test("a non-uniform 2-D grid: edge threadgroups are smaller and their barriers still meet", () => {
    using dev = sm.openDevice({ backend: "cuda" });
    const pipe = dev.compile(KERNELS).pipeline("edge_sum");
    const [w, h, gx, gy] = [21, 13, 8, 8];
    const x = Uint32Array.from({ length: w * h }, (_, i) => (i * 2654435761) % 1000);
    using xb = dev.buffer(x);
    const groups = [Math.ceil(w / gx), Math.ceil(h / gy)] as const;
    using out = dev.buffer(groups[0] * groups[1] * 4);
    using cmd = dev.commandBuffer();
    cmd.dispatchThreads(pipe, { args: [xb, out], grid: [w, h], threadgroup: [gx, gy] });
    cmd.commit();
    cmd.wait();
    const got = out.read(Uint32Array);
    for (let by = 0; by < groups[1]; by++)
      for (let bx = 0; bx < groups[0]; bx++) {
        let s = 0;
        for (let y = by * gy; y < Math.min(h, (by + 1) * gy); y++)
          for (let xx = bx * gx; xx < Math.min(w, (bx + 1) * gx); xx++) s += x[y * w + xx]!;
        expect(got[by * groups[0] + bx]!).toBe(s);
      }
  });

  test("atomics: integer add and min natively, float add through compare-and-swap", () => {
    using dev = sm.openDevice({ backend: "cuda" });
    const pipe = dev.compile(KERNELS).pipeline("atomics");
    const n = 4096;
    using counts = dev.buffer(16);
    using total = dev.buffer(4);
    using low = dev.buffer(4);
    using cmd = dev.commandBuffer();
    cmd.dispatchThreads(pipe, { args: [counts, total, low], grid: [n], threadgroup: [256] });
    cmd.commit();
    cmd.wait();
    expect(Array.from(counts.read(Uint32Array))).toEqual([1024, 1024, 1024, 1024]);
    expect(total.read(Float32Array)[0]).toBe(n / 2);
    expect(low.read(Int32Array)[0]).toBe(-(n - 1));
  });

  test("two [[threadgroup(i)]] arguments share the block's dynamic shared memory without overlap", () => {
    using dev = sm.openDevice({ backend: "cuda" });
    const pipe = dev.compile(KERNELS).pipeline("scratch");
    const n = 100;
    const x = Float32Array.from({ length: n }, (_, i) => i + 1);
    using xb = dev.buffer(x);
    using out = dev.buffer(n * 4);
    using cmd = dev.commandBuffer();
    cmd.dispatchThreads(pipe, { args: [xb, out], grid: [n], threadgroup: [n], threadgroupMemory: [n * 4, n * 4] });
    cmd.commit();
    cmd.wait();
    const got = out.read(Float32Array);
    for (let i = 0; i < n; i++) expect(got[i]!).toBe(x[n - 1 - i]! + 2 * x[i]!);
  });

  test("compiled kernels are cached on disk: a second device compiles nothing", () => {
    const cacheDir = mkdtempSync(join(tmpdir(), "smelt-cuda-cache-"));
    try {
      const source = `${KERNELS}\n// cache test\n`;
      {
        using dev = sm.openDevice({ backend: "cuda", cacheDir });
        dev.compile(source).dispose();
        expect(dev.stats()).toMatchObject({ compiles: 1, cacheHits: 0 });
      }
      using again = sm.openDevice({ backend: "cuda", cacheDir });
      again.compile(source).dispose();
      expect(again.stats()).toMatchObject({ compiles: 0, cacheHits: 1 });
    } finally {
      rmSync(cacheDir, { recursive: true, force: true });
    }
  });
});
