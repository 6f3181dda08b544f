// Address spaces: a constant struct taken by reference, program-scope constant tables, a
// constant pointer bound to a device buffer, a device struct written through a reference, and
// helper functions taking each address space.
#include <metal_stdlib>
using namespace metal;

struct Params {
  float4 coef;  // polynomial coefficients, constant term first
  uint2 dims;   // columns, rows
  float alpha;
  uint flags;   // bit 0: negate, bit 1: add the stencil term
};  // 32 bytes

struct Echo {
  float4 coef_rev;
  uint2 dims_swapped;
  float alpha2;
  uint flags_plus;
  float k_sum;
  int offs_sum;
  float2 lut_ends;
};  // 48 bytes

constant float K[4] = {0.5f, -1.25f, 2.0f, 3.75f};
constant int OFFS[3] = {-1, 0, 1};

inline float poly(constant Params& p, float x) {
  return ((p.coef.w * x + p.coef.z) * x + p.coef.y) * x + p.coef.x;
}

inline float row_stencil(device const float* row, uint col, uint cols) {
  float s = 0.0f;
  for (uint k = 0; k < 3; ++k) {
    const int c = int(col) + OFFS[k];
    if (c >= 0 && c < int(cols)) {
      s += row[c];
    }
  }
  return s;
}

inline void accumulate(thread float& acc, float v) {
  acc += v;
}

kernel void params_poly(device const float* x [[buffer(0)]],
                        constant Params& p [[buffer(1)]],
                        constant float* lut [[buffer(2)]],
                        device float* y [[buffer(3)]],
                        device Echo& echo [[buffer(4)]],
                        uint2 pos [[thread_position_in_grid]]) {
  if (pos.x >= p.dims.x || pos.y >= p.dims.y) {
    return;
  }
  const uint i = pos.y * p.dims.x + pos.x;
  float v = poly(p, x[i]) * p.alpha;
  accumulate(v, K[i & 3u]);
  accumulate(v, lut[pos.y % 8u]);
  if ((p.flags & 2u) != 0u) {
    accumulate(v, row_stencil(x + pos.y * p.dims.x, pos.x, p.dims.x));
  }
  if ((p.flags & 1u) != 0u) {
    v = -v;
  }
  y[i] = v;

  if (i == 0) {
    echo.coef_rev = p.coef.wzyx;
    echo.dims_swapped = p.dims.yx;
    echo.alpha2 = p.alpha * 2.0f;
    echo.flags_plus = p.flags + 100u;
    echo.k_sum = K[0] + K[1] + K[2] + K[3];
    echo.offs_sum = OFFS[0] * 10 + OFFS[2];
    echo.lut_ends = float2(lut[0], lut[7]);
  }
}
