// Vector and scalar types: float2/3/4 with component access, swizzles (read and write),
// constructors from smaller vectors, geometric functions, bool vectors; half and half4
// arithmetic; int and uint scalars and vectors.
#include <metal_stdlib>
using namespace metal;

// Eight float4 results per element in out, one float3 (16-byte stride) in out3.
kernel void vec_float(device const float4* a [[buffer(0)]],
                      device const float4* b [[buffer(1)]],
                      device float4* out [[buffer(2)]],
                      device float3* out3 [[buffer(3)]],
                      uint i [[thread_position_in_grid]]) {
  const float4 va = a[i];
  const float4 vb = b[i];
  device float4* o = out + i * 8;

  const float2 p = va.xy + vb.zw;
  const float2 q = va.yx * 2.0f;
  o[0] = float4(p, q);
  o[1] = va.wzyx;
  const float3 r = va.xyz - vb.xyz;
  o[2] = float4(r, va.w * vb.x);
  o[3] = float4(dot(va, vb), dot(va.xy, vb.zw), length(r), va.r + va.g * vb.b - vb.a);

  float4 w = va;
  w.zw = vb.xy;  // swizzle as an lvalue
  w.x = -w.x;
  o[4] = w;
  o[5] = float4(cross(va.xyz, vb.xyz), vb.z);

  const bool4 lt = va < vb;
  o[6] = select(va, vb, lt);  // per lane: lt ? vb : va
  o[7] = float4(float(any(lt)), float(all(lt)), float(lt.x), float(lt.w && !lt.z));

  float3 t = float3(va.x, vb.y, 0.0f);
  t.z = va.z + vb.z;
  out3[i] = t;
}

// Half scalars and vectors: arithmetic happens in half, so results round (and overflow) there.
kernel void vec_half(device const half* x [[buffer(0)]],
                     device const half* y [[buffer(1)]],
                     device const half4* x4 [[buffer(2)]],
                     device const float* f [[buffer(3)]],
                     device half* out [[buffer(4)]],
                     device half4* out4 [[buffer(5)]],
                     device float* outf [[buffer(6)]],
                     uint i [[thread_position_in_grid]]) {
  const half h = x[i];
  const half g = y[i];
  device half* o = out + i * 5;
  o[0] = h * g;
  o[1] = h + g;
  o[2] = h - g;
  o[3] = half(f[i]);  // float -> half: round to nearest even, overflow to inf
  o[4] = max(h, 0.0h);

  const half4 v = x4[i];
  out4[i * 2] = v * half4(2.0h) + half4(1.0h, -1.0h, 0.5h, 0.0h);
  out4[i * 2 + 1] = half4(v.zw, v.xy) * v.w;

  outf[i] = float(h) * 3.0f;  // widened first: no half rounding
}

// Integer scalars and vectors. Sixteen ints and eight uints per element.
kernel void vec_int(device const int* a [[buffer(0)]],
                    device const int* b [[buffer(1)]],
                    device int* oi [[buffer(2)]],
                    device uint* ou [[buffer(3)]],
                    uint i [[thread_position_in_grid]]) {
  const int x = a[i];
  const int y = b[i];  // never zero
  device int* o = oi + i * 16;
  o[0] = x + y;
  o[1] = x - y;
  o[2] = x * y;
  o[3] = x / y;  // truncates toward zero
  o[4] = x % y;  // sign of the dividend
  o[5] = x >> 3;
  o[6] = (x & y) ^ (x | 7);
  o[7] = ~x;
  o[8] = abs(x);
  o[9] = min(x, y);
  o[10] = max(x, y);
  o[11] = clamp(x, -100, 100);

  const int4 v = int4(x, y, -x, x * 2);
  const int4 w = v / int4(3) + int4(1, 2, 3, 4) * v.wzyx;
  o[12] = w.x;
  o[13] = w.y;
  o[14] = w.z;
  o[15] = w.w;

  const uint ux = as_type<uint>(x);
  const uint uy = as_type<uint>(y);
  device uint* p = ou + i * 8;
  p[0] = ux >> 3;
  p[1] = ux * 2654435761u;  // wraps modulo 2^32
  p[2] = ux + uy;
  p[3] = popcount(ux);
  p[4] = clz(ux);
  p[5] = ctz(ux);
  const uint2 u2 = uint2(ux, uy) % uint2(7u, 1000u);
  const bool2 gt = int2(x, y) > int2(0);
  p[6] = u2.x * 1000u + u2.y;
  p[7] = uint(gt.x) | (uint(gt.y) << 1) | (uint(x == y) << 2) | (uint(any(gt)) << 3) | (uint(all(gt)) << 4);
}
