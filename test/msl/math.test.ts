import { describe, test } from "bun:test";
import { bitsF32, dev, expectClose, expectEqual, f32Bits, kernelFile, read, runThreads, uniform } from "./helpers.ts";

const kernel = kernelFile("math.metal");
const fr = Math.fround;

const NAMES = ["exp", "log", "sin", "cos", "tanh", "sqrt", "rsqrt", "pow", "exp2", "log2"];

function transcendentals(v: number, w: number): number[] {
  return [
    Math.exp(v),
    Math.log(v),
    Math.sin(v),
    Math.cos(v),
    Math.tanh(v),
    Math.sqrt(v),
    1 / Math.sqrt(v),
    Math.abs(v) ** w,
    2 ** v,
    Math.log2(v),
  ];
}

/** Runs a kernel writing `per` floats per element and returns them. */
function run(name: string, x: Float32Array, y: Float32Array | null, per: number, tg = 64): Float32Array {
  const out = dev.buffer(new Float32Array(per * x.length));
  const args = y ? [dev.buffer(x), dev.buffer(y), out] : [dev.buffer(x), out];
  runThreads(kernel(name), args, [x.length, 1, 1], [tg, 1, 1]);
  return read(out, Float32Array);
}

// Inputs with negatives (NaN from log, sqrt, rsqrt, log2), zero (infinities), and magnitudes up to 80.
function preciseInputs(): [Float32Array, Float32Array] {
  const x = uniform(400, -80, 80, 61);
  const small = uniform(200, -4, 4, 62);
  x.set(small, 0);
  x.set([0, -1, 1, 0.5, 2, Math.PI, -Math.PI, 1e-3, 30, -30, 0, 0, 3, 10], 200);
  const y = uniform(400, -3, 3, 63);
  y.set([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, 0, 2.5, 0.5], 200);
  return [x, y];
}

// Accuracy of the precise functions as Metal specifies them is a few ulp (pow: 16); sin and cos
// also get an absolute slack for results near zero.
const preciseTol = (k: number) => (k === 7 ? { ulps: 16 } : { ulps: 8, atol: k === 2 || k === 3 || k === 4 ? 2e-7 : 0 });

