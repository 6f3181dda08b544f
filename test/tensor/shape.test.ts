import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { SmeltError } from "../../src/errors.ts";
import {
  type IndexItem,
  type Shape,
  broadcastShapes,
  broadcastStrides,
  checkShape,
  contiguousStrides,
  inferReshape,
  isRowContiguous,
  normalizeAxes,
  normalizeAxis,
  parseSliceString,
  permuteShape,
  planIndex,
  reducedShape,
  shapeSize,
} from "../../src/graph/shape.ts";
import { errorOf } from "../expect-error.ts";


/** Every multi-index of `shape` in row-major order. */
function* indices(shape: Shape): Generator<number[]> {
  if (shape.some((d) => d === 0)) return;
  const idx = new Array<number>(shape.length).fill(0);
  while (true) {
    yield [...idx];
    let k = shape.length - 1;
    while (k >= 0) {
      idx[k] = (idx[k] as number) + 1;
      if ((idx[k] as number) < (shape[k] as number)) break;
      idx[k] = 0;
      k--;
    }
    if (k < 0) return;
  }
}

const dot = (idx: readonly number[], strides: readonly number[]) =>
  idx.reduce((acc, i, k) => acc + i * (strides[k] as number), 0);

const smallShape = (maxDims = 4, maxDim = 5) => fc.array(fc.integer({ min: 0, max: maxDim }), { maxLength: maxDims });

describe("sizes and strides", () => {
  test("shapeSize", () => {
    expect(shapeSize([])).toBe(1);
    expect(shapeSize([2, 3, 4])).toBe(24);
    expect(shapeSize([2, 0, 4])).toBe(0);
  });

  test("contiguousStrides", () => {
    expect(contiguousStrides([])).toEqual([]);
    expect(contiguousStrides([2, 3, 4])).toEqual([12, 4, 1]);
    expect(contiguousStrides([5])).toEqual([1]);
    // A 0-size dim counts as 1 for outer strides, as in NumPy.
    expect(contiguousStrides([2, 0, 3])).toEqual([3, 3, 1]);
  });

  test("contiguous strides visit every element once, in order", () => {
    fc.assert(
      fc.property(smallShape(4, 5), (shape) => {
        const strides = contiguousStrides(shape);
        const seen = [...indices(shape)].map((i) => dot(i, strides));
        expect(seen).toEqual(Array.from({ length: shapeSize(shape) }, (_, i) => i));
        expect(isRowContiguous(shape, strides)).toBe(true);
      }),
    );
  });

  test("checkShape", () => {
    expect(checkShape("zeros", [2, 3])).toEqual([2, 3]);
    expect(checkShape("zeros", [])).toEqual([]);
    expect(Object.is(checkShape("zeros", [-0])[0], 0)).toBe(true);
    const input = [1, 2];
    expect(checkShape("zeros", input)).not.toBe(input);
    expect(errorOf(() => checkShape("zeros", [2, -1])).message).toBe(
      "zeros: shape must be an array of non-negative integers, got [2,-1] (bad dimension -1)",
    );
    expect(errorOf(() => checkShape("ones", [2.5])).message).toContain("bad dimension 2.5");
    expect(errorOf(() => checkShape("ones", ["2"])).message).toContain('bad dimension "2"');
    expect(errorOf(() => checkShape("ones", [2 ** 53])).message).toContain("ones:");
    expect(errorOf(() => checkShape("ones", [NaN])).message).toContain("NaN");
    expect(errorOf(() => checkShape("full", 3, "shape")).message).toBe(
      "full: shape must be an array of non-negative integers, got 3",
    );
    expect(errorOf(() => checkShape("reshape", null, "newShape")).message).toContain("reshape: newShape must be");
  });

  test("isRowContiguous", () => {
    expect(isRowContiguous([2, 3], [3, 1])).toBe(true);
    expect(isRowContiguous([2, 3], [1, 2])).toBe(false); // a transpose
    expect(isRowContiguous([2, 3], [6, 2])).toBe(false); // a step-2 slice
    expect(isRowContiguous([2, 1, 3], [3, 99, 1])).toBe(true); // size-1 strides never move
    expect(isRowContiguous([1, 1], [0, 0])).toBe(true);
    expect(isRowContiguous([2, 3], [0, 1])).toBe(false); // broadcast rows alias
    expect(isRowContiguous([0, 3], [7, 7])).toBe(true);
    expect(isRowContiguous([], [])).toBe(true);
  });
});

