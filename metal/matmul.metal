// Matrix multiplication: C[i, j] = sum_k A[i, k] B[k, j], accumulated in float, for operands at any
// strides (so transposed and batch-broadcast operands are read in place). Each function hands
// every finished element to epi.store(acc, i, j): the kernels smelt generates put the elementwise
// ops that consume the product there (bias, scale, activation, residual, a low-rank product),
// so they run inside the matmul instead of after it.
//
//   smelt_mm_simd    a 32x32 tile per threadgroup of 128 threads (4 SIMD-groups of 16x16), K in
//                    steps of 16 through threadgroup memory, 8x8 simdgroup_matrix products
//   smelt_mm_dot     small M (matrix-vector, M of 1..16): 32 columns of a row per threadgroup, K split
//                    among its SIMD-sized slices
//   smelt_mm_pack    for CPUs: copies B into panels of 16 columns, the layout smelt_mm_panel reads
//   smelt_mm_panel   for CPUs: a 6x16 block per thread from one packed panel (with a second
//                    product summed into the first as more rows of K)
//   smelt_mm_narrow  for CPUs: smelt_mm_panel's blocks with B read in place, for B of 16 columns
//                    or fewer (a low-rank factor or its gradient) or few rows of A, where a panel
//                    copy costs more; smelt_mm_narrow8 for B of 8 columns or fewer, a block 8
//                    columns wide
//   smelt_mm_column  8 rows of one column per thread, for CPUs, at any strides
//   smelt_mm_lanes   for CPUs: an element per thread for few rows, A and B both along k, in 16 lanes
//   smelt_mm_run     for CPUs: 16 columns of a row per thread for few rows, B's rows contiguous
//   smelt_mm_skinny  for GPUs: B of 16 columns or fewer, a SIMD-group per row of C splitting K
//   smelt_mm_block   for GPUs whose SIMD-group matrices of float are not hardware: a TM x TM block
//                    of C per thread in registers, 256 threads a tile of 16TM x 16TM
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

// A threadgroup of 32S threads (S = threads / 32, at most 8) per row i of C and 32 columns from
// j0: thread t takes column j0 + t % 32 over the (t / 32)th of S consecutive stretches of K; the
// S partial sums then meet in `part` (32S floats) and are added in order. Splitting K is what
// keeps a GPU's memory busy where C is small and K long: a low-rank factor's gradient,
// [8, 512] @ [512, 576], has 4,608 elements, 144 SIMD-groups' worth at one thread each.
template <typename T, typename E>
inline void smelt_mm_dot(device const T* A, device const T* B, int N, int K, int sam, int sak, int sbk, int sbn, int i,
                         int j0, uint tid, uint threads, thread const E& epi, threadgroup float* part) {
  int c = int(tid) % 32, s = int(tid) / 32, j = j0 + c, S = int(threads) / 32;
  int chunk = (K + S - 1) / S, k1 = min(K, (s + 1) * chunk);
  float acc = 0.0f;
  if (j < N)
    for (int k = s * chunk; k < k1; ++k) acc = fma(float(A[i * sam + k * sak]), float(B[k * sbk + j * sbn]), acc);
  part[s * 32 + c] = acc;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (s != 0 || j >= N) return;
  float total = part[c];
  for (int t = 1; t < S; ++t) total += part[t * 32 + c];
  epi.store(total, i, j);
}

// For CPUs, B is first copied into panels of 16 columns: panel p holds scale * B[k, 16p + c] at
// panels[(p * K + k) * 16 + c] as float, zero past column N. One call copies rows k0..k0+15 of
// panel p. Read in this order, every k of a panel is one aligned 64-byte line: without the copy,
// the rows of a B whose row stride is a multiple of 4 KiB all fall into the same cache sets and
// evict each other, and a transposed or half B would be converted in the innermost loop.
template <typename T>
inline void smelt_mm_pack(device const T* B, device float* panels, int N, int K, int sbk, int sbn, int p, int k0,
                          float scale) {
  int j0 = p * 16, k1 = min(k0 + 16, K);
  device float* dst = panels + p * K * 16;
  if (sbn == 1 && j0 + 16 <= N) {
    for (int k = k0; k < k1; ++k)
      for (int c = 0; c < 16; ++c) dst[k * 16 + c] = float(B[k * sbk + j0 + c]) * scale;
  } else {
    for (int k = k0; k < k1; ++k)
      for (int c = 0; c < 16; ++c) dst[k * 16 + c] = j0 + c < N ? float(B[k * sbk + (j0 + c) * sbn]) * scale : 0.0f;
  }
}

