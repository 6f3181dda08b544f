import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import {
  DTYPES,
  type DType,
  bf16BitsToNumber,
  decode,
  defaultDTypeOf,
  encode,
  f16BitsToNumber,
  inferDType,
  isFloating,
  isInteger,
  isSigned,
  itemsize,
  mslType,
  numberToBf16Bits,
  numberToF16Bits,
  parseDType,
  promoteTypes,
  scalarResultType,
  storageFor,
} from "../../src/graph/dtype.ts";
import { errorOf } from "../expect-error.ts";


/** f16 bits as the platform's Float16Array rounds a double (it converts straight from float64). */
const f16 = new Float16Array(1);
const f16bits = new Uint16Array(f16.buffer);
function platformF16Bits(x: number): number {
  f16[0] = x;
  return f16bits[0] as number;
}

/** bfloat16 of a float32-representable value by the usual integer trick on float32 bits. */
const f32 = new Float32Array(1);
const f32bits = new Uint32Array(f32.buffer);
function bf16FromF32Bits(x: number): number {
  f32[0] = x;
  const b = f32bits[0] as number;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

describe("dtype properties", () => {
  test("the eight dtypes, their sizes and MSL names", () => {
    expect([...DTYPES]).toEqual(["float32", "float16", "bfloat16", "int32", "uint32", "int8", "uint8", "bool"]);
    expect(DTYPES.map(itemsize)).toEqual([4, 2, 2, 4, 4, 1, 1, 1]);
    expect(DTYPES.map(mslType)).toEqual(["float", "half", "bfloat", "int", "uint", "char", "uchar", "bool"]);
  });

  test("kind predicates", () => {
    expect(DTYPES.filter(isFloating)).toEqual(["float32", "float16", "bfloat16"]);
    expect(DTYPES.filter(isInteger)).toEqual(["int32", "uint32", "int8", "uint8"]);
    expect(DTYPES.filter(isSigned)).toEqual(["float32", "float16", "bfloat16", "int32", "int8"]);
  });

  test("storage arrays match itemsize", () => {
    expect(DTYPES.map((d) => storageFor(d).name)).toEqual([
      "Float32Array",
      "Uint16Array",
      "Uint16Array",
      "Int32Array",
      "Uint32Array",
      "Int8Array",
      "Uint8Array",
      "Uint8Array",
    ]);
    for (const d of DTYPES) expect(storageFor(d).BYTES_PER_ELEMENT).toBe(itemsize(d));
  });
});

describe("promoteTypes", () => {
  // Rows and columns in DTYPES order: float32 float16 bfloat16 int32 uint32 int8 uint8 bool.
  const F32 = "float32", F16 = "float16", BF = "bfloat16", I32 = "int32", U32 = "uint32", I8 = "int8", U8 = "uint8", B = "bool";
  const table: DType[][] = [
    /* float32  */ [F32, F32, F32, F32, F32, F32, F32, F32],
    /* float16  */ [F32, F16, F32, F16, F16, F16, F16, F16],
    /* bfloat16 */ [F32, F32, BF, BF, BF, BF, BF, BF],
    /* int32    */ [F32, F16, BF, I32, F32, I32, I32, I32],
    /* uint32   */ [F32, F16, BF, F32, U32, F32, U32, U32],
    /* int8     */ [F32, F16, BF, I32, F32, I8, I32, I8],
    /* uint8    */ [F32, F16, BF, I32, U32, I32, U8, U8],
    /* bool     */ [F32, F16, BF, I32, U32, I8, U8, B],
  ];

  test("the full 8x8 table", () => {
    const got = DTYPES.map((a) => DTYPES.map((b) => promoteTypes(a, b)));
    expect(got).toEqual(table);
  });

  test("symmetric, idempotent, and bool is the identity", () => {
    for (const a of DTYPES) {
      expect(promoteTypes(a, a)).toBe(a);
      expect(promoteTypes(a, "bool")).toBe(a);
      for (const b of DTYPES) {
        expect(promoteTypes(a, b)).toBe(promoteTypes(b, a));
      }
    }
  });

  test("the result holds a float whenever an operand is a float", () => {
    for (const a of DTYPES) for (const b of DTYPES) {
      if (isFloating(a) || isFloating(b)) expect(isFloating(promoteTypes(a, b))).toBe(true);
    }
  });
});

describe("scalarResultType and default dtypes", () => {
  test("weak scalars", () => {
    expect(scalarResultType("float16", 2)).toBe("float16");
    expect(scalarResultType("float16", 2.5)).toBe("float16");
    expect(scalarResultType("bfloat16", 1e30)).toBe("bfloat16");
    expect(scalarResultType("int8", 1000)).toBe("int8");
    expect(scalarResultType("uint8", -1)).toBe("uint8");
    expect(scalarResultType("int32", 0.5)).toBe("float32");
    expect(scalarResultType("uint32", NaN)).toBe("float32");
    expect(scalarResultType("int8", Infinity)).toBe("float32");
    expect(scalarResultType("bool", 3)).toBe("int32");
    expect(scalarResultType("bool", 0.25)).toBe("float32");
    for (const d of DTYPES) {
      expect(scalarResultType(d, true)).toBe(d);
      expect(scalarResultType(d, false)).toBe(d);
    }
  });

  test("defaultDTypeOf", () => {
    expect(defaultDTypeOf(true)).toBe("bool");
    expect(defaultDTypeOf(3)).toBe("int32");
    expect(defaultDTypeOf(-0)).toBe("int32");
    expect(defaultDTypeOf(2 ** 31 - 1)).toBe("int32");
    expect(defaultDTypeOf(-(2 ** 31))).toBe("int32");
    // No int64: integers int32 cannot hold become float32 instead of wrapping.
    expect(defaultDTypeOf(2 ** 31)).toBe("float32");
    expect(defaultDTypeOf(0.5)).toBe("float32");
    expect(defaultDTypeOf(NaN)).toBe("float32");
    expect(defaultDTypeOf(-Infinity)).toBe("float32");
  });

  test("inferDType", () => {
    expect(inferDType([])).toBe("float32");
    expect(inferDType([true, false])).toBe("bool");
    expect(inferDType([1, 2, 3])).toBe("int32");
    expect(inferDType([true, 2])).toBe("int32");
    expect(inferDType([1, 2.5, 3])).toBe("float32");
    expect(inferDType([false, 0.5])).toBe("float32");
    expect(inferDType(new Float32Array([1, 2]))).toBe("int32");
    expect(inferDType([1, 2 ** 40])).toBe("float32");
  });
});

describe("float16 conversion", () => {
  test("hand-computed cases", () => {
    expect(numberToF16Bits(0)).toBe(0x0000);
    expect(numberToF16Bits(-0)).toBe(0x8000);
    expect(numberToF16Bits(1)).toBe(0x3c00);
    expect(numberToF16Bits(-2)).toBe(0xc000);
    expect(numberToF16Bits(65504)).toBe(0x7bff); // largest finite
    expect(numberToF16Bits(65519.99)).toBe(0x7bff); // just below the overflow tie
    expect(numberToF16Bits(65520)).toBe(0x7c00); // the tie rounds to even, which is Inf
    expect(numberToF16Bits(-65520)).toBe(0xfc00);
    expect(numberToF16Bits(1e6)).toBe(0x7c00);
    expect(numberToF16Bits(Infinity)).toBe(0x7c00);
    expect(numberToF16Bits(-Infinity)).toBe(0xfc00);
    expect(numberToF16Bits(2 ** -14)).toBe(0x0400); // smallest normal
    expect(numberToF16Bits(2 ** -14 - 2 ** -25)).toBe(0x0400); // tie between 0x03ff and 0x0400 → even
    expect(numberToF16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(numberToF16Bits(2 ** -25)).toBe(0x0000); // tie with 0 → even (0)
    expect(numberToF16Bits(-(2 ** -25))).toBe(0x8000);
    expect(numberToF16Bits(2 ** -25 + 2 ** -40)).toBe(0x0001); // just above the tie
    expect(numberToF16Bits(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 → 2
    expect(numberToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie between 1 and 1+2^-10 → 1
    expect(numberToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even mantissa 2
    expect(numberToF16Bits(1 + 2 ** -11 + 2 ** -40)).toBe(0x3c01);
    expect(numberToF16Bits(0.1)).toBe(0x2e66);
    expect(numberToF16Bits(1e-10)).toBe(0x0000);
    expect(Number.isNaN(f16BitsToNumber(numberToF16Bits(NaN)))).toBe(true);
    expect(numberToF16Bits(NaN)).toBe(0x7e00);
  });

  test("decoding specials", () => {
    expect(f16BitsToNumber(0x7bff)).toBe(65504);
    expect(f16BitsToNumber(0x0001)).toBe(2 ** -24);
    expect(f16BitsToNumber(0x03ff)).toBe(1023 * 2 ** -24);
    expect(f16BitsToNumber(0x7c00)).toBe(Infinity);
    expect(f16BitsToNumber(0xfc00)).toBe(-Infinity);
    expect(Object.is(f16BitsToNumber(0x8000), -0)).toBe(true);
    expect(Number.isNaN(f16BitsToNumber(0x7c01))).toBe(true);
    expect(Number.isNaN(f16BitsToNumber(0xfe00))).toBe(true);
  });

  test("all 65536 bit patterns decode like Float16Array and round-trip", () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const platform = new Float16Array(all.buffer);
    for (let b = 0; b < 65536; b++) {
      const v = f16BitsToNumber(b);
      const p = platform[b] as number;
      if (Number.isNaN(p)) {
        expect(Number.isNaN(v)).toBe(true);
        continue;
      }
      if (!Object.is(v, p)) expect(v).toBe(p);
      if (numberToF16Bits(v) !== b) expect(numberToF16Bits(v)).toBe(b);
    }
  });

  test("every midpoint between neighbours rounds to the even one, and its neighbours round to the nearer", () => {
    for (let b = 0; b < 0x7c00; b++) {
      const lo = f16BitsToNumber(b);
      const hi = f16BitsToNumber(b + 1); // 0x7c00 (Inf) stands in as the next step past 65504
      const mid = b + 1 === 0x7c00 ? 65520 : (lo + hi) / 2;
      const even = b % 2 === 0 ? b : b + 1;
      const got = [numberToF16Bits(mid), numberToF16Bits(-mid)];
      const want = [even, even | 0x8000];
      if (got[0] !== want[0] || got[1] !== want[1]) expect(got).toEqual(want);
      const below = numberToF16Bits(mid - mid * 2 ** -40);
      const above = numberToF16Bits(mid + mid * 2 ** -40);
      if (below !== b || above !== b + 1) expect([below, above]).toEqual([b, b + 1]);
    }
  });

  test("random doubles match Float16Array bit for bit", () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true }), (x) => {
        expect(numberToF16Bits(x)).toBe(platformF16Bits(x));
      }),
      { numRuns: 20000 },
    );
    // Values near the f16 range, where the interesting rounding happens.
    fc.assert(
      fc.property(fc.double({ min: -70000, max: 70000, noNaN: true }), (x) => {
        expect(numberToF16Bits(x)).toBe(platformF16Bits(x));
      }),
      { numRuns: 20000 },
    );
    fc.assert(
      fc.property(fc.double({ min: -(2 ** -12), max: 2 ** -12, noNaN: true }), (x) => {
        expect(numberToF16Bits(x)).toBe(platformF16Bits(x));
      }),
      { numRuns: 20000 },
    );
  });
});

