/**
 * src/tensor/ops-structure.ts against plain JS references: concatenate, stack, split, pad, tile,
 * repeat, take, gather, takeAlongAxis, putAlongAxis, in lazy and eager mode, over computed, lazy,
 * transposed and sliced inputs, shapes with size-1 and size-0 axes, negative axes, and the errors.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { errorMessage as errorOf } from "../expect-error.ts";

setDefaultTimeout(120_000);

// ---------------------------------------------------------------------------------------------
// reference arrays and helpers

interface Ref {
  shape: number[];
  data: number[];
}

const sizeOf = (s: readonly number[]) => s.reduce((a, d) => a * d, 1);
function unravel(i: number, shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    out[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return out;
}
const ravel = (idx: readonly number[], shape: readonly number[]) => idx.reduce((a, v, d) => a * shape[d]! + v, 0);
const at = (r: Ref, idx: readonly number[]) => r.data[ravel(idx, r.shape)]!;
/** A reference of shape whose element at each multi-index is f(index). */
function build(shape: number[], f: (idx: number[]) => number): Ref {
  return { shape, data: Array.from({ length: sizeOf(shape) }, (_, i) => f(unravel(i, shape))) };
}
/** The index into shape that broadcasting reads for output index idx (right-aligned; size-1 axes read 0). */
function bcast(idx: readonly number[], shape: readonly number[]): number[] {
  const lead = idx.length - shape.length;
  return shape.map((d, i) => (d === 1 ? 0 : idx[lead + i]!));
}

type Run = <T>(fn: () => T) => T;
const MODES: [string, Run][] = [
  ["lazy", (fn) => fn()],
  ["eager", sm.eager],
];

/** Distinct, exactly representable values: every op here only moves them. */
const values = (n: number, from = 0) => Array.from({ length: n }, (_, i) => (i * 7 + from) % 101 + 0.5 - 50);

// Each kind makes a tensor of the shape asked for, with values(size, from) in row-major order.
type Kind = "computed" | "lazy" | "transposed" | "sliced";
const KINDS: Kind[] = ["computed", "lazy", "transposed", "sliced"];
function make(kind: Kind, shape: number[], from = 0): sm.Tensor {
  const n = sizeOf(shape);
  const flat = values(n, from);
  if (shape.length === 0 || kind === "computed") return sm.reshape(sm.array(flat, "float32"), shape);
  if (kind === "lazy") return sm.add(sm.reshape(sm.array(flat.map((v) => v - 0.25), "float32"), shape), 0.25);
  if (kind === "transposed") {
    const rev = [...shape].reverse();
    const t = build(rev, (idx) => flat[ravel([...idx].reverse(), shape)]!);
    return sm.transpose(sm.reshape(sm.array(t.data, "float32"), rev));
  }
  // sliced: every other element of a last axis twice as long, offset by one.
  const wide = [...shape.slice(0, -1), 2 * shape[shape.length - 1]! + 1];
  const t = build(wide, (idx) => (idx[idx.length - 1]! % 2 === 1 ? flat[ravel([...idx.slice(0, -1), (idx[idx.length - 1]! - 1) / 2], shape)]! : 1e6));
  return sm.reshape(sm.array(t.data, "float32"), wide).slice("..., 1::2");
}
const refOf = (shape: number[], from = 0): Ref => ({ shape, data: values(sizeOf(shape), from) });

function expectRef(t: sm.Tensor, r: Ref): void {
  expect(t.shape).toEqual(r.shape);
  expect(t.toArray()).toEqual(r.data);
}


const norm = (axis: number, nd: number) => (axis < 0 ? axis + nd : axis);

// ---------------------------------------------------------------------------------------------
// references

function concatRef(parts: Ref[], axis: number): Ref {
  const shape = [...parts[0]!.shape];
  shape[axis] = parts.reduce((a, p) => a + p.shape[axis]!, 0);
  return build(shape, (idx) => {
    let c = idx[axis]!;
    for (const p of parts) {
      if (c < p.shape[axis]!) return at(p, idx.map((v, d) => (d === axis ? c : v)));
      c -= p.shape[axis]!;
    }
    throw new Error("unreachable");
  });
}

function takeRef(x: Ref, ind: Ref, axis: number): Ref {
  const len = x.shape[axis]!;
  const m = ind.shape.length;
  const shape = [...x.shape.slice(0, axis), ...ind.shape, ...x.shape.slice(axis + 1)];
  return build(shape, (idx) => {
    const k = Math.min(Math.max(wrap(at(ind, idx.slice(axis, axis + m)), len), 0), len - 1);
    return at(x, [...idx.slice(0, axis), k, ...idx.slice(axis + m)]);
  });
}
const wrap = (k: number, len: number) => (k < 0 ? k + len : k);

// ---------------------------------------------------------------------------------------------

