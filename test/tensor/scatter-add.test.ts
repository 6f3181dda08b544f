/**
 * scatterAdd (src/tensor/ops-structure.ts, its kernel in src/exec/emit/plain.ts) against float64
 * references, with repeated, negative and out-of-range indices, broadcast values and integer
 * dtypes; its gradient; and the takes' gradients, which are scatter-adds of their own kernel whose
 * work does not grow with the indexed axis.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import type { Node } from "../../src/graph/node.ts";
import { gradCheck } from "../autograd/helpers.ts";
import { expectClose, expectSmeltError, randint, randn, ravel, type Ref, sizeOf, unravel } from "./helpers.ts";

setDefaultTimeout(120_000);

/** x plus values at ids along ax, in float64, ids clamped into the axis as the kernels do. */
function scatterAddRef(x: Ref, ids: Ref, vals: Ref, ax: number): Ref {
  const out = { shape: [...x.shape], data: [...x.data] };
  const len = x.shape[ax]!;
  const bcast = (idx: number[], shape: number[]) => idx.map((v, d) => (shape[d] === 1 ? 0 : v));
  for (let i = 0; i < sizeOf(ids.shape); i++) {
    const idx = unravel(i, ids.shape);
    let k = ids.data[i]!;
    if (k < 0) k += len;
    k = Math.min(Math.max(k, 0), len - 1);
    out.data[ravel(idx.map((v, d) => (d === ax ? k : v)), x.shape)]! += vals.data[ravel(bcast(idx, vals.shape), vals.shape)]!;
  }
  return out;
}

const tensorOf = (r: Ref, dtype: sm.DType = "float32") => sm.array(r.data, dtype).reshape(r.shape);

describe("scatterAdd", () => {
  for (const mode of ["lazy", "eager"] as const) {
    const run = <T>(f: () => T): T => (mode === "eager" ? sm.eager(f) : f());

    test(`${mode}: repeated, negative and clamped indices, broadcast values, every axis`, () => {
      const cases: { x: number[]; ids: number[]; ax: number; vals: number[]; seed: number }[] = [
        { x: [5, 3], ids: [7, 3], ax: 0, vals: [7, 3], seed: 1 },
        { x: [4, 6], ids: [4, 9], ax: 1, vals: [4, 9], seed: 2 },
        { x: [2, 5, 3], ids: [2, 8, 3], ax: 1, vals: [1, 8, 1], seed: 3 },
        { x: [3, 4], ids: [3, 1], ax: 1, vals: [1, 1], seed: 4 },
        { x: [6], ids: [40], ax: 0, vals: [40], seed: 5 },
      ];
      for (const c of cases) {
        const len = c.x[c.ax]!;
        const x: Ref = { shape: c.x, data: randn(sizeOf(c.x), c.seed).map(Math.fround) };
        // From -len (negative, counted from the end) to len + 1 (clamped to the last): many repeats.
        const ids: Ref = { shape: c.ids, data: randint(sizeOf(c.ids), -len, len + 2, c.seed + 10) };
        const vals: Ref = { shape: c.vals, data: randn(sizeOf(c.vals), c.seed + 20).map(Math.fround) };
        const got = run(() => sm.scatterAdd(tensorOf(x), tensorOf(ids, "int32"), tensorOf(vals), c.ax).toArray() as number[]);
        expectClose(got, scatterAddRef(x, ids, vals, c.ax).data, "float32", { atol: 1e-5 }, JSON.stringify(c));
      }
    });

    test(`${mode}: host indices, no axis (flattened), integer and half dtypes`, () => {
      const x = sm.array([[1, 2], [3, 4]], "int32");
      expect(run(() => sm.scatterAdd(x, [0, 0, 3, -1], [5, 6, 7, 8]).toArray())).toEqual([12, 2, 3, 19]);
      // Integer sums wrap in x's dtype: 250 + 3 + 4 is 257, 1 in uint8.
      const u = sm.array([250, 1, 2], "uint8");
      expect(run(() => sm.scatterAdd(u, [0, 0], sm.array([3, 4], "uint8"), 0).toArray())).toEqual([1, 1, 2]);
      // float16: the sums accumulate in float32 and round once, so 2048 + 1 + 1 is exact.
      const h = sm.array([2048, 0], "float16");
      expect(run(() => sm.scatterAdd(h, [0, 0], [1, 1], 0).toArray())).toEqual([2050, 0]);
    });
  }

  test("sums are deterministic: the same bits on every run", () => {
    const ids = sm.array(randint(4096, 0, 8, 7), "int32");
    const vals = sm.array(randn(4096, 8).map((v) => v * 1e3), "float32");
    const first = sm.scatterAdd(sm.zeros([8]), ids, vals, 0).toArray() as number[];
    for (let r = 0; r < 3; r++) expect(sm.scatterAdd(sm.zeros([8]), ids, vals, 0).toArray()).toEqual(first);
  });

  test("errors at the call", () => {
    const x = sm.zeros([3, 4]);
    expectSmeltError(() => sm.scatterAdd(x, [[0, 5]], [[1, 1]], 1), "scatterAdd", "out of bounds");
    expectSmeltError(() => sm.scatterAdd(x, sm.array([[0.5]]), 1, 1), "scatterAdd", "integer");
    expectSmeltError(() => sm.scatterAdd(x, [[0], [1]], 1, 1), "scatterAdd", "do not broadcast");
    expectSmeltError(() => sm.scatterAdd(x, [[0, 1]], [1, 2, 3], 1), "scatterAdd", "cannot be broadcast");
    expectSmeltError(() => sm.scatterAdd(sm.zeros([2], "bool"), [0], [1], 0), "scatterAdd", "bool");
  });

  test("gradient: x gets the cotangent, values the cotangent taken at the indices", () => {
    const ids = [[0, 2, 0, 0], [1, 1, -1, 2]];
    const len = 3;
    gradCheck(
      (x, v) => sm.scatterAdd(x, ids, v, 1),
      (x, v) => scatterAddRef(x, { shape: [2, 4], data: ids.flat() }, v, 1),
      [{ shape: [2, len] }, { shape: [2, 4] }],
    );
  });
});

