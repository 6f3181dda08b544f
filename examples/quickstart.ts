// smelt's raw GPU API end to end: compile MSL, dispatch a fused elementwise kernel and a
// two-level reduction, check both against JavaScript, and report what ran where.
//   bun run demo            (SMELT_BACKEND=host|metal to choose)
import * as sm from "smelt";

const source = `
#include <metal_stdlib>
using namespace metal;

// y = gelu_tanh(a * x + b), four elements per thread.
kernel void axpb_gelu(device const float4* x [[buffer(0)]], device float4* y [[buffer(1)]],
                      constant float2& ab [[buffer(2)]], constant uint& n4 [[buffer(3)]],
                      uint i [[thread_position_in_grid]]) {
  if (i >= n4) return;
  float4 v = ab.x * x[i] + ab.y;
  y[i] = 0.5f * v * (1.0f + tanh(0.7978845608f * (v + 0.044715f * v * v * v)));
}

// One partial sum per threadgroup: simd_sum, then the SIMD-groups' sums through threadgroup memory.
kernel void partial_sums(device const float* x [[buffer(0)]], device float* out [[buffer(1)]],
                         constant uint& n [[buffer(2)]],
                         uint i [[thread_position_in_grid]], uint group [[threadgroup_position_in_grid]],
                         uint lane [[thread_index_in_simdgroup]], uint sg [[simdgroup_index_in_threadgroup]],
                         uint sgs [[simdgroups_per_threadgroup]]) {
  threadgroup float part[32];
  float s = simd_sum(i < n ? x[i] : 0.0f);
  if (lane == 0) part[sg] = s;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (sg == 0) {
    float t = simd_sum(lane < sgs ? part[lane] : 0.0f);
    if (lane == 0) out[group] = t;
  }
}
`;

const dev = sm.device();
console.log(`device: ${dev.name} (backend ${dev.backend})`);
const lib = dev.compile(source);
const gelu = lib.pipeline("axpb_gelu");
const sums = lib.pipeline("partial_sums");

const n = 1 << 22;
const xs = new Float32Array(n);
for (let i = 0; i < n; i++) xs[i] = Math.sin(i * 0.001) * 3;
const x = dev.buffer(xs);
const y = dev.buffer(n * 4);
const groups = Math.ceil(n / 1024);
const partial = dev.buffer(groups * 4);

const t0 = performance.now();
const cmd = dev.commandBuffer();
cmd.dispatchThreads(gelu, { args: [x, y, new Float32Array([1.5, -0.25]), new Uint32Array([n / 4])], grid: [n / 4], threadgroup: [256] });
cmd.barrier();
cmd.dispatchThreads(sums, { args: [y, partial, new Uint32Array([n])], grid: [n], threadgroup: [1024] });
cmd.commit();
await cmd.completed();
const ms = performance.now() - t0;

const got = partial.view(Float32Array).reduce((a, b) => a + b, 0);
let want = 0;
for (let i = 0; i < n; i++) {
  const v = 1.5 * xs[i] - 0.25;
  want += 0.5 * v * (1 + Math.tanh(0.7978845608 * (v + 0.044715 * v * v * v)));
}
const rel = Math.abs(got - want) / Math.abs(want);
console.log(`sum(gelu(1.5x - 0.25)) over ${n} floats: ${got.toFixed(3)} (float64 reference ${want.toFixed(3)}, relative error ${rel.toExponential(2)})`);
console.log(`two dispatches, one command buffer: ${ms.toFixed(2)} ms including the wait for the device`);
console.log(`stats: ${JSON.stringify(dev.stats())}`);
if (!(rel < 1e-4)) {
  console.error("quickstart: result does not match the reference");
  process.exit(1);
}
