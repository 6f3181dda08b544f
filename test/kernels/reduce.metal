// Threadgroup reductions: a two-level sum (simd_sum, partials in threadgroup memory, barrier,
// simd_sum of the partials) with a grid-stride loop, and a row softmax built from a max and a
// sum reduction.
#include <metal_stdlib>
using namespace metal;

// partial[g] = sum of the elements threadgroup g visits. sg_sums is [[threadgroup(0)]], one
// element per SIMD-group. Run it once over the input, then once with a single threadgroup over
// the partials to get the total.
template <typename T>
kernel void reduce_sum(device const T* x [[buffer(0)]],
                       device T* partial [[buffer(1)]],
                       constant uint& n [[buffer(2)]],
                       threadgroup T* sg_sums [[threadgroup(0)]],
                       uint tid [[thread_index_in_threadgroup]],
                       uint group [[threadgroup_position_in_grid]],
                       uint group_size [[threads_per_threadgroup]],
                       uint groups [[threadgroups_per_grid]],
                       uint lane [[thread_index_in_simdgroup]],
                       uint sg [[simdgroup_index_in_threadgroup]]) {
  T acc = T(0);
  for (uint i = group * group_size + tid; i < n; i += group_size * groups) {
    acc += x[i];
  }
  const T s = simd_sum(acc);
  if (lane == 0) {
    sg_sums[sg] = s;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (sg == 0) {
    const uint nsg = (group_size + 31u) / 32u;
    const T total = simd_sum(lane < nsg ? sg_sums[lane] : T(0));
    if (lane == 0) {
      partial[group] = total;
    }
  }
}

template [[host_name("reduce_sum_f32")]] kernel void reduce_sum<float>(
    device const float* x [[buffer(0)]], device float* partial [[buffer(1)]],
    constant uint& n [[buffer(2)]], threadgroup float* sg_sums [[threadgroup(0)]],
    uint tid [[thread_index_in_threadgroup]], uint group [[threadgroup_position_in_grid]],
    uint group_size [[threads_per_threadgroup]], uint groups [[threadgroups_per_grid]],
    uint lane [[thread_index_in_simdgroup]], uint sg [[simdgroup_index_in_threadgroup]]);
template [[host_name("reduce_sum_i32")]] kernel void reduce_sum<int>(
    device const int* x [[buffer(0)]], device int* partial [[buffer(1)]],
    constant uint& n [[buffer(2)]], threadgroup int* sg_sums [[threadgroup(0)]],
    uint tid [[thread_index_in_threadgroup]], uint group [[threadgroup_position_in_grid]],
    uint group_size [[threads_per_threadgroup]], uint groups [[threadgroups_per_grid]],
    uint lane [[thread_index_in_simdgroup]], uint sg [[simdgroup_index_in_threadgroup]]);

// Reduces v over the threadgroup with op; every thread gets the result. scratch holds one value
// per SIMD-group and is free again when this returns.
template <typename Op>
inline float threadgroup_reduce(float v, threadgroup float* scratch, uint lane, uint sg, uint nsg, Op op) {
  v = op.simd(v);
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
  float simd(float v) const { return simd_max(v); }
};

struct SumOp {
  float operator()(float a, float b) const { return a + b; }
  float simd(float v) const { return simd_sum(v); }
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
