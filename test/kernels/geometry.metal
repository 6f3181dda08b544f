// Geometric functions on float vectors.
#include <metal_stdlib>
using namespace metal;

// Eight results per element.
kernel void vec_geometry(device const float4* a [[buffer(0)]],
                         device const float4* b [[buffer(1)]],
                         device float* out [[buffer(2)]],
                         uint i [[thread_position_in_grid]]) {
  const float4 va = a[i];
  const float4 vb = b[i];
  device float* o = out + i * 8;
  o[0] = dot(va, vb);
  o[1] = dot(va.xy, vb.zw);
  o[2] = length(va.xyz);
  o[3] = distance(va, vb);
  const float3 c = cross(va.xyz, vb.xyz);
  o[4] = c.x;
  o[5] = c.y;
  o[6] = c.z;
  o[7] = normalize(vb.xy).y;
}
