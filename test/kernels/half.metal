// half and half4.
#include <metal_stdlib>
using namespace metal;

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
