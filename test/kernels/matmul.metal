// Matrix multiplication, row-major, C[M x N] = A[M x K] * B[K x N]:
//  - tiled over threadgroup memory with barriers, any M, N, K (the edges are zero-filled);
//  - on simdgroup_matrix 8x8 tiles in float, in half with float accumulation, and with B given
//    transposed (simdgroup_load's transpose flag), the result staged through threadgroup memory.
#include <metal_stdlib>
using namespace metal;

struct MatmulShape {
  uint M;
  uint N;
  uint K;
  uint pad;
};

// Threadgroup TILE x TILE; threadgroup (gx, gy) computes C[gy*TILE.., gx*TILE..].
template <uint TILE>
kernel void matmul_tiled(device const float* A [[buffer(0)]],
                         device const float* B [[buffer(1)]],
                         device float* C [[buffer(2)]],
                         constant MatmulShape& s [[buffer(3)]],
                         uint2 tid [[thread_position_in_threadgroup]],
                         uint2 group [[threadgroup_position_in_grid]]) {
  threadgroup float As[TILE][TILE];
  threadgroup float Bs[TILE][TILE];
  const uint row = group.y * TILE + tid.y;
  const uint col = group.x * TILE + tid.x;
  float acc = 0.0f;
  for (uint k0 = 0; k0 < s.K; k0 += TILE) {
    const uint ka = k0 + tid.x;
    const uint kb = k0 + tid.y;
    As[tid.y][tid.x] = (row < s.M && ka < s.K) ? A[row * s.K + ka] : 0.0f;
    Bs[tid.y][tid.x] = (kb < s.K && col < s.N) ? B[kb * s.N + col] : 0.0f;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint k = 0; k < TILE; ++k) {
      acc = fma(As[tid.y][k], Bs[k][tid.x], acc);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  if (row < s.M && col < s.N) {
    C[row * s.N + col] = acc;
  }
}

template [[host_name("matmul_tiled16")]] kernel void matmul_tiled<16>(
    device const float* A [[buffer(0)]], device const float* B [[buffer(1)]], device float* C [[buffer(2)]],
    constant MatmulShape& s [[buffer(3)]], uint2 tid [[thread_position_in_threadgroup]],
    uint2 group [[threadgroup_position_in_grid]]);
template [[host_name("matmul_tiled8")]] kernel void matmul_tiled<8>(
    device const float* A [[buffer(0)]], device const float* B [[buffer(1)]], device float* C [[buffer(2)]],
    constant MatmulShape& s [[buffer(3)]], uint2 tid [[thread_position_in_threadgroup]],
    uint2 group [[threadgroup_position_in_grid]]);

// 128 threads = 4 SIMD-groups per threadgroup, covering a 16x16 block of C as 2x2 tiles of 8x8.
// M, N, K are multiples of 8. A SIMD-group whose tile lies outside C returns as a whole.
kernel void matmul_simd_f32(device const float* A [[buffer(0)]],
                            device const float* B [[buffer(1)]],
                            device float* C [[buffer(2)]],
                            constant MatmulShape& s [[buffer(3)]],
                            uint2 group [[threadgroup_position_in_grid]],
                            uint sg [[simdgroup_index_in_threadgroup]]) {
  const uint row0 = group.y * 16 + (sg / 2) * 8;
  const uint col0 = group.x * 16 + (sg % 2) * 8;
  if (row0 >= s.M || col0 >= s.N) {
    return;
  }
  simdgroup_float8x8 acc = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  simdgroup_float8x8 a;
  simdgroup_float8x8 b;
  for (uint k = 0; k < s.K; k += 8) {
    simdgroup_load(a, A + row0 * s.K + k, s.K);
    simdgroup_load(b, B + k * s.N + col0, s.N);
    simdgroup_multiply_accumulate(acc, a, b, acc);
  }
  simdgroup_store(acc, C + row0 * s.N + col0, s.N);
}

// Half inputs, float accumulator and output; same layout as matmul_simd_f32.
kernel void matmul_simd_f16(device const half* A [[buffer(0)]],
                            device const half* B [[buffer(1)]],
                            device float* C [[buffer(2)]],
                            constant MatmulShape& s [[buffer(3)]],
                            uint2 group [[threadgroup_position_in_grid]],
                            uint sg [[simdgroup_index_in_threadgroup]]) {
  const uint row0 = group.y * 16 + (sg / 2) * 8;
  const uint col0 = group.x * 16 + (sg % 2) * 8;
  if (row0 >= s.M || col0 >= s.N) {
    return;
  }
  simdgroup_float8x8 acc = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  simdgroup_half8x8 a;
  simdgroup_half8x8 b;
  for (uint k = 0; k < s.K; k += 8) {
    simdgroup_load(a, A + row0 * s.K + k, s.K);
    simdgroup_load(b, B + k * s.N + col0, s.N);
    simdgroup_multiply_accumulate(acc, a, b, acc);
  }
  simdgroup_store(acc, C + row0 * s.N + col0, s.N);
}

// C = alpha * (A * Bt^T + beta * D), Bt given as N x K, where D is 1 on the diagonal of every 8x8
// tile: the accumulator starts as simdgroup_float8x8(beta), a diagonal matrix. One SIMD-group per
// 8x8 tile of C (M, N, K multiples of 8); the tile goes through threadgroup memory and the 32
// threads copy it out two elements each, scaled by alpha.
kernel void matmul_simd_bt(device const float* A [[buffer(0)]],
                           device const float* Bt [[buffer(1)]],
                           device float* C [[buffer(2)]],
                           constant MatmulShape& s [[buffer(3)]],
                           constant float2& alpha_beta [[buffer(4)]],
                           uint2 group [[threadgroup_position_in_grid]],
                           uint lane [[thread_index_in_simdgroup]]) {
  threadgroup float tile[64];
  const uint row0 = group.y * 8;
  const uint col0 = group.x * 8;
  simdgroup_float8x8 acc = simdgroup_float8x8(alpha_beta.y);
  simdgroup_float8x8 a;
  simdgroup_float8x8 b;
  for (uint k = 0; k < s.K; k += 8) {
    simdgroup_load(a, A + row0 * s.K + k, s.K);
    simdgroup_load(b, Bt + col0 * s.K + k, s.K, ulong2(0, 0), true);
    simdgroup_multiply_accumulate(acc, a, b, acc);
  }
  simdgroup_store(acc, tile, 8);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (uint e = lane; e < 64; e += 32) {
    C[(row0 + e / 8) * s.N + col0 + e % 8] = alpha_beta.x * tile[e];
  }
}
