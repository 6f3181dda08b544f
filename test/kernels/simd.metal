// SIMD-group functions: reductions, prefix sums, shuffles and broadcasts, for float and int.
#include <metal_stdlib>
using namespace metal;

// 12 results per thread. Results 5..9 read other lanes, so they are only defined when every
// lane of the SIMD-group is active.
kernel void simd_f32(device const float* x [[buffer(0)]],
                     device float* out [[buffer(1)]],
                     uint gid [[thread_position_in_grid]],
                     uint lane [[thread_index_in_simdgroup]]) {
  const float v = x[gid];
  device float* o = out + gid * 12;
  o[0] = simd_sum(v);
  o[1] = simd_max(v);
  o[2] = simd_min(v);
  o[3] = simd_prefix_exclusive_sum(v);
  o[4] = simd_prefix_inclusive_sum(v);
  o[5] = simd_shuffle(v, ushort((lane * 7u + 3u) & 31u));
  o[6] = simd_shuffle_down(v, ushort(3));  // the top 3 lanes keep their own value
  o[7] = simd_shuffle_up(v, ushort(2));    // the bottom 2 lanes keep their own value
  o[8] = simd_shuffle_xor(v, ushort(5));
  o[9] = simd_broadcast(v, ushort(7));
  o[10] = simd_broadcast_first(v);
  o[11] = float(simd_all(v > -100.0f)) + 2.0f * float(simd_any(v > 0.9f));
}

// 8 results per thread, int and uint.
kernel void simd_i32(device const int* x [[buffer(0)]],
                     device int* out [[buffer(1)]],
                     uint gid [[thread_position_in_grid]],
                     uint lane [[thread_index_in_simdgroup]]) {
  const int v = x[gid];
  device int* o = out + gid * 8;
  o[0] = simd_sum(v);
  o[1] = simd_max(v);
  o[2] = simd_min(v);
  o[3] = simd_prefix_exclusive_sum(v);
  o[4] = simd_shuffle_xor(v, ushort(16));
  o[5] = int(simd_broadcast(uint(v) + lane, ushort(31)));
  o[6] = simd_shuffle_down(v, ushort(16)) - simd_shuffle(v, ushort(lane ^ 1u));
  o[7] = int(simd_sum(uint(lane)));
}
