// int, uint and bool: scalars, int4, uint2 and bool2.
#include <metal_stdlib>
using namespace metal;

// Integer scalars and vectors. Sixteen ints and eight uints per element.
kernel void vec_int(device const int* a [[buffer(0)]],
                    device const int* b [[buffer(1)]],
                    device int* oi [[buffer(2)]],
                    device uint* ou [[buffer(3)]],
                    uint i [[thread_position_in_grid]]) {
  const int x = a[i];
  const int y = b[i];  // never zero
  device int* o = oi + i * 16;
  o[0] = x + y;
  o[1] = x - y;
  o[2] = x * y;
  o[3] = x / y;  // truncates toward zero
  o[4] = x % y;  // sign of the dividend
  o[5] = x >> 3;
  o[6] = (x & y) ^ (x | 7);
  o[7] = ~x;
  o[8] = abs(x);
  o[9] = min(x, y);
  o[10] = max(x, y);
  o[11] = clamp(x, -100, 100);

  const int4 v = int4(x, y, -x, x * 2);
  const int4 w = v / int4(3) + int4(1, 2, 3, 4) * v.wzyx;
  o[12] = w.x;
  o[13] = w.y;
  o[14] = w.z;
  o[15] = w.w;

  const uint ux = as_type<uint>(x);
  const uint uy = as_type<uint>(y);
  device uint* p = ou + i * 8;
  p[0] = ux >> 3;
  p[1] = ux * 2654435761u;  // wraps modulo 2^32
  p[2] = ux + uy;
  p[3] = popcount(ux);
  p[4] = clz(ux);
  p[5] = ctz(ux);
  const uint2 u2 = uint2(ux, uy) % uint2(7u, 1000u);
  const bool2 gt = int2(x, y) > int2(0);
  p[6] = u2.x * 1000u + u2.y;
  p[7] = uint(gt.x) | (uint(gt.y) << 1) | (uint(x == y) << 2) | (uint(any(gt)) << 3) | (uint(all(gt)) << 4);
}