/** Reference broadcast: pad with 1s, then each column's non-1 dims must agree. */
function broadcastRef(shapes: Shape[]): number[] | null {
  const ndim = Math.max(0, ...shapes.map((s) => s.length));
  const padded = shapes.map((s) => [...new Array<number>(ndim - s.length).fill(1), ...s]);
  const out: number[] = [];
  for (let k = 0; k < ndim; k++) {
    const distinct = new Set(padded.map((p) => p[k] as number).filter((d) => d !== 1));
    if (distinct.size > 1) return null;
    out.push(distinct.size === 0 ? 1 : ([...distinct][0] as number));
  }
  return out;
}

describe("broadcasting", () => {
  test("examples", () => {
    expect(broadcastShapes("add", [2, 3], [3])).toEqual([2, 3]);
    expect(broadcastShapes("add", [4, 1, 3], [5, 1])).toEqual([4, 5, 3]);
    expect(broadcastShapes("add", [], [2])).toEqual([2]);
    expect(broadcastShapes("add", [1, 0], [3, 1])).toEqual([3, 0]);
    expect(broadcastShapes("add")).toEqual([]);
    expect(broadcastShapes("where", [2, 1, 1], [1, 3, 1], [4])).toEqual([2, 3, 4]);
  });

  test("errors name the op and every shape", () => {
    expect(errorOf(() => broadcastShapes("add", [2, 3], [4])).message).toBe(
      "add: shapes [2,3] and [4] cannot be broadcast together",
    );
    expect(errorOf(() => broadcastShapes("where", [2], [1], [3])).message).toBe(
      "where: shapes [2], [1] and [3] cannot be broadcast together",
    );
    expect(errorOf(() => broadcastShapes("mul", [0], [2])).message).toContain("[0] and [2]");
  });

  test("random shapes agree with the reference, both ways round", () => {
    fc.assert(
      fc.property(smallShape(4, 3), smallShape(4, 3), (a, b) => {
        const ref = broadcastRef([a, b]);
        if (ref === null) {
          expect(() => broadcastShapes("add", a, b)).toThrow(SmeltError);
          expect(() => broadcastShapes("add", b, a)).toThrow(SmeltError);
        } else {
          expect(broadcastShapes("add", a, b)).toEqual(ref);
          expect(broadcastShapes("add", b, a)).toEqual(ref);
        }
      }),
      { numRuns: 500 },
    );
  });

  test("compatible shapes: each input dim is 1 or the result's", () => {
    // Inputs made from one target by turning dims into 1 and dropping leading dims always broadcast.
    const derived = (target: number[]) =>
      fc
        .tuple(fc.array(fc.boolean(), { minLength: target.length, maxLength: target.length }), fc.nat(target.length))
        .map(([ones, drop]) => target.map((d, i) => (ones[i] ? 1 : d)).slice(drop));
    const arb = smallShape(4, 4).chain((t) => fc.tuple(fc.constant(t), fc.array(derived(t), { minLength: 1, maxLength: 4 })));
    fc.assert(
      fc.property(arb, ([target, inputs]) => {
        const out = broadcastShapes("op", ...inputs);
        expect(out).toEqual(broadcastRef(inputs) as number[]);
        for (const s of inputs) {
          s.forEach((d, i) => {
            const o = out[out.length - s.length + i] as number;
            expect(d === o || d === 1).toBe(true);
          });
        }
        // Each result dim came from the target (or is 1 where every input had 1).
        out.forEach((d, i) => {
          expect(d === 1 || d === target[target.length - out.length + i]).toBe(true);
        });
      }),
    );
  });

  test("broadcastStrides reads the right source element", () => {
    expect(broadcastStrides([3, 1], [1, 1], [2, 3, 4])).toEqual([0, 1, 0]);
    expect(broadcastStrides([1, 1], [5, 7], [1, 1])).toEqual([5, 7]);
    const arb = smallShape(4, 3).chain((target) =>
      fc
        .tuple(fc.array(fc.boolean(), { minLength: target.length, maxLength: target.length }), fc.nat(target.length))
        .map(([ones, drop]) => [target, target.map((d, i) => (ones[i] ? 1 : d)).slice(drop)] as const),
    );
    fc.assert(
      fc.property(arb, ([target, src]) => {
        const srcStrides = contiguousStrides(src);
        const bs = broadcastStrides(src, srcStrides, target);
        expect(bs.length).toBe(target.length);
        for (const t of indices(target)) {
          const lead = target.length - src.length;
          const srcIdx = src.map((d, j) => (d === 1 ? 0 : (t[lead + j] as number)));
          expect(dot(t, bs)).toBe(dot(srcIdx, srcStrides));
        }
      }),
    );
  });
});

