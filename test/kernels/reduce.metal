// A two-level threadgroup sum (simd_sum, partials in threadgroup memory, barrier, simd_sum of the
// partials) with a grid-stride loop, instantiated for float and int.
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
