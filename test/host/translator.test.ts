// The MSL translator's front end (shim/translate/) rejects what Metal rejects and what it cannot
// read, with the line of the MSL source: each case compiles a small source on the host backend and
// expects `kernel.metal:LINE: error: MESSAGE` in the error. Then the front end alone: what it finds
// in a source, through a small program built from shim/translate/ only.
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { zigCommand } from "../../src/runtime/native.ts";

setDefaultTimeout(120_000);

const head = "#include <metal_stdlib>\nusing namespace metal;\n"; // lines 1 and 2

function compileError(source: string): string {
  using device = sm.openDevice({ backend: "host" });
  try {
    device.compile(source);
  } catch (e) {
    return (e as Error).message;
  }
  return "compiled without error";
}

// [name, source after the two header lines, line, message]
const cases: [string, string, number, string][] = [
  ["an unterminated comment", "kernel void k(device float* x [[buffer(0)]]) {}\n/* open\n", 4, "unterminated comment"],
  ["an unterminated string", "\nconstant char s[] = \"abc;\n", 4, "unterminated literal"],
  ["an unterminated attribute", "kernel void k(device float* x [[buffer(0)]]) {}\n[[kernel\n", 4, "unterminated attribute"],
  [
    "unbalanced braces in a function",
    "kernel void k(device float* x [[buffer(0)]]) {\n  if (x) {\n",
    3,
    "unbalanced braces in function 'k'",
  ],
  [
    "a kernel parameter without an attribute, in a multi-line signature",
    "kernel void k(device float* x [[buffer(0)]],\n              device float* y,\n              uint i [[thread_position_in_grid]]) {}\n",
    4,
    "kernel 'k': every parameter needs a name and an attribute such as [[buffer(0)]]",
  ],
  ["a 32nd buffer slot", "kernel void k(\n  device float* x [[buffer(31)]]) {}\n", 4, "[[buffer(31)]]: Metal has 31 buffer slots, numbered 0 to 30"],
  [
    "a buffer passed by value",
    "kernel void k(float x [[buffer(0)]]) {}\n",
    3,
    "kernel 'k': [[buffer]] parameter 'x' must be a pointer or a reference",
  ],
  [
    "an attribute the host backend lacks",
    "kernel void k(device float* x [[buffer(0)]],\n  float4 v [[stage_in]]) {}\n",
    4,
    "kernel 'k': parameter attribute [[stage_in]] is not supported by the host backend",
  ],
  ["threadgroup memory at file scope", "\nthreadgroup float t[4];\n", 4, "threadgroup variables must be declared inside a kernel function"],
  [
    "two threadgroup variables in one statement",
    "kernel void k(device float* x [[buffer(0)]]) {\n  threadgroup float a[4], b[4];\n}\n",
    4,
    "declare one threadgroup variable per statement (the host backend needs it)",
  ],
  [
    "a threadgroup variable with an initializer",
    "kernel void k(device float* x [[buffer(0)]]) {\n\n  threadgroup float a = 1.0f;\n}\n",
    5,
    "threadgroup variables cannot have initializers",
  ],
  ["double", "kernel void k(device float* x [[buffer(0)]]) {\n  double d = 1;\n  x[0] = d;\n}\n", 4, "'double': the double type is not supported by Metal"],
  ["the C++ standard library", "\n\nvoid f() { std::abort(); }\n", 5, "the C++ standard library (std::) is not available in MSL"],
  ["a lambda", "void f() {\n  auto g = [](int a) { return a; };\n}\n", 4, "lambda expressions are not supported by Metal"],
  ["recursion", "int f(int n) {\n  return n ? f(n - 1) : 0;\n}\n", 4, "'f' calls itself: Metal does not support recursion"],
  ["a function pointer", "float twice(float x) { return 2.0f * x; }\nfloat apply(float x) {\n  float (*f)(float) = twice;\n  return f(x);\n}\n", 5, "function pointers are not supported by Metal"],
  ["a C header", "#include <stdio.h>\n", 3, "the host backend supports only <metal_stdlib> and the <metal_*> headers, not  <stdio.h>"],
  ["a long double literal", "constant float c = 1.0f;\nconstant float d = 2.0L;\n", 4, "long double literals are not supported by Metal"],
  [
    "two kernels of one name",
    "kernel void k(device float* x [[buffer(0)]]) {}\n\nkernel void k(device int* x [[buffer(0)]]) {}\n",
    5,
    "two kernels named 'k'",
  ],
  [
    "an instantiation without a host_name",
    "template <class T> kernel void t(device T* x [[buffer(0)]]) {}\ntemplate [[kernel]] void t<float>(device float* x [[buffer(0)]]);\n",
    4,
    "explicit instantiation of 't' needs [[host_name(\"...\")]]",
  ],
  [
    "an instantiation of something that is not a kernel template",
    "template <class T> kernel void t(device T* x [[buffer(0)]]) {}\n\ntemplate [[host_name(\"u_f\")]] [[kernel]] void u<float>(device float* x [[buffer(0)]]);\n",
    5,
    "'u' is not a kernel template defined in this source",
  ],
  [
    "one host_name twice",
    'template <class T> kernel void t(device T* x [[buffer(0)]]) {}\ntemplate [[host_name("a")]] [[kernel]] void t<float>(device float* x [[buffer(0)]]);\ntemplate [[host_name("a")]] [[kernel]] void t<int>(device int* x [[buffer(0)]]);\n',
    5,
    "host_name 'a' is used twice",
  ],
  [
    "an instantiation the translator cannot read",
    'template <class T> kernel void t(device T* x [[buffer(0)]]) {}\ntemplate [[host_name("a")]] [[kernel]] void (t)(device float* x [[buffer(0)]]);\n',
    4,
    "expected 'template [[host_name(\"name\")]] kernel void function<types>(parameters);'",
  ],
];