describe("concatenate", () => {
  const cases: [number[][], number][] = [
    [[[2, 3], [4, 3]], 0],
    [[[2, 3], [2, 1], [2, 0], [2, 5]], -1],
    [[[1, 3, 1], [1, 3, 2], [1, 3, 1]], 2],
    [[[0, 3], [2, 3]], 0],
    [[[3], [5], [1]], 0],
    [[[2, 1, 3], [2, 4, 3]], -2],
  ];
  for (const [mode, run] of MODES) {
    test(`${mode}: inputs of every kind, on each axis`, () => {
      for (const [shapes, axis] of cases) {
        for (let shift = 0; shift < KINDS.length; shift++) {
          const out = run(() => sm.concatenate(shapes.map((s, i) => make(KINDS[(i + shift) % KINDS.length]!, s, 10 * i)), axis));
          expectRef(out, concatRef(shapes.map((s, i) => refOf(s, 10 * i)), norm(axis, shapes[0]!.length)));
        }
      }
    });

    test(`${mode}: an empty result, and dtypes promote`, () => {
      run(() => {
        const e = sm.concatenate([make("lazy", [0, 3]), make("computed", [0, 3])], 0);
        expect(e.shape).toEqual([0, 3]);
        expect(e.toArray()).toEqual([]);
        const z = sm.concatenate([sm.zeros([2, 0]), sm.zeros([2, 0], "int32")], 1);
        expect([z.shape, z.dtype]).toEqual([[2, 0], "float32"]);
        const mixed = sm.concatenate([sm.array([1, 2], "int32"), sm.array([0.5], "float32")]);
        expect(mixed.dtype).toBe("float32");
        expect(mixed.toArray()).toEqual([1, 2, 0.5]);
        const ints = sm.concatenate([sm.array([1, 2], "int8"), sm.array([300], "int32")]);
        expect([ints.dtype, ints.toArray()]).toEqual(["int32", [1, 2, 300]]);
        const bools = sm.concatenate([sm.array([true]), sm.array([false, true])]);
        expect([bools.dtype, bools.toArray<boolean>()]).toEqual(["bool", [true, false, true]]);
      });
    });

    test(`${mode}: 40 inputs (more than one kernel binds)`, () => {
      for (const kind of ["computed", "lazy"] as const) {
        const shapes = Array.from({ length: 40 }, (_, i) => [2, 1 + (i % 3)]);
        const out = run(() => sm.concatenate(shapes.map((s, i) => make(kind, s, i)), 1));
        expectRef(out, concatRef(shapes.map((s, i) => refOf(s, i)), 1));
      }
    });
  }

  test("the kernel is compiled once per structure, not per shape", () => {
    const go = (a: number, b: number, c: number) => sm.concatenate([make("lazy", [a, c]), make("lazy", [b, c])], 0).toArray();
    go(2, 3, 4);
    sm.resetStats();
    go(5, 1, 7);
    expect(sm.stats().kernelCompiles).toBe(0);
  });

  test("errors name the op and the problem", () => {
    expect(errorOf(() => sm.concatenate([]))).toBe("concatenate: expected a non-empty array of tensors, got []");
    expect(errorOf(() => sm.concatenate([sm.zeros([2, 3]), sm.zeros([3, 3])], 1))).toBe(
      "concatenate: all tensors must have the same shape except on axis 1: xs[0] has shape [2, 3], xs[1] has [3, 3]",
    );
    expect(errorOf(() => sm.concatenate([sm.zeros([2, 3]), sm.zeros([2])]))).toContain("xs[1] has [2]");
    expect(errorOf(() => sm.concatenate([sm.array(1), sm.array(2)]))).toBe(
      "concatenate: zero-dimensional tensors cannot be concatenated; use stack",
    );
    expect(errorOf(() => sm.concatenate([sm.zeros([2])], 1))).toBe("concatenate: axis 1 is out of range for a 1-D array");
    expect(errorOf(() => sm.concatenate([sm.zeros([2]), [1, 2] as never]))).toBe("concatenate: xs[1] must be a Tensor, got [1,2]");
  });
});

describe("stack", () => {
  for (const [mode, run] of MODES) {
    test(`${mode}: on every axis, size-0 and zero-dimensional inputs`, () => {
      const cases: [number[], number, number][] = [
        [[2, 3], 0, 3],
        [[2, 3], -1, 2],
        [[2, 3], 1, 4],
        [[0, 2], 1, 2],
        [[], 0, 3],
        [[1], -2, 5],
      ];
      for (const [shape, axis, count] of cases) {
        const out = run(() => sm.stack(Array.from({ length: count }, (_, i) => make(KINDS[i % 4]!, shape, 5 * i)), axis));
        const ax = norm(axis, shape.length + 1);
        const lifted = [...shape.slice(0, ax), 1, ...shape.slice(ax)];
        const parts = Array.from({ length: count }, (_, i) => ({ shape: lifted, data: refOf(shape, 5 * i).data }));
        expectRef(out, concatRef(parts, ax));
      }
    });
  }

  test("errors", () => {
    expect(errorOf(() => sm.stack([sm.zeros([2, 3]), sm.zeros([3, 2])]))).toBe(
      "stack: all tensors must have the same shape: xs[0] has shape [2, 3], xs[1] has [3, 2]",
    );
    expect(errorOf(() => sm.stack([sm.zeros([2])], 2))).toBe("stack: axis 2 is out of range for a 2-D array");
    expect(errorOf(() => sm.stack([] as sm.Tensor[]))).toBe("stack: expected a non-empty array of tensors, got []");
  });
});