// A 6x16 block of C per thread, for CPUs, from one packed panel: for each k, 16 B values (two
// 8-float vectors) and six A values update 96 accumulators held in registers (12 AVX registers,
// with room for B and the broadcast A value). A second product summed into the first goes on
// in the same accumulators: K2 more steps with A2's columns and scale2 times B2's rows, read in
// place (K2 is short, a low-rank factor: a panel copy would cost a kernel of its own).
template <typename T, typename T2, typename T3, typename E>
inline void smelt_mm_panel(device const T* A, int sam, int sak, int K, device const float* panel, device const T2* A2,
                           int sam2, int sak2, int K2, device const T3* B2, int sbk2, int sbn2, float scale2, int M, int N,
                           int i0, int j0, thread const E& epi) {
  float acc[6][16];
  int arow[6], arow2[6];
  for (int r = 0; r < 6; ++r) {
    int i = min(i0 + r, M - 1);  // rows past the edge repeat the last one and are not stored
    arow[r] = i * sam;
    arow2[r] = i * sam2;
    for (int c = 0; c < 16; ++c) acc[r][c] = 0.0f;
  }
  for (int k = 0; k < K; ++k) {
    float b[16];
    for (int c = 0; c < 16; ++c) b[c] = panel[k * 16 + c];
    for (int r = 0; r < 6; ++r) {
      float a = float(A[arow[r] + k * sak]);
      for (int c = 0; c < 16; ++c) acc[r][c] = fma(a, b[c], acc[r][c]);
    }
  }
  // Blocks inside C with B2's rows contiguous (all but the last column of blocks) take loops
  // without per-column checks, which a CPU's compiler turns into vector loads and stores; checked
  // column by column, the second product's 16 loads per k and the 96 stores cost as much as
  // about 50 steps of the first product.
  bool inside = j0 + 16 <= N;
  for (int k = 0; k < K2; ++k) {
    float b[16];
    if (inside && sbn2 == 1)
      for (int c = 0; c < 16; ++c) b[c] = float(B2[k * sbk2 + j0 + c]) * scale2;
    else
      for (int c = 0; c < 16; ++c) b[c] = j0 + c < N ? float(B2[k * sbk2 + (j0 + c) * sbn2]) * scale2 : 0.0f;
    for (int r = 0; r < 6; ++r) {
      float a = float(A2[arow2[r] + k * sak2]);
      for (int c = 0; c < 16; ++c) acc[r][c] = fma(a, b[c], acc[r][c]);
    }
  }
  for (int r = 0; r < 6; ++r)
    if (i0 + r < M) {
      if (inside)
        for (int c = 0; c < 16; ++c) epi.store(acc[r][c], i0 + r, j0 + c);
      else
        for (int c = 0; c < 16; ++c)
          if (j0 + c < N) epi.store(acc[r][c], i0 + r, j0 + c);
    }
}

// The product is the panel kernel's second one, with no first: B's rows are read in place.
template <typename T, typename T2, typename E>
inline void smelt_mm_narrow(device const T* A, device const T2* B, int M, int N, int K, int sam, int sak, int sbk,
                            int sbn, int i0, int j0, thread const E& epi) {
  smelt_mm_panel(A, sam, sak, 0, (device const float*)nullptr, A, sam, sak, K, B, sbk, sbn, 1.0f, M, N, i0, j0, epi);
}

