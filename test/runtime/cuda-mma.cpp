// A CPU simulation of the CUDA prelude's simdgroup_matrix products (shim/cuda/msl/metal_stdlib),
// built from the lane maps it uses (shim/cuda/msl/smelt_mma): 32 lanes exchange values as the
// warp's shuffles would, and the tensor-core path's fragments are read back into matrices through
// the fragment layouts of mma.m16n8k8 in the PTX ISA, written out independently below. Both paths
// must give A*B + C for random A, B, C in the simdgroup layout. Prints one line per failure and
// exits 1 if any.
#include <cstdio>
#include <cstdlib>

#include "smelt_mma"

using namespace __smelt_mma;

namespace {

// PTX ISA, "Matrix fragments for mma.m16n8k8", .f16/.bf16 operands with .f32 accumulators:
// groupID = lane / 4, threadID_in_group = lane % 4.
unsigned ptx_group(unsigned lane) { return lane >> 2; }
unsigned ptx_tig(unsigned lane) { return lane % 4; }
// A (16 x 8): a0..a3; rows groupID (a0, a1) and groupID + 8 (a2, a3), column tig * 2 + (i & 1).
unsigned ptx_a_row(unsigned lane, unsigned i) { return ptx_group(lane) + (i >= 2 ? 8 : 0); }
unsigned ptx_a_col(unsigned lane, unsigned i) { return ptx_tig(lane) * 2 + (i & 1); }
// B (8 x 8): b0, b1; row tig * 2 + i, column groupID.
unsigned ptx_b_row(unsigned lane, unsigned i) { return ptx_tig(lane) * 2 + i; }
unsigned ptx_b_col(unsigned lane) { return ptx_group(lane); }
// C and D (16 x 8): c0..c3, as A.
unsigned ptx_c_row(unsigned lane, unsigned i) { return ptx_a_row(lane, i); }
unsigned ptx_c_col(unsigned lane, unsigned i) { return ptx_a_col(lane, i); }

double A[8][8], B[8][8], C[8][8];
double a_e[32][2], b_e[32][2], c_e[32][2];  // the simdgroup_matrix registers, per lane
int failures = 0;

void expect(const char* path, int trial, unsigned lane, unsigned slot, double got) {
  unsigned r = row_of(lane), c = col_of(lane, slot);
  double want = C[r][c];
  for (int k = 0; k < 8; ++k) want += A[r][k] * B[k][c];
  if (got != want) {
    if (++failures <= 20) std::printf("%s, trial %d: lane %u slot %u (%u, %u): got %g, want %g\n", path, trial, lane, slot, r, c, got, want);
  }
}

// The tensor-core path: A and C as they are (rows 8-15 zero), B's halves from b_lane/b_slot.
void tensor_cores(int trial) {
  double fa[32][4], fb[32][2], fc[32][4];
  for (unsigned l = 0; l < 32; ++l) {
    fa[l][0] = a_e[l][0], fa[l][1] = a_e[l][1], fa[l][2] = fa[l][3] = 0;
    for (unsigned t = 0; t < 2; ++t) fb[l][t] = b_e[b_lane(l, t)][b_slot(l)];  // two shuffles
    fc[l][0] = c_e[l][0], fc[l][1] = c_e[l][1], fc[l][2] = fc[l][3] = 0;
  }
  // The instruction: the matrices the fragments stand for, multiplied.
  double ma[16][8] = {}, mb[8][8] = {}, mc[16][8] = {};
  int seen_a[16][8] = {}, seen_b[8][8] = {};
  for (unsigned l = 0; l < 32; ++l) {
    for (unsigned i = 0; i < 4; ++i) {
      ma[ptx_a_row(l, i)][ptx_a_col(l, i)] = fa[l][i];
      ++seen_a[ptx_a_row(l, i)][ptx_a_col(l, i)];
      mc[ptx_c_row(l, i)][ptx_c_col(l, i)] = fc[l][i];
    }
    for (unsigned i = 0; i < 2; ++i) {
      mb[ptx_b_row(l, i)][ptx_b_col(l)] = fb[l][i];
      ++seen_b[ptx_b_row(l, i)][ptx_b_col(l)];
    }
  }
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 8; ++c)
      if (seen_a[r][c] != 1 || (r < 8 && seen_b[r][c] != 1)) {
        std::printf("tensor cores: the fragments do not cover A and B once each\n");
        ++failures;
        return;
      }
  for (unsigned l = 0; l < 32; ++l)
    for (unsigned i = 0; i < 2; ++i) {  // d0 and d1 are the lane's two elements of D
      unsigned r = ptx_c_row(l, i), c = ptx_c_col(l, i);
      double d = mc[r][c];
      for (int k = 0; k < 8; ++k) d += ma[r][k] * mb[k][c];
      if (r != row_of(l) || c != col_of(l, i)) {
        std::printf("tensor cores: D element %u of lane %u is (%u, %u), not the simdgroup layout's\n", i, l, r, c);
        ++failures;
      }
      expect("tensor cores", trial, l, i, d);
    }
}

// The shuffled path: each lane reads A(row, k) and B(k, col + t) from the lanes that hold them.
void shuffled(int trial) {
  for (unsigned l = 0; l < 32; ++l) {
    unsigned row = row_of(l), col = col_of(l, 0);
    double s[2] = {c_e[l][0], c_e[l][1]};
    for (unsigned k = 0; k < 8; ++k) {
      double av = a_e[lane_of(row, k)][slot_of(k)];
      for (unsigned t = 0; t < 2; ++t) s[t] += av * b_e[lane_of(k, col)][t];
    }
    for (unsigned t = 0; t < 2; ++t) expect("shuffled", trial, l, t, s[t]);
  }
}

}  // namespace

int main() {
  std::srand(20261206);
  for (int trial = 0; trial < 50; ++trial) {
    // Small integers: every product and sum is exact, so the order of the sums does not matter.
    for (int r = 0; r < 8; ++r)
      for (int c = 0; c < 8; ++c) {
        A[r][c] = std::rand() % 17 - 8;
        B[r][c] = std::rand() % 17 - 8;
        C[r][c] = std::rand() % 17 - 8;
      }
    for (unsigned l = 0; l < 32; ++l)
      for (unsigned s = 0; s < 2; ++s) {
        a_e[l][s] = A[row_of(l)][col_of(l, s)];
        b_e[l][s] = B[row_of(l)][col_of(l, s)];
        c_e[l][s] = C[row_of(l)][col_of(l, s)];
      }
    tensor_cores(trial);
    shuffled(trial);
  }
  std::printf("%d failures\n", failures);
  return failures ? 1 : 0;
}