describe("split", () => {
  const sliceRef = (x: Ref, axis: number, start: number, stop: number): Ref => {
    const shape = [...x.shape];
    shape[axis] = Math.max(0, stop - start);
    return build(shape, (idx) => at(x, idx.map((v, d) => (d === axis ? v + start : v))));
  };
  /** Python's slice bounds for a split point. */
  const clampCut = (c: number, n: number) => Math.min(Math.max(c < 0 ? c + n : c, 0), n);

  for (const [mode, run] of MODES) {
    test(`${mode}: sections and split points, every kind of input`, () => {
      const cases: [number[], number | number[], number][] = [
        [[6, 4], 3, 0],
        [[3, 5], [1, 4], -1],
        [[3, 5], [-2], 1],
        [[4, 3], [10], 0],
        [[5, 2], [3, 1], 0],
        [[2, 0, 3], 1, 1],
        [[2, 0, 3], [0, 0], 1],
        [[7], 7, 0],
        [[7], [], 0],
      ];
      for (const kind of KINDS) {
        for (const [shape, how, axis] of cases) {
          const parts = run(() => sm.split(make(kind, shape), how, axis));
          const ax = norm(axis, shape.length);
          const n = shape[ax]!;
          const cuts = typeof how === "number" ? Array.from({ length: how - 1 }, (_, i) => ((i + 1) * n) / how) : how;
          const edges = [0, ...cuts.map((c) => clampCut(c, n)), n];
          expect(parts.length).toBe(edges.length - 1);
          parts.forEach((p, i) => expectRef(p, sliceRef(refOf(shape), ax, edges[i]!, edges[i + 1]!)));
        }
      }
    });
  }

  test("the parts are views: reading them runs no kernel", () => {
    const x = make("computed", [6, 4]).eval();
    sm.resetStats();
    for (const p of sm.split(x, 3, 0)) p.toArray();
    for (const p of sm.split(x, [1, 3], 1)) p.toArray();
    expect(sm.stats().kernelsDispatched).toBe(0);
  });

  test("errors", () => {
    expect(errorOf(() => sm.split(sm.zeros([5, 2]), 2))).toBe("split: axis 0 of size 5 cannot be split into 2 equal sections");
    expect(errorOf(() => sm.split(sm.zeros([4]), 0))).toBe("split: the number of sections must be a positive integer, got 0");
    expect(errorOf(() => sm.split(sm.zeros([4]), [1.5]))).toBe("split: split points must be integers, got [1.5]");
    expect(errorOf(() => sm.split(sm.array(1), 1))).toBe("split: a zero-dimensional tensor cannot be split");
    expect(errorOf(() => sm.split(sm.zeros([4]), 2, -2))).toBe("split: axis -2 is out of range for a 1-D array");
  });
});

