// Rules every backend enforces because Metal would otherwise hang or misbehave: a cap on command
// buffers holding uncommitted dispatches (Metal's queue blocks the caller forever past its
// limit), and threadgroup memory lengths near 2^32 (which a 32-bit rounding would wrap to 0).
import { describe, expect, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { errBuf, errLen, errText, loadNative } from "../../src/runtime/native.ts";
import { RecordStream, REC_DISPATCH_THREADS } from "../../src/runtime/records.ts";

const KERNELS = `#include <metal_stdlib>
using namespace metal;
kernel void spin(device atomic_uint* flag [[buffer(0)]], uint i [[thread_position_in_grid]]) {
  while (atomic_load_explicit(flag, memory_order_relaxed) == 0u) {}
}
kernel void fill(device uint* out [[buffer(0)]], uint i [[thread_position_in_grid]]) { out[i] = i + 1u; }
kernel void group_fill(device uint* out [[buffer(0)]], threadgroup uint* scratch [[threadgroup(0)]],
                       uint tid [[thread_position_in_threadgroup]], uint i [[thread_position_in_grid]]) {
  scratch[tid] = i;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[i] = scratch[tid];
}
`;

describe("command buffers holding uncommitted dispatches", () => {
  test("255 may be open at once; the 256th encode is refused until one is committed or freed", () => {
    using dev = sm.openDevice({ backend: "host" });
    const native = loadNative("host").symbols;
    const pipe = dev.compile(KERNELS).pipeline("fill");
    const out = dev.buffer(16);
    const stream = new RecordStream();
    stream.dispatch(REC_DISPATCH_THREADS, pipe.handleFor("test"), [4, 1, 1], [4, 1, 1], [{ index: 0, kind: 1, buffer: out.handleFor("test"), offset: 0 }], []);
    const barrierOnly = new RecordStream();
    barrierOnly.barrier();
    const encode = (cmd: sm.CommandBuffer, s: RecordStream) => native.smelt_cmd_encode(cmd.handleFor("test"), s.bytes, s.bytes.byteLength, errBuf, errLen);

    const open: sm.CommandBuffer[] = [];
    for (let i = 0; i < 255; i++) {
      const cmd = dev.commandBuffer();
      expect(encode(cmd, stream)).toBe(0);
      // a second encode into the same command buffer does not count it twice
      if (i === 0) expect(encode(cmd, stream)).toBe(0);
      open.push(cmd);
    }
    const extra = dev.commandBuffer();
    // a barrier alone holds no dispatch
    expect(encode(extra, barrierOnly)).toBe(0);
    expect(encode(extra, stream)).not.toBe(0);
    expect(errText()).toContain("255 command buffers of this device hold uncommitted dispatches");
    // one committed (and finished) makes room
    open.shift()!.commit();
    expect(encode(extra, stream)).toBe(0);
    const another = dev.commandBuffer();
    expect(encode(another, stream)).not.toBe(0);
    // one freed without a commit makes room too
    open.pop()!.dispose();
    expect(encode(another, stream)).toBe(0);
    for (const cmd of [...open, extra, another]) cmd.dispose();
    // all closed: a new one encodes
    const last = dev.commandBuffer();
    expect(encode(last, stream)).toBe(0);
    last.dispose();
  });
});

describe("threadgroup memory lengths", () => {
  test("a length that a 32-bit rounding to 16 bytes would wrap to 0 is refused, as is one just over the limit", () => {
    using dev = sm.openDevice({ backend: "host" });
    const native = loadNative("host").symbols;
    const pipe = dev.compile(KERNELS).pipeline("group_fill");
    const out = dev.buffer(256);
    const refused = (length: number) => {
      const stream = new RecordStream();
      stream.dispatch(REC_DISPATCH_THREADS, pipe.handleFor("test"), [4, 1, 1], [4, 1, 1], [{ index: 0, kind: 1, buffer: out.handleFor("test"), offset: 0 }], [length]);
      const cmd = dev.commandBuffer();
      const rc = native.smelt_cmd_encode(cmd.handleFor("test"), stream.bytes, stream.bytes.byteLength, errBuf, errLen);
      const text = rc === 0 ? "" : errText();
      cmd.dispose();
      return text;
    };
    expect(refused(0xfffffff8)).toMatch(/bytes of threadgroup memory .*the limit is 32768/);
    expect(refused(0xffffffff)).toMatch(/the limit is 32768/);
    expect(refused(32769)).toMatch(/the limit is 32768/);
    expect(refused(32768)).toBe("");
  });
});

describe("a backend that takes no more work says so", () => {
  test("an error text starting 'device lost:' from any call loses the device in JS too", () => {
    // On Metal a failed command buffer loses the device (later passes could wait forever on its
    // fence); the host loses one only by abandon, called here past the TS API so that JS learns
    // of it from the next call's error alone.
    const dev = sm.openDevice({ backend: "host" });
    const native = loadNative("host").symbols;
    const lib = dev.compile(KERNELS);
    const flag = new Uint32Array(1);
    const flagBuffer = dev.wrap(flag);
    const out = dev.buffer(16);
    const cmd = dev.commandBuffer();
    cmd.dispatchThreads(lib.pipeline("spin"), { args: [flagBuffer], grid: [1], threadgroup: [1] });
    cmd.commit();
    const next = dev.commandBuffer();
    next.dispatchThreads(lib.pipeline("fill"), { args: [out], grid: [4], threadgroup: [4] });
    expect(native.smelt_cmd_abandon(cmd.handleFor("test"), errBuf, errLen)).not.toBe(0);
    expect(dev.lost).toBeUndefined();
    expect(() => next.commit()).toThrow(/device lost: command buffer #1 was abandoned/);
    expect(dev.lost).toContain("was abandoned");
    Atomics.store(flag, 0, 1); // lets the spinning kernel end
    dev.dispose();
  });
});
