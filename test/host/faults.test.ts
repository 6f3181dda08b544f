// A kernel that runs past the end of a host buffer. Without bounds checks, the guard page after
// every buffer (shim/host/abi.cpp) stops it at once and shim/host/fault.cpp names the kernel before
// aborting; such processes are children (children/overrun.ts). With SMELT_HOST_DEBUG's bounds
// checks the command buffer fails with a message that says whether the access was a read.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";

setDefaultTimeout(120_000);

const child = new URL("./children/overrun.ts", import.meta.url).pathname;

function overrun(access: string, mode: string) {
  const p = Bun.spawnSync([process.execPath, child, access, mode], { stdout: "pipe", stderr: "pipe" });
  return { signal: p.signalCode, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

describe("host: a kernel past the end of a buffer, without bounds checks", () => {
  for (const mode of ["loop", "fibers"]) {
    for (const [access, slot] of [["write", 1], ["read", 0]] as const) {
      test(`one element ${access === "write" ? "written" : "read"} past a 4 KiB buffer (${mode}): the kernel is named, the process aborts`, () => {
        const r = overrun(access, mode);
        expect(r.stdout).not.toContain("unnoticed");
        expect(r.signal).toBe("SIGABRT");
        // The last line: nothing after it ran (a first run may print that it builds the library).
        expect(r.stderr.split("\n").slice(-2)).toEqual([
          `smelt: kernel 'overrun' (command buffer #2) read or wrote past the end of buffer(${slot}); aborting (SMELT_HOST_DEBUG=1 reports the element)`,
          "",
        ]);
      });
    }
  }

  test("a fault far from any buffer is named too, then left to the process's own handler", () => {
    const r = overrun("wild", "loop");
    expect(r.stdout).not.toContain("unnoticed");
    expect(r.signal).not.toBeNull();
    expect(r.stderr).toContain(
      "smelt: kernel 'overrun' (command buffer #2) crashed with SIGSEGV at an address outside its buffers' guard pages\n",
    );
  });
});

describe("host: SMELT_HOST_DEBUG bounds checks", () => {
  const failure = (body: string): string => {
    using debug = sm.openDevice({ backend: "host", debug: true });
    const pipe = debug
      .compile(`#include <metal_stdlib>
using namespace metal;
kernel void k(const device float* in [[buffer(0)]], device float* out [[buffer(1)]], uint i [[thread_position_in_grid]]) {
  ${body}
}`)
      .pipeline("k");
    const a = debug.buffer(new Float32Array(16));
    const b = debug.buffer(new Float32Array(16));
    const cmd = debug.commandBuffer();
    cmd.dispatchThreads(pipe, { args: [a, b], grid: [16, 1, 1], threadgroup: [16, 1, 1] });
    cmd.commit();
    try {
      cmd.wait();
    } catch (e) {
      return (e as Error).message;
    }
    return "no error";
  };

  test("a read through a const pointer is reported as a read", () => {
    expect(failure("out[i] = in[i + 4];")).toContain(
      "kernel 'k': out-of-bounds read of element 16 of buffer(0), which holds 16 elements",
    );
  });

  test("an access through a mutable pointer, which may be either, is reported as a read or write", () => {
    expect(failure("out[i + 4] = in[i];")).toContain(
      "kernel 'k': out-of-bounds read or write of element 16 of buffer(1), which holds 16 elements",
    );
  });
});
