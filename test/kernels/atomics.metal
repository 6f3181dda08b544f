// Atomics with memory_order_relaxed: device atomic_uint, atomic_int and atomic_float, threadgroup
// atomics declared in the kernel body, and compare-exchange loops.
#include <metal_stdlib>
using namespace metal;

// Counters (device atomic_uint, the caller zeroes them): [0] compare-exchange increments by 2,
// [1] fetch_max of the thread index, [2] ends as 0xC0FFEE, stored by the last thread.
kernel void atomics_device(device const int* vals [[buffer(0)]],
                           device atomic_uint* hist [[buffer(1)]],
                           device atomic_int* extremes [[buffer(2)]],
                           device atomic_float* fsum [[buffer(3)]],
                           device atomic_uint* slot [[buffer(4)]],
                           device uint* prev [[buffer(5)]],
                           device atomic_uint* counters [[buffer(6)]],
                           constant uint& n [[buffer(7)]],
                           uint i [[thread_position_in_grid]]) {
  const int v = vals[i];
  atomic_fetch_add_explicit(&hist[uint(v) & 15u], 1u, memory_order_relaxed);
  atomic_fetch_max_explicit(&extremes[0], v, memory_order_relaxed);
  atomic_fetch_min_explicit(&extremes[1], v, memory_order_relaxed);
  atomic_fetch_add_explicit(fsum, float(v) * 0.25f, memory_order_relaxed);
  prev[i] = atomic_exchange_explicit(slot, i + 1u, memory_order_relaxed);

  uint expected = atomic_load_explicit(&counters[0], memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(&counters[0], &expected, expected + 2u, memory_order_relaxed,
                                                memory_order_relaxed)) {
  }
  atomic_fetch_max_explicit(&counters[1], i, memory_order_relaxed);
  if (i == n - 1u) {
    atomic_store_explicit(&counters[2], 0xC0FFEEu, memory_order_relaxed);
  }
}

// Per threadgroup g, out[g*6 ..]: thread count, sum, max, min (int atomics in threadgroup
// memory), a compare-exchange sum of 3 per thread, and the bit-or of every value's low byte.
kernel void atomics_threadgroup(device const int* vals [[buffer(0)]],
                                device int* out [[buffer(1)]],
                                uint gid [[thread_position_in_grid]],
                                uint tid [[thread_index_in_threadgroup]],
                                uint group [[threadgroup_position_in_grid]]) {
  threadgroup atomic_int acc[4];
  threadgroup atomic_uint count;
  threadgroup atomic_uint bits;
  if (tid == 0) {
    atomic_store_explicit(&acc[0], 0, memory_order_relaxed);
    atomic_store_explicit(&acc[1], -2147483647 - 1, memory_order_relaxed);
    atomic_store_explicit(&acc[2], 2147483647, memory_order_relaxed);
    atomic_store_explicit(&acc[3], 0, memory_order_relaxed);
    atomic_store_explicit(&count, 0u, memory_order_relaxed);
    atomic_store_explicit(&bits, 0u, memory_order_relaxed);
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);

  const int v = vals[gid];
  atomic_fetch_add_explicit(&count, 1u, memory_order_relaxed);
  atomic_fetch_add_explicit(&acc[0], v, memory_order_relaxed);
  atomic_fetch_max_explicit(&acc[1], v, memory_order_relaxed);
  atomic_fetch_min_explicit(&acc[2], v, memory_order_relaxed);
  int expected = atomic_load_explicit(&acc[3], memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(&acc[3], &expected, expected + 3, memory_order_relaxed,
                                                memory_order_relaxed)) {
  }
  atomic_fetch_or_explicit(&bits, uint(v) & 0xFFu, memory_order_relaxed);
  threadgroup_barrier(mem_flags::mem_threadgroup);

  if (tid == 0) {
    device int* o = out + group * 6;
    o[0] = int(atomic_load_explicit(&count, memory_order_relaxed));
    o[1] = atomic_load_explicit(&acc[0], memory_order_relaxed);
    o[2] = atomic_load_explicit(&acc[1], memory_order_relaxed);
    o[3] = atomic_load_explicit(&acc[2], memory_order_relaxed);
    o[4] = atomic_load_explicit(&acc[3], memory_order_relaxed);
    o[5] = int(atomic_load_explicit(&bits, memory_order_relaxed));
  }
}

// *out_bits = bits of the largest x, by a compare-exchange loop on the float's bit pattern.
// The caller initializes *out_bits to the bits of -inf.
kernel void atomic_max_f32(device const float* x [[buffer(0)]],
                           device atomic_uint* out_bits [[buffer(1)]],
                           uint i [[thread_position_in_grid]]) {
  const float v = x[i];
  uint expected = atomic_load_explicit(out_bits, memory_order_relaxed);
  while (as_type<float>(expected) < v) {
    if (atomic_compare_exchange_weak_explicit(out_bits, &expected, as_type<uint>(v), memory_order_relaxed,
                                              memory_order_relaxed)) {
      break;
    }
  }
}