describe("pad", () => {
  const padRef = (x: Ref, pairs: [number, number][], value: number): Ref =>
    build(
      x.shape.map((d, i) => d + pairs[i]![0] + pairs[i]![1]),
      (idx) => {
        const src = idx.map((v, d) => v - pairs[d]![0]);
        return src.every((v, d) => v >= 0 && v < x.shape[d]!) ? at(x, src) : value;
      },
    );

  for (const [mode, run] of MODES) {
    test(`${mode}: widths as a number, a pair, pairs per axis; every kind of input`, () => {
      const cases: [number[], sm.PadWidth, [number, number][], number][] = [
        [[2, 3], 1, [[1, 1], [1, 1]], 0],
        [[2, 3], [1, 2], [[1, 2], [1, 2]], -7.5],
        [[2, 3], [[0, 1], [2, 0]], [[0, 1], [2, 0]], 3],
        [[3, 1, 2], [[1, 0]], [[1, 0], [1, 0], [1, 0]], 9],
        [[0, 3], 1, [[1, 1], [1, 1]], 2],
        [[5], [[0, 0]], [[0, 0]], 1],
        [[1, 4], [[2, 3], [0, 5]], [[2, 3], [0, 5]], -1],
      ];
      for (const kind of KINDS) {
        for (const [shape, width, pairs, value] of cases) {
          const out = run(() => sm.pad(make(kind, shape), width, value));
          expectRef(out, padRef(refOf(shape), pairs, value));
        }
      }
    });

    test(`${mode}: zero-dimensional input, integer and bool dtypes keep their values`, () => {
      run(() => {
        expectRef(sm.pad(sm.array(2.5), 3, 1), { shape: [], data: [2.5] });
        const big = 2 ** 30 + 1;
        const i = sm.pad(sm.array([1, 2], "int32"), [1, 0], big);
        expect([i.dtype, i.toArray()]).toEqual(["int32", [big, 1, 2]]);
        const u = sm.pad(sm.array([1], "uint32"), [0, 1], 2 ** 32 - 1);
        expect(u.toArray()).toEqual([1, 2 ** 32 - 1]);
        const b = sm.pad(sm.array([false]), 1, true);
        expect([b.dtype, b.toArray<boolean>()]).toEqual(["bool", [true, false, true]]);
        const h = sm.pad(sm.array([1.5], "float16"), [1, 0], -2);
        expect([h.dtype, h.toArray()]).toEqual(["float16", [-2, 1.5]]);
      });
    });
  }

  test("the kernel is compiled once per structure, not per width or value", () => {
    sm.pad(make("lazy", [2, 3]), [[1, 0], [2, 2]], 1).toArray();
    sm.resetStats();
    sm.pad(make("lazy", [4, 5]), [[0, 3], [1, 0]], -4).toArray();
    expect(sm.stats().kernelCompiles).toBe(0);
  });

  test("errors", () => {
    expect(errorOf(() => sm.pad(sm.zeros([2, 2]), -1))).toBe("pad: the padding before axis 0 must be a non-negative integer, got -1");
    expect(errorOf(() => sm.pad(sm.zeros([2, 2]), [[1, 1], [1, 1], [1, 1]]))).toBe(
      "pad: padWidth must be a number, a [before, after] pair, or 2 such pairs (one per axis), got [[1,1],[1,1],[1,1]]",
    );
    expect(errorOf(() => sm.pad(sm.zeros([2]), [[1, 0.5]]))).toBe("pad: the padding after axis 0 must be a non-negative integer, got 0.5");
    expect(errorOf(() => sm.pad(sm.zeros([2]), 1, "x" as never))).toBe("pad: value must be a number or a boolean, got string");
  });
});

describe("tile and repeat", () => {
  const tileRef = (x: Ref, reps: number[]): Ref => {
    const nd = Math.max(x.shape.length, reps.length);
    const xs = [...Array(nd - x.shape.length).fill(1), ...x.shape] as number[];
    const rs = [...Array(nd - reps.length).fill(1), ...reps] as number[];
    const lifted = { shape: xs, data: x.data };
    return build(xs.map((d, i) => d * rs[i]!), (idx) => at(lifted, idx.map((v, d) => v % xs[d]!)));
  };
  const repeatRef = (x: Ref, r: number, axis: number | undefined): Ref => {
    const src = axis === undefined ? { shape: [x.data.length], data: x.data } : x;
    const ax = axis === undefined ? 0 : norm(axis, x.shape.length);
    const shape = src.shape.map((d, i) => (i === ax ? d * r : d));
    return build(shape, (idx) => at(src, idx.map((v, d) => (d === ax ? Math.floor(v / r) : v))));
  };

  for (const [mode, run] of MODES) {
    test(`${mode}: tile`, () => {
      const cases: [number[], number | number[]][] = [
        [[2, 3], 2],
        [[2, 3], [2, 1, 3]],
        [[2, 3], [0, 2]],
        [[3, 1], [1, 3]],
        [[0, 2], [2, 2]],
        [[], [3]],
        [[4], []],
        [[1, 2, 1], [3]],
      ];
      for (const kind of KINDS) {
        for (const [shape, reps] of cases) {
          const out = run(() => sm.tile(make(kind, shape), reps));
          expectRef(out, tileRef(refOf(shape), typeof reps === "number" ? [reps] : reps));
        }
      }
    });

    test(`${mode}: repeat`, () => {
      const cases: [number[], number, number | undefined][] = [
        [[2, 3], 2, 1],
        [[2, 3], 3, -2],
        [[2, 3], 2, undefined],
        [[2, 3], 0, 0],
        [[3, 1], 3, 1],
        [[2, 0], 2, 1],
        [[], 3, undefined],
        [[5], 1, 0],
      ];
      for (const kind of KINDS) {
        for (const [shape, r, axis] of cases) {
          const out = run(() => sm.repeat(make(kind, shape), r, axis));
          expectRef(out, repeatRef(refOf(shape), r, axis));
        }
      }
    });
  }

  test("errors", () => {
    expect(errorOf(() => sm.tile(sm.zeros([2]), [-1]))).toBe("tile: reps[0] must be a non-negative integer, got -1");
    expect(errorOf(() => sm.tile(sm.zeros([2]), "2" as never))).toBe("tile: reps must be a number or an array of numbers, got string");
    expect(errorOf(() => sm.repeat(sm.zeros([2]), 1.5))).toBe("repeat: repeats must be a non-negative integer, got 1.5");
    expect(errorOf(() => sm.repeat(sm.zeros([2]), 2, 1))).toBe("repeat: axis 1 is out of range for a 1-D array");
    expect(errorOf(() => sm.repeat(sm.array(1), 2, 0))).toBe("repeat: axis 0 is out of range for a 0-D array");
  });
});

