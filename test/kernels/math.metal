// metal:: math: the precise:: and fast:: variants of the transcendental functions, the default
// variants next to the rounding, min/max, select, clamp, fma and mix family, and IEEE special
// values (NaN, infinities, overflow) through the precise functions.
#include <metal_stdlib>
using namespace metal;

constant uint TRANSCENDENTALS = 10;

// Ten results per element, in this order in each of the three kernels below.
kernel void math_precise(device const float* x [[buffer(0)]],
                         device const float* y [[buffer(1)]],
                         device float* out [[buffer(2)]],
                         uint i [[thread_position_in_grid]]) {
  const float v = x[i];
  device float* o = out + i * TRANSCENDENTALS;
  o[0] = precise::exp(v);
  o[1] = precise::log(v);
  o[2] = precise::sin(v);
  o[3] = precise::cos(v);
  o[4] = precise::tanh(v);
  o[5] = precise::sqrt(v);
  o[6] = precise::rsqrt(v);
  o[7] = precise::pow(fabs(v), y[i]);
  o[8] = precise::exp2(v);
  o[9] = precise::log2(v);
}

kernel void math_fast(device const float* x [[buffer(0)]],
                      device const float* y [[buffer(1)]],
                      device float* out [[buffer(2)]],
                      uint i [[thread_position_in_grid]]) {
  const float v = x[i];
  device float* o = out + i * TRANSCENDENTALS;
  o[0] = fast::exp(v);
  o[1] = fast::log(v);
  o[2] = fast::sin(v);
  o[3] = fast::cos(v);
  o[4] = fast::tanh(v);
  o[5] = fast::sqrt(v);
  o[6] = fast::rsqrt(v);
  o[7] = fast::pow(fabs(v), y[i]);
  o[8] = fast::exp2(v);
  o[9] = fast::log2(v);
}

// The unqualified names (precise unless the library is built with fast math), then the rest.
kernel void math_default(device const float* x [[buffer(0)]],
                         device const float* y [[buffer(1)]],
                         device float* out [[buffer(2)]],
                         uint i [[thread_position_in_grid]]) {
  const float v = x[i];
  const float w = y[i];
  device float* o = out + i * 28;
  o[0] = exp(v);
  o[1] = log(v);
  o[2] = sin(v);
  o[3] = cos(v);
  o[4] = tanh(v);
  o[5] = sqrt(v);
  o[6] = rsqrt(v);
  o[7] = pow(fabs(v), w);
  o[8] = exp2(v);
  o[9] = log2(v);
  o[10] = fabs(v);
  o[11] = abs(v);
  o[12] = floor(v);
  o[13] = ceil(v);
  o[14] = round(v);  // halfway cases away from zero
  o[15] = trunc(v);
  o[16] = fmod(v, w);
  o[17] = min(v, w);
  o[18] = max(v, w);
  o[19] = fmin(v, w);
  o[20] = fmax(v, w);
  o[21] = clamp(v, -1.5f, 2.5f);
  o[22] = select(v, w, v > w);
  o[23] = fma(v, w, 0.5f);
  o[24] = mix(v, w, 0.25f);
  o[25] = sign(v);
  o[26] = rint(v);  // halfway cases to even
  o[27] = saturate(v);
}

// Special values through precise functions and plain arithmetic.
kernel void math_special(device const float* x [[buffer(0)]],
                         device float* out [[buffer(1)]],
                         uint i [[thread_position_in_grid]]) {
  const float v = x[i];
  device float* o = out + i * 12;
  o[0] = precise::exp(v);
  o[1] = precise::sqrt(v);
  o[2] = precise::log(v);
  o[3] = precise::fmax(v, 1.0f);  // a NaN operand yields the other one
  o[4] = precise::fmin(v, -1.0f);
  o[5] = v + 1.0f;
  o[6] = v * 0.0f;
  o[7] = 1.0f / v;
  o[8] = isnan(v) ? -7.0f : max(v, 0.0f);
  o[9] = precise::tanh(v);
  o[10] = precise::rsqrt(v);
  o[11] = isnan(v) ? INFINITY : clamp(v, -2.0f, 2.0f);
}

// tanh and exp alone, for the dense accuracy sweeps.
kernel void math_sweep(device const float* x [[buffer(0)]],
                       device float* out [[buffer(1)]],
                       uint i [[thread_position_in_grid]]) {
  out[2 * i] = tanh(x[i]);
  out[2 * i + 1] = exp(x[i]);
}
