// Matrix multiplication: C[i, j] = sum_k A[i, k] B[k, j], accumulated in float, for operands at any
// strides (so transposed and batch-broadcast operands are read in place). Each function hands
// every finished element to epi.store(acc, i, j): the kernels smelt generates put the elementwise
// ops that consume the product there (bias, scale, activation, residual, a low-rank product),
// so they run inside the matmul instead of after it.
//
//   smelt_mm_simd    a 32x32 tile per threadgroup of 128 threads (4 SIMD-groups of 16x16), K in
//                    steps of 16 through threadgroup memory, 8x8 simdgroup_matrix products
//   smelt_mm_dot     one element per thread: small M (matrix-vector, M of 1..16)
//   smelt_mm_column  8 rows of one column per thread, for CPUs: adjacent threads take adjacent
//                    columns, so a vectorized loop over threads is an outer-product kernel
#include <metal_stdlib>
using namespace metal;

constant int SMELT_MM_TILE = 32;
constant int SMELT_MM_DEPTH = 16;

template <typename T, typename E>
inline void smelt_mm_simd(device const T* A, device const T* B, int M, int N, int K, int sam, int sak, int sbk,
                          int sbn, thread const E& epi, threadgroup float* As, threadgroup float* Bs,
                          threadgroup float* Cs, uint2 tile, uint tid, uint sg) {
  int row0 = int(tile.y) * SMELT_MM_TILE, col0 = int(tile.x) * SMELT_MM_TILE;
  int sr = int(sg / 2) * 16, sc = int(sg % 2) * 16;  // this SIMD-group's 16x16 block
  simdgroup_float8x8 acc[2][2];
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b) acc[a][b] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  for (int k0 = 0; k0 < K; k0 += SMELT_MM_DEPTH) {
    // 128 threads load the 32x16 slice of A and the 16x32 slice of B, zero past the edges.
    for (int e = int(tid); e < SMELT_MM_TILE * SMELT_MM_DEPTH; e += 128) {
      int r = e / SMELT_MM_DEPTH, c = e % SMELT_MM_DEPTH;
      int i = row0 + r, k = k0 + c;
      As[e] = (i < M && k < K) ? float(A[i * sam + k * sak]) : 0.0f;
      int kb = k0 + e / SMELT_MM_TILE, j = col0 + e % SMELT_MM_TILE;
      Bs[e] = (kb < K && j < N) ? float(B[kb * sbk + j * sbn]) : 0.0f;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (int kk = 0; kk < SMELT_MM_DEPTH; kk += 8) {
      simdgroup_float8x8 fa[2], fb[2];
      for (int a = 0; a < 2; ++a) simdgroup_load(fa[a], As + (sr + 8 * a) * SMELT_MM_DEPTH + kk, SMELT_MM_DEPTH);
      for (int b = 0; b < 2; ++b) simdgroup_load(fb[b], Bs + kk * SMELT_MM_TILE + sc + 8 * b, SMELT_MM_TILE);
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b) simdgroup_multiply_accumulate(acc[a][b], fa[a], fb[b], acc[a][b]);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b) simdgroup_store(acc[a][b], Cs + (sr + 8 * a) * SMELT_MM_TILE + sc + 8 * b, SMELT_MM_TILE);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (int e = int(tid); e < SMELT_MM_TILE * SMELT_MM_TILE; e += 128) {
    int i = row0 + e / SMELT_MM_TILE, j = col0 + e % SMELT_MM_TILE;
    if (i < M && j < N) epi.store(Cs[e], i, j);
  }
}

template <typename T, typename E>
inline void smelt_mm_dot(device const T* A, device const T* B, int K, int sam, int sak, int sbk, int sbn, int i, int j,
                         thread const E& epi) {
  float acc = 0.0f;
  for (int k = 0; k < K; ++k) acc += float(A[i * sam + k * sak]) * float(B[k * sbk + j * sbn]);
  epi.store(acc, i, j);
}

template <typename T, typename E>
inline void smelt_mm_column(device const T* A, device const T* B, int M, int K, int sam, int sak, int sbk, int sbn,
                            int i0, int j, thread const E& epi) {
  float acc[8];
  int rows[8];
  for (int r = 0; r < 8; ++r) {
    acc[r] = 0.0f;
    rows[r] = min(i0 + r, M - 1) * sam;  // rows past the edge repeat the last one and are not stored
  }
  for (int k = 0; k < K; ++k) {
    float b = float(B[k * sbk + j * sbn]);
    for (int r = 0; r < 8; ++r) acc[r] += float(A[rows[r] + k * sak]) * b;
  }
  for (int r = 0; r < 8; ++r)
    if (i0 + r < M) epi.store(acc[r], i0 + r, j);
}
