// Exclusive prefix sum of a whole array in three dispatches: scan each threadgroup's block
// (simd_prefix_exclusive_sum inside each SIMD-group, then a scan of the SIMD-group totals
// through threadgroup memory), scan the block totals with one threadgroup, add them back.
#include <metal_stdlib>
using namespace metal;

// y[i] = sum of x[j] for block_start <= j < i; block_sums[g] = sum of block g.
kernel void scan_blocks(device const int* x [[buffer(0)]],
                        device int* y [[buffer(1)]],
                        device int* block_sums [[buffer(2)]],
                        constant uint& n [[buffer(3)]],
                        uint gid [[thread_position_in_grid]],
                        uint group [[threadgroup_position_in_grid]],
                        uint group_size [[threads_per_threadgroup]],
                        uint lane [[thread_index_in_simdgroup]],
                        uint sg [[simdgroup_index_in_threadgroup]]) {
  threadgroup int sg_offsets[32];
  const int v = gid < n ? x[gid] : 0;
  const int within = simd_prefix_exclusive_sum(v);
  const int sg_total = simd_sum(v);
  if (lane == 0) {
    sg_offsets[sg] = sg_total;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (sg == 0) {
    const uint nsg = (group_size + 31u) / 32u;
    const int t = lane < nsg ? sg_offsets[lane] : 0;
    const int before = simd_prefix_exclusive_sum(t);
    const int block_total = simd_sum(t);
    if (lane < nsg) {
      sg_offsets[lane] = before;
    }
    if (lane == 0) {
      block_sums[group] = block_total;
    }
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (gid < n) {
    y[gid] = within + sg_offsets[sg];
  }
}

// y[i] += offsets[block of i]; dispatched with the threadgroup size scan_blocks used.
kernel void scan_add_offsets(device int* y [[buffer(0)]],
                             device const int* offsets [[buffer(1)]],
                             uint gid [[thread_position_in_grid]],
                             uint group [[threadgroup_position_in_grid]]) {
  y[gid] += offsets[group];
}