describe("math.metal", () => {
  test("precise:: exp log sin cos tanh sqrt rsqrt pow exp2 log2, NaN for out-of-domain inputs", () => {
    const [x, y] = preciseInputs();
    const got = run("math_precise", x, y, 10);
    for (let k = 0; k < 10; k++) {
      expectClose(
        `precise::${NAMES[k]}`,
        got.filter((_, j) => j % 10 === k),
        Array.from(x, (v, i) => transcendentals(v, y[i]!)[k]!),
        { ...preciseTol(k), label: (i) => `x=${x[i]} y=${y[i]}` },
      );
    }
  });

  test("unqualified exp log sin ... match precise:: (libraries compile without fast math)", () => {
    const [x, y] = preciseInputs();
    const got = run("math_default", x, y, 28);
    for (let k = 0; k < 10; k++) {
      expectClose(
        NAMES[k]!,
        got.filter((_, j) => j % 28 === k),
        Array.from(x, (v, i) => transcendentals(v, y[i]!)[k]!),
        { ...preciseTol(k), label: (i) => `x=${x[i]} y=${y[i]}` },
      );
    }
  });

  test("fast:: variants within fast-math accuracy on their domains", () => {
    const x = uniform(512, -3, 3, 71);
    const y = uniform(512, -2, 2, 72);
    const got = run("math_fast", x, y, 10, 128);
    // log, sqrt, rsqrt, log2 need x > 0; pow is fed |x| and needs it away from 0.
    const positiveOnly = new Set([1, 5, 6, 9]);
    for (let k = 0; k < 10; k++) {
      expectClose(
        `fast::${NAMES[k]}`,
        got.filter((_, j) => j % 10 === k),
        Array.from(x, (v, i) => transcendentals(v, y[i]!)[k]!),
        {
          rtol: 1e-3,
          atol: 1e-3,
          skip: (i) => (positiveOnly.has(k) && x[i]! <= 0.05) || (k === 7 && Math.abs(x[i]!) < 0.05),
          label: (i) => `x=${x[i]} y=${y[i]}`,
        },
      );
    }
  });

  test("fabs abs floor ceil round trunc fmod min max fmin fmax clamp select fma mix sign rint saturate", () => {
    const x = uniform(300, -10, 10, 81);
    const y = uniform(300, -4, 4, 82);
    const halves = [2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 3.5, 0.49999997, -7.5, 7, 0, 1.25];
    x.set(halves, 0);
    y.set([2, 2, -3, 3, 0.75, -0.75, 1, 3, 2, -7, 1, 1.25], 0);
    const got = run("math_default", x, y, 28);
    const roundAway = (v: number) => Math.sign(v) * Math.floor(Math.abs(v) + 0.5);
    const rint = (v: number) => {
      const f = Math.floor(v);
      const d = v - f;
      return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
    };
    const refs: [string, (v: number, w: number) => number, number][] = [
      ["fabs", (v) => Math.abs(v), 0],
      ["abs", (v) => Math.abs(v), 0],
      ["floor", Math.floor, 0],
      ["ceil", Math.ceil, 0],
      ["round", roundAway, 0],
      ["trunc", Math.trunc, 0],
      ["fmod", (v, w) => v % w, 1],
      ["min", Math.min, 0],
      ["max", Math.max, 0],
      ["fmin", Math.min, 0],
      ["fmax", Math.max, 0],
      ["clamp", (v) => Math.min(Math.max(v, -1.5), 2.5), 0],
      ["select", (v, w) => (v > w ? w : v), 0],
      ["fma", (v, w) => v * w + 0.5, 1],
      ["mix", (v, w) => v + (w - v) * 0.25, 4],
      ["sign", Math.sign, 0],
      ["rint", rint, 0],
      ["saturate", (v) => Math.min(Math.max(v, 0), 1), 0],
    ];
    refs.forEach(([name, ref, ulps], j) => {
      const k = 10 + j;
      expectClose(
        name,
        got.filter((_, m) => m % 28 === k),
        Array.from(x, (v, i) => ref(v, y[i]!)),
        { ulps, atol: name === "mix" ? 1e-6 : 0, label: (i) => `x=${x[i]} y=${y[i]}` },
      );
    });
  });

  // Every 1,009th float from the smallest subnormal to 11 (past which tanh is 1), both signs: about
  // 2.2 million inputs through every binade. (Over all floats in [0, 11], checked by a standalone
  // program when the host's tanh was last changed, its largest error was 2.43 ulp.) exp is swept
  // the same way over its finite, normal range.
  const sweep = (lo: number, hi: number, stride: number, signs: number[]): Float32Array => {
    const out: number[] = [];
    for (let b = lo; b <= hi; b += stride) for (const s of signs) out.push(s * bitsF32(b));
    return new Float32Array(out);
  };

  test("tanh within 2.5 ulp of float64 over a sweep of every binade up to 11", () => {
    const x = sweep(1, f32Bits(11), 1009, [1, -1]);
    const got = run("math_sweep", x, null, 2, 256).filter((_, j) => j % 2 === 0);
    expectClose("tanh", got, Array.from(x, Math.tanh), { ulps: 2.5, label: (i) => `x=${x[i]}` });
    // where tanh rounds to +-1 in float it must be exactly that (gelu(-inf) = -inf * 0 = NaN needs it)
    const sat = new Float32Array([9.02, -9.02, 9.1, 10, -11, 20, 1e30, Infinity, -Infinity]);
    const ends = run("math_sweep", sat, null, 2, 16).filter((_, j) => j % 2 === 0);
    expectEqual("tanh where it rounds to +-1", ends, Array.from(sat, Math.sign), { label: (i) => `x=${sat[i]}` });
  });

  test("exp within 2 ulp of float64 over a sweep of [-103, 88.7]", () => {
    const pos = sweep(1, f32Bits(88.7), 1009, [1]);
    const neg = sweep(1, f32Bits(103), 1009, [-1]);
    const x = new Float32Array([...pos, ...neg]);
    const got = run("math_sweep", x, null, 2, 256).filter((_, j) => j % 2 === 1);
    expectClose("exp", got, Array.from(x, Math.exp), { ulps: 2, label: (i) => `x=${x[i]}` });
  });

  test("special values: NaN and infinities through exp/sqrt/log/tanh/rsqrt, fmax/fmin skip NaN, overflow", () => {
    const xs = [NaN, Infinity, -Infinity, 0, -1, 1, 100, -200, 2, -0.5, 0.25, 89, 88, -3];
    const x = new Float32Array(xs);
    const got = run("math_special", x, null, 12, 16);
    const refs: [string, (v: number) => number][] = [
      ["exp", Math.exp],
      ["sqrt", Math.sqrt],
      ["log", Math.log],
      ["fmax(x, 1)", (v) => (Number.isNaN(v) ? 1 : Math.max(v, 1))],
      ["fmin(x, -1)", (v) => (Number.isNaN(v) ? -1 : Math.min(v, -1))],
      ["x + 1", (v) => v + 1],
      ["x * 0", (v) => v * 0],
      ["1 / x", (v) => 1 / v],
      ["max(x, 0)", (v) => (Number.isNaN(v) ? -7 : Math.max(v, 0))],
      ["tanh", Math.tanh],
      ["rsqrt", (v) => 1 / Math.sqrt(v)],
      ["clamp(x, -2, 2)", (v) => (Number.isNaN(v) ? Infinity : Math.min(Math.max(v, -2), 2))],
    ];
    refs.forEach(([name, ref], k) => {
      const g = got.filter((_, m) => m % 12 === k);
      const want = xs.map((v) => fr(ref(v)));
      const label = (i: number) => `x=${xs[i]}`;
      // x * 0 is exact, so the sign of a zero result is checked too (-1 * 0 is -0).
      if (name === "x * 0") expectEqual(name, g, want, { label });
      else expectClose(name, g, want, { ulps: 8, label });
    });
  });
});
