// Run by test/host/faults.test.ts in a fresh process, which it expects to die: runs a kernel that
// goes one element past the end of a 4 KiB buffer on a host device without bounds checks.
// argv: "write" or "read" one element past the end, or "wild" (a write a GiB past it, beyond any
// guard page); "loop" or "fibers" (how the kernel runs).
import * as sm from "../../../src/index.ts";

const [access, mode] = process.argv.slice(2);
const barrier = mode === "fibers" ? "threadgroup_barrier(mem_flags::mem_device);" : "";
const body = { read: "out[i] = in[i + 1];", write: "out[i + 1] = in[i];", wild: "out[i + (1u << 28)] = in[i];" }[access!];
const source = `#include <metal_stdlib>
using namespace metal;
kernel void overrun(const device float* in [[buffer(0)]], device float* out [[buffer(1)]],
                    uint i [[thread_position_in_grid]]) {
  ${barrier}
  ${body}
}
`;
using device = sm.openDevice({ backend: "host", debug: false, threads: 2 });
const pipe = device.compile(source).pipeline("overrun");
const a = device.buffer(new Float32Array(1024).fill(1));
const b = device.buffer(new Float32Array(1024));
const warmup = device.commandBuffer(); // so that the failing one is command buffer #2
warmup.commit();
warmup.wait();
const cmd = device.commandBuffer();
cmd.dispatchThreads(pipe, { args: [a, b], grid: [1024, 1, 1], threadgroup: [64, 1, 1] });
cmd.commit();
cmd.wait();
console.log("the overrun went unnoticed");
