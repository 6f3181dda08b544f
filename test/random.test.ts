/**
 * metal/random.metal against src/tensor/random-reference.ts: Threefry-2x32-20 known answers, the bit
 * stream and key splits bit for bit, uniform/randint/bernoulli exactly, normals to float tolerance,
 * and statistical sanity with fixed keys.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { prelude } from "../src/exec/emit/builder.ts";
import * as rr from "../src/tensor/random-reference.ts";
import { streamArgs } from "../src/tensor/random.ts";
import { bf16Value, dev, expectClose, expectEqual, fromF16, read, sm, ulp32 } from "./msl/helpers.ts";

let lib: sm.Library | undefined;
const pipes = new Map<string, sm.Pipeline>();
function kernel(name: string): sm.Pipeline {
  lib ??= dev.compile(`${prelude}\n${readFileSync(new URL("../metal/random.metal", import.meta.url), "utf8")}`);
  let pipe = pipes.get(name);
  if (!pipe) {
    pipe = lib.pipeline(name);
    pipes.set(name, pipe);
  }
  return pipe;
}

type KeyArg = Uint32Array | { buffer: sm.DeviceBuffer; offset: number };

/** One stream kernel over n elements: ceil(n / 2) threads, each writing elements j and j + half. */
function runStream(name: string, keyArg: KeyArg, out: sm.DeviceBuffer, params: ArrayBufferView, threads: number) {
  const cmd = dev.commandBuffer();
  cmd.dispatchThreads(kernel(name), {
    args: [keyArg, out, params as Uint8Array],
    grid: [threads, 1, 1],
    threadgroup: [Math.min(threads, 256), 1, 1],
  });
  cmd.commit();
  cmd.wait();
}

const half = (n: number) => Math.ceil(n / 2);

function gpuBits(key: KeyArg, n: number): Uint32Array {
  const out = dev.buffer(4 * n);
  runStream("random_bits", key, out, new Uint32Array([n]), half(n));
  return read(out, Uint32Array);
}

function gpuUniform(key: Uint32Array, n: number, low: number, high: number, dtype: rr.RandomFloatDtype) {
  const name = { float32: "random_uniform_float", float16: "random_uniform_half", bfloat16: "random_uniform_bfloat" }[dtype];
  const out = dev.buffer((dtype === "float32" ? 4 : 2) * n);
  runStream(name, key, out, streamArgs(n, low, high, "float"), half(n));
  return out;
}

function gpuNormal(key: Uint32Array, n: number, loc: number, scale: number, dtype: rr.RandomFloatDtype) {
  const name = { float32: "random_normal_float", float16: "random_normal_half", bfloat16: "random_normal_bfloat" }[dtype];
  const out = dev.buffer((dtype === "float32" ? 4 : 2) * n);
  runStream(name, key, out, streamArgs(n, loc, scale, "float"), half(n));
  return out;
}

function gpuRandint(key: Uint32Array, n: number, low: number, high: number): Int32Array {
  const out = dev.buffer(4 * n);
  runStream("random_randint", key, out, streamArgs(n, low, high, "int"), half(n));
  return read(out, Int32Array);
}

function gpuBernoulli(key: Uint32Array, n: number, p: number): Uint8Array {
  const out = dev.buffer(n);
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setUint32(0, n, true);
  new DataView(bytes.buffer).setFloat32(4, p, true);
  runStream("random_bernoulli", key, out, bytes, half(n));
  return read(out, Uint8Array);
}

const KEYS: [string, Uint32Array][] = [
  ["key(0)", rr.key(0)],
  ["key(42)", rr.key(42)],
  ["(0xdeadbeef, 0x12345678)", new Uint32Array([0xdeadbeef, 0x12345678])],
  ["key(-1)", rr.key(-1)],
];
const SIZES = [1, 2, 3, 1000, 4097];

