/** The transforms themselves: trees and argnums, higher order, modes, stopGradient, checkpoint, jvp/vjp, errors. */
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import * as sm from "../../src/index.ts";
import { expectSmeltError } from "../tensor/helpers.ts";

type T = sm.Tensor;
const f32 = (v: number[], shape?: number[]) => (shape ? sm.array(v, "float32").reshape(shape) : sm.array(v, "float32"));
const close = (got: sm.Tensor, want: number[], tol = 1e-5) => {
  const g = got.toArray() as number[];
  expect(g.length).toBe(want.length);
  g.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThanOrEqual(tol * (1 + Math.abs(want[i]!))));
};
const xs = [0.3, -1.2, 2.5, 0.9];

describe("grad and valueAndGrad", () => {
  test("tree arguments come back in the same shape; non-tensor leaves pass through", () => {
    const params = { w: f32([1, 2, 3], [3]), layers: [{ b: f32([0.5]) }, { b: f32([-1]) }], name: "mlp", n: 3 };
    const x = f32([2, 0, -1]);
    const loss = (p: typeof params, x: T) => {
      const h = sm.sum(sm.multiply(p.w, x));
      return sm.add(sm.multiply(h, p.layers[0]!.b), sm.square(p.layers[1]!.b)).sum();
    };
    const g = sm.grad(loss)(params, x);
    close(g.w, [1, 0, -0.5]);
    close(g.layers[0].b, [2 * 1 - 3]);
    close(g.layers[1].b, [-2]);
    expect(g.name).toBe("mlp");
    expect(g.n).toBe(3);
  });
  test("argnums: a number gives one gradient, an array a list", () => {
    const f = (a: T, b: T, c: T) => sm.sum(sm.multiply(sm.multiply(a, b), sm.square(c)));
    const [a, b, c] = [f32([2]), f32([3]), f32([4])];
    close(sm.grad(f, 1)(a, b, c), [2 * 16]);
    const [ga, gc] = sm.grad(f, [0, 2])(a, b, c);
    close(ga, [3 * 16]);
    close(gc, [2 * 3 * 2 * 4]);
  });
  test("the same tensor passed twice gets a gradient per argument", () => {
    const x = f32([3]);
    const [ga, gb] = sm.grad((a: T, b: T) => sm.sum(sm.multiply(a, sm.square(b))), [0, 1])(x, x);
    close(ga, [9]);
    close(gb, [18]);
  });
  test("valueAndGrad passes auxiliary outputs through", () => {
    const f = (x: T) => { const y = sm.sin(x); return [sm.sum(y), y, "aux"] as const; };
    const [[value, y, tag], g] = sm.valueAndGrad(f)(f32(xs));
    close(value, [xs.map(Math.sin).reduce((a, b) => a + b)]);
    close(y, xs.map(Math.sin));
    expect(tag).toBe("aux");
    close(g, xs.map(Math.cos));
  });
  test("a function that does not use its argument has a zero gradient", () => {
    close(sm.grad((x: T, y: T) => sm.sum(y), 0)(f32([1, 2]), f32([3])), [0, 0]);
  });
  test("float16 and bfloat16 arguments get gradients of their dtype, computed stably", () => {
    for (const dt of ["float16", "bfloat16"] as const) {
      const x = sm.array([0.5, 1, 2, 3], dt);
      const g = sm.grad((x: T) => sm.sum(sm.tanh(x)))(x);
      expect(g.dtype).toBe(dt);
      const vals = x.astype("float32").toArray() as number[];
      close(g.astype("float32"), vals.map((v) => 1 - Math.tanh(v) ** 2), dt === "float16" ? 2e-3 : 1e-2);
      const m = sm.grad((x: T) => sm.mean(sm.softmax(x).mul(f32([1, 2, 3, 4]))))(x);
      expect(m.dtype).toBe(dt);
    }
  });
});

describe("higher order", () => {
  test("grad(grad(sin)) = -sin, grad^3 = -cos", () => {
    const d1 = sm.grad((x: T) => sm.sum(sm.sin(x)));
    const d2 = sm.grad((x: T) => sm.sum(d1(x)));
    const d3 = sm.grad((x: T) => sm.sum(d2(x)));
    close(d2(f32(xs)), xs.map((v) => -Math.sin(v)), 1e-4);
    close(d3(f32(xs)), xs.map((v) => -Math.cos(v)), 1e-4);
  });
  test("grad inside valueAndGrad; second derivatives of a product and a division", () => {
    const f = (x: T) => sm.sum(sm.divide(sm.exp(x), sm.add(x, 3)));
    const [v, h] = sm.valueAndGrad((x: T) => sm.sum(sm.grad(f)(x)))(f32(xs));
    const d1 = (t: number) => Math.exp(t) / (t + 3) - Math.exp(t) / (t + 3) ** 2;
    const d2 = (t: number) => Math.exp(t) / (t + 3) - 2 * Math.exp(t) / (t + 3) ** 2 + 2 * Math.exp(t) / (t + 3) ** 3;
    close(v, [xs.map(d1).reduce((a, b) => a + b)], 1e-4);
    close(h, xs.map(d2), 1e-4);
  });
  test("Hessian-vector product of a matmul loss by grad of a dot", () => {
    const A = f32([2, 1, 0, 1, 3, 1, 0, 1, 4], [3, 3]);
    const f = (x: T) => sm.multiply(sm.sum(sm.multiply(x, sm.matmul(A, x))), 0.5);
    const v = f32([1, -1, 2]);
    const hv = sm.grad((x: T) => sm.sum(sm.multiply(sm.grad(f)(x), v)))(f32([0.1, 0.2, 0.3]));
    close(hv, [2 * 1 + 1 * -1, 1 * 1 + 3 * -1 + 2, -1 + 8]); // (A + A^T)/2 v, A symmetric
  });
});