describe("take and gather", () => {
  for (const [mode, run] of MODES) {
    test(`${mode}: host and tensor indices, every kind of input`, () => {
      const cases: [number[], sm.HostIndices, number | undefined][] = [
        [[3, 4], [2, 0, -1], 0],
        [[3, 4], [[1, 3], [0, -4]], -1],
        [[3, 4], 2, 1],
        [[3, 4], [[5, -12], [11, 0]], undefined],
        [[3, 4], [], 1],
        [[2, 1, 3], [0, 0, 0, 0, 0], 1],
        [[5], [4, -5, 2], 0],
        [[2, 0, 3], [1], 0],
      ];
      for (const kind of KINDS) {
        for (const [shape, ids, axis] of cases) {
          const x = refOf(shape);
          const flat = axis === undefined ? { shape: [x.data.length], data: x.data } : x;
          const ax = axis === undefined ? 0 : norm(axis, shape.length);
          const flatIds = [ids].flat(3) as number[];
          const idShape = typeof ids === "number" ? [] : Array.isArray(ids[0]) ? [ids.length, (ids[0] as number[]).length] : [ids.length];
          const want = takeRef(flat, { shape: idShape, data: flatIds }, ax);
          expectRef(run(() => sm.take(make(kind, shape), ids, axis)), want);
          const asTensor = run(() => sm.reshape(sm.array(flatIds, "int32"), idShape));
          expectRef(run(() => sm.take(make(kind, shape), asTensor, axis)), want);
        }
      }
    });

    test(`${mode}: lazy, unsigned and narrow index tensors; out-of-range tensor indices are clamped`, () => {
      run(() => {
        const x = make("lazy", [4, 3]);
        const ref = refOf([4, 3]);
        const lazyIds = sm.subtract(sm.array([3, 1, 2], "int32"), 1);
        expectRef(sm.take(x, lazyIds, 0), takeRef(ref, { shape: [3], data: [2, 0, 1] }, 0));
        expectRef(sm.take(x, sm.array([2, 0], "uint8"), 1), takeRef(ref, { shape: [2], data: [2, 0] }, 1));
        expectRef(sm.take(x, sm.array([-1, 1], "int8"), 1), takeRef(ref, { shape: [2], data: [2, 1] }, 1));
        // Past the end reads the last element; below -len reads the first; huge uint32 the last.
        const clamped = sm.take(x, sm.array([7, -9, 3], "int32"), 0);
        expectRef(clamped, takeRef(ref, { shape: [3], data: [3, 0, 3] }, 0));
        expectRef(sm.take(x, sm.array([2 ** 32 - 1], "uint32"), 0), takeRef(ref, { shape: [1], data: [3] }, 0));
      });
    });

    test(`${mode}: gather is take along axis 0 (embedding lookup)`, () => {
      const weights = refOf([5, 3]);
      const ids = [[0, 4], [2, 2]];
      const want = takeRef(weights, { shape: [2, 2], data: ids.flat() }, 0);
      expectRef(run(() => sm.gather(make("transposed", [5, 3]), sm.array(ids, "int32"))), want);
      expectRef(run(() => sm.gather(make("computed", [5, 3]), ids)), want);
    });
  }

  test("the kernel is compiled once per structure, not per index values or shape", () => {
    sm.take(make("lazy", [3, 4]), sm.array([0, 2], "int32"), 1).toArray();
    sm.resetStats();
    sm.take(make("lazy", [6, 5]), sm.array([4, 1, 3], "int32"), 1).toArray();
    expect(sm.stats().kernelCompiles).toBe(0);
  });

  test("errors", () => {
    const x = sm.zeros([3, 4]);
    expect(errorOf(() => sm.take(x, [0, 4], 1))).toBe("take: index 4 is out of bounds for axis 1 with size 4");
    expect(errorOf(() => sm.take(x, [[-4]], 0))).toBe("take: index -4 is out of bounds for axis 0 with size 3");
    expect(errorOf(() => sm.take(x, 12))).toBe("take: index 12 is out of bounds for axis 0 with size 12");
    expect(errorOf(() => sm.take(x, [0.5], 0))).toBe("take: indices must be integers, got 0.5");
    expect(errorOf(() => sm.take(x, sm.array([0.5]), 0))).toBe("take: indices must be an integer tensor, got dtype float32");
    expect(errorOf(() => sm.take(x, sm.array([true]), 0))).toBe("take: indices must be an integer tensor, got dtype bool");
    expect(errorOf(() => sm.take(x, [0], 2))).toBe("take: axis 2 is out of range for a 2-D array");
    expect(errorOf(() => sm.take(sm.zeros([0, 2]), sm.array([0], "int32"), 0))).toBe("take: axis 0 has size 0, so no index is in bounds");
    expect(errorOf(() => sm.gather(sm.zeros([3, 2]), [3]))).toBe("take: index 3 is out of bounds for axis 0 with size 3");
  });
});

