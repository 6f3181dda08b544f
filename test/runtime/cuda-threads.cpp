// The CUDA launcher's Metal thread attributes (shim/cuda/msl/smelt_threads) against the host
// backend's (shim/host/msl/smelt_kernel_abi.h), the reference, on the CPU: for grids of 1 to 3
// dimensions with and without edge threadgroups, every block's CUDA threads must stand for each
// Metal thread of their threadgroup exactly once, with the host's attributes, and each warp
// (32 consecutive threads of the block) must be the Metal SIMD-group the attributes name. Prints
// one line per failure and exits 1 if any.
#include <cstdio>
#include <cstring>
#include <vector>

#include "smelt_kernel_abi.h"
#include "smelt_threads"

namespace {

int failures = 0;

void fail(const char* what, const unsigned* threads, const unsigned* group, unsigned block, unsigned hw) {
  if (++failures <= 20)
    std::printf("grid %ux%ux%u in %ux%ux%u, block %u, thread %u: %s\n", threads[0], threads[1], threads[2], group[0], group[1], group[2], block,
                hw, what);
}

bool same3(const unsigned* a, const unsigned* b) { return std::memcmp(a, b, 3 * sizeof(unsigned)) == 0; }

void check(unsigned x, unsigned y, unsigned z, unsigned gx, unsigned gy, unsigned gz) {
  const unsigned threads[3] = {x, y, z}, group[3] = {gx, gy, gz};
  __smelt_hk_grid grid{};
  for (int i = 0; i < 3; ++i) {
    grid.threads[i] = threads[i];
    grid.group[i] = group[i];
    grid.groups[i] = (threads[i] + group[i] - 1) / group[i];
  }
  const unsigned nb[3] = {grid.groups[0], grid.groups[1], grid.groups[2]};
  unsigned blocks = nb[0] * nb[1] * nb[2];
  for (unsigned b = 0; b < blocks; ++b) {
    const unsigned bid[3] = {b % nb[0], (b / nb[0]) % nb[1], b / (nb[0] * nb[1])};
    __smelt_hk_thread host{};
    unsigned n = __smelt_hk_group_threads(&grid, b, &host);
    std::vector<int> seen(n, 0);
    for (unsigned hw = 0; hw < gx * gy * gz; ++hw) {
      const unsigned tid[3] = {hw % gx, (hw / gx) % gy, hw / (gx * gy)};
      __smelt_detail::cuda_thread t = __smelt_detail::thread_of(threads, group, bid, nb, tid, group);
      if (!t.inside) {
        if (hw < n) fail("a thread the threadgroup has returns", threads, group, b, hw);
        continue;
      }
      if (t.tiitg >= n || seen[t.tiitg]++) {
        fail("thread_index_in_threadgroup outside the group or taken twice", threads, group, b, hw);
        continue;
      }
      __smelt_hk_thread_at(&grid, &host, t.tiitg);
      bool same = same3(t.tpig, host.tpig) && same3(t.tpitg, host.tpitg) && same3(t.tgpig, host.tgpig) && same3(t.tptg, host.tptg) &&
                  same3(t.tpg, host.tpg) && same3(t.tgpg, host.tgpg) && same3(t.grid, grid.group) && t.lane == host.lane &&
                  t.sgitg == host.sgitg && t.sgptg == host.sgptg;
      if (!same) fail("attributes differ from the host's", threads, group, b, hw);
      // The SIMD-group functions exchange values within the hardware's warp.
      if (t.lane != hw % 32u || t.sgitg != hw / 32u) fail("its warp is not its SIMD-group", threads, group, b, hw);
    }
    for (unsigned i = 0; i < n; ++i)
      if (!seen[i]) fail("a Metal thread has no CUDA thread", threads, group, b, i);
  }
}

}  // namespace

int main() {
  check(100, 1, 1, 32, 1, 1);
  check(1000, 1, 1, 256, 1, 1);
  check(64, 64, 1, 16, 16, 1);   // uniform 2-D
  check(21, 13, 1, 8, 8, 1);     // edges in x and y
  check(40, 3, 1, 32, 2, 1);     // an edge 8 wide: its SIMD-groups straddle rows
  check(7, 50, 1, 3, 16, 1);
  check(10, 6, 5, 4, 4, 4);      // edges in x, y and z
  check(9, 9, 9, 8, 2, 2);
  check(33, 5, 3, 16, 4, 2);
  std::printf("%d failures\n", failures);
  return failures ? 1 : 0;
}