describe("axes", () => {
  test("normalizeAxis", () => {
    expect(normalizeAxis("sum", -1, 3)).toBe(2);
    expect(normalizeAxis("sum", 0, 1)).toBe(0);
    expect(Object.is(normalizeAxis("sum", -0, 1), 0)).toBe(true);
    expect(errorOf(() => normalizeAxis("sum", 3, 2)).message).toBe("sum: axis 3 is out of range for a 2-D array");
    expect(errorOf(() => normalizeAxis("sum", -3, 2)).message).toBe("sum: axis -3 is out of range for a 2-D array");
    expect(errorOf(() => normalizeAxis("sum", 0, 0)).message).toBe("sum: axis 0 is out of range for a 0-D array");
    expect(errorOf(() => normalizeAxis("moveaxis", 1.5, 2, "source")).message).toBe(
      "moveaxis: source must be an integer, got 1.5",
    );
    expect(errorOf(() => normalizeAxis("softmax", "1" as unknown as number, 2)).message).toContain('got "1"');
  });

  test("normalizeAxes", () => {
    expect(normalizeAxes("sum", undefined, 3)).toEqual([0, 1, 2]);
    expect(normalizeAxes("sum", null, 0)).toEqual([]);
    expect(normalizeAxes("sum", -1, 3)).toEqual([2]);
    expect(normalizeAxes("sum", [2, -3], 3)).toEqual([0, 2]);
    expect(normalizeAxes("sum", [], 3)).toEqual([]);
    expect(errorOf(() => normalizeAxes("sum", [1, -1], 2)).message).toBe("sum: duplicate axis -1 in [1,-1]");
    expect(errorOf(() => normalizeAxes("mean", [0, 5], 2)).message).toBe("mean: axis 5 is out of range for a 2-D array");
    expect(errorOf(() => normalizeAxes("mean", "0" as unknown as number, 2)).message).toContain("mean:");
  });

  test("normalizeAxes: sorted, unique, in range, same set as the input mod ndim", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }).chain((n) => fc.tuple(fc.constant(n), fc.array(fc.integer({ min: -n, max: n - 1 }), { maxLength: 6 }))),
        ([ndim, axes]) => {
          const wanted = axes.map((a) => (a + ndim) % ndim);
          if (new Set(wanted).size !== wanted.length) {
            expect(errorOf(() => normalizeAxes("sum", axes, ndim)).message).toContain("duplicate axis");
            return;
          }
          const got = normalizeAxes("sum", axes, ndim);
          expect(got).toEqual([...wanted].sort((x, y) => x - y));
          for (let i = 1; i < got.length; i++) expect(got[i] as number).toBeGreaterThan(got[i - 1] as number);
        },
      ),
    );
  });

  test("reducedShape", () => {
    expect(reducedShape([2, 3, 4], [0, 2], false)).toEqual([3]);
    expect(reducedShape([2, 3, 4], [0, 2], true)).toEqual([1, 3, 1]);
    expect(reducedShape([2, 3], [], false)).toEqual([2, 3]);
    expect(reducedShape([2, 3], [0, 1], false)).toEqual([]);
    fc.assert(
      fc.property(smallShape(4, 5), fc.array(fc.boolean(), { minLength: 4, maxLength: 4 }), (shape, pick) => {
        const axes = shape.map((_, i) => i).filter((i) => pick[i]);
        const dropped = reducedShape(shape, axes, false);
        const kept = reducedShape(shape, axes, true);
        expect(kept.length).toBe(shape.length);
        expect(dropped.length).toBe(shape.length - axes.length);
        expect(kept.filter((_, i) => !axes.includes(i))).toEqual(dropped);
      }),
    );
  });

  test("permuteShape", () => {
    expect(permuteShape("transpose", 3)).toEqual([2, 1, 0]);
    expect(permuteShape("transpose", 0)).toEqual([]);
    expect(permuteShape("transpose", 3, [1, -1, 0])).toEqual([1, 2, 0]);
    expect(errorOf(() => permuteShape("transpose", 3, [0, 1])).message).toBe(
      "transpose: axes [0,1] do not match a 3-D array (need 3 axes)",
    );
    expect(errorOf(() => permuteShape("transpose", 2, [0, -2])).message).toBe("transpose: repeated axis -2 in [0,-2]");
    expect(errorOf(() => permuteShape("transpose", 2, [0, 2])).message).toBe(
      "transpose: axis 2 is out of range for a 2-D array",
    );
  });
});