describe("bfloat16 conversion", () => {
  test("hand-computed cases", () => {
    expect(numberToBf16Bits(0)).toBe(0x0000);
    expect(numberToBf16Bits(-0)).toBe(0x8000);
    expect(numberToBf16Bits(1)).toBe(0x3f80);
    expect(numberToBf16Bits(-2)).toBe(0xc000);
    expect(numberToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie → even
    expect(numberToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie → even
    // Rounded once from the double: through float32 this would become 1+2^-8, then tie to 1.
    expect(numberToBf16Bits(1 + 2 ** -8 + 2 ** -30)).toBe(0x3f81);
    expect(numberToBf16Bits(3.3895313892515355e38)).toBe(0x7f7f); // largest finite
    expect(numberToBf16Bits(3.4028234663852886e38)).toBe(0x7f80); // float32 max is past the tie → Inf
    expect(numberToBf16Bits((2 - 2 ** -8) * 2 ** 127)).toBe(0x7f80); // the overflow tie → even (Inf)
    expect(numberToBf16Bits((2 - 2 ** -8) * 2 ** 127 * (1 - 2 ** -40))).toBe(0x7f7f);
    expect(numberToBf16Bits(1e300)).toBe(0x7f80);
    expect(numberToBf16Bits(-Infinity)).toBe(0xff80);
    expect(numberToBf16Bits(2 ** -126)).toBe(0x0080); // smallest normal
    expect(numberToBf16Bits(2 ** -133)).toBe(0x0001); // smallest subnormal
    expect(numberToBf16Bits(2 ** -134)).toBe(0x0000); // tie with 0 → 0
    expect(numberToBf16Bits(3 * 2 ** -134)).toBe(0x0002);
    expect(numberToBf16Bits(5e-324)).toBe(0x0000);
    expect(numberToBf16Bits(NaN)).toBe(0x7fc0);
    expect(bf16BitsToNumber(0x3f80)).toBe(1);
    expect(bf16BitsToNumber(0x0001)).toBe(2 ** -133);
    expect(bf16BitsToNumber(0x7f80)).toBe(Infinity);
    expect(Object.is(bf16BitsToNumber(0x8000), -0)).toBe(true);
    expect(Number.isNaN(bf16BitsToNumber(0x7fc0))).toBe(true);
    expect(Number.isNaN(bf16BitsToNumber(0xff81))).toBe(true);
  });

  test("all 65536 bit patterns round-trip", () => {
    for (let b = 0; b < 65536; b++) {
      const v = bf16BitsToNumber(b);
      const exp = (b >> 7) & 0xff;
      const frac = b & 0x7f;
      if (exp === 0xff && frac !== 0) {
        expect(Number.isNaN(v)).toBe(true);
        continue;
      }
      if (numberToBf16Bits(v) !== b) expect(numberToBf16Bits(v)).toBe(b);
    }
  });

  test("every midpoint rounds to the even neighbour", () => {
    for (let b = 0; b < 0x7f80; b++) {
      const lo = bf16BitsToNumber(b);
      const hi = b + 1 === 0x7f80 ? 2 ** 128 : bf16BitsToNumber(b + 1); // one step past the largest finite
      const mid = (lo + hi) / 2;
      const even = b % 2 === 0 ? b : b + 1;
      if (numberToBf16Bits(mid) !== even) expect(numberToBf16Bits(mid)).toBe(even);
      if (numberToBf16Bits(-mid) !== (even | 0x8000)) expect(numberToBf16Bits(-mid)).toBe(even | 0x8000);
    }
  });

  test("float32 inputs match the float32-bits rounding trick", () => {
    fc.assert(
      fc.property(fc.float({ noNaN: true }), (x) => {
        expect(numberToBf16Bits(x)).toBe(bf16FromF32Bits(x));
      }),
      { numRuns: 30000 },
    );
  });

  test("random doubles: the result is a nearest bfloat16", () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true, min: -3e38, max: 3e38 }), (x) => {
        const b = numberToBf16Bits(x);
        const v = bf16BitsToNumber(b);
        const up = bf16BitsToNumber(b + 1);
        const down = (b & 0x7fff) === 0 ? -bf16BitsToNumber(b + 1) : bf16BitsToNumber(b - 1);
        // No neighbour of the chosen value is strictly nearer to x.
        expect(Math.abs(x - v)).toBeLessThanOrEqual(Math.abs(x - up));
        expect(Math.abs(x - v)).toBeLessThanOrEqual(Math.abs(x - down));
      }),
      { numRuns: 20000 },
    );
  });
});

