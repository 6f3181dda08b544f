// Run by test/host/cache.test.ts in a fresh process: compiles one kernel against the cache
// directory given, runs it, and prints the device's compile counts and the result as JSON.
// A process of its own for each step, because a process keeps the modules it has loaded.
import * as sm from "../../../src/index.ts";

const [cacheDir, nonce] = process.argv.slice(2);
const source = `#include <metal_stdlib>
using namespace metal;
constant uint NONCE_${nonce} = 7u;
kernel void cached(device uint* out [[buffer(0)]], uint i [[thread_position_in_grid]]) {
  out[i] = i * NONCE_${nonce} + 1u;
}
`;
using device = sm.openDevice({ backend: "host", cacheDir });
const lib = device.compile(source);
const out = device.buffer(new Uint32Array(5));
const cmd = device.commandBuffer();
cmd.dispatchThreads(lib.pipeline("cached"), { args: [out], grid: [5, 1, 1], threadgroup: [5, 1, 1] });
cmd.commit();
cmd.wait();
const { compiles, cacheHits } = device.stats();
console.log(JSON.stringify({ compiles, cacheHits, result: Array.from(out.view(Uint32Array)) }));