describe("host translator: errors name the MSL line", () => {
  for (const [name, body, line, message] of cases) {
    test(name, () => {
      const error = compileError(head + body);
      expect(error.split("\n")).toContain(`kernel.metal:${line}: error: ${message}`);
    });
  }
});

// The front end on its own, built from shim/translate/ alone as another backend would build it.
const haveZig = zigCommand() !== null;
if (!haveZig) console.log("translator.test.ts: SKIPPED the front end built on its own: no Zig to build it");
describe.skipIf(!haveZig)("MSL front end, built without the host backend", () => {
  const work = mkdtempSync(join(tmpdir(), "smelt-msl-front-"));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const root = new URL("../../", import.meta.url).pathname;
  const exe = join(work, "msl_front_dump");
  let built: string | undefined;
  const dump = (source: string) => {
    if (built === undefined) {
      const zig = zigCommand();
      if (!zig) throw new Error("zig is needed to build the front end");
      const shim = join(root, "shim", "translate");
      const p = Bun.spawnSync(
        [...zig, "c++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fno-exceptions", "-O1", "-I", shim,
          join(root, "test", "host", "children", "msl_front_dump.cpp"), join(shim, "msl_front.cpp"), "-o", exe],
        { stdout: "pipe", stderr: "pipe" },
      );
      built = p.exitCode === 0 ? "" : p.stderr.toString();
    }
    if (built) throw new Error(`building the front end failed:\n${built}`);
    const file = join(work, "source.metal");
    writeFileSync(file, source);
    const p = Bun.spawnSync([exe, file], { stdout: "pipe", stderr: "pipe" });
    expect(p.exitCode).toBe(0);
    return JSON.parse(p.stdout.toString());
  };

  test("kernels, their parameters, threadgroup storage, instantiations and which functions synchronize", () => {
    const out = dump(`${head}float helper(float x) { return simd_sum(x); }
float twice(float x) { return x * 2.0f; }
kernel void reduce(const device float* in [[buffer(0)]],
                   device float* out [[buffer(2)]],
                   constant uint& n [[buffer(1)]],
                   threadgroup float* scratch [[threadgroup(0)]],
                   uint3 gid [[thread_position_in_grid]],
                   ushort lane [[thread_index_in_simdgroup]]) {
  threadgroup float partial[32];
  {
    threadgroup int counts[4][2];
  }
  threadgroup float tail[8];
  threadgroup float* alias = partial;
  out[gid.x] = helper(in[gid.x]) + partial[lane] + tail[0] + alias[0] + scratch[0] + float(n);
}
template <class T> kernel void scale(device T* x [[buffer(0)]], uint i [[thread_position_in_grid]]) { x[i] = twice(x[i]); }
template [[host_name("scale_f")]] [[kernel]] void scale<float>(device float*, uint);
`);
    expect(out.errors).toBe("");
    const byName = Object.fromEntries(out.functions.map((f: { name: string }) => [f.name, f]));
    expect(Object.keys(byName)).toEqual(["helper", "twice", "reduce", "scale"]);
    expect(byName.helper).toMatchObject({ kernel: false, synchronizes: true, line: 3 });
    expect(byName.twice).toMatchObject({ kernel: false, synchronizes: false });
    expect(byName.reduce).toMatchObject({ kernel: true, template: false, synchronizes: true, line: 5 });
    expect(byName.reduce.params).toEqual([
      { name: "in", kind: "buffer", space: "device", type: "const float *", attr: "buffer", index: 0, line: 5 },
      { name: "out", kind: "buffer", space: "device", type: "float *", attr: "buffer", index: 2, line: 6 },
      { name: "n", kind: "buffer", space: "constant", type: "const uint &", attr: "buffer", index: 1, line: 7 },
      { name: "scratch", kind: "threadgroup", space: "threadgroup", type: "float *", attr: "threadgroup", index: 0, line: 8 },
      { name: "gid", kind: "position", space: "none", type: "uint3", attr: "thread_position_in_grid", index: -1, line: 9 },
      { name: "lane", kind: "index", space: "none", type: "ushort", attr: "thread_index_in_simdgroup", index: -1, line: 10 },
    ]);
    // A pointer into threadgroup memory declares no storage.
    expect(byName.reduce.threadgroup).toEqual([
      { name: "partial", type: "float", dims: "[32]", inScope: ["partial"], line: 11 },
      { name: "counts", type: "int", dims: "[4][2]", inScope: ["partial", "counts"], line: 13 },
      { name: "tail", type: "float", dims: "[8]", inScope: ["partial", "tail"], line: 15 },
    ]);
    expect(byName.scale).toMatchObject({ kernel: true, template: true, synchronizes: false });
    expect(out.instantiations).toEqual([{ hostName: "scale_f", function: "scale", args: "float " }]);
  });

  test("a malformed signature is reported with its line, naming the target given", () => {
    const out = dump(`${head}kernel void k(device float* x [[buffer(0)]],
              float4 v [[stage_in]]) {}
`);
    expect(out.errors).toBe("kernel.metal:4: error: kernel 'k': parameter attribute [[stage_in]] is not supported by this test\n");
  });
});
