// The prelude of every kernel smelt generates: the functions MSL lacks, with NumPy's semantics.
// Everything here computes in float; callers round to the element type afterwards.
#include <metal_stdlib>
using namespace metal;

// n / d for an index 0 <= n < 2^31, from d's magic numbers m and s (builder.ts divisionMagic).
inline int smelt_udiv(int n, uint m, uint s) { return int((ulong(uint(n)) * ulong(m)) >> s); }

// exp(x) - 1 and log(1 + x) without cancellation near 0 (Kahan's correction).
inline float smelt_expm1(float x) {
  float u = exp(x);
  if (u == 1.0f) return x;
  float um1 = u - 1.0f;
  if (um1 == -1.0f) return -1.0f;
  if (isinf(u)) return u;
  return um1 * x / log(u);
}
inline float smelt_log1p(float x) {
  float u = 1.0f + x;
  if (u == 1.0f) return x;
  if (u == INFINITY) return u;
  return log(u) * x / (u - 1.0f);
}

// erf: Norbert Juffa's faithfully rounded erff (under 1 ulp on each branch; also MLX's). The
// Abramowitz-Stegun form used before was off by up to 7 ulps near |x| = 0.5.
inline float smelt_erf(float a) {
  float t = fabs(a);
  float s = a * a;
  float r;
  if (t > 0.927734375f) {
    r = fma(-1.72853470e-5f, t, 3.83197126e-4f);
    float u = fma(-3.88396438e-3f, t, 2.42546219e-2f);
    r = fma(r, s, u);
    r = fma(r, t, -1.06777877e-1f);
    r = fma(r, t, -6.34846687e-1f);
    r = fma(r, t, -1.28717512e-1f);
    r = fma(r, t, -t);
    r = -smelt_expm1(r);
    return copysign(r, a);
  }
  r = -5.96761703e-4f;
  r = fma(r, s, 4.99119423e-3f);
  r = fma(r, s, -2.67681349e-2f);
  r = fma(r, s, 1.12819925e-1f);
  r = fma(r, s, -3.76125336e-1f);
  r = fma(r, s, 1.28379166e-1f);
  return fma(r, a, a);
}

// Inverse of erf: ±1 give ±inf, |x| > 1 NaN. Inside (-1, 1), to about 2e-7 relative, with
// w = -log(1 - x^2):
//   w < 5:  erfinv(x) = x * P(w - 2.5)
//   w >= 5: erfinv(x) = x * Q(sqrt(w) - 3)
// P and Q are degree-9 polynomials fitted for smelt (weighted least squares for relative error at
// Chebyshev nodes of w in [0, 5] and [5, 17]; w stays below 16.7 for any float x with |x| < 1),
// evaluated with fma in Horner form. 1 - x^2 is fma(-x, x, 1): rounded once, exact up to that.
// sm.random's normals are sqrt(2) * smelt_erfinv(uniform) (metal/random.metal), and
// src/tensor/random-reference.ts repeats this arithmetic exactly: change them together.
inline float smelt_erfinv_small(float t) {
  float p = -8.941444918e-09f;
  p = fma(p, t, 2.326478210e-08f);
  p = fma(p, t, 4.682674160e-07f);
  p = fma(p, t, -3.463092753e-06f);
  p = fma(p, t, -4.973071555e-06f);
  p = fma(p, t, 2.183458855e-04f);
  p = fma(p, t, -1.252725255e-03f);
  p = fma(p, t, -4.177388269e-03f);
  p = fma(p, t, 2.466402799e-01f);
  p = fma(p, t, 1.501409411e+00f);
  return p;
}

inline float smelt_erfinv_large(float t) {
  float p = 1.101428134e-04f;
  p = fma(p, t, -3.048501385e-04f);
  p = fma(p, t, -4.810651444e-05f);
  p = fma(p, t, 1.479093102e-03f);
  p = fma(p, t, -3.602302400e-03f);
  p = fma(p, t, 5.689296871e-03f);
  p = fma(p, t, -7.636175957e-03f);
  p = fma(p, t, 9.445015341e-03f);
  p = fma(p, t, 1.001674891e+00f);
  p = fma(p, t, 2.832976818e+00f);
  return p;
}

inline float smelt_erfinv(float x) {
  if (!(fabs(x) < 1.0f)) return fabs(x) == 1.0f ? copysign(INFINITY, x) : NAN;
  float w = -precise::log(fma(-x, x, 1.0f));
  float p = w < 5.0f ? smelt_erfinv_small(w - 2.5f) : smelt_erfinv_large(precise::sqrt(w) - 3.0f);
  return p * x;
}

// NumPy's power: a negative base with an integral exponent is defined.
inline float smelt_pow(float a, float b) {
  if (a < 0.0f && b == floor(b)) {
    float r = pow(-a, b);
    return fmod(fabs(b), 2.0f) == 1.0f ? -r : r;
  }
  return pow(a, b);
}
inline int smelt_ipow(int a, int b) {
  if (b < 0) return a == 1 ? 1 : (a == -1 ? ((b & 1) ? -1 : 1) : 0);
  int r = 1;
  while (b > 0) {
    if (b & 1) r *= a;
    a *= a;
    b >>= 1;
  }
  return r;
}