describe("modes", () => {
  test("lazy and eager give the same values, also for second order", () => {
    const f = (w: T, x: T) => sm.sum(sm.logSoftmax(sm.matmul(x, w), -1).mul(f32([1, 0, 2], [1, 3])));
    const w = f32([0.1, -0.2, 0.3, 0.4, 0.5, -0.6], [2, 3]);
    const x = f32([1, 2, -1, 0.5], [2, 2]);
    const run = () => {
      const g = sm.grad(f)(w, x);
      const h = sm.grad((w: T, x: T) => sm.sum(sm.square(sm.grad(f)(w, x))))(w, x);
      return [g.toArray() as number[], h.toArray() as number[]];
    };
    const lazy = run();
    const eager = sm.eager(run);
    lazy.forEach((l, i) => l.forEach((v, k) => expect(Math.abs(v - eager[i]![k]!)).toBeLessThan(1e-5)));
  });
  test("nothing is evaluated until the user asks", () => {
    const x = f32([1, 2, 3]).eval();
    sm.resetStats();
    const g = sm.grad((x: T) => sm.sum(sm.exp(x)))(x);
    expect(sm.stats().kernelsDispatched).toBe(0);
    close(g, [1, 2, 3].map(Math.exp));
  });
});

describe("stopGradient and checkpoint", () => {
  test("stopGradient blocks the gradient but keeps the value", () => {
    const f = (x: T) => sm.sum(sm.multiply(x, sm.stopGradient(sm.square(x))));
    close(sm.grad(f)(f32([2, 3])), [4, 9]);
    close(sm.stopGradient(f32([5])), [5]);
  });
  test("checkpoint gives the same values and gradients, lazy and eager", () => {
    const block = (x: T, w: T) => sm.tanh(sm.matmul(x, w));
    const w = f32([0.5, -0.3, 0.2, 0.8], [2, 2]);
    const x = f32([1, 2, 3, 4], [2, 2]);
    for (const mode of ["lazy", "eager"]) {
      const run = () => {
        const plain = sm.valueAndGrad((w: T) => sm.sum(block(block(x, w), w)))(w);
        const ck = sm.checkpoint(block);
        const kept = sm.valueAndGrad((w: T) => sm.sum(ck(ck(x, w), w)))(w);
        return [plain, kept].map(([v, g]) => [...(v.toArray() as number[]), ...(g.toArray() as number[])]);
      };
      const [a, b] = mode === "eager" ? sm.eager(run) : run();
      a!.forEach((v, i) => expect(b![i]).toBeCloseTo(v, 6));
    }
  });
  test("checkpoint recomputes its function in the backward pass (eager: its kernels run again)", () => {
    const f = (x: T) => sm.exp(sm.sin(sm.exp(x)));
    const ck = sm.checkpoint(f);
    const x = f32(Array.from({ length: 64 }, (_, i) => (i % 7) / 10)).eval();
    const count = (g: (x: T) => T) =>
      sm.eager(() => {
        sm.resetStats();
        const grad = sm.grad((x: T) => sm.sum(g(x)))(x);
        return [sm.stats().kernelsDispatched, grad.toArray() as number[]] as const;
      });
    const [plain, want] = count(f);
    const [kept, got] = count(ck);
    expect(kept).toBeGreaterThanOrEqual(plain + 3);
    got.forEach((v, i) => expect(v).toBeCloseTo(want[i]!, 5));
  });
  test("grad disposes fn's value but not a tensor fn returns from outside", () => {
    const outside = f32([1, 2]);
    const g = sm.grad((x: T) => [sm.sum(x), outside])(f32([3]));
    close(g, [1]);
    expect(outside.disposed).toBe(false);
  });
});

