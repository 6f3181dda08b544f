import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import {
  type Ref,
  both,
  broadcastRef,
  check,
  expectSmeltError,
  permuteRef,
  randn,
  ref,
  sizeOf,
  sliceIndices,
  takeRef,
  inDType,
} from "./helpers.ts";

setDefaultTimeout(120_000);

const XS = inDType("float32", randn(120, 21));
const base = (shape: number[]) => ref(shape, XS.slice(0, sizeOf(shape)));

/**
 * Ways a view's source can exist: computed data (the view shares its storage), an uncomputed node
 * (the view is index math in the consumer), and a view of a view (transposed twice, so the values
 * are those of the original but the strides are not).
 */
type Source = "data" | "lazy" | "doubleTransposed";
const SOURCES: Source[] = ["data", "lazy", "doubleTransposed"];
function source(shape: number[], kind: Source): sm.Tensor {
  const x = sm.array(XS.slice(0, sizeOf(shape))).reshape(shape);
  if (kind === "lazy") return sm.where(true, x, x);
  if (kind === "doubleTransposed") {
    const nd = shape.length;
    const rev = [...Array(nd).keys()].reverse();
    const t = sm.array(permuteRef(ref(shape, XS.slice(0, sizeOf(shape))), rev).data).reshape([...shape].reverse());
    return sm.transpose(t, rev);
  }
  return x;
}

/** Checks the view read directly and as the input of a kernel (negated), lazily and eagerly. */
function checkView(label: string, shape: number[], view: (x: sm.Tensor) => sm.Tensor, want: Ref) {
  for (const kind of SOURCES) {
    check(() => view(source(shape, kind)), want, "float32", { ulps: 0 }, `${label} of ${kind}`);
    check(() => sm.negative(view(source(shape, kind))), { shape: want.shape, data: want.data.map((v) => -v) }, "float32", { ulps: 0 }, `-${label} of ${kind}`);
  }
}

describe("transpose, swapaxes, moveaxis", () => {
  test("transpose: default reverses axes; explicit and negative permutations; .T", () => {
    const s = [2, 3, 4];
    checkView("transpose()", s, (x) => sm.transpose(x), permuteRef(base(s), [2, 1, 0]));
    checkView("transpose([1,0,2])", s, (x) => sm.transpose(x, [1, 0, 2]), permuteRef(base(s), [1, 0, 2]));
    checkView("transpose([-1,0,-2])", s, (x) => sm.transpose(x, [-1, 0, -2]), permuteRef(base(s), [2, 0, 1]));
    checkView(".T", [7, 13], (x) => x.T, permuteRef(base([7, 13]), [1, 0]));
    checkView("transpose 1-D", [5], (x) => sm.transpose(x), base([5]));
    check(() => sm.transpose(sm.array(2.5)), ref([], [2.5]), "float32");
    check(() => sm.transpose(sm.zeros([0, 3])), ref([3, 0], []), "float32");
  });
  test("swapaxes and moveaxis", () => {
    const s = [2, 3, 4];
    checkView("swapaxes(0,2)", s, (x) => sm.swapaxes(x, 0, 2), permuteRef(base(s), [2, 1, 0]));
    checkView("swapaxes(-1,1)", s, (x) => x.swapaxes(-1, 1), permuteRef(base(s), [0, 2, 1]));
    checkView("moveaxis(0,-1)", s, (x) => sm.moveaxis(x, 0, -1), permuteRef(base(s), [1, 2, 0]));
    checkView("moveaxis(2,0)", s, (x) => x.moveaxis(2, 0), permuteRef(base(s), [2, 0, 1]));
    checkView("moveaxis(1,1)", s, (x) => sm.moveaxis(x, 1, 1), base(s));
  });
});