describe("inferReshape", () => {
  test("examples", () => {
    expect(inferReshape("reshape", [2, 3, 4], [6, -1])).toEqual([6, 4]);
    expect(inferReshape("reshape", [2, 3], [-1])).toEqual([6]);
    expect(inferReshape("reshape", [], [1, -1, 1])).toEqual([1, 1, 1]);
    expect(inferReshape("reshape", [0, 3], [-1, 3])).toEqual([0, 3]);
    expect(inferReshape("reshape", [0, 3], [3, 0, 5])).toEqual([3, 0, 5]);
    expect(inferReshape("reshape", [4], [2, 2])).toEqual([2, 2]);
  });

  test("errors name both shapes", () => {
    expect(errorOf(() => inferReshape("reshape", [2, 3], [4, -1])).message).toBe(
      "reshape: cannot reshape array of shape [2,3] (size 6) into shape [4,-1]",
    );
    expect(errorOf(() => inferReshape("reshape", [2, 3], [7])).message).toBe(
      "reshape: cannot reshape array of shape [2,3] (size 6) into shape [7]",
    );
    // With a 0 beside -1 the unknown dim could be anything.
    expect(errorOf(() => inferReshape("reshape", [0], [0, -1])).message).toContain("[0,-1]");
    expect(errorOf(() => inferReshape("reshape", [6], [-1, -1])).message).toBe(
      "reshape: can only specify one unknown dimension (-1), got [-1,-1]",
    );
    expect(errorOf(() => inferReshape("flatten", [6], [-2, -3])).message).toContain("flatten: shape must hold");
    expect(errorOf(() => inferReshape("reshape", [6], [1.5, 4])).message).toContain("[1.5,4]");
  });

  test("any regrouping of the dims, with one made -1, is inferred back", () => {
    const arb = fc
      .array(fc.integer({ min: 1, max: 4 }), { maxLength: 5 })
      .chain((dims) =>
        fc.tuple(fc.constant(dims), fc.shuffledSubarray(dims, { minLength: dims.length, maxLength: dims.length }), fc.nat(5)),
      );
    fc.assert(
      fc.property(arb, ([from, shuffled, which]) => {
        expect(inferReshape("reshape", from, shuffled)).toEqual(shuffled);
        if (shuffled.length === 0) return;
        const k = which % shuffled.length;
        const withUnknown = shuffled.map((d, i) => (i === k ? -1 : d));
        const got = inferReshape("reshape", from, withUnknown);
        expect(got).toEqual(shuffled);
        expect(shapeSize(got)).toBe(shapeSize(from));
        // One extra element anywhere makes it impossible.
        expect(() => inferReshape("reshape", [...from, 1].map((d, i) => (i === 0 ? d + 1 : d)), shuffled)).toThrow(SmeltError);
      }),
    );
  });
});