// Random123's kat_vectors for threefry2x32_20: key, counter, expected output.
const KAT: [number[], number[], number[]][] = [
  [[0, 0], [0, 0], [0x6b200159, 0x99ba4efe]],
  [[0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x1cb996fc, 0xbb002be7]],
  [[0x13198a2e, 0x03707344], [0x243f6a88, 0x85a308d3], [0xc4923a9c, 0x483df7a0]],
];

const hex = (x: number) => `0x${(x >>> 0).toString(16).padStart(8, "0")}`;

describe("Threefry-2x32-20 known answers", () => {
  test("JS reference", () => {
    for (const [k, c, want] of KAT) {
      expect(rr.threefry2x32(k[0]!, k[1]!, c[0]!, c[1]!).map(hex)).toEqual(want.map(hex));
    }
  });

  test("kernel random_threefry", () => {
    for (const [k, c, want] of KAT) {
      const out = dev.buffer(8);
      const cmd = dev.commandBuffer();
      cmd.dispatchThreads(kernel("random_threefry"), {
        args: [new Uint32Array(k), dev.buffer(new Uint32Array(c)), out, new Uint32Array([1])],
        grid: [1, 1, 1],
        threadgroup: [1, 1, 1],
      });
      cmd.commit();
      cmd.wait();
      expect(Array.from(read(out, Uint32Array), hex)).toEqual(want.map(hex));
    }
  });
});

describe("bit stream and keys", () => {
  test("key(seed): high word, low word", () => {
    expect(Array.from(rr.key(42))).toEqual([0, 42]);
    expect(Array.from(rr.key(2 ** 40 + 7))).toEqual([256, 7]);
    expect(Array.from(rr.key(-1))).toEqual([0xffffffff, 0xffffffff]);
    expect(Array.from(rr.key(0x123456789abcdef0n))).toEqual([0x12345678, 0x9abcdef0]);
  });

  test("the stream is defined block by block: words j and j + half from counters (j, j + half)", () => {
    const k = KEYS[2]![1];
    const bits = rr.randomBits(k, 7); // half = 4; block 3 gives word 3 and drops word 7
    for (let j = 0; j < 4; j++) {
      const [a, b] = rr.threefry2x32(k[0]!, k[1]!, j, j + 4);
      expect(bits[j]).toBe(a);
      if (j + 4 < 7) expect(bits[j + 4]).toBe(b);
    }
  });

  for (const [name, k] of KEYS) {
    test(`random_bits equals the reference, ${name}, n = ${SIZES.join(", ")}`, () => {
      for (const n of SIZES) expectEqual(`bits n=${n}`, gpuBits(k, n), rr.randomBits(k, n));
    });
  }

  test("random_split equals the reference and random_bits(key, 2 * num)", () => {
    for (const [, k] of KEYS) {
      for (const num of [1, 2, 3, 5, 64]) {
        const out = dev.buffer(8 * num);
        runStream("random_split", k, out, new Uint32Array([num]), num);
        const got = read(out, Uint32Array);
        expectEqual(`split num=${num}`, got, rr.split(k, num));
        expectEqual(`split = bits num=${num}`, got, rr.randomBits(k, 2 * num));
      }
    }
  });

  test("keys written by random_split work from a device buffer at an offset", () => {
    const keys = dev.buffer(rr.split(rr.key(7), 3));
    const want = rr.split(rr.key(7), 3);
    for (let i = 0; i < 3; i++) {
      const sub = want.subarray(2 * i, 2 * i + 2);
      expectEqual(`bits of subkey ${i}`, gpuBits({ buffer: keys, offset: 8 * i }, 101), rr.randomBits(sub, 101));
    }
    // the children of a key differ from it and from each other
    const words = new Set(Array.from(want));
    expect(words.size).toBe(6);
  });
});