describe("reshape, flatten, expandDims, squeeze", () => {
  test("reshape with -1, to and from 0-d, of contiguous and non-contiguous sources", () => {
    const s = [4, 6];
    checkView("reshape [3,-1]", s, (x) => sm.reshape(x, [3, -1]), ref([3, 8], base(s).data));
    checkView("reshape [2,2,6]", s, (x) => x.reshape([2, 2, 6]), ref([2, 2, 6], base(s).data));
    // A transposed source is not contiguous: reshape then reads in its logical order.
    const t = permuteRef(base(s), [1, 0]);
    checkView("T.reshape", s, (x) => x.T.reshape([4, 6]), ref([4, 6], t.data));
    checkView("T.reshape.T", s, (x) => x.T.reshape([3, 8]).T, permuteRef(ref([3, 8], t.data), [1, 0]));
    checkView("reshape [1,24,1]", s, (x) => sm.reshape(x, [1, 24, 1]), ref([1, 24, 1], base(s).data));
    check(() => sm.reshape(sm.array([7.5]), []), ref([], [7.5]), "float32");
    check(() => sm.reshape(sm.array(3.5), [1, 1]), ref([1, 1], [3.5]), "float32");
    check(() => sm.reshape(sm.zeros([0, 4]), [2, 0, 8]), ref([2, 0, 8], []), "float32");
  });
  test("flatten over all axes and a range of axes", () => {
    const s = [2, 3, 4];
    checkView("flatten()", s, (x) => sm.flatten(x), ref([24], base(s).data));
    checkView("flatten(1)", s, (x) => x.flatten(1), ref([2, 12], base(s).data));
    checkView("flatten(0,1)", s, (x) => sm.flatten(x, 0, 1), ref([6, 4], base(s).data));
    checkView("T.flatten()", s, (x) => x.T.flatten(), ref([24], permuteRef(base(s), [2, 1, 0]).data));
    expect(both(() => sm.flatten(sm.array(1.5))).shape).toEqual([1]);
  });
  test("expandDims and squeeze", () => {
    const s = [3, 4];
    checkView("expandDims(0)", s, (x) => sm.expandDims(x, 0), ref([1, 3, 4], base(s).data));
    checkView("expandDims(-1)", s, (x) => x.expandDims(-1), ref([3, 4, 1], base(s).data));
    checkView("expandDims([0,2])", s, (x) => sm.expandDims(x, [0, 2]), ref([1, 3, 1, 4], base(s).data));
    checkView("T.expandDims(1)", s, (x) => sm.expandDims(x.T, 1), ref([4, 1, 3], permuteRef(base(s), [1, 0]).data));
    const q = [1, 3, 1, 4];
    checkView("squeeze()", q, (x) => sm.squeeze(x), ref([3, 4], base(q).data));
    checkView("squeeze(2)", q, (x) => x.squeeze(2), ref([1, 3, 4], base(q).data));
    checkView("squeeze([0,-2])", q, (x) => sm.squeeze(x, [0, -2]), ref([3, 4], base(q).data));
    check(() => sm.squeeze(sm.array([[2.5]])), ref([], [2.5]), "float32");
  });
});

describe("broadcastTo", () => {
  test("from the left, inside, from a scalar, to size 0", () => {
    checkView("[4]→[3,4]", [4], (x) => sm.broadcastTo(x, [3, 4]), broadcastRef(base([4]), [3, 4]));
    checkView("[3,1]→[2,3,5]", [3, 1], (x) => x.broadcastTo([2, 3, 5]), broadcastRef(base([3, 1]), [2, 3, 5]));
    checkView("T [1,3]→[4,3]", [3, 1], (x) => sm.broadcastTo(x.T, [4, 3]), broadcastRef(ref([1, 3], base([3, 1]).data), [4, 3]));
    check(() => sm.broadcastTo(2.5, [2, 2]), ref([2, 2], [2.5, 2.5, 2.5, 2.5]), "float32");
    check(() => sm.broadcastTo(sm.array([1.5]), [3, 0]), ref([3, 0], []), "float32");
    check(() => sm.broadcastTo(sm.array([1, 2], "int8"), [2, 2]), ref([2, 2], [1, 2, 1, 2]), "int8");
  });
  test("a broadcast view of a transposed view feeding a binary op", () => {
    const a = sm.array(XS.slice(0, 6)).reshape([2, 3]);
    const want = broadcastRef(permuteRef(ref([2, 3], XS.slice(0, 6)), [1, 0]), [4, 3, 2]);
    check(() => sm.multiply(sm.broadcastTo(a.T, [4, 3, 2]), 2), { shape: want.shape, data: want.data.map((v) => 2 * v) }, "float32", { ulps: 0 });
  });
});

