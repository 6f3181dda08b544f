// Function templates: a kernel template instantiated under several host names, a template helper
// function, and a non-type template parameter that sizes a loop.
#include <metal_stdlib>
using namespace metal;

template <typename T>
inline T affine(T x, float s, float t) {
  return T(float(x) * s + t);
}

// y = T(x * s + t), computed in float whatever T is.
template <typename T>
kernel void scale(device const T* x [[buffer(0)]],
                  device T* y [[buffer(1)]],
                  constant float2& st [[buffer(2)]],
                  uint i [[thread_position_in_grid]]) {
  y[i] = affine(x[i], st.x, st.y);
}

template [[host_name("scale_f32")]] kernel void scale<float>(
    device const float* x [[buffer(0)]], device float* y [[buffer(1)]],
    constant float2& st [[buffer(2)]], uint i [[thread_position_in_grid]]);
template [[host_name("scale_f16")]] kernel void scale<half>(
    device const half* x [[buffer(0)]], device half* y [[buffer(1)]],
    constant float2& st [[buffer(2)]], uint i [[thread_position_in_grid]]);
template [[host_name("scale_bf16")]] kernel void scale<bfloat>(
    device const bfloat* x [[buffer(0)]], device bfloat* y [[buffer(1)]],
    constant float2& st [[buffer(2)]], uint i [[thread_position_in_grid]]);
template [[host_name("scale_i32")]] kernel void scale<int>(
    device const int* x [[buffer(0)]], device int* y [[buffer(1)]],
    constant float2& st [[buffer(2)]], uint i [[thread_position_in_grid]]);

// y[i] = sum of x[i * W .. i * W + W): each thread sums a window whose width is a template argument.
template <typename T, uint W>
kernel void window_sum(device const T* x [[buffer(0)]],
                       device T* y [[buffer(1)]],
                       uint i [[thread_position_in_grid]]) {
  T acc = T(0);
  for (uint k = 0; k < W; ++k) {
    acc += x[i * W + k];
  }
  y[i] = acc;
}

template [[host_name("window_sum_i32_3")]] kernel void window_sum<int, 3>(
    device const int* x [[buffer(0)]], device int* y [[buffer(1)]], uint i [[thread_position_in_grid]]);
template [[host_name("window_sum_u32_8")]] kernel void window_sum<uint, 8>(
    device const uint* x [[buffer(0)]], device uint* y [[buffer(1)]], uint i [[thread_position_in_grid]]);
