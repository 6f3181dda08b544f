// Kernel choices that a LoRA training step depends on: a low-rank product added to a matmul is
// computed once when several kernels read the sum, and a transpose of a transpose of a product is
// read in place by the matmul that takes it.
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { execute, planOf, schedule } from "../../src/exec/realize.ts";
import type { Node } from "../../src/graph/node.ts";
import { check, mapN, matmulRef, permuteRef, ref, reduceRef, uniform } from "./helpers.ts";

setDefaultTimeout(120_000);

const nodeOf = (t: sm.Tensor) => (t as unknown as { node(why: string): Node }).node("eval");

/** The kernels one evaluation of ts runs (node and source), after running it. */
function kernelsOf(ts: sm.Tensor[]): { node: Node; source: string }[] {
  const s = schedule(ts.map(nodeOf));
  const out = s.order.map((node) => ({ node, source: planOf(s, node).source }));
  execute(s);
  return out;
}

const [M, K, N, R] = [24, 40, 36, 4];
const xs = uniform(M * K, -1, 1, 301), ws = uniform(K * N, -0.5, 0.5, 302);
const as = uniform(K * R, -0.5, 0.5, 303), bs = uniform(R * N, -0.5, 0.5, 304);
const ins = () => [sm.array(xs, "float32").reshape([M, K]), sm.array(ws, "float32").reshape([K, N]), sm.array(as, "float32").reshape([K, R]), sm.array(bs, "float32").reshape([R, N])] as const;
const yRef = () => {
  const x = ref([M, K], xs), w = ref([K, N], ws), a = ref([K, R], as), b = ref([R, N], bs);
  return mapN([matmulRef(x, w), matmulRef(matmulRef(x, a), b)], (p, q) => p + 2 * q);
};

test("a LoRA sum read by two kernels is computed once: no kernel recomputes the low-rank product", () => {
  const [x, w, a, b] = ins();
  const y = x.matmul(w).add(x.matmul(a).matmul(b).mul(2));
  const act = y.mul(y.sigmoid()); // silu: an elementwise kernel
  const col = y.sum(0); // a reduction over rows: another kernel
  const yNode = nodeOf(y);
  const kernels = kernelsOf([act, col]);
  // y has a kernel of its own (which may compute the low-rank product in its epilogue, as a dot
  // loop on GPU targets); the kernels reading y read it from memory: an inline matmul would be a
  // dot-product loop per element in them.
  expect(kernels.some((k) => k.node === yNode)).toBe(true);
  const recomputing = kernels.filter((k) => k.node !== yNode && /float dot\d+ = 0\.0f/.test(k.source));
  expect(recomputing.map((k) => k.node.op)).toEqual([]);
  const want = yRef();
  check(() => {
    const [x, w, a, b] = ins();
    const y = x.matmul(w).add(x.matmul(a).matmul(b).mul(2));
    return y.mul(y.sigmoid());
  }, mapN([want], (v) => v / (1 + Math.exp(-v))), "float32", { rtol: 1e-5, atol: 1e-5, modes: { rtol: 1e-6, atol: 1e-6 } });
  check(() => {
    const [x, w, a, b] = ins();
    return x.matmul(w).add(x.matmul(a).matmul(b).mul(2)).sum(0);
  }, reduceRef(want, [0], false, (v) => v.reduce((s, t) => s + t, 0)), "float32", { rtol: 1e-5, atol: 1e-4, modes: { atol: 1e-4 } });
});

test("a transpose of a transpose of a product computed in the same evaluation is read in place", () => {
  const product = (twice: boolean) => () => {
    const [x, w] = ins();
    const v = w.mul(3); // [K, N], computed by a kernel of its own as the matmul's operand
    return x.matmul(twice ? v.T.T : v);
  };
  const run = product(true);
  const kernelsOf = (f: () => sm.Tensor) => {
    sm.resetStats();
    sm.tidy(() => f().eval());
    return sm.stats().kernelsDispatched;
  };
  // No copy of v.T.T: as many kernels as the product of v itself (v, the matmul, and on a CPU
  // target the copy of v into the panels its matmul reads).
  expect(kernelsOf(run)).toBe(kernelsOf(product(false)));
  expect(kernelsOf(run)).toBeLessThanOrEqual(3);
  const x = ref([M, K], xs), v = mapN([ref([K, N], ws)], (t) => 3 * t);
  check(run, matmulRef(x, permuteRef(permuteRef(v, [1, 0]), [1, 0])), "float32", { rtol: 1e-5, atol: 1e-5 });
});
