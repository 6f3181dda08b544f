// Counter-based random numbers for sm.random: Threefry-2x32 with 20 rounds (Salmon et al., "Parallel
// random numbers: as easy as 1, 2, 3", SC 2011), the generator JAX and MLX use. Everything up to the
// final float transform is uint32 arithmetic, so the bits are the same on every backend;
// src/tensor/random-reference.ts is the exact JS reference and docs/random.md the specification.
//
// A key is two uint32 words (k0, k1), bound at [[buffer(0)]] as constant bytes or as a device buffer
// (at an offset) holding keys that random_split wrote.
//
// The bit stream of n words under a key: let half = ceil(n / 2). Block j in [0, half) encrypts the
// counter pair (j, j + half) and gives output words j (first word of the block) and j + half (second
// word, dropped when j + half == n, which happens only for the last block of an odd n). Every kernel
// below runs one thread per block (a grid of at least half threads; extra threads do nothing) and
// element i of its output is made from word i of this stream, one 32-bit word per element for every
// output type.
//
// Compiled after metal/prelude.metal (src/tensor/random.ts), which brings metal_stdlib and the
// erfinv the normals use.

// ---------------------------------------------------------------------------------------------------
// Threefry-2x32-20

inline uint rotl32(uint x, uint r) {
  return (x << r) | (x >> (32u - r));
}

// Four rounds of mix: x0 += x1; x1 = rotl(x1, r) ^ x0.
inline uint2 four_rounds(uint2 x, uint r0, uint r1, uint r2, uint r3) {
  x.x += x.y; x.y = rotl32(x.y, r0) ^ x.x;
  x.x += x.y; x.y = rotl32(x.y, r1) ^ x.x;
  x.x += x.y; x.y = rotl32(x.y, r2) ^ x.x;
  x.x += x.y; x.y = rotl32(x.y, r3) ^ x.x;
  return x;
}

// Rotation constants alternate between the two sets of four; after every four rounds the key schedule
// injects (ks[s % 3], ks[(s + 1) % 3] + s) for s = 1..5, where ks2 = k0 ^ k1 ^ 0x1BD11BDA.
inline uint2 threefry2x32(uint2 key, uint2 counter) {
  uint ks0 = key.x;
  uint ks1 = key.y;
  uint ks2 = key.x ^ key.y ^ 0x1BD11BDAu;
  uint2 x = counter + uint2(ks0, ks1);
  x = four_rounds(x, 13u, 15u, 26u, 6u);
  x += uint2(ks1, ks2 + 1u);
  x = four_rounds(x, 17u, 29u, 16u, 24u);
  x += uint2(ks2, ks0 + 2u);
  x = four_rounds(x, 13u, 15u, 26u, 6u);
  x += uint2(ks0, ks1 + 3u);
  x = four_rounds(x, 17u, 29u, 16u, 24u);
  x += uint2(ks1, ks2 + 4u);
  x = four_rounds(x, 13u, 15u, 26u, 6u);
  x += uint2(ks2, ks0 + 5u);
  return x;
}

// Written without n + 1, which overflows for n = 2^32 - 1.
inline uint half_count(uint n) {
  return n / 2u + (n & 1u);
}

inline uint2 stream_block(constant uint* key, uint j, uint half_n) {
  return threefry2x32(uint2(key[0], key[1]), uint2(j, j + half_n));
}

// ---------------------------------------------------------------------------------------------------
// Raw bits and keys

// out[0..n) = the bit stream of n words.
kernel void random_bits(constant uint* key [[buffer(0)]],
                        device uint* out [[buffer(1)]],
                        constant uint& n [[buffer(2)]],
                        uint j [[thread_position_in_grid]]) {
  uint half_n = half_count(n);
  if (j >= half_n) return;
  uint2 b = stream_block(key, j, half_n);
  out[j] = b.x;
  if (j + half_n < n) out[j + half_n] = b.y;
}

// out[i] = threefry2x32(key, counters[i]) for n counter pairs: the block function itself, for callers
// that choose their own counters (and for the known-answer tests).
kernel void random_threefry(constant uint* key [[buffer(0)]],
                            device const uint2* counters [[buffer(1)]],
                            device uint2* out [[buffer(2)]],
                            constant uint& n [[buffer(3)]],
                            uint i [[thread_position_in_grid]]) {
  if (i >= n) return;
  out[i] = threefry2x32(uint2(key[0], key[1]), counters[i]);
}