// For B of 8 columns or fewer (a rank-8 factor, or its gradient): 6 rows of C per thread, each
// k one 8-float row of B in a vector register and six A values broadcast into it. Half the
// panel kernel's 16 columns would be zeros, and its loads checked column by column; a B of
// exactly 8 contiguous columns is read with no check at all.
template <typename T, typename T2, typename E>
inline void smelt_mm_narrow8(device const T* A, device const T2* B, int M, int N, int K, int sam, int sak, int sbk,
                             int sbn, int i0, thread const E& epi) {
  float acc[6][8];
  int arow[6];
  for (int r = 0; r < 6; ++r) {
    arow[r] = min(i0 + r, M - 1) * sam;  // rows past the edge repeat the last one and are not stored
    for (int c = 0; c < 8; ++c) acc[r][c] = 0.0f;
  }
  if (N == 8 && sbn == 1) {
    for (int k = 0; k < K; ++k) {
      float b[8];
      for (int c = 0; c < 8; ++c) b[c] = float(B[k * sbk + c]);
      for (int r = 0; r < 6; ++r) {
        float a = float(A[arow[r] + k * sak]);
        for (int c = 0; c < 8; ++c) acc[r][c] = fma(a, b[c], acc[r][c]);
      }
    }
  } else if (sbk == 1 && sak == 1) {
    // B stored transposed (a factor kept as [r, in], as PEFT keeps lora_A) and A's rows
    // contiguous: both run along k, so two rows at a time take 16 partial sums per column over
    // consecutive k (16 vector registers), where reading B's rows column by column gathers 8
    // values per k. Columns past N repeat the last one and are not stored.
    device const T2* bc[8];
    for (int c = 0; c < 8; ++c) bc[c] = B + min(c, N - 1) * sbn;
    for (int r0 = 0; r0 < 6; r0 += 2) {
      device const T* a0 = A + arow[r0];
      device const T* a1 = A + arow[r0 + 1];
      float s0[8][16], s1[8][16];
      for (int c = 0; c < 8; ++c)
        for (int l = 0; l < 16; ++l) s0[c][l] = s1[c][l] = 0.0f;
      int k = 0;
      for (; k + 16 <= K; k += 16)
        for (int c = 0; c < 8; ++c)
          for (int l = 0; l < 16; ++l) {
            float b = float(bc[c][k + l]);
            s0[c][l] = fma(float(a0[k + l]), b, s0[c][l]);
            s1[c][l] = fma(float(a1[k + l]), b, s1[c][l]);
          }
      for (int c = 0; c < 8; ++c) {
        // Left to right, a chain the compiler reduces within the register (as smelt_mm_lanes).
        float t0 = s0[c][0], t1 = s1[c][0];
        for (int l = 1; l < 16; ++l) t0 += s0[c][l], t1 += s1[c][l];
        for (int kk = k; kk < K; ++kk) {
          float b = float(bc[c][kk]);
          t0 = fma(float(a0[kk]), b, t0);
          t1 = fma(float(a1[kk]), b, t1);
        }
        acc[r0][c] = t0;
        acc[r0 + 1][c] = t1;
      }
    }
  } else {
    for (int k = 0; k < K; ++k) {
      float b[8];
      for (int c = 0; c < 8; ++c) b[c] = c < N ? float(B[k * sbk + c * sbn]) : 0.0f;
      for (int r = 0; r < 6; ++r) {
        float a = float(A[arow[r] + k * sak]);
        for (int c = 0; c < 8; ++c) acc[r][c] = fma(a, b[c], acc[r][c]);
      }
    }
  }
  for (int r = 0; r < 6; ++r)
    if (i0 + r < M)
      for (int c = 0; c < N; ++c) epi.store(acc[r][c], i0 + r, c);
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
    for (int r = 0; r < 8; ++r) acc[r] = fma(float(A[rows[r] + k * sak]), b, acc[r]);
  }
  for (int r = 0; r < 8; ++r)
    if (i0 + r < M) epi.store(acc[r], i0 + r, j);
}

// For CPUs, few rows of C whose operands both run along k (attention's q kᵀ while decoding):
// C[i, j] as 16 partial sums over consecutive k, which the host's compiler keeps in one vector
// register, the rest of K one at a time. A dot product summed k after k waits on each add.
template <typename T, typename T2, typename E>
inline void smelt_mm_lanes(device const T* A, device const T2* B, int K, int sam, int sbn, int i, int j, thread const E& epi) {
  device const T* a = A + i * sam;
  device const T2* b = B + j * sbn;
  float acc[16];
  for (int l = 0; l < 16; ++l) acc[l] = 0.0f;
  int k = 0;
  for (; k + 16 <= K; k += 16)
    for (int l = 0; l < 16; ++l) acc[l] = fma(float(a[k + l]), float(b[k + l]), acc[l]);
  // Left to right, a chain the compiler reduces within the register.
  float s = acc[0];
  for (int l = 1; l < 16; ++l) s += acc[l];
  for (; k < K; ++k) s = fma(float(a[k]), float(b[k]), s);
  epi.store(s, i, j);
}