describe("uniform", () => {
  const ranges: [number, number][] = [
    [0, 1],
    [-3, 5.5],
    [1e-3, 2e-3],
    [1e6, 1e6 + 1], // float spacing 1/16 at 1e6: one value in 32 rounds up to high and is clamped
    [-2, -1],
  ];

  test("float32 equals the reference bit for bit and stays in [low, high)", () => {
    let clamped = 0;
    for (const [, k] of KEYS) {
      for (const [low, high] of ranges) {
        for (const n of SIZES) {
          const got = read(gpuUniform(k, n, low, high, "float32"), Float32Array);
          expectEqual(`uniform f32 [${low}, ${high}) n=${n}`, got, rr.uniform(k, n, low, high, "float32"));
          const lo = Math.fround(low);
          const hi = Math.fround(high);
          for (const v of got) {
            if (!(v >= lo && v < hi)) throw new Error(`uniform f32 [${low}, ${high}): ${v} is out of range`);
            if (v === rr.floatBelow(hi)) clamped++;
          }
        }
      }
    }
    expect(clamped).toBeGreaterThan(0);
  });

  for (const dtype of ["float16", "bfloat16"] as const) {
    test(`${dtype} equals the reference bit for bit and stays below high after rounding`, () => {
      const value = dtype === "float16" ? (b: Uint16Array) => fromF16(b) : (b: Uint16Array) => Float64Array.from(b, bf16Value);
      let atTop = 0;
      for (const [, k] of KEYS) {
        for (const [low, high] of [[0, 1], [-3, 5.5], [-2, -1], [0.1, 0.3]] as [number, number][]) {
          const n = 4097;
          const bits = read(gpuUniform(k, n, low, high, dtype), Uint16Array);
          expectEqual(`uniform ${dtype} [${low}, ${high})`, bits, rr.uniform(k, n, low, high, dtype));
          const f32 = rr.uniform(k, n, low, high, "float32");
          const vals = value(bits);
          for (let i = 0; i < n; i++) {
            const v = vals[i]!;
            if (!(v < Math.fround(high))) throw new Error(`uniform ${dtype} [${low}, ${high}): ${v} is not below high`);
            // rounding to 16 bits: within half a 16-bit ulp of the float32 value, unless clamped
            const ulp16 = dtype === "float16" ? 2 ** (Math.floor(Math.log2(Math.abs(f32[i]!) || 2 ** -14)) - 10) : 2 ** (Math.floor(Math.log2(Math.abs(f32[i]!) || 1e-38)) - 7);
            if (Math.abs(v - f32[i]!) > ulp16) throw new Error(`uniform ${dtype}: ${v} is far from ${f32[i]}`);
            if (Math.abs(v - f32[i]!) > ulp16 / 2) atTop++;
          }
        }
      }
      expect(atTop).toBeGreaterThan(0); // some values rounded up to high and were stepped down
    });
  }
});