describe("takeAlongAxis and putAlongAxis", () => {
  /** The broadcast output shape of x and indices along axis (indices' size on the axis). */
  const alongShape = (x: number[], ind: number[], ax: number) => x.map((d, k) => (k === ax ? ind[k]! : Math.max(d, ind[k]!)));
  const takeAlongRef = (x: Ref, ind: Ref, ax: number): Ref =>
    build(alongShape(x.shape, ind.shape, ax), (idx) => {
      const k = Math.min(Math.max(wrap(at(ind, bcast(idx, ind.shape)), x.shape[ax]!), 0), x.shape[ax]! - 1);
      return at(x, idx.map((v, d) => (d === ax ? k : x.shape[d] === 1 ? 0 : v)));
    });
  const putAlongRef = (x: Ref, ind: Ref, vals: Ref, ax: number): Ref => {
    const out = { shape: x.shape, data: [...x.data] };
    const shape = x.shape.map((d, k) => (k === ax ? ind.shape[k]! : d));
    for (let i = 0; i < sizeOf(shape); i++) {
      const idx = unravel(i, shape);
      const k = Math.min(Math.max(wrap(at(ind, bcast(idx, ind.shape)), x.shape[ax]!), 0), x.shape[ax]! - 1);
      out.data[ravel(idx.map((v, d) => (d === ax ? k : v)), x.shape)] = at(vals, bcast(idx, vals.shape));
    }
    return out;
  };
  const idsRef = (ids: number[][] | number[][][]): Ref => {
    const shape: number[] = [];
    let v: unknown = ids;
    while (Array.isArray(v)) {
      shape.push(v.length);
      v = v[0];
    }
    return { shape, data: (ids as unknown[]).flat(3) as number[] };
  };

  for (const [mode, run] of MODES) {
    test(`${mode}: takeAlongAxis with host and tensor indices, broadcasting, every kind of input`, () => {
      const cases: [number[], number[][] | number[][][], number][] = [
        [[3, 4], [[3, 0], [1, 1], [-1, 2]], 1],
        [[3, 4], [[2, 0]], -1],
        [[3, 4], [[2, 0, 1, 1]], 0],
        [[3, 1], [[0, -1, 0]], 0],
        [[2, 3, 2], [[[1], [0], [2]]], 1],
        [[3, 4], [[]], 1],
      ];
      for (const kind of KINDS) {
        for (const [shape, ids, axis] of cases) {
          const ax = norm(axis, shape.length);
          const r = idsRef(ids);
          const want = takeAlongRef(refOf(shape), r, ax);
          expectRef(run(() => sm.takeAlongAxis(make(kind, shape), ids, axis)), want);
          const tensorIds = run(() => sm.reshape(sm.array(r.data, "int32"), r.shape));
          expectRef(run(() => sm.takeAlongAxis(make(kind, shape), tensorIds, axis)), want);
        }
      }
    });

    test(`${mode}: takeAlongAxis of argmax picks the maximum; no axis flattens; tensor indices clamp`, () => {
      run(() => {
        const x = make("transposed", [3, 5]);
        const ref = refOf([3, 5]);
        const best = sm.takeAlongAxis(x, sm.argmax(x, 1, true), 1);
        expect(best.toArray()).toEqual([0, 1, 2].map((r) => Math.max(...ref.data.slice(5 * r, 5 * r + 5))));
        expectRef(sm.takeAlongAxis(x, [[14, 0], [-1, 3]]), takeRef({ shape: [15], data: ref.data }, { shape: [4], data: [14, 0, 14, 3] }, 0));
        const clamped = sm.takeAlongAxis(x, sm.array([[9], [-9], [2]], "int32"), 1);
        expect(clamped.toArray()).toEqual([4, 5, 12].map((i) => ref.data[i]!));
      });
    });

    test(`${mode}: putAlongAxis with host and tensor indices, broadcast values, every kind of input`, () => {
      const cases: [number[], number[][] | number[][][], number, number[]][] = [
        [[3, 4], [[0], [3], [1]], 1, [3, 1]],
        [[3, 4], [[0, 2], [3, -1], [1, 0]], -1, [1, 2]],
        [[3, 4], [[2, 0, 1, 1]], 0, []],
        [[3, 4], [[1], [2], [0]], 1, [1]],
        [[2, 3, 2], [[[1, 0]], [[0, 0]]], 1, [2, 1, 2]],
        [[3, 4], [[], [], []], 1, [3, 0]],
        [[3, 1], [[0], [0], [0]], 1, [3, 1]],
      ];
      for (const kind of KINDS) {
        for (const [shape, ids, axis, vshape] of cases) {
          const ax = norm(axis, shape.length);
          const r = idsRef(ids);
          const vals = refOf(vshape, 50);
          const want = putAlongRef(refOf(shape), r, vals, ax);
          expectRef(run(() => sm.putAlongAxis(make(kind, shape), ids, make(kind, vshape, 50), axis)), want);
          const tensorIds = run(() => sm.reshape(sm.array(r.data, "int32"), r.shape));
          expectRef(run(() => sm.putAlongAxis(make(kind, shape), tensorIds, make("computed", vshape, 50), axis)), want);
        }
      }
    });

    test(`${mode}: putAlongAxis: duplicates (last along the axis wins), scalars, no axis, clamping, dtypes`, () => {
      run(() => {
        const x = make("lazy", [2, 4]);
        const ref = refOf([2, 4]);
        const dup = sm.putAlongAxis(x, [[1, 1, 1], [3, 0, 3]], sm.array([[5, 6, 7], [8, 9, 10]]), 1);
        const want = [...ref.data];
        [want[1], want[7], want[4]] = [7, 10, 9];
        expect(dup.toArray()).toEqual(want);
        const scalar = sm.putAlongAxis(x, [[0], [2]], -1, 1);
        const w2 = [...ref.data];
        [w2[0], w2[6]] = [-1, -1];
        expect(scalar.toArray()).toEqual(w2);
        // No axis: positions in the flattened x; the result keeps x's shape.
        const flat = sm.putAlongAxis(x, [7, -8], [1, 2]);
        const w3 = [...ref.data];
        [w3[7], w3[0]] = [1, 2];
        expectRef(flat, { shape: [2, 4], data: w3 });
        const clamped = sm.putAlongAxis(x, sm.array([[9], [-9]], "int32"), 0, 1);
        const w4 = [...ref.data];
        [w4[3], w4[4]] = [0, 0];
        expect(clamped.toArray()).toEqual(w4);
        const ints = sm.putAlongAxis(sm.array([[1, 2, 3]], "int32"), [[2]], sm.array([[7.9]]), 1);
        expect([ints.dtype, ints.toArray()]).toEqual(["int32", [1, 2, 7]]);
        const bools = sm.putAlongAxis(sm.array([false, false]), [1], true, 0);
        expect([bools.dtype, bools.toArray<boolean>()]).toEqual(["bool", [false, true]]);
        // x itself is unchanged.
        expect(x.toArray()).toEqual(ref.data);
      });
    });
  }

  test("errors", () => {
    const x = sm.zeros([3, 4]);
    expect(errorOf(() => sm.takeAlongAxis(x, [1, 2], 1))).toBe("takeAlongAxis: indices must have as many axes as x (2), got shape [2]");
    expect(errorOf(() => sm.takeAlongAxis(x, [[4]], 1))).toBe("takeAlongAxis: index 4 is out of bounds for axis 1 with size 4");
    expect(errorOf(() => sm.takeAlongAxis(x, sm.zeros([2, 1], "int32"), 1))).toBe(
      "takeAlongAxis: indices of shape [2, 1] do not broadcast against x of shape [3, 4] on the axes other than 1",
    );
    expect(errorOf(() => sm.takeAlongAxis(x, sm.zeros([3, 1]), 1))).toBe("takeAlongAxis: indices must be an integer tensor, got dtype float32");
    expect(errorOf(() => sm.putAlongAxis(sm.zeros([1, 4]), [[0], [1], [2]], 1, 1))).toBe(
      "putAlongAxis: indices of shape [3, 1] do not fit x of shape [1, 4] on the axes other than 1",
    );
    expect(errorOf(() => sm.putAlongAxis(x, [[0], [1]], 1, 1))).toBe(
      "putAlongAxis: indices of shape [2, 1] do not broadcast against x of shape [3, 4] on the axes other than 1",
    );
    expect(errorOf(() => sm.putAlongAxis(x, [[0], [1], [-5]], 1, 1))).toBe("putAlongAxis: index -5 is out of bounds for axis 1 with size 4");
    expect(errorOf(() => sm.putAlongAxis(x, [[0, 1, 2, 0]], sm.zeros([2, 4]), 0))).toBe(
      "putAlongAxis: values of shape [2, 4] cannot be broadcast to the indices' shape [1, 4]",
    );
    expect(errorOf(() => sm.putAlongAxis(x, [[0, 1, 2, 0]], sm.zeros([3]), 0))).toBe(
      "putAlongAxis: shapes [3] and [1,4] cannot be broadcast together",
    );
    expect(errorOf(() => sm.putAlongAxis(x, [[0]], 1, 2))).toBe("putAlongAxis: axis 2 is out of range for a 2-D array");
    expect(errorOf(() => sm.putAlongAxis(sm.zeros([0, 2]), sm.zeros([1, 2], "int32"), 1, 0))).toBe(
      "putAlongAxis: axis 0 has size 0, so no index is in bounds",
    );
  });
});

