// The host's metal_stdlib and the translator's generated code must leave every name MSL leaves to
// the user free: a kernel, a helper, a type or a local named like one of the compatibility
// layer's own pieces must compile and run as it does on Metal. Their names are reserved ones
// (__smelt_ and __SMELT_ prefixes).
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { dev, read, runThreads } from "./helpers.ts";

const HEADER = "#include <metal_stdlib>\nusing namespace metal;\n";

// What the compatibility layer defined under plain names before they were reserved: its own
// helpers and namespaces, the kernel ABI's types and macros, the generated launchers' symbols and
// the translator's storage for threadgroup variables.
const INTERNAL = [
  "swz", "packed_vec", "smelt_detail", "smelt_math", "smelt_simd", "atomic_detail", "vm", "map1", "map2",
  "atomic_rmw", "smelt_api", "smelt_module_init", "smelt_hk_api", "smelt_hk_thread", "smelt_hk_grid",
  "smelt_hk_launch", "smelt_hk_thread_fn", "smelt_hk_loop_fn", "smelt_hk_init_fn", "smelt_kthread_k",
  "smelt_kloop_k", "smelt_tg_scratch", "SMELT_METAL_STDLIB", "SMELT_VEC_BODY", "SMELT_VEC_OPS_ASSIGN",
  "SMELT_C2A", "SMELT_R4D", "SMELT_SW2", "SMELT_SW4_ROW", "SMELT_SWIZZLES3", "SMELT_SIMD_WIDTH",
  "SMELT_SIMD_SLOT_BYTES", "SMELT_KERNEL_ABI_H", "SMELT_KERNEL_ABI_VERSION", "SMELT_ACCESS_READ",
  "SMELT_ACCESS_READ_OR_WRITE",
];

// A kernel `k` that also uses swizzles, vector math, a threadgroup array (named scratch) and a
// barrier, so that the header's and the translator's pieces behind them are all in play.
function kernel(prefix: string, body: string): string {
  return (
    `${HEADER}${prefix}\nkernel void k(device float* out [[buffer(0)]], uint i [[thread_position_in_grid]]) {\n` +
    "  threadgroup float scratch[4];\n  float4 a = float4(1.0f, 2.0f, 3.0f, 4.0f);\n  scratch[0] = dot(a.xy, a.zw);\n" +
    `  threadgroup_barrier(mem_flags::mem_threadgroup);\n  float total = scratch[0];\n${body}\n  out[0] = total;\n}\n`
  );
}

function runK(source: string): number {
  const out = dev.buffer(new Float32Array(1));
  runThreads(dev.compile(source).pipeline("k"), [out], [1, 1, 1], [1, 1, 1]);
  return read(out, Float32Array)[0]!;
}

describe("names of the compatibility layer do not collide with the kernel's", () => {
  const base = 1 * 3 + 2 * 4; // dot(a.xy, a.zw)
  const sum = INTERNAL.reduce((s, _, k) => s + k + 1, 0);

  test("helper functions with each name", () => {
    const helpers = INTERNAL.map((n, k) => `inline float ${n}(float x) { return x + ${k + 1}.0f; }`).join("\n");
    const calls = INTERNAL.map((n) => `  total += ${n}(0.0f);`).join("\n");
    expect(runK(kernel(helpers, calls))).toBe(base + sum);
  });

  test("types with each name", () => {
    const types = INTERNAL.map((n, k) => `struct ${n} { float v = ${k + 1}.0f; };`).join("\n");
    const uses = INTERNAL.map((n) => `  { ${n} t; total += t.v; }`).join("\n");
    expect(runK(kernel(types, uses))).toBe(base + sum);
  });

  test("locals with each name", () => {
    const locals = INTERNAL.map((n, k) => `  float ${n} = ${k + 1}.0f;\n  total += ${n};`).join("\n");
    expect(runK(kernel("", locals))).toBe(base + sum);
  });

  test("kernels named like the internal names, with a local of the same name", () => {
    const kernels = INTERNAL.filter((n) => !n.startsWith("SMELT_")).map(
      (n, k) => `kernel void ${n}(device float* out [[buffer(0)]]) { float ${n} = ${k + 1}.0f; out[0] = ${n}; }`,
    );
    const lib = dev.compile(`${HEADER}${kernels.join("\n")}\n`);
    INTERNAL.filter((n) => !n.startsWith("SMELT_")).forEach((n, k) => {
      const out = dev.buffer(new Float32Array(1));
      runThreads(lib.pipeline(n), [out], [1, 1, 1], [1, 1, 1]);
      expect(read(out, Float32Array)[0]).toBe(k + 1);
    });
  });
});

describe("the header's macros", () => {
  // The macros MSL itself defines (metal_math's constants); every other one must be reserved.
  const MSL_MACROS = new Set([
    "INFINITY", "NAN", "MAXFLOAT", "HUGE_VALF", "FLT_MAX", "FLT_MIN", "FLT_EPSILON", "HALF_MAX", "HALF_MIN", "HALF_EPSILON",
  ]);
  const defined = (file: string) =>
    [...readFileSync(new URL(`../../shim/host/msl/${file}`, import.meta.url), "utf8").matchAll(/^\s*#\s*define\s+(\w+)/gm)].map((m) => m[1]!);
  test("are MSL's own or start with __", () => {
    const names = [...defined("metal_stdlib"), ...defined("metal_core"), ...defined("smelt_kernel_abi.h")];
    expect(names.length).toBeGreaterThan(20);
    const leaked = names.filter((n) => !n.startsWith("__") && !MSL_MACROS.has(n) && !/^M_\w+_F$/.test(n));
    expect(leaked).toEqual([]);
  });
});