// For CPUs, few rows of C with B's rows running along n (attention's weights times V while
// decoding): 16 consecutive columns of one row per thread, each k adding a[k] times 16 values
// of B's row into a vector of sums, even and odd k into two so that an add need not wait for
// the one before it. The last run of a row clamps its columns and stores those inside.
template <typename T, typename T2, typename E>
inline void smelt_mm_run(device const T* A, device const T2* B, int N, int K, int sam, int sak, int sbk, int i, int j0,
                         thread const E& epi) {
  float even[16], odd[16];
  for (int c = 0; c < 16; ++c) even[c] = odd[c] = 0.0f;
  device const T* a = A + i * sam;
  int k = 0;
  if (j0 + 16 <= N) {
    for (; k + 2 <= K; k += 2) {
      float a0 = float(a[k * sak]), a1 = float(a[(k + 1) * sak]);
      device const T2* b0 = B + k * sbk + j0;
      device const T2* b1 = b0 + sbk;
      for (int c = 0; c < 16; ++c) {
        even[c] = fma(a0, float(b0[c]), even[c]);
        odd[c] = fma(a1, float(b1[c]), odd[c]);
      }
    }
    for (; k < K; ++k)
      for (int c = 0; c < 16; ++c) even[c] = fma(float(a[k * sak]), float(B[k * sbk + j0 + c]), even[c]);
  } else {
    for (; k < K; ++k)
      for (int c = 0; c < 16; ++c) even[c] = fma(float(a[k * sak]), float(B[k * sbk + min(j0 + c, N - 1)]), even[c]);
  }
  for (int c = 0; c < 16; ++c)
    if (j0 + c < N) epi.store(even[c] + odd[c], i, j0 + c);
}

// For GPUs, B of 16 columns or fewer (a low-rank factor, or the product of a gradient with one):
// one SIMD-group per row i of C, its lanes taking every width-th k, each lane holding N partial
// sums that the group adds at the end. A tile of 32 columns would leave most of its work on
// columns that do not exist, and 32 rows per tile leave few threadgroups to fill the GPU with.
template <typename T, typename T2, typename E>
inline void smelt_mm_skinny(device const T* A, device const T2* B, int M, int N, int K, int sam, int sak, int sbk,
                            int sbn, int i, uint lane, uint width, thread const E& epi) {
  if (i >= M) return;  // the whole SIMD-group: i is the same for its lanes
  float acc[16];
  for (int c = 0; c < 16; ++c) acc[c] = 0.0f;
  // Four of a lane's k are loaded together, then summed in order (so the sum is the plain loop's,
  // bit for bit): with a long K (a low-rank factor's gradient sums over a batch's tokens) a lane
  // otherwise waited out one load's latency per k.
  int k = int(lane), w = int(width);
  for (; k + 3 * w < K; k += 4 * w) {
    float a[4], b[4][16];
    for (int u = 0; u < 4; ++u) {
      a[u] = float(A[i * sam + (k + u * w) * sak]);
      for (int c = 0; c < 16; ++c) b[u][c] = c < N ? float(B[(k + u * w) * sbk + c * sbn]) : 0.0f;
    }
    for (int u = 0; u < 4; ++u)
      for (int c = 0; c < 16; ++c)
        if (c < N) acc[c] = fma(a[u], b[u][c], acc[c]);
  }
  for (; k < K; k += w) {
    float a = float(A[i * sam + k * sak]);
    for (int c = 0; c < 16; ++c)
      if (c < N) acc[c] = fma(a, float(B[k * sbk + c * sbn]), acc[c]);
  }
  for (int c = 0; c < N; ++c) {
    float s = simd_sum(acc[c]);
    if (lane == uint(c) % width) epi.store(s, i, c);
  }
}

// For GPUs whose SIMD-group matrices of float are emulated (CUDA's: tensor cores would round
// float to tf32), the classic register-blocked product: 256 threads (16 x 16) share a tile of
// 16TM x 16TM elements of C, each thread holding TM x TM of them in registers, so that every value
// it reads from threadgroup memory serves TM multiply-adds. A and B come through threadgroup
// memory in slices of 8 along K, stored k-major (a row of As holds the tile's 16TM values of A at
// one k), so that a thread's TM values at one k are TM/4 float4 reads. Its rows (and columns) are
// in groups of 4 that are 64 apart: the 16 threads of a row of the grid then read 16 consecutive
// float4s, which threadgroup memory serves without bank conflicts. While the threads multiply
// one slice, the next one's values wait in their registers, and go to the other half of the
// double-buffered threadgroup memory: one barrier per slice. Within a slice, the values of the
// next k are read while the products of this one are summed. Rows are padded by 4 floats so the
// stores of a slice read along k (A row-major, B transposed) fall in different banks.
constant int SMELT_MM_SLICE = 8;
constant int SMELT_MM_PAD = 4;