describe("inside fused kernels", () => {
  const rows = [
    [1, 2, 3],
    [4, 5, 9],
    [0, 0, 7],
  ];
  const softmaxRef = rows.map((r) => {
    const m = Math.max(...r);
    const e = r.map((v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  });
  const expectNear = (t: sm.Tensor, want: number[][]) => {
    expect(t.shape).toEqual([want.length, want[0]!.length]);
    (t.toArray() as number[]).forEach((v, i) => expect(Math.abs(v - want.flat()[i]!)).toBeLessThan(2e-6 * (1 + Math.abs(want.flat()[i]!))));
  };

  for (const [mode, run] of MODES) {
    test(`${mode}: takes, pads and joins read and feed row reductions; a short matmul read across rows`, () => {
      run(() => {
        const x = sm.array(rows, "float32");
        const perm = sm.array([2, 0, 1], "int32");
        expectNear(sm.take(sm.softmax(x, -1), perm, -1), softmaxRef.map((r) => [r[2]!, r[0]!, r[1]!]));
        expectNear(sm.softmax(sm.take(x, perm, 0), -1), [softmaxRef[2]!, softmaxRef[0]!, softmaxRef[1]!]);
        // Cross-entropy's pick of the label's log-probability.
        const picked = sm.takeAlongAxis(sm.logSoftmax(x, -1), sm.array([[2], [0], [1]], "int32"), -1);
        expectNear(picked, [[Math.log(softmaxRef[0]![2]!)], [Math.log(softmaxRef[1]![0]!)], [Math.log(softmaxRef[2]![1]!)]]);
        expect(sm.sum(sm.takeAlongAxis(x, [[2, 2, 0]], 0), -1).toArray()).toEqual([0 + 0 + 3]);
        expectNear(sm.softmax(sm.pad(x, [[0, 0], [0, 1]], -Infinity), -1), softmaxRef.map((r) => [...r, 0]));
        const twice = sm.concatenate([x, x], 0);
        expectNear(sm.subtract(twice, sm.max(twice, -1, true)), [...rows, ...rows].map((r) => r.map((v) => v - Math.max(...r))));
        // A contraction short enough to be computed inline, read at other rows.
        const short = sm.matmul(sm.reshape(sm.arange(16), [2, 8]).astype("float32"), sm.ones([8, 3]));
        expectNear(sm.take(short, sm.array([1, 0], "int32"), 0), [[92, 92, 92], [28, 28, 28]]);
      });
    });
  }

  const putOnRows = () => {
    const x = sm.array(rows, "float32");
    const put = sm.putAlongAxis(sm.subtract(x, sm.max(x, -1, true)), [[0], [1], [2]], 100, 1);
    expect(put.toArray()).toEqual([100, -1, 0, -5, 100, 0, -7, -7, 100]);
  };
  const takeAcrossRows = () => {
    const x = sm.array(rows, "float32");
    expectNear(sm.take(sm.softmax(x, -1), sm.array([2, 0, 1], "int32"), 0), [softmaxRef[2]!, softmaxRef[0]!, softmaxRef[1]!]);
  };
  const takeOfMatmul = () => {
    const K = 64;
    const a = sm.reshape(sm.arange(2 * K), [2, K]).astype("float32");
    const sums = [0, 1].map((r) => Array.from({ length: K }, (_, k) => r * K + k).reduce((p, q) => p + q, 0));
    expectNear(sm.take(sm.matmul(a, sm.ones([K, 3])), sm.array([1, 0], "int32"), 0), [1, 0].map((r) => [sums[r]!, sums[r]!, sums[r]!]));
  };

  test("lazy: putAlongAxis of a row-reduced value", putOnRows);
  // concat, pad, take and takeAlong read other elements than their own: the row and epilogue
  // planners must not hold a row's reduction or an element's product fixed across them.
  test("lazy: a take across rows of a row-fused softmax", takeAcrossRows);
  test("lazy: a take of rows of a matmul (epilogue)", takeOfMatmul);
  test("lazy: a cumulative sum of a row-reduced expression", () => {
    const x = sm.array([[1, 3, 2], [0, -1, 4]], "float32");
    expect(sm.cumsum(sm.subtract(x, sm.max(x, -1, true)), -1).toArray()).toEqual([-2, -2, -3, -4, -9, -9]);
  });
  test("eager: the same three compositions", () => {
    sm.eager(() => {
      putOnRows();
      takeAcrossRows();
      takeOfMatmul();
    });
  });
});
