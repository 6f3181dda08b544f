// The lane maps of the CUDA backend's simdgroup_matrix (tensor cores and warp shuffles), checked on
// the CPU by simulating the warp: test/runtime/cuda-mma.cpp. The GPU runs the same products in
// test/runtime/cuda.test.ts.
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = join(import.meta.dir, "..", "..");
const zig = Bun.which("zig");
if (!zig) console.log("cuda-mma.test.ts: SKIPPED: no zig on the PATH to build the simulation");

test.skipIf(!zig)("simdgroup_matrix lane maps agree with mma.m16n8k8's fragments and give A*B + C", () => {
  const dir = mkdtempSync(join(tmpdir(), "smelt-mma-"));
  try {
    const exe = join(dir, "mma");
    const build = Bun.spawnSync([zig!, "c++", "-std=c++17", "-O1", "-I", join(root, "shim/cuda/msl"), join(import.meta.dir, "cuda-mma.cpp"), "-o", exe]);
    expect(build.stderr.toString()).toBe("");
    expect(build.exitCode).toBe(0);
    const run = Bun.spawnSync([exe]);
    const out = run.stdout.toString();
    expect(out).toBe("0 failures\n");
    expect(run.exitCode).toBe(0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);