// One operand's share of a slice, X[pos * sx + k * sk] for the tile's 16TM positions from pos0 and
// 8 k from k0, through registers r (loaded by fetch while the threads multiply the slice before,
// stored by stash after it). V (a separate kernel, decided by the caller from the offsets and
// strides): one of the strides is 1, and 4 consecutive elements along it are 16-byte aligned; each
// thread then moves 4-vectors (4 positions where sx is 1, else 4 k), a quarter of the loads,
// and checks the bounds once for the 4 (one at a time only where they straddle an edge).
// Otherwise loads of one element each, checked; consecutive threads take consecutive
// addresses along k where it is the unit stride, else across the tile.
//
// Vector v of a slice as (position across the tile, k). Along k, a SIMD-group's 32 take 16
// positions, both 4-vectors of each: 32 bytes of each row, and its stores of one k fall in
// different banks (rows of the slice 4 k apart are 16 banks apart).
template <int TM>
inline int2 smelt_mm_block_vector_slot(int v, int sx) {
  return sx == 1 ? int2((v % (4 * TM)) * 4, v / (4 * TM)) : int2(v / 2, (v % 2) * 4);
}

template <int TM>
inline int2 smelt_mm_block_slot(int e, int sk) {
  return sk == 1 ? int2(e / SMELT_MM_SLICE, e % SMELT_MM_SLICE) : int2(e % (16 * TM), e / (16 * TM));
}

// Per thread and slice: TM / 2 elements, in as many loads, or a quarter as many 4-vectors (rounded up).
template <int TM> constexpr int smelt_mm_block_elements() { return TM * SMELT_MM_SLICE / 16; }
template <int TM> constexpr int smelt_mm_block_vectors() { return (smelt_mm_block_elements<TM>() + 3) / 4; }

// Four consecutive elements from a 16-byte (8 for half and bfloat) aligned address, as one load:
// the 2-byte types are read as the bits of two words.
inline float4 smelt_mm_load4(device const float* p) { return *((device const float4*)p); }
inline float4 smelt_mm_load4(device const half* p) { return float4(as_type<half4>(*((device const uint2*)p))); }
#if __METAL_VERSION__ >= 310  // bfloat is MSL 3.1
inline float4 smelt_mm_load4(device const bfloat* p) { return float4(as_type<bfloat4>(*((device const uint2*)p))); }
#endif

template <int TM, bool V, typename T>
inline void smelt_mm_block_fetch(device const T* X, int extent, int K, int sx, int sk, int pos0, int k0, uint tid,
                                 thread float* r) {
  if (V) {
    for (int q = 0; q < smelt_mm_block_vectors<TM>(); ++q) {
      int v = q * 256 + int(tid);
      if (v >= 4 * TM * SMELT_MM_SLICE) break;  // TM 4: a slice is 128 vectors
      int2 p = smelt_mm_block_vector_slot<TM>(v, sx);
      int x = pos0 + p.x, k = k0 + p.y;
      device const T* at = X + x * sx + k * sk;
      bool along = sx == 1;  // the 4 run across the tile, else along k
      if (along ? x + 3 < extent && k < K : x < extent && k + 3 < K) {
        float4 f = smelt_mm_load4(at);
        r[4 * q] = f.x; r[4 * q + 1] = f.y; r[4 * q + 2] = f.z; r[4 * q + 3] = f.w;
      } else {
        for (int e = 0; e < 4; ++e)
          r[4 * q + e] = (along ? x + e < extent && k < K : x < extent && k + e < K) ? float(at[e]) : 0.0f;
      }
    }
    return;
  }
  for (int q = 0; q < smelt_mm_block_elements<TM>(); ++q) {
    int2 a = smelt_mm_block_slot<TM>(q * 256 + int(tid), sk);
    int x = pos0 + a.x, k = k0 + a.y;
    r[q] = x < extent && k < K ? float(X[x * sx + k * sk]) : 0.0f;
  }
}

template <int TM, bool V>
inline void smelt_mm_block_stash(threadgroup float* S, int sx, int sk, uint tid, thread const float* r) {
  const int LD = 16 * TM + SMELT_MM_PAD;
  if (V) {
    for (int q = 0; q < smelt_mm_block_vectors<TM>(); ++q) {
      int v = q * 256 + int(tid);
      if (v >= 4 * TM * SMELT_MM_SLICE) break;
      int2 p = smelt_mm_block_vector_slot<TM>(v, sx);
      if (sx == 1) {
        *((threadgroup float4*)(S + p.y * LD + p.x)) = float4(r[4 * q], r[4 * q + 1], r[4 * q + 2], r[4 * q + 3]);
      } else {
        for (int e = 0; e < 4; ++e) S[(p.y + e) * LD + p.x] = r[4 * q + e];
      }
    }
    return;
  }
  for (int q = 0; q < smelt_mm_block_elements<TM>(); ++q) {
    int2 a = smelt_mm_block_slot<TM>(q * 256 + int(tid), sk);
    S[a.y * LD + a.x] = r[q];
  }
}