/** Whether a node of op `op` is reachable from n through its inputs. */
function reaches(n: Node, op: string, seen = new Set<Node>()): boolean {
  if (n.op === op) return true;
  seen.add(n);
  return n.inputs.some((m) => !seen.has(m) && reaches(m, op, seen));
}

describe("the takes' gradients scatter-add", () => {
  test("an embedding gradient over a 49152 vocabulary is a scatterAdd kernel, not a reduction over the vocabulary", () => {
    const vocab = 49152, width = 64, tokens = 512;
    const w = sm.zeros([vocab, width]);
    const ids = sm.array(randint(tokens, 0, 64, 3), "int32");
    const g = sm.grad((w: sm.Tensor) => sm.sum(sm.gather(w, ids)))(w);
    // Structure: a scatter kernel of its own, no reduce node over the vocabulary axis.
    expect(reaches(g.node("test"), "scatterAdd")).toBe(true);
    expect(reaches(g.node("test"), "reduce")).toBe(false);
    // Value: each row of w gets the number of times its id occurs, in every column.
    const counts = new Array<number>(vocab).fill(0);
    for (const k of ids.toArray() as number[]) counts[k]! += 1;
    const rows = sm.sum(g, 1).toArray() as number[];
    expect(rows.slice(0, 80)).toEqual(counts.slice(0, 80).map((c) => c * width));
    expect(sm.sum(g).item()).toBe(tokens * width);
  });

  test("takeAlongAxis's gradient with repeated indices along the last axis, float64 reference", () => {
    const ids = [[3, 3, 0], [1, 1, 1], [4, 0, 4]];
    const ref = (x: Ref) => ({ shape: [3, 3], data: ids.flatMap((row, i) => row.map((k) => x.data[i * 5 + k]!)) });
    gradCheck((x) => sm.takeAlongAxis(x, ids, 1), ref, [{ shape: [3, 5] }]);
  });
});
