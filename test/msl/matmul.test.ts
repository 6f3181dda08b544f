import { describe, test } from "bun:test";
import { dev, expectClose, f16, kernelFile, read, runGroups, toF16, uniform } from "./helpers.ts";

const kernel = kernelFile("matmul.metal");

function shape(M: number, N: number, K: number): Uint32Array {
  return new Uint32Array([M, N, K, 0]);
}

/** C = A * B (row-major) in float64, with B given as K x N, or as N x K when bTransposed. */
function reference(A: ArrayLike<number>, B: ArrayLike<number>, M: number, N: number, K: number, bTransposed = false) {
  const C = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += A[i * K + k]! * (bTransposed ? B[j * K + k]! : B[k * N + j]!);
      C[i * N + j] = s;
    }
  }
  return C;
}

/** Float32 accumulation of K products of values in [-1, 1]: error well under K * 2^-24 * K. */
const tolerance = (K: number) => ({ atol: 4e-7 * K, rtol: 1e-5 });
const at = (N: number) => (i: number) => `C[${Math.floor(i / N)}][${i % N}]`;

describe("matmul.metal", () => {
  for (const [M, N, K, tile] of [
    [37, 29, 53, 16],
    [64, 64, 64, 16],
    [1, 33, 17, 16],
    [100, 75, 130, 8],
    [256, 256, 256, 16],
  ]) {
    test(`matmul_tiled${tile}: ${M}x${K} * ${K}x${N} with threadgroup-memory tiles and barriers`, () => {
      const A = uniform(M! * K!, -1, 1, M! * 7 + K!);
      const B = uniform(K! * N!, -1, 1, N! * 13 + K!);
      const C = dev.buffer(new Float32Array(M! * N!));
      runGroups(
        kernel(`matmul_tiled${tile}`),
        [dev.buffer(A), dev.buffer(B), C, shape(M!, N!, K!)],
        [Math.ceil(N! / tile!), Math.ceil(M! / tile!), 1],
        [tile!, tile!, 1],
      );
      expectClose("C", read(C, Float32Array), reference(A, B, M!, N!, K!), { ...tolerance(K!), label: at(N!) });
    });
  }

  for (const [M, N, K] of [
    [64, 64, 64],
    [24, 40, 72],
    [8, 8, 8],
  ]) {
    test(`matmul_simd_f32: simdgroup_float8x8 load/multiply_accumulate/store, ${M}x${K} * ${K}x${N}`, () => {
      const A = uniform(M! * K!, -1, 1, 3 * M! + K!);
      const B = uniform(K! * N!, -1, 1, 5 * N! + K!);
      const C = dev.buffer(new Float32Array(M! * N!).fill(NaN));
      runGroups(
        kernel("matmul_simd_f32"),
        [dev.buffer(A), dev.buffer(B), C, shape(M!, N!, K!)],
        [Math.ceil(N! / 16), Math.ceil(M! / 16), 1],
        [128, 1, 1],
      );
      expectClose("C", read(C, Float32Array), reference(A, B, M!, N!, K!), { ...tolerance(K!), label: at(N!) });
    });

    test(`matmul_simd_f16: simdgroup_half8x8 inputs, simdgroup_float8x8 accumulator, ${M}x${K} * ${K}x${N}`, () => {
      const A = uniform(M! * K!, -2, 2, 11 * M! + K!).map(f16);
      const B = uniform(K! * N!, -2, 2, 17 * N! + K!).map(f16);
      const C = dev.buffer(new Float32Array(M! * N!).fill(NaN));
      runGroups(
        kernel("matmul_simd_f16"),
        [dev.buffer(toF16(A)), dev.buffer(toF16(B)), C, shape(M!, N!, K!)],
        [Math.ceil(N! / 16), Math.ceil(M! / 16), 1],
        [128, 1, 1],
      );
      // Products of halves are exact in float; only the float accumulation rounds.
      expectClose("C", read(C, Float32Array), reference(A, B, M!, N!, K!), { atol: 2e-6 * K!, rtol: 1e-5, label: at(N!) });
    });
  }

  test("matmul_simd_bt: transposed simdgroup_load, diagonal-initialised accumulator, store to threadgroup memory", () => {
    const [M, N, K] = [32, 24, 40];
    const A = uniform(M * K, -1, 1, 31);
    const Bt = uniform(N * K, -1, 1, 32);
    const [alpha, beta] = [-0.5, 3];
    const C = dev.buffer(new Float32Array(M * N).fill(NaN));
    runGroups(
      kernel("matmul_simd_bt"),
      [dev.buffer(A), dev.buffer(Bt), C, shape(M, N, K), new Float32Array([alpha, beta])],
      [N / 8, M / 8, 1],
      [32, 1, 1],
    );
    // The accumulator starts as beta on the diagonal of every 8x8 tile.
    const want = reference(A, Bt, M, N, K, true).map((v, i) => alpha * (v + ((Math.floor(i / N) % 8) === (i % N) % 8 ? beta : 0)));
    expectClose("C", read(C, Float32Array), want, { ...tolerance(K), label: at(N) });
  });
});
