import { describe, expect, test } from "bun:test";
import { dev, runGroups, runThreads, sm } from "./helpers.ts";
import { errorOf } from "../expect-error.ts";

/** The error fn throws; fails the test when it returns. */

/** "file:LINE: error" or "file:LINE:COLUMN: error", as compilers print them. */
const lineError = (line: number) => new RegExp(`(^|[^\\d])${line}:(\\d+:)?\\s*(fatal )?error`, "m");

const HEADER = "#include <metal_stdlib>\nusing namespace metal;\n";

/** Compiles, makes the pipeline, and runs one small dispatch of `name`. */
function compileAndRun(source: string, name: string, threadgroupMemory?: number[]) {
  const pipe = dev.compile(source).pipeline(name);
  const out = dev.buffer(new Float32Array(64));
  runGroups(pipe, [out], [1, 1, 1], [64, 1, 1], threadgroupMemory);
  return out;
}

describe("compile errors name the MSL line", () => {
  test("a syntax error on line 7", () => {
    const source = [
      "#include <metal_stdlib>", // 1
      "using namespace metal;", // 2
      "", // 3
      "kernel void broken(device float* out [[buffer(0)]],", // 4
      "                   uint i [[thread_position_in_grid]]) {", // 5
      "  float x = out[i] * 2.0f;", // 6
      "  out[i] = x +;", // 7
      "}", // 8
    ].join("\n");
    const err = errorOf(() => dev.compile(source));
    expect(err.message).toMatch(lineError(7));
  });

  test("an undeclared name on line 17, after a helper, a struct and a multi-line kernel signature", () => {
    const source = [
      "#include <metal_stdlib>", // 1
      "using namespace metal;", // 2
      "struct P {", // 3
      "  float a;", // 4
      "  uint n;", // 5
      "};", // 6
      "inline float twice(float v) {", // 7
      "  return v * 2.0f;", // 8
      "}", // 9
      "kernel void uses_missing(", // 10
      "    device float* out [[buffer(0)]],", // 11
      "    constant P& p [[buffer(1)]],", // 12
      "    uint2 pos [[thread_position_in_grid]],", // 13
      "    uint2 size [[threads_per_grid]]) {", // 14
      "  const uint i = pos.y * size.x + pos.x;", // 15
      "  const float v = twice(p.a);", // 16
      "  out[i] = v + not_declared_anywhere;", // 17
      "}", // 18
    ].join("\n");
    const err = errorOf(() => dev.compile(source));
    expect(err.message).toMatch(lineError(17));
    expect(err.message).toContain("not_declared_anywhere");
  });
});

describe("Metal's limits are errors", () => {
  const tgParam =
    HEADER +
    `kernel void tg_param(device float* out [[buffer(0)]],
                     threadgroup float* scratch [[threadgroup(0)]],
                     uint i [[thread_index_in_threadgroup]]) {
  scratch[i] = float(i);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[i] = scratch[63 - i];
}
`;

  test("1024 threads per threadgroup run; 1025 (and 32x33) are refused", () => {
    const pipe = dev.compile(
      HEADER + "kernel void fill(device uint* out [[buffer(0)]], uint i [[thread_position_in_grid]]) { out[i] = i; }\n",
    ).pipeline("fill");
    const out = dev.buffer(new Uint32Array(2048));
    runThreads(pipe, [out], [2048, 1, 1], [1024, 1, 1]);
    expect(out.read(Uint32Array)[2047]).toBe(2047);
    expect(errorOf(() => runThreads(pipe, [out], [2048, 1, 1], [1025, 1, 1])).message).toMatch(/1025/);
    expect(errorOf(() => runThreads(pipe, [out], [2048, 1, 1], [32, 33, 1])).message).toMatch(/1056/);
  });

  test("[[threadgroup(0)]] of 32768 bytes runs; 32769 and 32784 bytes are refused", () => {
    const out = compileAndRun(tgParam, "tg_param", [32768]);
    expect(out.read(Float32Array)[0]).toBe(63);
    expect(errorOf(() => compileAndRun(tgParam, "tg_param", [32769])).message).toMatch(/32769/);
    expect(errorOf(() => compileAndRun(tgParam, "tg_param", [32784])).message).toMatch(/32784|32768/);
  });

  test("threadgroup float big[9000] (36000 bytes) in a kernel body is refused", () => {
    const source =
      HEADER +
      `kernel void big_static(device float* out [[buffer(0)]], uint i [[thread_index_in_threadgroup]]) {
  threadgroup float big[9000];
  big[i] = float(i);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[i] = big[63 - i];
}
`;
    expect(errorOf(() => compileAndRun(source, "big_static")).message).toMatch(/threadgroup/i);
  });

  test("static threadgroup memory counts toward the limit with [[threadgroup(0)]]: 32000 + 768 runs, 32000 + 784 is refused", () => {
    const source =
      HEADER +
      `kernel void mixed(device float* out [[buffer(0)]],
                  threadgroup float* extra [[threadgroup(0)]],
                  uint i [[thread_index_in_threadgroup]]) {
  threadgroup float fixed_part[8000];
  fixed_part[i] = float(i);
  extra[i] = 1.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[i] = fixed_part[63 - i] + extra[63 - i];
}
`;
    expect(compileAndRun(source, "mixed", [768]).read(Float32Array)[0]).toBe(64);
    expect(errorOf(() => compileAndRun(source, "mixed", [784])).message).toMatch(/threadgroup/i);
  });

  test("[[buffer(30)]] works; [[buffer(31)]] (a 32nd slot) is refused", () => {
    const kernel = (slot: number) =>
      HEADER +
      `kernel void high_slot(device float* out [[buffer(0)]], device const float* in [[buffer(${slot})]],
                      uint i [[thread_position_in_grid]]) {
  out[i] = in[i] + 1.0f;
}
`;
    const pipe = dev.compile(kernel(30)).pipeline("high_slot");
    const out = dev.buffer(new Float32Array(4));
    const args: sm.DispatchArg[] = new Array(31).fill(null);
    args[0] = out;
    args[30] = dev.buffer(new Float32Array([1, 2, 3, 4]));
    runThreads(pipe, args, [4, 1, 1], [4, 1, 1]);
    expect(Array.from(out.read(Float32Array))).toEqual([2, 3, 4, 5]);
    expect(errorOf(() => dev.compile(kernel(31)).pipeline("high_slot")).message).toMatch(/buffer|31/i);
  });
});
