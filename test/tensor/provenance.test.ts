/**
 * Views keep their base: walking `inputs` from any view reaches the tensor it was made from, and
 * every view records its kind and arguments, whether the base is computed (the view shares its
 * storage) or lazy (the view is index math in the consumer's kernel).
 */
import { describe, expect, test } from "bun:test";
import * as sm from "../../src/index.ts";
import type { Node } from "../../src/graph/node.ts";
import { permuteRef, ref } from "./helpers.ts";

const VALUES = Array.from({ length: 24 }, (_, i) => i * 0.5 - 3);

/** Every view kind in turn over base [4, 6]: reshape, expandDims, broadcast, permute, slice, squeeze. */
function chain(base: sm.Tensor): sm.Tensor {
  const r = base.reshape([2, 12]);        // [2, 12]
  const e = sm.expandDims(r, 1);          // [2, 1, 12]
  const b = sm.broadcastTo(e, [2, 3, 12]); // [2, 3, 12]
  const t = sm.transpose(b, [2, 0, 1]);   // [12, 2, 3]
  const s = t.slice("1::3, 1:2, ::-2");   // [4, 1, 2]
  return sm.squeeze(s, 1);                // [4, 2]
}

/** The expected values of chain(base), from a float64 reference. */
function chainRef(): number[] {
  const e = ref([2, 1, 12], VALUES);
  const b: number[] = [];
  for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 12; k++) b.push(e.data[i * 12 + k]!);
  const t = permuteRef(ref([2, 3, 12], b), [2, 0, 1]);
  const out: number[] = [];
  for (const i of [1, 4, 7, 10]) for (const k of [2, 0]) out.push(t.data[i * 6 + 1 * 3 + k]!);
  return out;
}

/** The nodes from n back along first inputs until `stop`, n first. */
function walk(n: Node, stop: Node): Node[] {
  const path = [n];
  while (path[path.length - 1] !== stop) {
    const last = path[path.length - 1]!;
    expect(last.inputs.length).toBeGreaterThan(0);
    path.push(last.inputs[0]!);
  }
  return path;
}

function expectChain(out: sm.Tensor, base: sm.Tensor): void {
  const path = walk(out.node("test"), base.node("test"));
  expect(path.map((n) => n.op)).toEqual(["squeeze", "slice", "permute", "broadcast", "expandDims", "reshape", base.node("test").op]);
  const [sq, sl, pe, br, ex, re] = path;
  expect(sq!.attrs).toEqual({ axes: [1] });
  expect(ex!.attrs).toEqual({ axes: [1] });
  expect(re!.shape).toEqual([2, 12]);
  // Index maps over each view's base, in its row-major layout.
  expect(br!.attrs).toEqual({ strides: [12, 0, 1], offset: 0 });
  expect(pe!.attrs).toEqual({ strides: [1, 36, 12], offset: 0, axes: [2, 0, 1] });
  expect(sl!.attrs).toEqual({ strides: [18, 3, -2], offset: 6 + 3 + 2 });
  expect(sl!.shape).toEqual([4, 1, 2]);
}

describe("views keep their base", () => {
  test("over computed data: every kind is recorded, the base is reachable, the strided views are zero copy", () => {
    const w = sm.array(VALUES).reshape([4, 6]);
    sm.eval(w);
    sm.resetStats();
    const out = chain(w);
    expectChain(out, w);
    // Zero copy: each view of computed data is computed at once, over the same storage, up to the
    // squeeze, a reshape of data that is no longer row-major: that one is computed by a kernel.
    const sliced = out.node("test").inputs[0]!;
    expect(sliced.data!.storage).toBe(w.node("test").data!.storage);
    expect(out.node("test").data).toBeNull();
    expect(sm.stats().kernelsDispatched).toBe(0);
    expect(Array.from(out.toArray() as ArrayLike<number>)).toEqual(chainRef());
    expect(sm.stats().kernelsDispatched).toBe(1);
  });

  test("over a lazy node: the same chain, fused into one kernel", () => {
    const w = sm.array(VALUES).reshape([4, 6]);
    sm.eval(w);
    const lazy = w.mul(1);
    const out = chain(lazy);
    expectChain(out, lazy);
    expect(out.node("test").data).toBeNull();
    sm.resetStats();
    expect(Array.from(out.toArray() as ArrayLike<number>)).toEqual(chainRef());
    expect(sm.stats().kernelsDispatched).toBe(1);
  });

  test("a matmul of vectors records its expandDims and squeeze; keepdims records its expandDims", () => {
    const a = sm.array([1, 2, 3]);
    const m = sm.matmul(a, sm.array([[1], [0], [2]]));
    const sq = m.node("test");
    expect(sq.op).toBe("squeeze");
    expect(sq.attrs).toEqual({ axes: [0] });
    const mm = sq.inputs[0]!;
    expect([mm.op, mm.inputs[0]!.op, mm.inputs[0]!.attrs]).toEqual(["matmul", "expandDims", { axes: [0] }]);
    expect(Array.from(m.toArray() as ArrayLike<number>)).toEqual([7]);
    const s = sm.sum(sm.array([[1, 2], [3, 4]], "float32"), 1, true).node("test");
    expect([s.op, s.attrs, s.inputs[0]!.op]).toEqual(["expandDims", { axes: [1] }, "reduce"]);
  });

  test("W.T of a parameter keeps W in the graph, and W's memory is shared, not copied", () => {
    const w = sm.array([[1, 2, 3], [4, 5, 6]], "float32");
    const wt = sm.transpose(w);
    const y = sm.matmul(sm.array([[1, 1]], "float32"), sm.transpose(wt));
    expect(walk(wt.node("test"), w.node("test")).length).toBe(2);
    expect(Array.from(y.toArray() as ArrayLike<number>)).toEqual([5, 7, 9]);
  });
});