describe("vjp and jvp", () => {
  test("vjp of several outputs", () => {
    const [outs, [gx, gy]] = sm.vjp((x: T, y: T) => [sm.multiply(x, y), sm.sin(x)], [f32([1, 2]), f32([3, 4])], [f32([1, 1]), f32([2, -1])]);
    close(outs[0]!, [3, 8]);
    close(gx, [3 + 2 * Math.cos(1), 4 - Math.cos(2)]);
    close(gy, [1, 2]);
  });
  test("jvp equals the directional derivative", () => {
    const [outs, [t]] = sm.jvp((x: T) => sm.multiply(sm.sin(x), x), [f32(xs)], [f32([1, 0, 2, -1])]);
    close(outs[0]!, xs.map((v) => Math.sin(v) * v));
    close(t!, xs.map((v, i) => (Math.cos(v) * v + Math.sin(v)) * [1, 0, 2, -1][i]!), 1e-5);
  });
  test("jvp through a matmul and a reduction, lazy and eager", () => {
    const A = f32([1, 2, 3, 4, 5, 6], [2, 3]);
    const f = (x: T) => sm.max(sm.matmul(A, x), 0);
    for (const run of [(g: () => void) => g(), sm.eager]) {
      run(() => {
        const [, [t]] = sm.jvp(f, [f32([1, 0, -1])], [f32([0.5, 1, 0])]);
        // A x = [-2, -2]: a tie, so the tangents A t = [2.5, 7] share evenly.
        close(t!, [0.5 * 2.5 + 0.5 * 7]);
      });
    }
  });
});

describe("errors", () => {
  test("non-scalar output, non-float argument, bad argnums, bad cotangents", () => {
    expectSmeltError(() => sm.grad((x: T) => sm.sin(x))(f32([1, 2])), "grad", "scalar", "[2]");
    expectSmeltError(() => sm.grad((x: T) => sm.sum(x))(sm.array([1, 2], "int32")), "grad", "int32");
    expectSmeltError(() => sm.grad((x: T) => sm.sum(x), 2)(f32([1])), "grad", "argnums 2");
    expectSmeltError(() => sm.grad((x: T) => sm.sum(x), -1), "grad", "argnums");
    expectSmeltError(() => sm.valueAndGrad((x: T) => sm.sum(x), [0, 0]), "valueAndGrad", "duplicates");
    expectSmeltError(() => sm.grad((x: T) => sm.argmax(x))(f32([1, 2])), "grad", "uint32");
    expectSmeltError(() => sm.vjp((x: T) => sm.sin(x), [f32([1, 2])], [f32([1])]), "vjp", "cotangents[0]", "[1]");
    expectSmeltError(() => sm.jvp((x: T) => sm.sin(x), [f32([1, 2])], [f32([1, 2]), f32([1])]), "jvp", "tangents");
  });
  test("a failed trace leaves no graph held", () => {
    expect(() => sm.grad((_: T) => { throw new Error("boom"); })(f32([1]))).toThrow("boom");
    close(sm.grad((x: T) => sm.sum(sm.square(x)))(f32([3])), [6]);
  });
});

describe("properties", () => {
  test("sum of a broadcast product over random shapes and axes", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 3 }),
        fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }),
        fc.integer({ min: 0, max: 2 }),
        (shape, ones, axisSeed) => {
          const bshape = shape.map((d, i) => (ones[i] ? 1 : d));
          const n = shape.reduce((a, b) => a * b, 1), m = bshape.reduce((a, b) => a * b, 1);
          const av = Array.from({ length: n }, (_, i) => Math.sin(i + 1)), bv = Array.from({ length: m }, (_, i) => Math.cos(i));
          const axis = axisSeed % shape.length;
          // d/db sum_axis(a * b)^2 summed: 2 * s * a summed over broadcast axes; checked against JS.
          const [, gb] = sm.grad((a: T, b: T) => sm.sum(sm.square(sm.sum(sm.multiply(a, b), axis))), [0, 1])(f32(av, shape), f32(bv, bshape));
          const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
          const idx = (i: number) => shape.map((d, k) => Math.floor(i / strides[k]!) % d);
          const bAt = (ix: number[]) => ix.reduce((acc, v, k) => acc * bshape[k]! + (bshape[k] === 1 ? 0 : v), 0);
          const s = new Map<string, number>();
          const key = (ix: number[]) => ix.filter((_, k) => k !== axis).join(",");
          for (let i = 0; i < n; i++) s.set(key(idx(i)), (s.get(key(idx(i))) ?? 0) + av[i]! * bv[bAt(idx(i))]!);
          const want = new Array<number>(m).fill(0);
          for (let i = 0; i < n; i++) want[bAt(idx(i))]! += 2 * s.get(key(idx(i)))! * av[i]!;
          close(gb, want, 1e-4);
        },
      ),
      { numRuns: 25, seed: 20261206 },
    );
  });
});

describe("ties", () => {
  test("maximum and minimum split the gradient of equal operands; max and min reductions share it among ties", () => {
    const [ga, gb] = sm.grad((a: T, b: T) => sm.sum(sm.maximum(a, b)), [0, 1])(f32([1, 2, 3]), f32([1, 5, 0]));
    close(ga, [0.5, 0, 1]);
    close(gb, [0.5, 1, 0]);
    const [gc] = sm.grad((a: T, b: T) => sm.sum(sm.minimum(a, b)), [0, 1])(f32([4, 2]), f32([4, 5]));
    close(gc, [0.5, 1]);
    close(sm.grad((x: T) => sm.max(x))(f32([3, 1, 3, 3])), [1 / 3, 0, 1 / 3, 1 / 3]);
    close(sm.grad((x: T) => sm.sum(sm.min(x, 1)))(f32([1, 1, 2, 0, 5, 0], [2, 3])), [0.5, 0.5, 0, 0.5, 0, 0.5]);
  });
});