describe("parseSliceString", () => {
  test("items", () => {
    expect(parseSliceString("getitem", "1:3, ::2, None, ..., -1")).toEqual([
      { start: 1, stop: 3, step: null },
      { start: null, stop: null, step: 2 },
      null,
      "...",
      -1,
    ]);
    expect(parseSliceString("getitem", ":")).toEqual([{ start: null, stop: null, step: null }]);
    expect(parseSliceString("getitem", "::-1,newaxis")).toEqual([{ start: null, stop: null, step: -1 }, null]);
    expect(parseSliceString("getitem", " -2 : : -3 ")).toEqual([{ start: -2, stop: null, step: -3 }]);
    expect(parseSliceString("getitem", "+4")).toEqual([4]);
    expect(parseSliceString("getitem", "")).toEqual([]);
    expect(parseSliceString("getitem", "0,")).toEqual([0]);
  });

  test("errors quote the item and the spec", () => {
    expect(errorOf(() => parseSliceString("getitem", "1:2:3:4")).message).toBe(
      'getitem: cannot parse index "1:2:3:4" in "1:2:3:4": a slice has at most start:stop:step',
    );
    expect(errorOf(() => parseSliceString("getitem", "0,,1")).message).toContain("empty item");
    expect(errorOf(() => parseSliceString("getitem", "1.5")).message).toContain('"1.5"');
    expect(errorOf(() => parseSliceString("getitem", "a:2")).message).toContain('"a" is not an integer');
    expect(errorOf(() => parseSliceString("getitem", "none")).message).toContain('"none"');
  });
});

/** Python's list(range(n))[slice(start, stop, step)], checked against CPython 3 (fixture below). */
function sliceRef(n: number, start: number | null, stop: number | null, step: number | null): number[] {
  const k = step ?? 1;
  const out: number[] = [];
  if (k > 0) {
    const lo = start === null ? 0 : start < 0 ? Math.max(start + n, 0) : start;
    const hi = stop === null ? n : stop < 0 ? stop + n : stop;
    for (let i = 0; i < n; i++) if (i >= lo && i < hi && (i - lo) % k === 0) out.push(i);
  } else {
    const hi = start === null ? n - 1 : start < 0 ? start + n : Math.min(start, n - 1);
    const lo = stop === null ? -1 : stop < 0 ? Math.max(stop + n, -1) : stop;
    for (let i = n - 1; i >= 0; i--) if (i <= hi && i > lo && (hi - i) % -k === 0) out.push(i);
  }
  return out;
}

// [n, start, stop, step, list(range(n))[start:stop:step]] as CPython computes it.
const PYTHON_SLICES: [number, number | null, number | null, number | null, number[]][] = [
  [0, -1, -5, -3, []], [0, 4, null, 1, []], [0, null, -7, -3, []], [0, -3, 4, null, []], [0, null, -3, null, []],
  [1, -7, 3, 3, [0]], [1, -1, -7, 1, []], [1, 1, 4, -3, []], [1, 7, -1, -7, []], [1, -7, 3, -1, []],
  [1, 5, 1, -1, []], [1, 2, 0, 2, []], [2, 1, 0, null, []], [2, 4, -7, -2, [1]], [2, -1, 5, -2, []],
  [2, -7, -7, -1, []], [2, 1, 5, 1, [1]], [2, null, 5, -1, []], [2, 3, -7, -7, [1]], [2, null, -3, -1, [1, 0]],
  [2, -5, 5, 3, [0]], [5, 0, 2, -1, []], [5, -5, 0, -1, []], [5, 5, 0, -2, [4, 2]], [5, -5, -3, 3, [0]],
  [5, null, 1, 2, [0]], [5, -2, -2, null, []], [5, -5, 5, null, [0, 1, 2, 3, 4]], [5, 1, 7, -3, []],
  [6, -7, 1, -3, []], [6, null, -3, 1, [0, 1, 2]], [6, -7, -1, null, [0, 1, 2, 3, 4]], [6, -7, null, 2, [0, 2, 4]],
  [6, 2, -7, -2, [2, 0]], [6, 3, null, 1, [3, 4, 5]], [6, -5, 4, -1, []], [6, -1, 3, -2, [5]], [6, 1, -2, 1, [1, 2, 3]],
  [6, null, null, -1, [5, 4, 3, 2, 1, 0]], [6, -1, -7, -2, [5, 3, 1]], [6, 10, -10, -3, [5, 2]], [6, -10, 10, 4, [0, 4]],
];

