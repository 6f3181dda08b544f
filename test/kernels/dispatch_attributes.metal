// The grid attributes thread_ids.metal leaves out, written out per thread: the threadgroup size
// as dispatched (threads_per_threadgroup is smaller at the edges of a non-uniform grid),
// threadgroups per grid, and the SIMD-group sizes.
#include <metal_stdlib>
using namespace metal;

// 8 words per thread.
kernel void ids_grid(device uint* out [[buffer(0)]],
                     uint3 tpig [[thread_position_in_grid]],
                     uint3 tpg [[threads_per_grid]],
                     uint3 dtptg [[dispatch_threads_per_threadgroup]],
                     uint3 tgpg [[threadgroups_per_grid]],
                     uint tpsg [[threads_per_simdgroup]],
                     uint sgptg [[simdgroups_per_threadgroup]]) {
  device uint* o = out + ((tpig.z * tpg.y + tpig.y) * tpg.x + tpig.x) * 8;
  o[0] = dtptg.x;
  o[1] = dtptg.y;
  o[2] = dtptg.z;
  o[3] = tgpg.x;
  o[4] = tgpg.y;
  o[5] = tgpg.z;
  o[6] = tpsg;
  o[7] = sgptg;
}
