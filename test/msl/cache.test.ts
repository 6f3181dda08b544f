import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dev, sm } from "./helpers.ts";

// A source no earlier run compiled, so the first compile below cannot be served from a cache.
const nonce = `${process.pid}_${Date.now()}_${Math.floor(Math.random() * 1e9)}`;
const source = `#include <metal_stdlib>
using namespace metal;
constant uint NONCE_${nonce} = 7u;
kernel void cached(device uint* out [[buffer(0)]], uint i [[thread_position_in_grid]]) {
  out[i] = i * NONCE_${nonce};
}
`;

const cacheDir = mkdtempSync(join(tmpdir(), "smelt-cache-test-"));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));

function runCached(device: sm.Device, lib: sm.Library): number[] {
  const out = device.buffer(new Uint32Array(5));
  const cmd = device.commandBuffer();
  cmd.dispatchThreads(lib.pipeline("cached"), { args: [out], grid: [5, 1, 1], threadgroup: [5, 1, 1] });
  cmd.commit();
  cmd.wait();
  return Array.from(out.read(Uint32Array));
}

describe("library cache", () => {
  test("compiling identical source twice on one device compiles once; the second is a cache hit", () => {
    using device = sm.openDevice({ cacheDir });
    const s0 = device.stats();
    const first = device.compile(source);
    const s1 = device.stats();
    expect(s1.compiles - s0.compiles).toBe(1);
    expect(s1.cacheHits - s0.cacheHits).toBe(0);

    const second = device.compile(source);
    const s2 = device.stats();
    expect(s2.compiles - s1.compiles).toBe(0);
    expect(s2.cacheHits - s1.cacheHits).toBe(1);

    expect(runCached(device, first)).toEqual([0, 7, 14, 21, 28]);
    expect(runCached(device, second)).toEqual([0, 7, 14, 21, 28]);

    // Different compile options are a different library.
    device.compile(source, { fastMath: true });
    const s3 = device.stats();
    expect(s3.compiles - s2.compiles).toBe(1);
  });

  // Only host keeps compiled kernels on disk, where a second device finds them.
  test.if(dev.backend === "host")("host: a fresh device on the same cache directory loads instead of compiling", () => {
    using device = sm.openDevice({ cacheDir });
    const s0 = device.stats();
    const lib = device.compile(source);
    const s1 = device.stats();
    expect(s1.compiles - s0.compiles).toBe(0);
    expect(s1.cacheHits - s0.cacheHits).toBe(1);
    expect(runCached(device, lib)).toEqual([0, 7, 14, 21, 28]);
  });
});
