// A frozen quantized weight read by training steps: its float form and matmul panels are kept
// beside its blocks after the first step, so a later step runs no dequantize or pack kernel for it,
// and where both passes read panels the float form's memory goes back; values against float64
// in JS, lazy against eager, a product the panel kernel does not run after that; under a memory
// limit the kept data goes first.
import { describe, expect, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { join } from "node:path";
import { DEQUANTIZE_ROWS } from "../../src/tensor/quantized.ts";
import { frozenLossAndGrad64 } from "./quantized-reference.ts";
import { targetOf } from "../../src/runtime/target.ts";
import { bucketOf } from "../../src/exec/memory.ts";

let state = 20261206;
const next = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0);
const inputs = (n: number) => Array.from({ length: n }, () => next() / 2 ** 31 - 1);

// Q4_1 blocks of 32 values: float16 scale and minimum (small, finite), then 16 bytes of nibbles.
function randomQ4_1(N: number, K: number): sm.QuantizedTensor {
  const blocks = (N * K) / 32;
  const data = new Uint8Array(blocks * 20);
  for (let i = 0; i < data.length; i++) data[i] = next() & 255;
  const halves = [0x2400, 0x2a00, 0x2c00, 0xa800];
  for (let b = 0; b < blocks; b++) {
    for (const at of [0, 2]) {
      const h = halves[next() % halves.length]!;
      data[b * 20 + at] = h & 255;
      data[b * 20 + at + 1] = h >> 8;
    }
  }
  return sm.QuantizedTensor.fromBytes(data, [N, K], "Q4_1");
}

// Large enough that the host's matmuls of both passes take the panel kernel (and so pack B).
const N = 80, K = 96;

describe("a frozen quantized weight across training steps", () => {
  for (const rows of [8, DEQUANTIZE_ROWS + 8]) {
    test(`${rows} rows: the second step neither dequantizes nor packs it; values as float64, lazy as eager`, () => {
      const w = randomQ4_1(N, K);
      const wv = w.dequantize().toArray() as number[];
      const xs = inputs(rows * K), as = inputs(K), cs = inputs(rows * N);
      const x = sm.array(xs).reshape([rows, K]), c = sm.array(cs).reshape([rows, N]), a = sm.array(as);
      sm.eval(x, c, a);
      const lossAndGrad = sm.valueAndGrad((p: sm.Tensor) => sm.sum(sm.multiply(sm.quantizedMatmul(sm.multiply(x, p), w), c)));
      const step = () => {
        const [loss, g] = lossAndGrad(a) as [sm.Tensor, sm.Tensor];
        sm.eval(loss, g);
        const got = { loss: loss.item(), grad: g.toArray() as number[] };
        loss.dispose();
        g.dispose();
        return got;
      };
      const want = frozenLossAndGrad64(xs, as, cs, wv, rows, N, K);
      const check = (got: { loss: number; grad: number[] }) => {
        expect(Math.abs(got.loss - want.loss)).toBeLessThan(1e-4 * (1 + Math.abs(want.loss)));
        for (let k = 0; k < K; k++) expect(Math.abs(got.grad[k]! - want.grad[k]!)).toBeLessThan(1e-4 * (1 + Math.abs(want.grad[k]!)));
      };
      const before = sm.getActiveMemory();
      const first = step();
      check(first);
      const afterFirst = sm.getActiveMemory();
      const [second, p] = sm.profile(step);
      check(second);
      const afterSecond = sm.getActiveMemory();
      const labels = p.byLabel.map((e) => e.label);
      // A CPU's products pack B into panels (kept too); a GPU's read the kept float form as it is.
      const packs = targetOf(sm.device()).matmul.large === "panel";
      expect(labels.some((l) => (packs ? /^matmul panel/ : /^matmul /).test(l))).toBe(true);
      expect(labels.filter((l) => /dequantize|^pack|quantizedMatmul/.test(l))).toEqual([]);
      // On a CPU both passes read panels (each n x k floats here), and the float form's buffer went
      // back as the first step filled the last of them; a GPU keeps the float form alone.
      expect(afterFirst - before).toBe((packs ? 2 : 1) * bucketOf(N * K * 4));
      expect(afterSecond).toBe(afterFirst);
      check(step());
      expect(sm.getActiveMemory()).toBe(afterSecond);
      const eager = sm.eager(step);
      expect(eager.loss).toBeCloseTo(second.loss, 4);
      for (let k = 0; k < K; k++) expect(Math.abs(eager.grad[k]! - second.grad[k]!)).toBeLessThan(1e-5 * (1 + Math.abs(want.grad[k]!)));
      // Two rows, too few for the panel kernel: the weight is dequantized for that step.
      const [x2, c2] = [x.slice("0:2"), c.slice("0:2")];
      const few = sm.valueAndGrad((q: sm.Tensor) => sm.sum(sm.multiply(sm.quantizedMatmul(sm.multiply(x2, q), w), c2)));
      const [l2, g2] = few(a) as [sm.Tensor, sm.Tensor];
      const want2 = frozenLossAndGrad64(xs.slice(0, 2 * K), as, cs.slice(0, 2 * N), wv, 2, N, K);
      expect(Math.abs(l2.item() - want2.loss)).toBeLessThan(1e-4 * (1 + Math.abs(want2.loss)));
      const got2 = g2.toArray() as number[];
      for (let k = 0; k < K; k++) expect(Math.abs(got2[k]! - want2.grad[k]!)).toBeLessThan(1e-4 * (1 + Math.abs(want2.grad[k]!)));
      l2.dispose();
      g2.dispose();
      // The panels are still there for the steps of all rows.
      check(step());
      w.dispose();
    }, 120_000);
  }

  test("kept data stays within half the memory limit: a lower limit drops it rather than failing", () => {
    // In a process of its own: the limit is on all tensor memory, which other tests' leave varying.
    // With panels on every backend: the sizes below count the float form and both passes' panels.
    const env = { ...process.env, SMELT_MATMUL: "panel" };
    const run = Bun.spawnSync([process.execPath, join(import.meta.dir, "quantized-kept-limit.ts")], { env });
    expect(run.exitCode).toBe(0);
    const out = JSON.parse(run.stdout.toString().trim().split("\n").pop()!);
    // Both passes' panels, n x k floats each: the float form's memory went back after the step.
    expect(out.kept).toBe(2 * bucketOf(out.n * out.k * 4));
    // Room for a step that dequantizes and packs as it goes, but not for keeping beside it.
    expect(out.limit).toBeLessThan(out.before + 2 * out.kept);
    expect(out.limit).toBeGreaterThan(out.before + out.kept);
    // Every step's loss and gradient as float64, whether its weight was kept or not.
    expect(out.errors.length).toBe(5);
    for (const e of out.errors) expect(e).toBeLessThan(1e-4);
    // Under the limit nothing stays kept after a step; without it the next step keeps it again.
    expect(out.limited).toEqual([out.before, out.before]);
    expect(out.unlimited).toBe(out.before + out.kept);
    expect(out.again).toBe(out.unlimited);
    // The kept data goes with the blocks.
    expect(out.disposed).toBeLessThan(out.before);
  }, 120_000);
});
