// Row softmax: a max and a sum reduction over each row (SIMD-group reductions, then the
// SIMD-group results through a threadgroup array declared in the kernel body), reusing one
// scratch array between them.
#include <metal_stdlib>
using namespace metal;

// Reduces v over the threadgroup with op; every thread gets the result. scratch holds one value
// per SIMD-group and is free again when this returns.
template <typename Op>
inline float threadgroup_reduce(float v, threadgroup float* scratch, uint lane, uint sg, uint nsg, Op op) {
  v = op.across_simdgroup(v);
  if (lane == 0) {
    scratch[sg] = v;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  float r = scratch[0];
  for (uint k = 1; k < nsg; ++k) {
    r = op(r, scratch[k]);
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  return r;
}

struct MaxOp {
  float operator()(float a, float b) const { return max(a, b); }
  float across_simdgroup(float v) const { return simd_max(v); }
};

struct SumOp {
  float operator()(float a, float b) const { return a + b; }
  float across_simdgroup(float v) const { return simd_sum(v); }
};

// One threadgroup per row: y = exp(x - max) / sum(exp(x - max)).
kernel void softmax_rows(device const float* x [[buffer(0)]],
                         device float* y [[buffer(1)]],
                         constant uint& cols [[buffer(2)]],
                         uint row [[threadgroup_position_in_grid]],
                         uint tid [[thread_index_in_threadgroup]],
                         uint group_size [[threads_per_threadgroup]],
                         uint lane [[thread_index_in_simdgroup]],
                         uint sg [[simdgroup_index_in_threadgroup]]) {
  threadgroup float scratch[32];
  const uint nsg = (group_size + 31u) / 32u;
  device const float* xr = x + row * cols;
  device float* yr = y + row * cols;

  float m = -INFINITY;
  for (uint c = tid; c < cols; c += group_size) {
    m = max(m, xr[c]);
  }
  m = threadgroup_reduce(m, scratch, lane, sg, nsg, MaxOp());

  float s = 0.0f;
  for (uint c = tid; c < cols; c += group_size) {
    s += precise::exp(xr[c] - m);
  }
  s = threadgroup_reduce(s, scratch, lane, sg, nsg, SumOp());

  const float inv = 1.0f / s;
  for (uint c = tid; c < cols; c += group_size) {
    yr[c] = precise::exp(xr[c] - m) * inv;
  }
}