describe("normal", () => {
  test("float32 within 1e-6 relative of the reference (most bit for bit)", () => {
    let exact = 0;
    let total = 0;
    for (const [, k] of KEYS) {
      for (const [loc, scale] of [[0, 1], [3, 0.5], [-1, 2]] as [number, number][]) {
        for (const n of SIZES) {
          const got = read(gpuNormal(k, n, loc, scale, "float32"), Float32Array);
          const want = rr.normal(k, n, loc, scale, "float32");
          // 1e-6 relative on the standard normal z; loc + scale * z can cancel, so the bound is on z
          const z = rr.normal(k, n, 0, 1, "float32");
          expectClose(`normal f32 loc=${loc} scale=${scale} n=${n}`, got, want, {
            tolAt: (i) => Math.abs(scale) * 1e-6 * Math.abs(z[i]!) + ulp32(want[i]!),
            label: (i) => `z=${z[i]}`,
          });
          for (let i = 0; i < n; i++) if (got[i] === want[i]) exact++;
          total += n;
        }
      }
    }
    console.log(`normal float32: ${exact} of ${total} bit for bit with the reference`);
    expect(exact / total).toBeGreaterThan(0.9);
  });

  test("extreme uniforms give finite normals at the ends of the range", () => {
    // words whose top 23 bits are all 0 or all 1 give the smallest and largest uniform
    const lo = rr.standardNormal(0);
    const hi = rr.standardNormal(0xffffffff);
    expect(lo).toBeLessThan(-5.3);
    expect(lo).toBeGreaterThan(-5.6);
    expect(hi).toBeGreaterThan(5.0);
    expect(hi).toBeLessThan(5.6);
  });

  test("erfinvFloat is within 5e-7 relative of erfinv (one Newton step on a double erf)", () => {
    let worst = 0;
    const xs = [0, 1e-30, -1e-6, 0.5, 0.9, 0.99, 0.999, 0.99999, 0.999999];
    for (let i = 1; i < 2000; i++) xs.push(-1 + i / 1000);
    for (const x0 of xs) {
      const x = Math.fround(x0);
      const y = rr.erfinvFloat(x);
      const exact = y - (erf(y) - x) / ((2 / Math.sqrt(Math.PI)) * Math.exp(-y * y));
      if (exact !== 0) worst = Math.max(worst, Math.abs(y - exact) / Math.abs(exact));
      else expect(y).toBe(0);
    }
    expect(worst).toBeLessThan(5e-7);
  });

  for (const dtype of ["float16", "bfloat16"] as const) {
    test(`${dtype} within one ${dtype} ulp of the reference`, () => {
      const value = dtype === "float16" ? (b: Uint16Array) => fromF16(b) : (b: Uint16Array) => Float64Array.from(b, bf16Value);
      const k = KEYS[1]![1];
      const got = value(read(gpuNormal(k, 4097, 1, 3, dtype), Uint16Array));
      const want = value(rr.normal(k, 4097, 1, 3, dtype));
      const rel = dtype === "float16" ? 2 ** -10 : 2 ** -7;
      expectClose(`normal ${dtype}`, got, want, { rtol: rel, atol: 1e-7 });
    });
  }
});

