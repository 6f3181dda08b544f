// Implicit conversions that Metal's compiler refuses must be refused by the host backend too, so
// that a generated kernel relying on one fails here and not first on a Mac. Each refused line is
// paired with its explicit spelling, which both accept and which the host must compute correctly.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { dev, read, runThreads } from "./helpers.ts";
import { errorOf } from "../expect-error.ts";

// helpers.ts sets this too, but only for the first file that imports it when check:metal runs
// several files in one process; each test compiles kernels, seconds each on a loaded machine.
setDefaultTimeout(120_000);

const HEADER = "#include <metal_stdlib>\nusing namespace metal;\n";

/** A one-thread kernel `t` whose body is `body`, with `out` a device buffer of `outType`. */
const kernel = (outType: string, body: string) =>
  `${HEADER}kernel void t(device ${outType}* out [[buffer(0)]], uint i [[thread_position_in_grid]]) {\n  ${body}\n}\n`;

/** Line 4 is the body's line; the error must point there (the compile fails for that line). */
function refused(outType: string, body: string) {
  const err = errorOf(() => dev.compile(kernel(outType, body)));
  expect(err.message).toMatch(/(^|[^\d])4:(\d+:)?\s*(fatal )?error/m);
}

function runsTo(outType: string, body: string, ctor: Float32ArrayConstructor | Uint16ArrayConstructor | Int32ArrayConstructor, want: number[]) {
  const pipe = dev.compile(kernel(outType, body)).pipeline("t");
  const out = dev.buffer(new ctor(4));
  runThreads(pipe, [out], [1, 1, 1], [1, 1, 1]);
  expect(Array.from(read(out, ctor as never) as ArrayLike<number>).slice(0, want.length)).toEqual(want);
}

describe("float to bfloat is explicit (MSL 3.1 has no implicit conversion to bfloat)", () => {
  test("storing a float into a bfloat buffer is refused; bfloat(x) stores the rounded value", () => {
    refused("bfloat", "float acc = 1.5f; out[i] = acc;");
    // 1.5 is 0x3fc0 in bfloat; 1 + 2^-9 rounds to even, down to 1.0 (0x3f80)
    runsTo("ushort", "float acc = 1.5f; out[0] = as_type<ushort>(bfloat(acc)); out[1] = as_type<ushort>(bfloat(1.001953125f));", Uint16Array, [0x3fc0, 0x3f80]);
  });
  test("initialising a bfloat from a float, half or int is refused", () => {
    refused("float", "bfloat b = 2.0f; out[i] = float(b);");
    refused("float", "half h = 2.0h; bfloat b = h; out[i] = float(b);");
    refused("float", "bfloat b = int(i); out[i] = float(b);");
  });
  test("returning a float from a function declared bfloat is refused", () => {
    const source = `${HEADER}bfloat twice(float x) { return x * 2.0f; }\nkernel void t(device float* out [[buffer(0)]]) { out[0] = float(twice(1.0f)); }\n`;
    const err = errorOf(() => dev.compile(source));
    expect(err.message).toMatch(/(^|[^\d])3:(\d+:)?\s*(fatal )?error/m);
  });
});

describe("vectors of different element types do not convert implicitly", () => {
  test("half4 to float4 and back", () => {
    refused("float4", "half4 h = half4(1.0h); float4 f = h; out[i] = f;");
    refused("half4", "float4 f = float4(1.0f); out[i] = f;");
    runsTo("float", "half4 h = half4(1.0h, 2.0h, 3.0h, 4.0h); float4 f = float4(h); out[0] = f.x; out[1] = f.w;", Float32Array, [1, 4]);
  });
  test("mixing float4 and half4, or int4 and float4, in one expression", () => {
    refused("float4", "float4 f = float4(1.0f); half4 h = half4(1.0h); out[i] = f + h;");
    refused("float4", "float4 f = float4(1.0f); int4 n = int4(2); out[i] = f * n;");
    refused("float4", "float4 f = float4(1.0f); half4 h = half4(1.0h); f += h; out[i] = f;");
    runsTo("float", "float4 f = float4(1.5f); int4 n = int4(2); float4 r = f * float4(n); out[0] = r.y;", Float32Array, [3]);
  });
  test("a swizzle of another element type", () => {
    refused("float2", "half4 h = half4(1.0h); float2 f = h.xy; out[i] = f;");
    runsTo("float", "half4 h = half4(1.0h, 2.0h, 3.0h, 4.0h); float2 f = float2(h.wz); out[0] = f.x;", Float32Array, [4]);
  });
  test("bool vectors to int or float vectors", () => {
    refused("int4", "float4 f = float4(1.0f, -1.0f, 2.0f, -2.0f); int4 m = f > 0.0f; out[i] = m;");
    refused("float4", "float4 f = float4(1.0f); bool4 m = f > 0.0f; out[i] = f * m;");
    runsTo("int", "float4 f = float4(1.0f, -1.0f, 2.0f, -2.0f); int4 m = int4(f > 0.0f); out[0] = m.x; out[1] = m.y; out[2] = m.z;", Int32Array, [1, 0, 1]);
  });
  test("int4 to float4", () => {
    refused("float4", "int4 n = int4(3); float4 f = n; out[i] = f;");
    refused("int4", "float4 f = float4(3.0f); out[i] = f;");
  });
});