// Python's floor division and remainder (the result takes the divisor's sign), computed together
// as NumPy's npy_divmod does: the quotient comes from a - fmod(a, b), which is nearly an exact
// multiple of b, so 1 // 0.1 is 9 (floor(1 / 0.1) would round up to 10) and a == b * q + r holds.
// Integer division by zero gives 0 rather than a fault.
inline float smelt_floordiv(float a, float b) {
  if (b == 0.0f) return a / b;
  float mod = fmod(a, b);
  float div = (a - mod) / b;
  if (mod != 0.0f && ((b < 0.0f) != (mod < 0.0f))) div -= 1.0f;
  if (div == 0.0f) return copysign(0.0f, a / b);
  float q = floor(div);
  return div - q > 0.5f ? q + 1.0f : q;
}
inline float smelt_mod(float a, float b) {
  float r = fmod(a, b);
  if (b == 0.0f) return r;
  if (r == 0.0f) return copysign(0.0f, b);
  return ((b < 0.0f) != (r < 0.0f)) ? r + b : r;
}
template <typename T> inline T smelt_ifloordiv(T a, T b) {
  if (b == T(0)) return T(0);
  T q = a / b;
  return (a % b != T(0) && ((a < T(0)) != (b < T(0)))) ? T(q - T(1)) : q;
}
template <typename T> inline T smelt_imod(T a, T b) {
  if (b == T(0)) return T(0);
  T r = a % b;
  return (r != T(0) && ((r < T(0)) != (b < T(0)))) ? T(r + b) : r;
}

// maximum and minimum propagate NaN, as NumPy's do.
inline float smelt_fmax(float a, float b) { return (isnan(a) || isnan(b)) ? NAN : max(a, b); }
inline float smelt_fmin(float a, float b) { return (isnan(a) || isnan(b)) ? NAN : min(a, b); }

// Reductions across the threads of a threadgroup, for kernels that give each row a threadgroup:
// over each SIMD-group, then the SIMD-groups' results through threadgroup memory, so that every
// thread ends with the row's result. Only lanes that exist take part, so threadgroups of any
// size work. NaN propagates through max and min as it does in the elementwise ops.
struct smelt_fold_sum {
  static float identity() { return 0.0f; }
  static float combine(float a, float b) { return a + b; }
  static float simd(float v) { return simd_sum(v); }
};
struct smelt_fold_prod {
  static float identity() { return 1.0f; }
  static float combine(float a, float b) { return a * b; }
  static float simd(float v) { return simd_product(v); }
};
struct smelt_fold_max {
  static float identity() { return -INFINITY; }
  static float combine(float a, float b) { return smelt_fmax(a, b); }
  static float simd(float v) { return simd_any(isnan(v)) ? NAN : simd_max(v); }
};
struct smelt_fold_min {
  static float identity() { return INFINITY; }
  static float combine(float a, float b) { return smelt_fmin(a, b); }
  static float simd(float v) { return simd_any(isnan(v)) ? NAN : simd_min(v); }
};
// Pairwise accumulation within a thread: the results of equal blocks of elements are pushed
// like the digits of a binary counter, two of a level combining into one of the next, so an
// element passes through about log2(blocks) additions after its block instead of one per block
// (float32 error growing like log n, not n). level holds one partial result per bit of count.
template <typename Op> inline void smelt_pairwise_push(thread float* level, thread uint& count, float v) {
  uint k = count++;
  int l = 0;
  for (; (k & 1u) != 0u; k >>= 1, ++l) v = Op::combine(level[l], v);
  level[l] = v;
}
template <typename Op> inline float smelt_pairwise_total(thread const float* level, uint count) {
  float s = Op::identity();
  for (int l = 0; l < 32; ++l) if (((count >> l) & 1u) != 0u) s = Op::combine(level[l], s);
  return s;
}
// The same for eight running results at once (a CPU thread's vector lanes): level holds 8 per bit.
template <typename Op> inline void smelt_pairwise_push8(thread float* level, thread uint& count, thread float* v) {
  uint k = count++;
  int l = 0;
  for (; (k & 1u) != 0u; k >>= 1, ++l)
    for (int u = 0; u < 8; ++u) v[u] = Op::combine(level[l * 8 + u], v[u]);
  for (int u = 0; u < 8; ++u) level[l * 8 + u] = v[u];
}
template <typename Op> inline float smelt_pairwise_total8(thread const float* level, uint count) {
  float lanes[8];
  for (int u = 0; u < 8; ++u) lanes[u] = Op::identity();
  for (int l = 0; l < 32; ++l)
    if (((count >> l) & 1u) != 0u)
      for (int u = 0; u < 8; ++u) lanes[u] = Op::combine(level[l * 8 + u], lanes[u]);
  return Op::combine(Op::combine(Op::combine(lanes[0], lanes[1]), Op::combine(lanes[2], lanes[3])),
                     Op::combine(Op::combine(lanes[4], lanes[5]), Op::combine(lanes[6], lanes[7])));
}
template <typename Op> inline float smelt_row_fold(float v, threadgroup float* partial, uint lane, uint sg, uint nsg) {
  v = Op::simd(v);
  if (lane == 0) partial[sg] = v;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  float t = Op::simd(lane < nsg ? partial[lane] : Op::identity());
  threadgroup_barrier(mem_flags::mem_threadgroup);
  return t;
}
