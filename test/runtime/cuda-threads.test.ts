// The CUDA launcher's thread numbering against the host backend's, on the CPU:
// test/runtime/cuda-threads.cpp. The GPU runs the same attributes in test/msl/thread_ids.test.ts.
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = join(import.meta.dir, "..", "..");
const zig = Bun.which("zig");
if (!zig) console.log("cuda-threads.test.ts: SKIPPED: no zig on the PATH to build the comparison");

test.skipIf(!zig)("edge threadgroups of 1-D to 3-D grids: each CUDA warp is the Metal SIMD-group the host numbers", () => {
  const dir = mkdtempSync(join(tmpdir(), "smelt-threads-"));
  try {
    const exe = join(dir, "threads");
    const includes = ["shim/cuda/msl", "shim/host/msl"].flatMap((d) => ["-I", join(root, d)]);
    const build = Bun.spawnSync([zig!, "c++", "-std=c++17", "-O1", ...includes, join(import.meta.dir, "cuda-threads.cpp"), "-o", exe]);
    expect(build.stderr.toString()).toBe("");
    expect(build.exitCode).toBe(0);
    const run = Bun.spawnSync([exe]);
    expect(run.stdout.toString()).toBe("0 failures\n");
    expect(run.exitCode).toBe(0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);