// num new keys: key i = (word 2i, word 2i + 1) of the bit stream of 2 * num words, so out holds
// 2 * num uint32 and is exactly random_bits(key, 2 * num). Grid: num threads.
kernel void random_split(constant uint* key [[buffer(0)]],
                         device uint* out [[buffer(1)]],
                         constant uint& num [[buffer(2)]],
                         uint j [[thread_position_in_grid]]) {
  if (j >= num) return;
  uint2 b = stream_block(key, j, num);
  out[j] = b.x;
  out[j + num] = b.y;
}

// ---------------------------------------------------------------------------------------------------
// Float transforms

// The top 23 bits as the mantissa of a float in [1, 2), minus 1: a float in [0, 1) on a grid of 2^-23,
// exact in every step.
inline float unit_float(uint bits) {
  return as_type<float>((bits >> 9) | 0x3f800000u) - 1.0f;
}

// The largest float below x (x finite or +inf).
inline float float_below(float x) {
  uint b = as_type<uint>(x);
  if (x > 0.0f) return as_type<float>(b - 1u);
  if (x < 0.0f) return as_type<float>(b + 1u);
  return as_type<float>(0x80000001u);
}

// uniform in [low, high) in float: fma(high - low, u, low), at most the largest float below high.
// fma is written out so that no compiler can choose between fused and unfused rounding.
inline float uniform_float(uint bits, float low, float high) {
  float v = fma(high - low, unit_float(bits), low);
  return min(v, float_below(high));
}

// Rounding a float in [low, high) to a 16-bit type can reach high; such values become the largest
// value of the type below high (one step down from high rounded to the type, if that is not below).
inline half half_below(float high) {
  half h = half(high);
  if (float(h) < high) return h;
  ushort b = as_type<ushort>(h);
  if (float(h) > 0.0f) return as_type<half>(ushort(b - 1));
  if (float(h) < 0.0f) return as_type<half>(ushort(b + 1));
  return as_type<half>(ushort(0x8001));
}

#if __METAL_VERSION__ >= 310  // bfloat is MSL 3.1 (macOS 14); macOS 13 compiles this file as 3.0
inline bfloat bfloat_below(float high) {
  bfloat h = bfloat(high);
  if (float(h) < high) return h;
  ushort b = as_type<ushort>(h);
  if (float(h) > 0.0f) return as_type<bfloat>(ushort(b - 1));
  if (float(h) < 0.0f) return as_type<bfloat>(ushort(b + 1));
  return as_type<bfloat>(ushort(0x8001));
}
#endif

inline void store_below(device float* out, uint i, float v, float high) {
  out[i] = v;
}

inline void store_below(device half* out, uint i, float v, float high) {
  half h = half(v);
  out[i] = float(h) < high ? h : half_below(high);
}

#if __METAL_VERSION__ >= 310
inline void store_below(device bfloat* out, uint i, float v, float high) {
  bfloat h = bfloat(v);
  out[i] = float(h) < high ? h : bfloat_below(high);
}
#endif

struct UniformArgs {
  uint n;
  float low;
  float high;
};

// out[i] = uniform in [low, high) from word i, rounded to T (ties to even) and kept below high.
template <typename T>
kernel void random_uniform(constant uint* key [[buffer(0)]],
                           device T* out [[buffer(1)]],
                           constant UniformArgs& a [[buffer(2)]],
                           uint j [[thread_position_in_grid]]) {
  uint half_n = half_count(a.n);
  if (j >= half_n) return;
  uint2 b = stream_block(key, j, half_n);
  store_below(out, j, uniform_float(b.x, a.low, a.high), a.high);
  if (j + half_n < a.n) store_below(out, j + half_n, uniform_float(b.y, a.low, a.high), a.high);
}

template [[host_name("random_uniform_float")]] kernel void random_uniform<float>(
    constant uint* key [[buffer(0)]], device float* out [[buffer(1)]],
    constant UniformArgs& a [[buffer(2)]], uint j [[thread_position_in_grid]]);
template [[host_name("random_uniform_half")]] kernel void random_uniform<half>(
    constant uint* key [[buffer(0)]], device half* out [[buffer(1)]],
    constant UniformArgs& a [[buffer(2)]], uint j [[thread_position_in_grid]]);
