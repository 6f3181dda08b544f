// Metal's command buffers do not retain the buffers and pipelines encoded into them (docs/metal.md),
// so the runtime must not free either natively until every command buffer that encoded it has
// finished. The host backend's live-object counts show when the native free happens.
import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";

setDefaultTimeout(60_000);

const KERNELS = `#include <metal_stdlib>
using namespace metal;

// Spins until flag[0] is set, then writes out: a command buffer that finishes when the test says.
kernel void spin(device atomic_uint* flag [[buffer(0)]], device uint* out [[buffer(1)]],
                 device const uint* extra [[buffer(2)]], uint i [[thread_position_in_grid]]) {
  while (atomic_load_explicit(flag, memory_order_relaxed) == 0u) {}
  out[i] = 7u + extra[i];
}
`;

test("buffers and pipelines disposed while a command buffer runs are freed natively only once it finished", () => {
  using dev = sm.openDevice({ backend: "host" });
  const lib = dev.compile(KERNELS);
  const spin = lib.pipeline("spin");
  const flag = new Uint32Array(1);
  using flagBuffer = dev.wrap(flag);
  const out = dev.buffer(4);
  const extra = dev.buffer(new Uint32Array([5]));
  const cmd = dev.commandBuffer();
  cmd.dispatchThreads(spin, { args: [flagBuffer, out, { buffer: extra, offset: 0 }], grid: [1], threadgroup: [1] });
  cmd.commit();
  const running = dev.stats();
  try {
    out.dispose();
    extra.dispose();
    spin.dispose();
    lib.dispose();
    // Still running: nothing it uses may have been freed.
    expect(cmd.state).toBe("committed");
    expect(dev.stats()).toMatchObject({ buffers: running.buffers, pipelines: running.pipelines, libraries: running.libraries });
  } finally {
    Atomics.store(flag, 0, 1); // a failed expectation must not leave the device closing behind a spinning kernel
  }
  cmd.wait(10_000);
  expect(dev.stats()).toMatchObject({
    buffers: running.buffers - 2,
    pipelines: running.pipelines - 1,
    libraries: running.libraries - 1,
  });
  cmd.dispose();
});