// A thread's TM values of one k of a slice (As or Bs), from position t * 4 in groups 64 apart.
template <int TM>
inline void smelt_mm_block_values(threadgroup const float* row, int t, thread float* v) {
  for (int g = 0; g < TM / 4; ++g) {
    float4 f = *((threadgroup const float4*)(row + g * 64 + t * 4));
    v[4 * g] = f.x; v[4 * g + 1] = f.y; v[4 * g + 2] = f.z; v[4 * g + 3] = f.w;
  }
}

// As and Bs hold 2 x 8 x (16TM + 4) floats each. VA and VB: A and B move in 4-vectors.
template <int TM, bool VA, bool VB, typename T, typename T2, typename E>
inline void smelt_mm_block(device const T* A, device const T2* B, int M, int N, int K, int sam, int sak, int sbk,
                           int sbn, thread const E& epi, threadgroup float* As, threadgroup float* Bs, uint2 tile,
                           uint tid) {
  const int BM = 16 * TM, LD = BM + SMELT_MM_PAD, HALF = SMELT_MM_SLICE * LD;
  const int R = smelt_mm_block_vectors<TM>() * 4;  // at least the elements: registers either way
  int row0 = int(tile.y) * BM, col0 = int(tile.x) * BM;
  int ty = int(tid) / 16, tx = int(tid) % 16;
  float acc[TM][TM];
  for (int r = 0; r < TM; ++r)
    for (int c = 0; c < TM; ++c) acc[r][c] = 0.0f;
  float ra[R], rb[R];
  smelt_mm_block_fetch<TM, VA>(A, M, K, sam, sak, row0, 0, tid, ra);
  smelt_mm_block_fetch<TM, VB>(B, N, K, sbn, sbk, col0, 0, tid, rb);
  smelt_mm_block_stash<TM, VA>(As, sam, sak, tid, ra);
  smelt_mm_block_stash<TM, VB>(Bs, sbn, sbk, tid, rb);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  int slices = (K + SMELT_MM_SLICE - 1) / SMELT_MM_SLICE;
  for (int s = 0; s < slices; ++s) {
    threadgroup const float* as = As + (s % 2) * HALF;
    threadgroup const float* bs = Bs + (s % 2) * HALF;
    if (s + 1 < slices) {
      smelt_mm_block_fetch<TM, VA>(A, M, K, sam, sak, row0, (s + 1) * SMELT_MM_SLICE, tid, ra);
      smelt_mm_block_fetch<TM, VB>(B, N, K, sbn, sbk, col0, (s + 1) * SMELT_MM_SLICE, tid, rb);
    }
    float a[2][TM], b[2][TM];
    smelt_mm_block_values<TM>(as, ty, a[0]);
    smelt_mm_block_values<TM>(bs, tx, b[0]);
#pragma unroll
    for (int k = 0; k < SMELT_MM_SLICE; ++k) {
      int cur = k % 2;
      if (k + 1 < SMELT_MM_SLICE) {
        smelt_mm_block_values<TM>(as + (k + 1) * LD, ty, a[1 - cur]);
        smelt_mm_block_values<TM>(bs + (k + 1) * LD, tx, b[1 - cur]);
      }
      for (int r = 0; r < TM; ++r)
        for (int c = 0; c < TM; ++c) acc[r][c] = fma(a[cur][r], b[cur][c], acc[r][c]);
    }
    if (s + 1 < slices) {
      smelt_mm_block_stash<TM, VA>(As + ((s + 1) % 2) * HALF, sam, sak, tid, ra);
      smelt_mm_block_stash<TM, VB>(Bs + ((s + 1) % 2) * HALF, sbn, sbk, tid, rb);
      threadgroup_barrier(mem_flags::mem_threadgroup);
    }
  }
  for (int r = 0; r < TM; ++r) {
    int i = row0 + (r / 4) * 64 + ty * 4 + r % 4;
    if (i >= M) continue;
    for (int c = 0; c < TM; ++c) {
      int j = col0 + (c / 4) * 64 + tx * 4 + c % 4;
      if (j < N) epi.store(acc[r][c], i, j);
    }
  }
}

