// The prelude of every kernel smelt generates: the functions MSL lacks, with NumPy's semantics.
// Everything here computes in float; callers round to the element type afterwards.
#include <metal_stdlib>
using namespace metal;

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

// Inverse of erf on (-1, 1): Giles' single-precision approximation; ±1 give ±inf.
inline float smelt_erfinv(float x) {
  if (fabs(x) >= 1.0f) return fabs(x) == 1.0f ? copysign(INFINITY, x) : NAN;
  float w = -log((1.0f - x) * (1.0f + x));
  float p;
  if (w < 5.0f) {
    w = w - 2.5f;
    p = 2.81022636e-08f;
    p = 3.43273939e-07f + p * w;
    p = -3.5233877e-06f + p * w;
    p = -4.39150654e-06f + p * w;
    p = 0.00021858087f + p * w;
    p = -0.00125372503f + p * w;
    p = -0.00417768164f + p * w;
    p = 0.246640727f + p * w;
    p = 1.50140941f + p * w;
  } else {
    w = sqrt(w) - 3.0f;
    p = -0.000200214257f;
    p = 0.000100950558f + p * w;
    p = 0.00134934322f + p * w;
    p = -0.00367342844f + p * w;
    p = 0.00573950773f + p * w;
    p = -0.0076224613f + p * w;
    p = 0.00943887047f + p * w;
    p = 1.00167406f + p * w;
    p = 2.83297682f + p * w;
  }
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
template <typename Op> inline float smelt_row_fold(float v, threadgroup float* partial, uint lane, uint sg, uint nsg) {
  v = Op::simd(v);
  if (lane == 0) partial[sg] = v;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  float t = Op::simd(lane < nsg ? partial[lane] : Op::identity());
  threadgroup_barrier(mem_flags::mem_threadgroup);
  return t;
}