describe("slice (basic indexing)", () => {
  const s = [5, 6, 4];
  const idx = (n: number, a: number | null, b: number | null, c: number) => sliceIndices(n, a, b, c);
  test("slices with steps, negative steps, clamping and empty results, from strings and objects", () => {
    const all = (n: number) => idx(n, null, null, 1);
    const cases: [string, (x: sm.Tensor) => sm.Tensor, Ref][] = [
      ["1:4", (x) => x.slice("1:4"), takeRef(base(s), [idx(5, 1, 4, 1), all(6), all(4)])],
      ["::2, 1:5:3", (x) => x.slice("::2, 1:5:3"), takeRef(base(s), [idx(5, null, null, 2), idx(6, 1, 5, 3), all(4)])],
      ["::-1", (x) => sm.slice(x, "::-1"), takeRef(base(s), [idx(5, null, null, -1), all(6), all(4)])],
      ["..., ::-2", (x) => x.slice("..., ::-2"), takeRef(base(s), [all(5), all(6), idx(4, null, null, -2)])],
      ["-2:, -100:100, 3:0:-1", (x) => x.slice("-2:, -100:100, 3:0:-1"), takeRef(base(s), [idx(5, -2, null, 1), idx(6, -100, 100, 1), idx(4, 3, 0, -1)])],
      ["objects", (x) => sm.slice(x, { start: 4, stop: 0, step: -3 }, { start: null, stop: -1 }, { step: 5 }), takeRef(base(s), [idx(5, 4, 0, -3), idx(6, null, -1, 1), idx(4, null, null, 5)])],
      ["empty 3:1", (x) => x.slice("3:1"), takeRef(base(s), [[], all(6), all(4)])],
      ["7:9 (past the end)", (x) => x.slice(":, 7:9"), takeRef(base(s), [all(5), [], all(4)])],
    ];
    for (const [label, f, want] of cases) checkView(label, s, f, want);
  });
  test("integers drop axes (negative from the end); None adds them; ellipsis in the middle", () => {
    const pick = (a: number, b: number) => base(s).data.filter((_, i) => Math.floor(i / 24) === a && Math.floor(i / 4) % 6 === b);
    checkView("1, -1", s, (x) => x.slice("1, -1"), ref([4], pick(1, 5)));
    checkView("items 1, -1", s, (x) => sm.slice(x, 1, -1), ref([4], pick(1, 5)));
    checkView("-5, 2, 3", s, (x) => x.slice("-5, 2, 3"), ref([], [pick(0, 2)[3]!]));
    checkView("None, 2", s, (x) => sm.slice(x, null, 2), ref([1, 6, 4], takeRef(base(s), [[2], idx(6, null, null, 1), idx(4, null, null, 1)]).data));
    checkView("..., None, 0", s, (x) => x.slice("..., None, 0"), ref([5, 6, 1], takeRef(base(s), [idx(5, null, null, 1), idx(6, null, null, 1), [0]]).data));
    checkView("0, ..., 1", s, (x) => x.slice("0, ..., 1"), ref([6], takeRef(base(s), [[0], idx(6, null, null, 1), [1]]).data));
  });
  test("slices of slices, of transposes and of broadcasts compose", () => {
    const t = permuteRef(base(s), [2, 0, 1]); // [4, 5, 6]
    const w1 = takeRef(t, [idx(4, 1, 3, 1), idx(5, null, null, 2), idx(6, null, null, -1)]);
    checkView("T.slice", s, (x) => sm.transpose(x, [2, 0, 1]).slice("1:3, ::2, ::-1"), w1);
    const w2 = takeRef(w1, [[1], idx(3, 1, null, 1), idx(6, 1, null, 2)]);
    checkView("T.slice.slice", s, (x) => sm.transpose(x, [2, 0, 1]).slice("1:3, ::2, ::-1").slice("1:, 1:, 1::2"), w2);
    const b = broadcastRef(ref([1, 4], XS.slice(0, 4)), [3, 4]);
    check(() => sm.broadcastTo(sm.array(XS.slice(0, 4)).reshape([1, 4]), [3, 4]).slice("::2, ::-1"), takeRef(b, [[0, 2], [3, 2, 1, 0]]), "float32", { ulps: 0 });
  });
  test("a slice of an integer and a bool tensor", () => {
    check(() => sm.arange(10).slice("::3"), ref([4], [0, 3, 6, 9]), "int32");
    check(() => sm.array([true, false, true, false]).slice("1::2"), ref([2], [0, 0]), "bool");
    check(() => sm.array([1, 2, 3, 4], "uint8").reshape([2, 2]).T.slice("-1"), ref([2], [2, 4]), "uint8");
  });
});

