import { describe, test } from "bun:test";
import {
  dev,
  expectClose,
  expectEqual,
  f16,
  fromF16,
  kernelFile,
  read,
  runThreads,
  toF16,
  uniform,
  uniformInt,
} from "./helpers.ts";

const kernel = kernelFile("vectors.metal");
const halfKernel = kernelFile("half.metal");
const intKernel = kernelFile("integers.metal");
const fr = Math.fround;

describe("vectors.metal, half.metal, integers.metal", () => {
  test("vec_float: float2/3/4 swizzles (.xy .zw .yx .xyz .wzyx .rgba), swizzle writes, bool4 select/any/all", () => {
    const n = 300;
    const a = uniform(4 * n, -4, 4, 21);
    const b = uniform(4 * n, -4, 4, 22);
    a.set([1, 2, 3, 4], 0);
    b.set([5, 6, 7, 8], 0); // every lane a < b
    a.set([1, -2, 3, -4], 4);
    b.set([1, -2, 3, -4], 4); // no lane a < b
    a.set([0, 0, 2, 1], 8);
    b.set([1, 0, 1, 2], 8); // lt.w && !lt.z
    const out = dev.buffer(new Float32Array(28 * n));
    const out3 = dev.buffer(new Float32Array(4 * n));
    runThreads(kernel("vec_float"), [dev.buffer(a), dev.buffer(b), out, out3], [n, 1, 1], [64, 1, 1]);

    const want: number[] = [];
    const want3: number[] = [];
    for (let i = 0; i < n; i++) {
      const [a0, a1, a2, a3] = a.subarray(4 * i, 4 * i + 4) as unknown as number[];
      const [b0, b1, b2, b3] = b.subarray(4 * i, 4 * i + 4) as unknown as number[];
      const r = [fr(a0! - b0!), fr(a1! - b1!), fr(a2! - b2!)];
      const lt = [a0! < b0!, a1! < b1!, a2! < b2!, a3! < b3!];
      want.push(fr(a0! + b2!), fr(a1! + b3!), fr(a1! * 2), fr(a0! * 2));
      want.push(a3!, a2!, a1!, a0!);
      want.push(r[0]!, r[1]!, r[2]!, fr(a3! * b0!));
      want.push(a0! + a1! * b2! - b3!, b2!, b1!, a3!);
      want.push(-a0!, a1!, b0!, b1!);
      want.push(lt[0] ? b0! : a0!, lt[1] ? b1! : a1!, lt[2] ? b2! : a2!, lt[3] ? b3! : a3!);
      want.push(lt.some(Boolean) ? 1 : 0, lt.every(Boolean) ? 1 : 0, lt[0] ? 1 : 0, lt[3] && !lt[2] ? 1 : 0);
      want3.push(a0!, b1!, fr(a2! + b2!));
    }
    const names = ["p,q", "wzyx", "r,w*x", "rgba", "w.zw=", "select", "any/all"];
    expectClose("vec_float", read(out, Float32Array), want, {
      ulps: 1,
      atol: 2e-6, // a.r + a.g * b.b - b.a may be contracted to an fma
      label: (k) => `element ${Math.floor(k / 28)}, ${names[Math.floor(k / 4) % 7]}.${"xyzw"[k % 4]}`,
    });
    // float3 in a device buffer has a 16-byte stride; the fourth word is padding.
    const got3 = read(out3, Float32Array).filter((_, k) => k % 4 !== 3);
    expectClose("vec_float float3 out", got3, want3, { ulps: 0 });
  });

  test("vec_half: half arithmetic rounds and overflows in half; half4 ops; float -> half", () => {
    const hx = [300, 65504, -65504, 1, 1, 255.9, -0.5, 2, 1000, 0.1, 2 ** -14, 1e-4, -300, 0, 60000, 3];
    const hy = [300, 65504, 65504, 2 ** -11, 3 * 2 ** -11, 256, 0.25, 2, -70, 0.2, 2 ** -14, 1e-4, 300, -0, 8000, -3];
    const fx = [70000, 65504, 65519, 65520, -70000, 1e-7, 3e-8, 1e-8, 0.1, -2.5, NaN, Infinity, 2049, 2051, -65535, 1.5];
    const n = hx.length;
    const x4 = uniform(4 * n, -200, 200, 31).map(f16);
    x4.set([300, -250, 280, 290], 0); // products overflow half
    const out = dev.buffer(new Uint16Array(5 * n));
    const out4 = dev.buffer(new Uint16Array(8 * n));
    const outf = dev.buffer(new Float32Array(n));
    const args = [
      dev.buffer(toF16(hx)),
      dev.buffer(toF16(hy)),
      dev.buffer(toF16(x4)),
      dev.buffer(new Float32Array(fx)),
      out,
      out4,
      outf,
    ];
    runThreads(halfKernel("vec_half"), args, [n, 1, 1], [16, 1, 1]);

    const h = hx.map(f16);
    const g = hy.map(f16);
    const want: number[] = [];
    for (let i = 0; i < n; i++) {
      want.push(f16(h[i]! * g[i]!), f16(h[i]! + g[i]!), f16(h[i]! - g[i]!), f16(Math.fround(fx[i]!)), Math.max(h[i]!, 0));
    }
    expectEqual("vec_half scalars", fromF16(read(out, Uint16Array)), want, {
      label: (k) => {
        const i = Math.floor(k / 5);
        return `h=${h[i]} g=${g[i]} f=${fx[i]} op ${["*", "+", "-", "half(f)", "max0"][k % 5]}`;
      },
    });

    const want4: number[] = [];
    for (let i = 0; i < n; i++) {
      const [x, y, z, w] = Array.from(x4.subarray(4 * i, 4 * i + 4));
      want4.push(f16(x! * 2 + 1), f16(y! * 2 - 1), f16(z! * 2 + 0.5), f16(w! * 2));
      want4.push(f16(z! * w!), f16(w! * w!), f16(x! * w!), f16(y! * w!));
    }
    expectEqual("vec_half half4", fromF16(read(out4, Uint16Array)), want4);
    expectEqual("vec_half widened", read(outf, Float32Array), h.map((v) => Math.fround(v * 3)));
  });

  test("vec_int: int/uint arithmetic, division and shifts of negatives, bit counts, int4/uint2/bool2", () => {
    const n = 500;
    const a = uniformInt(n, -30000, 30000, 41);
    const b = uniformInt(n, -300, 300, 42).map((v) => (v === 0 ? 7 : v));
    a.set([0, -7, 7, -7, 30000, -1, 5, -30000], 0);
    b.set([5, 2, -2, -2, 1, -1, 5, 299], 0);
    const oi = dev.buffer(new Int32Array(16 * n));
    const ou = dev.buffer(new Uint32Array(8 * n));
    runThreads(intKernel("vec_int"), [dev.buffer(a), dev.buffer(b), oi, ou], [n, 1, 1], [128, 1, 1]);

    const popcount = (u: number) => {
      let c = 0;
      for (let v = u >>> 0; v; v &= v - 1) c++;
      return c;
    };
    const ctz = (u: number) => (u === 0 ? 32 : 31 - Math.clz32(u & -u));
    const wantI: number[] = [];
    const wantU: number[] = [];
    for (let i = 0; i < n; i++) {
      const x = a[i]!;
      const y = b[i]!;
      wantI.push(x + y, x - y, Math.imul(x, y), Math.trunc(x / y), x % y, x >> 3, (x & y) ^ (x | 7), ~x);
      wantI.push(Math.abs(x), Math.min(x, y), Math.max(x, y), Math.min(Math.max(x, -100), 100));
      const v = [x, y, -x, 2 * x];
      wantI.push(
        Math.trunc(v[0]! / 3) + 1 * v[3]!,
        Math.trunc(v[1]! / 3) + 2 * v[2]!,
        Math.trunc(v[2]! / 3) + 3 * v[1]!,
        Math.trunc(v[3]! / 3) + 4 * v[0]!,
      );
      const ux = x >>> 0;
      const uy = y >>> 0;
      const flags = (x > 0 ? 1 : 0) | (y > 0 ? 2 : 0) | (x === y ? 4 : 0) | (x > 0 || y > 0 ? 8 : 0) | (x > 0 && y > 0 ? 16 : 0);
      wantU.push(ux >>> 3, Math.imul(ux, 2654435761) >>> 0, (ux + uy) >>> 0, popcount(ux), Math.clz32(ux), ctz(ux));
      wantU.push((ux % 7) * 1000 + (uy % 1000), flags);
    }
    expectEqual("vec_int ints", read(oi, Int32Array), Int32Array.from(wantI), {
      label: (k) => `x=${a[Math.floor(k / 16)]} y=${b[Math.floor(k / 16)]} result ${k % 16}`,
    });
    expectEqual("vec_int uints", read(ou, Uint32Array), wantU, {
      label: (k) => `x=${a[Math.floor(k / 8)]} y=${b[Math.floor(k / 8)]} result ${k % 8}`,
    });
  });
});
