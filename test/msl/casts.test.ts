import { describe, expect, test } from "bun:test";
import {
  bf16,
  bf16Bits,
  bf16Value,
  bitsF32,
  dev,
  expectClose,
  expectEqual,
  f16,
  f16Bits,
  f32Bits,
  fromF16,
  kernelFile,
  read,
  runThreads,
  uniform,
} from "./helpers.ts";

const kernel = kernelFile("casts.metal");

const isHalfNaN = (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
const isBf16NaN = (b: number) => (b & 0x7f80) === 0x7f80 && (b & 0x7f) !== 0;

describe("casts.metal", () => {
  test("cast_values: float -> int/uint truncates, int/uint -> float and half round to nearest even", () => {
    const fx = [-2.7, 2.7, -0.5, 0.5, -1, 1e9, -1e9, 16777217, 70000, 65504, 65519, 65520, -70000, -3.5, 123.999, 0];
    const nx = [
      0, -1, 65504, 65519, 65520, 70000, -70000, 2049, 2051, 16777217, 2147483647, -2147483648, 40000, -32769, 32768,
      123456789,
    ];
    const ux = [
      0, 1, 4294967295, 16777217, 16777219, 2147483648, 0x1234567, 0xdeadbeef, 255, 256, 65535, 65536, 7, 0x80000001,
      3000000000, 42,
    ];
    const n = fx.length;
    const f = new Float32Array(fx);
    const oi = dev.buffer(new Int32Array(3 * n));
    const ou = dev.buffer(new Uint32Array(2 * n));
    const of = dev.buffer(new Float32Array(3 * n));
    const oh = dev.buffer(new Uint16Array(n));
    const args = [dev.buffer(f), dev.buffer(new Int32Array(nx)), dev.buffer(new Uint32Array(ux)), oi, ou, of, oh];
    runThreads(kernel("cast_values"), args, [n, 1, 1], [16, 1, 1]);

    expectEqual(
      "float/int conversions",
      read(oi, Int32Array),
      Int32Array.from(Array.from(f).flatMap((x, i) => [Math.trunc(x), Math.floor(x), (nx[i]! << 16) >> 16])),
      { label: (k) => `f=${f[Math.floor(k / 3)]} n=${nx[Math.floor(k / 3)]} result ${k % 3}` },
    );
    expectEqual(
      "to uint",
      read(ou, Uint32Array),
      Array.from(f).flatMap((x, i) => [Math.trunc(Math.abs(x)), (ux[i]! & 0xff) + ((ux[i]! >>> 8) & 0xffff)]),
    );
    expectEqual(
      "to float",
      read(of, Float32Array),
      Array.from(f).flatMap((x, i) => [Math.fround(nx[i]!), Math.fround(ux[i]!), f16(x)]),
      { label: (k) => `f=${f[Math.floor(k / 3)]} n=${nx[Math.floor(k / 3)]} u=${ux[Math.floor(k / 3)]} result ${k % 3}` },
    );
    expectEqual("int -> half", fromF16(read(oh, Uint16Array)), nx.map(f16), { label: (k) => `n=${nx[k]}` });
  });

  test("cast_bits: as_type<uint>(float), half2 packing, bool(x) and classification of special values", () => {
    const sx = [0, -0, 1, -1, Infinity, -Infinity, NaN, 65504, 70000, 1e-7, 0.1, 3.4e38, -3.4e38, 2.5, -65520, 1.17549435e-38];
    const bits = [
      0x3f800000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x00800000, 0x7f7fffff, 0x40490fdb,
      0xc2f6e979, 0x00000000, 0x3eaaaaab, 0xbf000000, 0x4b800001, 0x33800000, 0xcf000000, 0x477fe000,
    ];
    const n = sx.length;
    const s = new Float32Array(sx);
    const ou = dev.buffer(new Uint32Array(4 * n));
    const of = dev.buffer(new Float32Array(n));
    runThreads(kernel("cast_bits"), [dev.buffer(s), dev.buffer(new Uint32Array(bits)), ou, of], [n, 1, 1], [16, 1, 1]);
    const got = read(ou, Uint32Array);

    const want: number[] = [];
    for (const x of s) {
      const flags =
        (x !== 0 ? 1 : 0) | // NaN !== 0, so bool(NaN) is true
        (Number.isNaN(x) ? 2 : 0) |
        (Math.abs(x) === Infinity ? 4 : 0) |
        ((f32Bits(x) >>> 31) << 3) |
        (Number.isFinite(x) ? 16 : 0);
      want.push(f32Bits(x), (f16Bits(x) | (f16Bits(-x) << 16)) >>> 0, f16Bits(x), flags);
    }
    // A NaN converted to half may carry any payload or sign: check that it is a NaN.
    const nanAt = sx.findIndex(Number.isNaN);
    expect(nanAt).toBeGreaterThanOrEqual(0);
    const packed = got[4 * nanAt + 1]!;
    expect(isHalfNaN(packed & 0xffff) && isHalfNaN(packed >>> 16) && isHalfNaN(got[4 * nanAt + 2]!)).toBe(true);
    expectEqual("as_type and flags", got, want, {
      skip: (k) => Math.floor(k / 4) === nanAt && (k % 4 === 1 || k % 4 === 2),
      label: (k) => `x=${sx[Math.floor(k / 4)]} result ${k % 4}`,
    });
    expectEqual("as_type<float>(uint)", read(of, Float32Array), bits.map(bitsF32), {
      label: (k) => `bits=0x${bits[k]!.toString(16)}`,
    });
  });

  test("bfloat_ops: float -> bfloat rounds to nearest even, overflows to inf; bfloat4 products", () => {
    const fx = [
      1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -(1 + 2 ** -8), 3.4028235e38, 3.3895314e38, 1e-3,
      -65504, 0, -0, Infinity, -Infinity, NaN, 0.1, 255.5, 257, 1.00000012, -7.99, 3.140625,
    ];
    const n = fx.length;
    const f = new Float32Array(fx);
    const x4 = new Uint16Array(uniform(4 * n, -20, 20, 51).map((v) => bf16Bits(v)));
    const ob = dev.buffer(new Uint16Array(n));
    const obits = dev.buffer(new Uint16Array(n));
    const of = dev.buffer(new Float32Array(2 * n));
    const o4 = dev.buffer(new Uint16Array(4 * n));
    runThreads(kernel("bfloat_ops"), [dev.buffer(f), dev.buffer(x4), ob, obits, of, o4], [n, 1, 1], [8, 1, 1]);

    const nanAt = fx.findIndex(Number.isNaN);
    const wantBits = Array.from(f, bf16Bits);
    const gotBits = read(ob, Uint16Array);
    expect(isBf16NaN(gotBits[nanAt]!)).toBe(true);
    const skipNaN = { skip: (i: number) => i === nanAt, label: (i: number) => `x=${fx[i]}` };
    expectEqual("bfloat(x) stored", gotBits, wantBits, skipNaN);
    expectEqual("as_type<ushort>(bfloat)", read(obits, Uint16Array), wantBits, skipNaN);

    const v = Array.from(x4, bf16Value);
    const gotF = read(of, Float32Array);
    expectEqual(
      "float(bfloat(x))",
      gotF.filter((_, k) => k % 2 === 0),
      Array.from(f, (x) => bf16(x)),
      { label: (i) => `x=${fx[i]}` },
    );
    expectClose(
      "float arithmetic on bfloat4 lanes",
      gotF.filter((_, k) => k % 2 === 1),
      Array.from({ length: n }, (_, i) => v[4 * i]! + v[4 * i + 1]! * v[4 * i + 2]! - v[4 * i + 3]!),
      { rtol: 1e-6, atol: 1e-4 },
    );
    const want4 = Array.from({ length: 4 * n }, (_, k) => {
      const i = Math.floor(k / 4);
      const l = k % 4;
      return bf16Bits(Math.fround(v[4 * i + l]! * v[4 * i + ((l + 1) % 4)]!));
    });
    expectEqual("bfloat4 v * v.yzwx", read(o4, Uint16Array), want4);
  });
});
