// The CUDA prelude's plain parts, checked on the CPU by C++ programs that include them: the
// launcher's thread numbering against the host backend's (cuda-threads.cpp), and the lane maps of
// simdgroup_matrix against mma.m16n8k8's fragments (cuda-mma.cpp). test/runtime/cuda.test.ts and
// test/msl run the same code on a GPU.
import { expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = join(import.meta.dir, "..", "..");
const zig = Bun.which("zig");
if (!zig) console.log("cuda-cpu.test.ts: SKIPPED: no zig on the PATH to build the simulations");

/** Builds test/runtime/<name>.cpp with the prelude's folders on the include path, runs it, and expects "0 failures". */
function simulate(name: string) {
  const dir = mkdtempSync(join(tmpdir(), "smelt-cuda-cpu-"));
  try {
    const exe = join(dir, name);
    const includes = ["shim/cuda/msl", "shim/host/msl"].flatMap((d) => ["-I", join(root, d)]);
    const build = Bun.spawnSync([zig!, "c++", "-std=c++17", "-O1", ...includes, join(import.meta.dir, `${name}.cpp`), "-o", exe]);
    expect(build.stderr.toString()).toBe("");
    expect(build.exitCode).toBe(0);
    const run = Bun.spawnSync([exe]);
    expect(run.stdout.toString()).toBe("0 failures\n");
    expect(run.exitCode).toBe(0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test.skipIf(!zig)("edge threadgroups of 1-D to 3-D grids: each CUDA warp is the Metal SIMD-group the host numbers", () => {
  simulate("cuda-threads");
}, 120_000);

test.skipIf(!zig)("simdgroup_matrix lane maps agree with mma.m16n8k8's fragments and give A*B + C", () => {
  simulate("cuda-mma");
}, 120_000);
