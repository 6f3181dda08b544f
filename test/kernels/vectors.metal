// float2/3/4: component access, swizzles (read and write, xyzw and rgba), constructors from
// smaller vectors, bool4 comparisons with select/any/all, float3's 16-byte stride in a buffer.
// (geometry.metal has dot, cross, length and the like; half.metal and integers.metal the other
// scalar and vector types.)
#include <metal_stdlib>
using namespace metal;

// Seven float4 results per element in out, one float3 (16-byte stride) in out3.
kernel void vec_float(device const float4* a [[buffer(0)]],
                      device const float4* b [[buffer(1)]],
                      device float4* out [[buffer(2)]],
                      device float3* out3 [[buffer(3)]],
                      uint i [[thread_position_in_grid]]) {
  const float4 va = a[i];
  const float4 vb = b[i];
  device float4* o = out + i * 7;

  const float2 p = va.xy + vb.zw;
  const float2 q = va.yx * 2.0f;
  o[0] = float4(p, q);
  o[1] = va.wzyx;
  const float3 r = va.xyz - vb.xyz;
  o[2] = float4(r, va.w * vb.x);
  o[3] = float4(va.r + va.g * vb.b - vb.a, vb.bg, va.a);

  float4 w = va;
  w.zw = vb.xy;  // swizzle as an lvalue
  w.x = -w.x;
  o[4] = w;

  const bool4 lt = va < vb;
  o[5] = select(va, vb, lt);  // per lane: lt ? vb : va
  o[6] = float4(float(any(lt)), float(all(lt)), float(lt.x), float(lt.w && !lt.z));

  float3 t = float3(va.x, vb.y, 0.0f);
  t.z = va.z + vb.z;
  out3[i] = t;
}
