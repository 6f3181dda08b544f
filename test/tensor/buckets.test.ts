// The buffer cache's size buckets: powers of two for small buffers, eight sizes per doubling above
// 64 KiB, so large buffers (model weights) are not rounded up to nearly twice their size.
import { expect, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { bucketOf } from "../../src/exec/memory.ts";

test("small requests round up to powers of two", () => {
  expect([1, 256, 257, 1000, 40000, 65536].map(bucketOf)).toEqual([256, 256, 512, 1024, 65536, 65536]);
});

test("large requests take less than an eighth more, in multiples of 8 KiB", () => {
  let s = 20261206;
  for (let i = 0; i < 2000; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const bytes = 65537 + (s % (1 << 28));
    const b = bucketOf(bytes);
    expect(b).toBeGreaterThanOrEqual(bytes);
    expect(b).toBeLessThan(bytes * 1.125);
    expect(b % 8192).toBe(0);
  }
  // A Q4_1 feed-forward weight of SmolLM2 (1536 x 576): 552960 bytes, once a bucket of 1 MiB.
  expect(bucketOf(552960)).toBe(589824);
});

test("a large tensor holds its bucket, and a freed one is reused by the next of its size", () => {
  const before = sm.getActiveMemory();
  const bytes = new Uint8Array(552960).fill(7);
  const a = sm.fromBytes(bytes, [552960], "uint8").eval();
  expect(sm.getActiveMemory() - before).toBe(589824);
  a.dispose();
  const cached = sm.getCacheMemory();
  const b = sm.fromBytes(bytes, [552960], "uint8").eval();
  expect(sm.getCacheMemory()).toBe(cached - 589824);
  expect(b.sum().item()).toBe(7 * 552960);
  b.dispose();
});