/** Reference view: materialize per-axis index lists, then the flat address of every result element. */
function indexRef(shape: Shape, strides: readonly number[], offset: number, items: readonly IndexItem[]) {
  const consumed = items.filter((it) => it !== null && it !== "...").length;
  const expanded: IndexItem[] = [];
  for (const it of items) {
    if (it === "...") for (let k = 0; k < shape.length - consumed; k++) expanded.push({});
    else expanded.push(it);
  }
  while (expanded.filter((it) => it !== null).length < shape.length) expanded.push({});
  // Each output axis: a list of source (axis, index) picks; integers pick without making an axis.
  const outAxes: { axis: number; picks: number[] }[] = [];
  let fixed = offset;
  let axis = 0;
  for (const it of expanded) {
    if (it === null) {
      outAxes.push({ axis: -1, picks: [0] });
    } else if (typeof it === "number") {
      const n = shape[axis] as number;
      fixed += (it < 0 ? it + n : it) * (strides[axis] as number);
      axis++;
    } else if (typeof it === "object") {
      outAxes.push({ axis, picks: sliceRef(shape[axis] as number, it.start ?? null, it.stop ?? null, it.step ?? null) });
      axis++;
    }
  }
  const outShape = outAxes.map((a) => a.picks.length);
  const addresses = [...indices(outShape)].map((idx) =>
    idx.reduce((acc, i, k) => {
      const a = outAxes[k] as { axis: number; picks: number[] };
      return a.axis < 0 ? acc : acc + (a.picks[i] as number) * (strides[a.axis] as number);
    }, fixed),
  );
  return { shape: outShape, addresses };
}