#if __METAL_VERSION__ >= 310
template [[host_name("random_uniform_bfloat")]] kernel void random_uniform<bfloat>(
    constant uint* key [[buffer(0)]], device bfloat* out [[buffer(1)]],
    constant UniformArgs& a [[buffer(2)]], uint j [[thread_position_in_grid]]);
#endif

// sqrt(2) rounded to float.
constant float RANDOM_SQRT2 = 1.41421354f;

// The float uniform in [-1 + 2^-24, 1) whose erfinv (metal/prelude.metal) times sqrt(2) is a
// standard normal; never +-1.
inline float standard_normal(uint bits) {
  return RANDOM_SQRT2 * smelt_erfinv(uniform_float(bits, -0.99999994f, 1.0f));
}

inline void store(device float* out, uint i, float v) { out[i] = v; }
inline void store(device half* out, uint i, float v) { out[i] = half(v); }
#if __METAL_VERSION__ >= 310
inline void store(device bfloat* out, uint i, float v) { out[i] = bfloat(v); }
#endif

struct NormalArgs {
  uint n;
  float loc;
  float scale;
};

// out[i] = T(fma(scale, standard normal from word i, loc)).
template <typename T>
kernel void random_normal(constant uint* key [[buffer(0)]],
                          device T* out [[buffer(1)]],
                          constant NormalArgs& a [[buffer(2)]],
                          uint j [[thread_position_in_grid]]) {
  uint half_n = half_count(a.n);
  if (j >= half_n) return;
  uint2 b = stream_block(key, j, half_n);
  store(out, j, fma(a.scale, standard_normal(b.x), a.loc));
  if (j + half_n < a.n) store(out, j + half_n, fma(a.scale, standard_normal(b.y), a.loc));
}

template [[host_name("random_normal_float")]] kernel void random_normal<float>(
    constant uint* key [[buffer(0)]], device float* out [[buffer(1)]],
    constant NormalArgs& a [[buffer(2)]], uint j [[thread_position_in_grid]]);
template [[host_name("random_normal_half")]] kernel void random_normal<half>(
    constant uint* key [[buffer(0)]], device half* out [[buffer(1)]],
    constant NormalArgs& a [[buffer(2)]], uint j [[thread_position_in_grid]]);
#if __METAL_VERSION__ >= 310
template [[host_name("random_normal_bfloat")]] kernel void random_normal<bfloat>(
    constant uint* key [[buffer(0)]], device bfloat* out [[buffer(1)]],
    constant NormalArgs& a [[buffer(2)]], uint j [[thread_position_in_grid]]);
#endif

// ---------------------------------------------------------------------------------------------------
// Integers and booleans

struct RandintArgs {
  uint n;
  int low;
  int high;
};

// out[i] = low + mulhi(word i, high - low): the high 32 bits of the 64-bit product, so every value of
// [low, high) comes from floor(2^32 / range) or ceil(2^32 / range) words (a bias of at most
// range / 2^32, none when range is a power of two). The caller ensures high > low; range is computed
// in uint, so any int32 range up to 2^32 - 1 works.
kernel void random_randint(constant uint* key [[buffer(0)]],
                           device int* out [[buffer(1)]],
                           constant RandintArgs& a [[buffer(2)]],
                           uint j [[thread_position_in_grid]]) {
  uint half_n = half_count(a.n);
  if (j >= half_n) return;
  uint2 b = stream_block(key, j, half_n);
  uint low = as_type<uint>(a.low);
  uint range = as_type<uint>(a.high) - low;
  out[j] = as_type<int>(low + mulhi(b.x, range));
  if (j + half_n < a.n) out[j + half_n] = as_type<int>(low + mulhi(b.y, range));
}

struct BernoulliArgs {
  uint n;
  float p;
};

// out[i] = 1 if the float uniform in [0, 1) from word i is below p, else 0 (one byte per element,
// as bool arrays are stored). p <= 0 gives all 0, p >= 1 all 1.
kernel void random_bernoulli(constant uint* key [[buffer(0)]],
                             device uchar* out [[buffer(1)]],
                             constant BernoulliArgs& a [[buffer(2)]],
                             uint j [[thread_position_in_grid]]) {
  uint half_n = half_count(a.n);
  if (j >= half_n) return;
  uint2 b = stream_block(key, j, half_n);
  out[j] = unit_float(b.x) < a.p ? uchar(1) : uchar(0);
  if (j + half_n < a.n) out[j + half_n] = unit_float(b.y) < a.p ? uchar(1) : uchar(0);
}