/** Reference integer cast: truncate, then wrap modulo 2^bits, computed with BigInt. */
function wrapRef(x: number, bits: number, signed: boolean): number {
  if (!Number.isFinite(x)) return 0;
  const m = 1n << BigInt(bits);
  let v = BigInt(Math.trunc(x)) % m;
  if (v < 0n) v += m;
  if (signed && v >= m / 2n) v -= m;
  return Number(v);
}

describe("encode and decode", () => {
  test("integer casts truncate toward zero and wrap; NaN and Inf give 0", () => {
    const xs = [3.9, -3.9, 2 ** 31, -(2 ** 31) - 1, 2 ** 32 + 5, 128, 255.7, 256, -1, -0.5, NaN, Infinity, -Infinity, 1e20];
    expect(decode("int32", encode("int32", xs))).toEqual([3, -3, -(2 ** 31), 2 ** 31 - 1, 5, 128, 255, 256, -1, 0, 0, 0, 0, 1661992960]);
    expect(decode("uint32", encode("uint32", xs))).toEqual([3, 2 ** 32 - 3, 2 ** 31, 2 ** 31 - 1, 5, 128, 255, 256, 2 ** 32 - 1, 0, 0, 0, 0, 1661992960]);
    expect(decode("int8", encode("int8", xs))).toEqual([3, -3, 0, -1, 5, -128, -1, 0, -1, 0, 0, 0, 0, 0]);
    expect(decode("uint8", encode("uint8", xs))).toEqual([3, 253, 0, 255, 5, 128, 255, 0, 255, 0, 0, 0, 0, 0]);
  });

  test("integer casts match a BigInt reference", () => {
    const cases: [DType, number, boolean][] = [["int32", 32, true], ["uint32", 32, false], ["int8", 8, true], ["uint8", 8, false]];
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.double(), fc.integer({ min: -1000, max: 1000 }), fc.double({ min: -1e12, max: 1e12 }))), (xs) => {
        for (const [d, bits, signed] of cases) {
          expect(decode(d, encode(d, xs))).toEqual(xs.map((x) => wrapRef(x, bits, signed)));
        }
      }),
      { numRuns: 300 },
    );
  });

  test("bool: nonzero and NaN are true; booleans pass through", () => {
    const stored = encode("bool", [0, -0, 1, -0.5, NaN, Infinity, true, false]);
    expect(stored).toBeInstanceOf(Uint8Array);
    expect([...stored]).toEqual([0, 0, 1, 1, 1, 1, 1, 0]);
    expect(decode("bool", stored)).toEqual([false, false, true, true, true, true, true, false]);
  });

  test("booleans encode as 1 and 0 in every dtype", () => {
    for (const d of DTYPES) {
      const got = decode(d, encode(d, [true, false]));
      expect(got).toEqual(d === "bool" ? [true, false] : [1, 0]);
    }
  });

  test("floats", () => {
    expect(decode("float32", encode("float32", [0.1, 1e39, -1e-50]))).toEqual([Math.fround(0.1), Infinity, -0]);
    const h = encode("float16", [1, 65520, 2 ** -25, 0.1]);
    expect(h).toBeInstanceOf(Uint16Array);
    expect([...h]).toEqual([0x3c00, 0x7c00, 0x0000, 0x2e66]);
    expect(decode("float16", h)).toEqual([1, Infinity, 0, f16BitsToNumber(0x2e66)]);
    const b = encode("bfloat16", [1, -2, 1 + 2 ** -8]);
    expect([...b]).toEqual([0x3f80, 0xc000, 0x3f80]);
    expect(decode("bfloat16", b)).toEqual([1, -2, 1]);
  });

  test("float16 arrays round-trip through decode", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 0xffff })), (bits) => {
        const finite = bits.filter((b) => (b & 0x7c00) !== 0x7c00);
        const stored = new Uint16Array(finite);
        expect([...encode("float16", decode("float16", stored) as number[])]).toEqual(finite);
      }),
    );
  });

  test("out: written in place, returned; wrong type or short length is an error", () => {
    const out = new Int32Array(4);
    expect(encode("int32", [1, 2], out)).toBe(out);
    expect([...out]).toEqual([1, 2, 0, 0]);
    const wrongType = errorOf(() => encode("float16", [1], new Float32Array(1)));
    expect(wrongType.message).toContain("encode");
    expect(wrongType.message).toContain("float16");
    expect(wrongType.message).toContain("Uint16Array");
    expect(wrongType.message).toContain("Float32Array");
    const short = errorOf(() => encode("int8", [1, 2, 3], new Int8Array(2)));
    expect(short.message).toContain("length >= 3");
  });
});

describe("parseDType", () => {
  test("accepts every dtype name", () => {
    for (const d of DTYPES) expect(parseDType("astype", d)).toBe(d);
  });

  test("errors name the op, the value and the valid dtypes", () => {
    const e = errorOf(() => parseDType("astype", "float64"));
    expect(e.message).toContain("astype:");
    expect(e.message).toContain('"float64"');
    expect(e.message).toContain("smelt has no float64");
    for (const d of DTYPES) expect(e.message).toContain(d);
    expect(errorOf(() => parseDType("zeros", 3)).message).toMatch(/^zeros: invalid dtype 3;/);
    expect(errorOf(() => parseDType("zeros", undefined)).message).toContain("undefined");
    expect(errorOf(() => parseDType("zeros", "Float32")).message).toContain('"Float32"');
  });
});