describe("planIndex", () => {
  test("the slice reference agrees with CPython", () => {
    for (const [n, start, stop, step, want] of PYTHON_SLICES) {
      expect([n, start, stop, step, sliceRef(n, start, stop, step)]).toEqual([n, start, stop, step, want]);
    }
  });

  test("1-D slices select what CPython selects", () => {
    for (const [n, start, stop, step, want] of PYTHON_SLICES) {
      const plan = planIndex("getitem", [n], [1], 0, [{ start, stop, step }]);
      const got = Array.from({ length: plan.shape[0] as number }, (_, i) => plan.offset + i * (plan.strides[0] as number));
      expect([n, start, stop, step, got]).toEqual([n, start, stop, step, want]);
    }
  });

  test("examples", () => {
    const s = [4, 5, 6];
    const st = [30, 6, 1];
    expect(planIndex("getitem", s, st, 0, [1])).toEqual({ shape: [5, 6], strides: [6, 1], offset: 30 });
    expect(planIndex("getitem", s, st, 0, [-1, "...", 2])).toEqual({ shape: [5], strides: [6], offset: 92 });
    expect(planIndex("getitem", s, st, 0, ["...", null])).toEqual({ shape: [4, 5, 6, 1], strides: [30, 6, 1, 0], offset: 0 });
    expect(planIndex("getitem", s, st, 0, [null, { step: -2 }])).toEqual({ shape: [1, 2, 5, 6], strides: [0, -60, 6, 1], offset: 90 });
    expect(planIndex("getitem", s, st, 7, [])).toEqual({ shape: [4, 5, 6], strides: [30, 6, 1], offset: 7 });
    expect(planIndex("getitem", [], [], 3, [null, "..."])).toEqual({ shape: [1], strides: [0], offset: 3 });
    expect(planIndex("getitem", s, st, 0, [{ start: 1, stop: 3 }, 0, { start: 5, stop: 0, step: -2 }])).toEqual({
      shape: [2, 3],
      strides: [30, -2],
      offset: 35,
    });
    expect(planIndex("getitem", s, st, 0, parseSliceString("getitem", "2:2, ..., ::-1")).shape).toEqual([0, 5, 6]);
    // An empty slice leaves the offset alone rather than pointing one past the end.
    expect(planIndex("getitem", [4], [1], 2, [{ start: 4 }])).toEqual({ shape: [0], strides: [1], offset: 2 });
  });

  test("errors name the op, the axis and the size", () => {
    const s = [4, 5];
    const st = [5, 1];
    expect(errorOf(() => planIndex("getitem", s, st, 0, [0, 5])).message).toBe(
      "getitem: index 5 is out of bounds for axis 1 with size 5",
    );
    expect(errorOf(() => planIndex("getitem", s, st, 0, [-5])).message).toBe(
      "getitem: index -5 is out of bounds for axis 0 with size 4",
    );
    expect(errorOf(() => planIndex("getitem", [0], [1], 0, [0])).message).toContain("axis 0 with size 0");
    expect(errorOf(() => planIndex("getitem", s, st, 0, ["...", 0, "..."])).message).toContain("single ellipsis");
    expect(errorOf(() => planIndex("getitem", s, st, 0, [0, 0, 0])).message).toBe(
      "getitem: too many indices for a 2-D array: 3 were given",
    );
    expect(errorOf(() => planIndex("slice", s, st, 0, [0, { step: 0 }])).message).toBe(
      "slice: slice step cannot be zero (axis 1)",
    );
    expect(errorOf(() => planIndex("getitem", s, st, 0, [1.5])).message).toContain("axis 0 must be an integer, got 1.5");
    expect(errorOf(() => planIndex("getitem", s, st, 0, [{ start: 0.5 }])).message).toContain("slice start on axis 0");
    expect(errorOf(() => planIndex("getitem", s, st, 0, [[0, 1] as unknown as IndexItem])).message).toContain(
      "invalid index item [0,1]",
    );
    expect(errorOf(() => planIndex("getitem", s, st, 0, ["x" as unknown as IndexItem])).message).toContain('"x"');
  });

  test("random shapes and indices agree with the brute-force reference", () => {
    const bound = fc.option(fc.integer({ min: -8, max: 8 }), { nil: null });
    const slice = fc.record({
      start: bound,
      stop: bound,
      step: fc.option(fc.integer({ min: -4, max: 4 }).filter((k) => k !== 0), { nil: null }),
    });
    const arb = smallShape(4, 5).chain((shape) => {
      // One entry per axis (an integer within range where the axis allows, or a slice), then
      // new axes sprinkled in, an optional ellipsis standing for a random run of axes, and trailing axes dropped.
      const perAxis = shape.map((n) => (n > 0 ? fc.oneof(fc.integer({ min: -n, max: n - 1 }), slice) : slice));
      return fc.tuple(
        fc.constant(shape),
        fc.tuple(...perAxis),
        fc.array(fc.nat(shape.length), { maxLength: 2 }),
        fc.option(fc.tuple(fc.nat(shape.length), fc.nat(shape.length)), { nil: null }),
        fc.nat(shape.length),
        fc.integer({ min: 0, max: 50 }),
        fc.constantFrom(1, 3, -2),
      );
    });
    fc.assert(
      fc.property(arb, ([shape, perAxis, newAxes, ellipsis, keep, offset, scale]) => {
        let items: IndexItem[] = [...perAxis];
        if (ellipsis !== null) {
          // Replace a run of axes with "...".
          const [a, b] = ellipsis[0] <= ellipsis[1] ? ellipsis : [ellipsis[1], ellipsis[0]];
          items = [...items.slice(0, a), "...", ...items.slice(b)];
        } else {
          items = items.slice(0, keep);
        }
        for (const pos of newAxes) items.splice(Math.min(pos, items.length), 0, null);
        const idx = items;
        // Strides of an already strided or reversed view as well as contiguous ones.
        const strides = contiguousStrides(shape).map((s) => s * scale);
        const plan = planIndex("getitem", shape, strides, offset, idx);
        const ref = indexRef(shape, strides, offset, idx);
        expect(plan.shape).toEqual(ref.shape);
        expect(plan.strides.length).toBe(plan.shape.length);
        const got = [...indices(plan.shape)].map((i) => dot(i, plan.strides) + plan.offset);
        expect(got).toEqual(ref.addresses);
      }),
      { numRuns: 2000 },
    );
  });
});
