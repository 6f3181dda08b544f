// The host backend runs the dispatches between two barriers as one job (they may overlap, as in
// Metal's concurrent encoder): each dispatch must still see its own grid, threadgroup numbering
// and threadgroup memory, and a barrier must order what comes after it.
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";

setDefaultTimeout(120_000);

const KERNELS = `#include <metal_stdlib>
using namespace metal;

// out[i] = base + i, through threadgroup memory (a barrier inside each threadgroup).
kernel void fill(device float* out [[buffer(0)]], constant float& base [[buffer(1)]], constant uint& n [[buffer(2)]],
                 threadgroup float* scratch [[threadgroup(0)]],
                 uint tid [[thread_position_in_threadgroup]], uint i [[thread_position_in_grid]]) {
  scratch[tid] = base + float(i);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (i < n) out[i] = scratch[tid];
}

// The same through a SIMD-group shuffle of each lane's own value (the host runs it on fibers).
kernel void lanes(device float* out [[buffer(0)]], constant float& base [[buffer(1)]], constant uint& n [[buffer(2)]],
                  uint lane [[thread_index_in_simdgroup]], uint i [[thread_position_in_grid]]) {
  float v = simd_shuffle(base + float(i), lane);
  if (i < n) out[i] = v;
}

// The same without threadgroup memory (the host runs such a kernel as a loop over its threadgroups).
kernel void plain(device float* out [[buffer(0)]], constant float& base [[buffer(1)]], constant uint& n [[buffer(2)]],
                  uint i [[thread_position_in_grid]]) {
  if (i < n) out[i] = base + float(i);
}

kernel void twice(device const float* x [[buffer(0)]], device float* out [[buffer(1)]], constant uint& n [[buffer(2)]],
                  uint i [[thread_position_in_grid]]) {
  if (i < n) out[i] = 2.0f * x[i];
}
`;

test("independent dispatches in one run each fill their own buffer; barriers order a chain", () => {
  using dev = sm.openDevice({ backend: "host" });
  const lib = dev.compile(KERNELS);
  const fill = lib.pipeline("fill"), lanes = lib.pipeline("lanes"), plain = lib.pipeline("plain"), twice = lib.pipeline("twice");
  // Sizes that are not multiples of the threadgroup, and threadgroups of several sizes.
  const sizes = Array.from({ length: 40 }, (_, k) => 1 + ((k * 7919) % 5000));
  const groups = [32, 64, 256, 7];
  const outs = sizes.map((n) => dev.buffer(4 * n));
  const cmd = dev.commandBuffer();
  sizes.forEach((n, k) => {
    const g = groups[k % groups.length]!;
    const args = [outs[k]!, new Float32Array([1000 * k]), new Uint32Array([n])];
    if (k % 3 === 1) cmd.dispatchThreads(plain, { args, grid: [n], threadgroup: [g] });
    else if (k % 3 === 2) cmd.dispatchThreads(lanes, { args, grid: [n], threadgroup: [g] });
    else cmd.dispatchThreads(fill, { args, grid: [n], threadgroup: [g], threadgroupMemory: [4 * g] });
  });
  // A chain: each step reads what the one before wrote, behind a barrier.
  const chain = [outs[0]!, dev.buffer(4 * sizes[0]!), dev.buffer(4 * sizes[0]!), dev.buffer(4 * sizes[0]!)];
  for (let s = 1; s < chain.length; s++) {
    cmd.barrier();
    cmd.dispatchThreads(twice, { args: [chain[s - 1]!, chain[s]!, new Uint32Array([sizes[0]!])], grid: [sizes[0]!], threadgroup: [64] });
  }
  cmd.commit();
  cmd.wait();
  sizes.forEach((n, k) => {
    const got = outs[k]!.read(Float32Array);
    const bad = Array.from({ length: n }, (_, i) => i).filter((i) => got[i] !== 1000 * k + i);
    expect(bad).toEqual([]);
  });
  const last = chain[chain.length - 1]!.read(Float32Array);
  expect(Array.from({ length: sizes[0]! }, (_, i) => last[i]! - 8 * i)).toEqual(new Array(sizes[0]!).fill(0));
});
