// Conversions between scalar types, bit reinterpretation with as_type, and bfloat (MSL 3.1).
#include <metal_stdlib>
using namespace metal;

// Value conversions. f holds finite floats with |f| < 2^31.
kernel void cast_values(device const float* f [[buffer(0)]],
                        device const int* n [[buffer(1)]],
                        device const uint* u [[buffer(2)]],
                        device int* oi [[buffer(3)]],
                        device uint* ou [[buffer(4)]],
                        device float* of [[buffer(5)]],
                        device half* oh [[buffer(6)]],
                        uint i [[thread_position_in_grid]]) {
  const float x = f[i];
  oi[i * 3] = int(x);  // toward zero
  oi[i * 3 + 1] = static_cast<int>(floor(x));
  oi[i * 3 + 2] = int(short(n[i]));  // keeps the low 16 bits, sign-extended
  ou[i * 2] = uint(fabs(x));
  ou[i * 2 + 1] = uint(uchar(u[i])) + uint(ushort(u[i] >> 8));
  of[i * 3] = float(n[i]);  // rounds to nearest even above 2^24
  of[i * 3 + 1] = float(u[i]);
  of[i * 3 + 2] = float(half(x));
  oh[i] = half(n[i]);
}

// Bit-level views. s holds special values too: zeros of both signs, infinities, NaN.
kernel void cast_bits(device const float* s [[buffer(0)]],
                      device const uint* bits [[buffer(1)]],
                      device uint* ou [[buffer(2)]],
                      device float* of [[buffer(3)]],
                      uint i [[thread_position_in_grid]]) {
  const float x = s[i];
  ou[i * 4] = as_type<uint>(x);
  ou[i * 4 + 1] = as_type<uint>(half2(half(x), half(-x)));  // .x is the low 16 bits
  ou[i * 4 + 2] = uint(as_type<ushort>(half(x)));
  const bool b = bool(x);  // x != 0, so NaN is true and -0.0 false
  ou[i * 4 + 3] = uint(b) | (uint(isnan(x)) << 1) | (uint(isinf(x)) << 2) | (uint(signbit(x)) << 3) |
                  (uint(isfinite(x)) << 4);
  of[i] = as_type<float>(bits[i]);
}

// bfloat: conversion from float rounds to nearest even; products of two bfloats are exact in
// float, so a bfloat product is that float rounded once.
kernel void bfloat_ops(device const float* f [[buffer(0)]],
                       device const bfloat4* x4 [[buffer(1)]],
                       device bfloat* ob [[buffer(2)]],
                       device ushort* obits [[buffer(3)]],
                       device float* of [[buffer(4)]],
                       device bfloat4* o4 [[buffer(5)]],
                       uint i [[thread_position_in_grid]]) {
  const bfloat b = bfloat(f[i]);
  ob[i] = b;
  obits[i] = as_type<ushort>(b);
  of[i * 2] = float(b);
  const bfloat4 v = x4[i];
  of[i * 2 + 1] = float(v.x) + float(v.y) * float(v.z) - float(v.w);
  o4[i] = v * v.yzwx;
}
