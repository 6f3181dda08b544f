// Elementwise kernels: the float4 streaming kernel the host throughput benchmark runs, and a
// scalar kernel with no bounds check that proves a non-uniform grid launches only its own threads.
#include <metal_stdlib>
using namespace metal;

// out = a * s + b, four floats per thread.
kernel void axpb_f4(device const float4* a [[buffer(0)]],
                    device const float4* b [[buffer(1)]],
                    device float4* out [[buffer(2)]],
                    constant float& s [[buffer(3)]],
                    uint i [[thread_position_in_grid]]) {
  out[i] = a[i] * s + b[i];
}

// No `if (i < n)`: dispatchThreads must not run threads past the grid, so the words after the
// last one keep whatever the caller put there.
kernel void sub_mul_f32(device const float* a [[buffer(0)]],
                        device const float* b [[buffer(1)]],
                        device float* out [[buffer(2)]],
                        uint i [[thread_position_in_grid]]) {
  out[i] = (a[i] - b[i]) * b[i];
}