/** erf(y) in double: Taylor series for |y| < 3, continued fraction for erfc beyond. */
function erf(y: number): number {
  const a = Math.abs(y);
  if (a < 3) {
    let term = a;
    let sum = a;
    for (let k = 1; k < 200; k++) {
      term *= (-a * a) / k;
      const add = term / (2 * k + 1);
      sum += add;
      if (Math.abs(add) < 1e-18 * Math.abs(sum)) break;
    }
    return Math.sign(y) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  let f = 0;
  for (let k = 60; k >= 1; k--) f = k / 2 / (a + f);
  const erfc = Math.exp(-a * a) / Math.sqrt(Math.PI) / (a + f);
  return Math.sign(y) * (1 - erfc);
}

describe("randint and bernoulli", () => {
  test("randint equals the reference exactly", () => {
    const ranges: [number, number][] = [
      [0, 10],
      [-5, 3],
      [0, 1],
      [-(2 ** 31), 2 ** 31 - 1],
      [1000, 1 << 30],
    ];
    for (const [, k] of KEYS) {
      for (const [low, high] of ranges) {
        for (const n of SIZES) {
          const got = gpuRandint(k, n, low, high);
          expectEqual(`randint [${low}, ${high}) n=${n}`, got, rr.randint(k, n, low, high));
          for (const v of got) if (v < low || v >= high) throw new Error(`randint [${low}, ${high}): ${v}`);
        }
      }
    }
  });

  test("mulhi32 is the high word of the 64-bit product", () => {
    const pairs = [[0xffffffff, 0xffffffff], [0x12345678, 0x9abcdef0], [1, 0xffffffff], [0x80000000, 2], [0, 5], [65537, 65535]];
    for (const [a, b] of pairs) {
      expect(rr.mulhi32(a!, b!)).toBe(Number((BigInt(a!) * BigInt(b!)) >> 32n));
    }
  });

  test("bernoulli equals the reference exactly", () => {
    for (const [, k] of KEYS) {
      for (const p of [0.5, 0.1, 0, 1, 0.999]) {
        for (const n of SIZES) {
          expectEqual(`bernoulli p=${p} n=${n}`, gpuBernoulli(k, n, p), rr.bernoulli(k, n, p));
        }
      }
    }
    const k = KEYS[0]![1];
    expect(gpuBernoulli(k, 1000, 0).every((v) => v === 0)).toBe(true);
    expect(gpuBernoulli(k, 1000, 1).every((v) => v === 1)).toBe(true);
  });
});

describe("statistics with a fixed key (n = 100k)", () => {
  const N = 100_000;
  const k = rr.key(20240611);
  const meanVar = (xs: ArrayLike<number>) => {
    let s = 0;
    for (let i = 0; i < xs.length; i++) s += xs[i]!;
    const m = s / xs.length;
    let v = 0;
    for (let i = 0; i < xs.length; i++) v += (xs[i]! - m) ** 2;
    return [m, v / (xs.length - 1)] as const;
  };

  test("uniform [0, 1): mean 1/2, variance 1/12, flat deciles", () => {
    const u = read(gpuUniform(k, N, 0, 1, "float32"), Float32Array);
    const [m, v] = meanVar(u);
    expect(Math.abs(m - 0.5)).toBeLessThan(5 * Math.sqrt(1 / 12 / N));
    expect(Math.abs(v - 1 / 12)).toBeLessThan(5 * Math.sqrt(1 / 180 / N)); // var of (u - 1/2)^2 is 1/180
    const counts = new Array(10).fill(0);
    for (const x of u) counts[Math.floor(x * 10)]++;
    const chi2 = counts.reduce((acc, c) => acc + (c - N / 10) ** 2 / (N / 10), 0);
    expect(chi2).toBeLessThan(40); // 9 degrees of freedom: P(chi2 > 40) < 1e-5
  });

  test("normal: mean 0, variance 1, 4.55% beyond 2 sigma", () => {
    const z = read(gpuNormal(k, N, 0, 1, "float32"), Float32Array);
    const [m, v] = meanVar(z);
    expect(Math.abs(m)).toBeLessThan(5 / Math.sqrt(N));
    expect(Math.abs(v - 1)).toBeLessThan(5 * Math.sqrt(2 / N));
    const tail = z.filter((x) => Math.abs(x) > 2).length / N;
    expect(Math.abs(tail - 0.0455)).toBeLessThan(5 * Math.sqrt((0.0455 * 0.9545) / N));
    let pos = 0;
    for (const x of z) if (x > 0) pos++;
    expect(Math.abs(pos / N - 0.5)).toBeLessThan(5 * Math.sqrt(0.25 / N));
  });

  test("randint [-3, 4): every value, chi-square loose", () => {
    const r = gpuRandint(k, N, -3, 4);
    const counts = new Array(7).fill(0);
    for (const x of r) counts[x + 3]++;
    expect(counts.every((c) => c > 0)).toBe(true);
    const chi2 = counts.reduce((acc, c) => acc + (c - N / 7) ** 2 / (N / 7), 0);
    expect(chi2).toBeLessThan(35); // 6 degrees of freedom: P(chi2 > 35) < 1e-5
  });

  test("bernoulli p = 0.3: mean within 5 standard errors", () => {
    const b = gpuBernoulli(k, N, 0.3);
    const ones = b.reduce((acc, x) => acc + x, 0);
    expect(Math.abs(ones / N - 0.3)).toBeLessThan(5 * Math.sqrt((0.3 * 0.7) / N));
  });

  test("bits: each of the 32 bit positions is set about half the time", () => {
    const bits = gpuBits(k, N);
    for (let b = 0; b < 32; b++) {
      let ones = 0;
      for (const w of bits) ones += (w >>> b) & 1;
      expect(Math.abs(ones / N - 0.5)).toBeLessThan(5 * Math.sqrt(0.25 / N));
    }
  });
});
