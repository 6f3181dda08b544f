// What the runtime asks of the Metal backend when it opens a device (nothing here opens one).
import { expect, test } from "bun:test";
import { deviceOptions } from "../../src/runtime/options.ts";

test("a Metal device gets the cache directory, where it keeps its pipelines' binary archives", () => {
  expect(deviceOptions("metal", { cacheDir: "/var/tmp/smelt-archives" }).split(";")).toContain("cache=/var/tmp/smelt-archives");
  const saved = process.env.SMELT_CACHE_DIR;
  process.env.SMELT_CACHE_DIR = "/var/tmp/smelt-env-cache";
  try {
    expect(deviceOptions("metal", { commitEvery: 8 }).split(";")).toEqual(["cache=/var/tmp/smelt-env-cache", "commit_every=8"]);
  } finally {
    if (saved === undefined) delete process.env.SMELT_CACHE_DIR;
    else process.env.SMELT_CACHE_DIR = saved;
  }
});
