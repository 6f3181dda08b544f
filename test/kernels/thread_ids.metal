// Every thread-position attribute, written out per thread so the test can check each against
// the dispatch's geometry. One kernel per dimensionality: Metal requires the vector attributes
// of one kernel to have the same number of components. (dispatch_attributes.metal has the rest.)
#include <metal_stdlib>
using namespace metal;

// 8 words per thread.
kernel void ids_1d(device uint* out [[buffer(0)]],
                   uint tpig [[thread_position_in_grid]],
                   uint tpitg [[thread_position_in_threadgroup]],
                   uint tgpig [[threadgroup_position_in_grid]],
                   uint tptg [[threads_per_threadgroup]],
                   uint tpg [[threads_per_grid]],
                   uint lane [[thread_index_in_simdgroup]],
                   uint sg [[simdgroup_index_in_threadgroup]],
                   uint tiitg [[thread_index_in_threadgroup]]) {
  device uint* o = out + tpig * 8;
  o[0] = tpig;
  o[1] = tpitg;
  o[2] = tgpig;
  o[3] = tptg;
  o[4] = tpg;
  o[5] = lane;
  o[6] = sg;
  o[7] = tiitg;
}

// 13 words per thread, rows of the grid after one another.
kernel void ids_2d(device uint* out [[buffer(0)]],
                   uint2 tpig [[thread_position_in_grid]],
                   uint2 tpitg [[thread_position_in_threadgroup]],
                   uint2 tgpig [[threadgroup_position_in_grid]],
                   uint2 tptg [[threads_per_threadgroup]],
                   uint2 tpg [[threads_per_grid]],
                   uint lane [[thread_index_in_simdgroup]],
                   uint sg [[simdgroup_index_in_threadgroup]],
                   uint tiitg [[thread_index_in_threadgroup]]) {
  device uint* o = out + (tpig.y * tpg.x + tpig.x) * 13;
  o[0] = tpig.x;
  o[1] = tpig.y;
  o[2] = tpitg.x;
  o[3] = tpitg.y;
  o[4] = tgpig.x;
  o[5] = tgpig.y;
  o[6] = tptg.x;
  o[7] = tptg.y;
  o[8] = tpg.x;
  o[9] = tpg.y;
  o[10] = lane;
  o[11] = sg;
  o[12] = tiitg;
}

// 18 words per thread.
kernel void ids_3d(device uint* out [[buffer(0)]],
                   uint3 tpig [[thread_position_in_grid]],
                   uint3 tpitg [[thread_position_in_threadgroup]],
                   uint3 tgpig [[threadgroup_position_in_grid]],
                   uint3 tptg [[threads_per_threadgroup]],
                   uint3 tpg [[threads_per_grid]],
                   uint lane [[thread_index_in_simdgroup]],
                   uint sg [[simdgroup_index_in_threadgroup]],
                   uint tiitg [[thread_index_in_threadgroup]]) {
  device uint* o = out + ((tpig.z * tpg.y + tpig.y) * tpg.x + tpig.x) * 18;
  o[0] = tpig.x;
  o[1] = tpig.y;
  o[2] = tpig.z;
  o[3] = tpitg.x;
  o[4] = tpitg.y;
  o[5] = tpitg.z;
  o[6] = tgpig.x;
  o[7] = tgpig.y;
  o[8] = tgpig.z;
  o[9] = tptg.x;
  o[10] = tptg.y;
  o[11] = tptg.z;
  o[12] = tpg.x;
  o[13] = tpg.y;
  o[14] = tpg.z;
  o[15] = lane;
  o[16] = sg;
  o[17] = tiitg;
}