describe("views share storage and cost no kernels", () => {
  test("views of computed data: no kernel to create or read them, in both modes", () => {
    for (const run of [(f: () => void) => f(), (f: () => void) => sm.eager(f)]) {
      run(() => {
        const x = sm.array(XS.slice(0, 24)).reshape([2, 3, 4]).eval();
        sm.resetStats();
        const views = [x.T, x.slice("::-1, 1:, ::2"), sm.broadcastTo(x, [5, 2, 3, 4]), sm.expandDims(x, 1), x.reshape([6, 4]), sm.moveaxis(x, 0, 2)];
        for (const v of views) v.toArray();
        expect(sm.stats().kernelsDispatched).toBe(0);
      });
    }
  });
  test("a view keeps its storage alive after the source is disposed", () => {
    const x = sm.array([1.5, 2.5, 3.5, 4.5]).reshape([2, 2]);
    const v = x.T;
    x.dispose();
    expect(v.toArray()).toEqual([1.5, 3.5, 2.5, 4.5]);
    expect(sm.add(v, 1).toArray()).toEqual([2.5, 4.5, 3.5, 5.5]);
  });
  test("tolist gives nested arrays in the view's order", () => {
    expect(sm.array([[1, 2, 3], [4, 5, 6]]).T.tolist()).toEqual([[1, 4], [2, 5], [3, 6]]);
    expect(sm.array([[1, 2, 3], [4, 5, 6]]).slice(":, ::-2").tolist()).toEqual([[3, 1], [6, 4]]);
    expect(sm.zeros([2, 0]).tolist()).toEqual([[], []]);
    expect(sm.array(3).tolist()).toBe(3);
  });
});

describe("view errors at the call", () => {
  test("bad shapes, axes and indices name the op and what was wrong", () => {
    const x = sm.zeros([2, 3, 4]);
    expectSmeltError(() => x.reshape([5, 5]), "reshape", "[2,3,4]", "[5,5]");
    expectSmeltError(() => x.reshape([-1, -1]), "reshape");
    expectSmeltError(() => sm.transpose(x, [0, 1]), "transpose", "[0,1]");
    expectSmeltError(() => sm.transpose(x, [0, 1, 1]), "transpose", "repeated axis");
    expectSmeltError(() => sm.transpose(x, [0, 1, 3]), "transpose", "3");
    expectSmeltError(() => sm.swapaxes(x, 0, 3), "swapaxes", "3");
    expectSmeltError(() => sm.moveaxis(x, -4, 0), "moveaxis", "-4");
    expectSmeltError(() => sm.expandDims(x, 4), "expandDims", "4");
    expectSmeltError(() => sm.squeeze(x, 1), "squeeze", "axis 1", "size 3");
    expectSmeltError(() => sm.flatten(x, 2, 1), "flatten");
    expectSmeltError(() => sm.broadcastTo(x, [3, 3, 4]), "broadcastTo", "[2,3,4]");
    expectSmeltError(() => sm.broadcastTo(x, [3, 4]), "broadcastTo", "[3,4]");
    expectSmeltError(() => x.slice("2"), "slice", "index 2", "axis 0", "size 2");
    expectSmeltError(() => x.slice("0, -4"), "slice", "-4", "axis 1");
    expectSmeltError(() => x.slice("0, 0, 0, 0"), "slice", "too many indices");
    expectSmeltError(() => x.slice("::0"), "slice", "step");
    expectSmeltError(() => x.slice("..., ..."), "slice", "ellipsis");
    expectSmeltError(() => x.slice("a:b"), "slice", "a:b");
  });
});
