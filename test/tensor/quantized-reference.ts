// The float64 reference of the frozen-quantized-weight training tests (quantized-kept.test.ts and
// its child process quantized-kept-limit.ts). No bun:test import: the child runs outside the runner.

/**
 * loss(a) = sum((x * a) @ W^T * c) and its gradient with respect to a, in float64, for x [rows, K],
 * a [K], c [rows, N] and the dequantized weight W [N, K]: the backward reads the weight as ct @ W.
 */
export function frozenLossAndGrad64(xs: number[], as: number[], cs: number[], wv: number[], rows: number, N: number, K: number) {
  let loss = 0;
  const grad = new Array<number>(K).fill(0);
  for (let m = 0; m < rows; m++) {
    for (let n = 0; n < N; n++) {
      let y = 0;
      for (let k = 0; k < K; k++) y += xs[m * K + k]! * as[k]! * wv[n * K + k]!;
      loss += y * cs[m * N + n]!;
    }
    for (let k = 0; k < K; k++) {
      let g = 0;
      for (let n = 0; n < N; n++) g += cs[m * N + n]! * wv[n * K + k]!;
      grad[k]! += xs[m * K + k]! * g;
    }
  }
  return { loss, grad };
}
