// Run by quantized-kept.test.ts in a process of its own: training steps over one frozen quantized
// weight, first without a memory limit (its float form and panels are kept), then under a limit
// that leaves room for a step but not for the kept data beside it, then without it twice. Prints
// the memory in use after each step and each step's largest relative error against float64.
import * as sm from "../../src/index.ts";
import { DEQUANTIZE_ROWS } from "../../src/tensor/quantized.ts";
import { frozenLossAndGrad64 } from "./quantized-reference.ts";

let state = 20261206;
const next = () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0);
const inputs = (n: number) => Array.from({ length: n }, () => next() / 2 ** 31 - 1);

const n = 256, k = 512, rows = DEQUANTIZE_ROWS + 8;
const data = new Uint8Array(((n * k) / 32) * 20);
for (let i = 0; i < data.length; i++) data[i] = next() & 255;
// Q4_1 blocks: small finite float16 scale and minimum, then the nibbles.
for (let b = 0; b < (n * k) / 32; b++) for (const at of [0, 2]) [data[b * 20 + at], data[b * 20 + at + 1]] = [0x00, [0x24, 0x2a, 0xa8][next() % 3]!];
const w = sm.QuantizedTensor.fromBytes(data, [n, k], "Q4_1");
const wv = w.dequantize().toArray() as number[];
const xs = inputs(rows * k), as = inputs(k), cs = inputs(rows * n);
const x = sm.array(xs).reshape([rows, k]), c = sm.array(cs).reshape([rows, n]), a = sm.array(as);
sm.eval(x, c, a);

// loss(p) = sum(quantizedMatmul(x * p, w) * c) and its gradient, in float64.
const { loss: wantLoss, grad: wantGrad } = frozenLossAndGrad64(xs, as, cs, wv, rows, n, k);

const lossAndGrad = sm.valueAndGrad((p: sm.Tensor) => sm.sum(sm.multiply(sm.quantizedMatmul(sm.multiply(x, p), w), c)));
const errors: number[] = [];
const step = () => {
  const [loss, g] = lossAndGrad(a) as [sm.Tensor, sm.Tensor];
  sm.eval(loss, g);
  const got = g.toArray() as number[];
  let e = Math.abs(loss.item() - wantLoss) / (1 + Math.abs(wantLoss));
  for (let i = 0; i < k; i++) e = Math.max(e, Math.abs(got[i]! - wantGrad[i]!) / (1 + Math.abs(wantGrad[i]!)));
  errors.push(e);
  loss.dispose();
  g.dispose();
  return sm.getActiveMemory();
};

const before = sm.getActiveMemory();
const kept = step() - before;
const limit = 2 * kept - 1;
const previous = sm.setMemoryLimit(limit);
const limited = [step(), step()];
sm.setMemoryLimit(previous);
const unlimited = step();
const again = step();
w.dispose();
console.log(JSON.stringify({ n, k, before, kept, limit, limited, unlimited, again, errors, disposed: sm.getActiveMemory() }));
