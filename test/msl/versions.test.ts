// The Metal shim compiles as MSL 3.0 on macOS 13 and 3.1 on macOS 14 and later; bfloat exists only
// from 3.1. Every shipped MSL file must compile at both, as the engine compiles it (after the
// prelude), and bfloat code must be unavailable at 3.0 so that an unguarded use fails here.
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { dev, read, runThreads } from "./helpers.ts";
import { errorOf } from "../expect-error.ts";

const metalDir = new URL("../../metal/", import.meta.url);
const shipped = readdirSync(metalDir).filter((f) => f.endsWith(".metal")).sort();
const prelude = readFileSync(new URL("prelude.metal", metalDir), "utf8");
const HEADER = "#include <metal_stdlib>\nusing namespace metal;\n";

describe("every shipped MSL file compiles at MSL 3.0 and 3.1", () => {
  test("the files are there", () => {
    expect(shipped).toEqual(expect.arrayContaining(["matmul.metal", "prelude.metal", "random.metal"]));
  });
  for (const file of shipped) {
    for (const languageVersion of ["3.0", "3.1"] as const) {
      test(`${file} at ${languageVersion}`, () => {
        const text = readFileSync(new URL(file, metalDir), "utf8");
        const source = file === "prelude.metal" ? text : `${prelude}\n${text}`;
        const lib = dev.compile(source, { languageVersion });
        if (file === "random.metal") {
          lib.pipeline("random_uniform_float");
          lib.pipeline("random_normal_half");
          // the bfloat kernels exist from 3.1 only
          if (languageVersion === "3.1") lib.pipeline("random_uniform_bfloat");
          else expect(() => lib.pipeline("random_uniform_bfloat")).toThrow();
        }
      });
    }
  }
});

describe("bfloat is unavailable at MSL 3.0", () => {
  const body = (t: string) => `${HEADER}kernel void k(device float* out [[buffer(0)]]) {\n  ${t} b = ${t}(1.5f);\n  out[0] = float(b${t === "bfloat" ? "" : ".x"});\n}\n`;
  for (const t of ["bfloat", "bfloat2", "bfloat4"]) {
    test(`${t} fails at 3.0 on its line, naming the version; compiles and runs at 3.1`, () => {
      const err = errorOf(() => dev.compile(body(t), { languageVersion: "3.0" }));
      expect(err.message).toMatch(/(^|[^\d])4:(\d+:)?\s*(fatal )?error/m);
      expect(err.message).toContain("needs_MSL_3_1");
      const pipe = dev.compile(body(t), { languageVersion: "3.1" }).pipeline("k");
      const out = dev.buffer(new Float32Array(1));
      runThreads(pipe, [out], [1, 1, 1], [1, 1, 1]);
      expect(read(out, Float32Array)[0]).toBe(1.5);
    });
  }
  test("the default is 3.1", () => {
    dev.compile(body("bfloat")).pipeline("k");
  });
});

describe("conditionals on the language version", () => {
  const versioned = (cond: string) =>
    `${HEADER}kernel void k(device int* out [[buffer(0)]]) {\n#if ${cond}\n  out[0] = 31;\n#else\n  out[0] = 30;\n#endif\n}\n`;
  const run = (source: string, languageVersion: "3.0" | "3.1") => {
    const out = dev.buffer(new Int32Array(1));
    runThreads(dev.compile(source, { languageVersion }).pipeline("k"), [out], [1, 1, 1], [1, 1, 1]);
    return read(out, Int32Array)[0];
  };
  test("__METAL_VERSION__ comparisons and __HAVE_BFLOAT__ select the branch of the version", () => {
    for (const cond of ["__METAL_VERSION__ >= 310", "__METAL_VERSION__ > 300  // a comment", "__METAL_VERSION__>=310 /* too */", "__METAL_VERSION__ != 300", "defined(__HAVE_BFLOAT__)"]) {
      expect(run(versioned(cond), "3.1")).toBe(31);
      expect(run(versioned(cond), "3.0")).toBe(30);
    }
    expect(run(versioned("!defined(__HAVE_BFLOAT__)"), "3.0")).toBe(31);
    expect(run(`${HEADER}kernel void k(device int* out [[buffer(0)]]) {\n#ifdef __HAVE_BFLOAT__\n  out[0] = 31;\n#endif\n}\n`, "3.0")).toBe(0);
  });
  test("a branch of another version may hold code that does not compile at this one", () => {
    const source = `${HEADER}#if __METAL_VERSION__ >= 310\nkernel void k(device bfloat* out [[buffer(0)]]) { out[0] = bfloat(2.0f); }\n#else\nkernel void k(device ushort* out [[buffer(0)]]) { out[0] = 0x4000; }\n#endif\n`;
    for (const languageVersion of ["3.0", "3.1"] as const) {
      const out = dev.buffer(new Uint16Array(1));
      runThreads(dev.compile(source, { languageVersion }).pipeline("k"), [out], [1, 1, 1], [1, 1, 1]);
      expect(read(out, Uint16Array)[0]).toBe(0x4000);
    }
  });
  test("a version condition the translator cannot evaluate is an error naming its line", () => {
    const source = `${HEADER}kernel void k(device int* out [[buffer(0)]]) {\n#if __METAL_VERSION__ >= SOME_MACRO\n  out[0] = 1;\n#endif\n}\n`;
    const err = errorOf(() => dev.compile(source));
    expect(err.message).toMatch(/kernel\.metal:4: error: .*__METAL_VERSION__/);
  });
  test("an unknown languageVersion is refused", () => {
    expect(errorOf(() => dev.compile(HEADER, { languageVersion: "2.4" as never })).message).toContain("languageVersion");
  });
});
