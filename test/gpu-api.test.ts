// The raw GPU API: devices, buffers, libraries, pipelines, command buffers, and the errors that
// misuse of each gives. Runs on the backend SMELT_BACKEND picks (host when unset off Apple silicon).
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../src/index.ts";

// First compiles on the host backend run a C++ compiler; bunfig.toml has no timeout key.
setDefaultTimeout(120_000);

const KERNELS = `#include <metal_stdlib>
using namespace metal;

kernel void add(device const float* a [[buffer(0)]], device const float* b [[buffer(1)]],
                device float* out [[buffer(2)]], constant uint& n [[buffer(3)]],
                uint i [[thread_position_in_grid]]) {
  if (i < n) out[i] = a[i] + b[i];
}

kernel void affine(device const float* x [[buffer(0)]], device float* out [[buffer(1)]],
                   constant float2& p [[buffer(2)]], uint i [[thread_position_in_grid]]) {
  out[i] = x[i] * p.x + p.y;
}

kernel void inc(device float* x [[buffer(0)]], constant uint& n [[buffer(1)]],
                uint i [[thread_position_in_grid]]) {
  if (i < n) x[i] += 1.0f;
}

kernel void gap(device const float* a [[buffer(0)]], device float* out [[buffer(2)]],
                uint i [[thread_position_in_grid]]) {
  out[i] = a[i] * 2.0f;
}

kernel void group_sum(device const float* x [[buffer(0)]], device float* sums [[buffer(1)]],
                      threadgroup float* scratch [[threadgroup(0)]],
                      uint tid [[thread_position_in_threadgroup]],
                      uint group [[threadgroup_position_in_grid]],
                      uint width [[threads_per_threadgroup]],
                      uint i [[thread_position_in_grid]]) {
  scratch[tid] = x[i];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (uint s = width / 2; s > 0; s >>= 1) {
    if (tid < s) scratch[tid] += scratch[tid + s];
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  if (tid == 0) sums[group] = scratch[0];
}
`;

let dev: sm.Device;
let lib: sm.Library;
let add: sm.Pipeline;
let affine: sm.Pipeline;
let inc: sm.Pipeline;
let gap: sm.Pipeline;
let groupSum: sm.Pipeline;

beforeAll(() => {
  dev = sm.device();
  lib = dev.compile(KERNELS);
  add = lib.pipeline("add");
  affine = lib.pipeline("affine");
  inc = lib.pipeline("inc");
  gap = lib.pipeline("gap");
  groupSum = lib.pipeline("group_sum");
});

afterAll(() => {
  lib.dispose();
});

const floats = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));

/** Runs add on fresh buffers; every error test ends with it to show the device still works. */
function expectDeviceWorks(device: sm.Device = dev, pipeline: sm.Pipeline = add): void {
  const n = 37;
  using a = device.buffer(floats(n, (i) => i));
  using b = device.buffer(floats(n, (i) => 100 * i));
  using out = device.buffer(n * 4);
  using cmd = device.commandBuffer();
  cmd.dispatchThreads(pipeline, { args: [a, b, out, new Uint32Array([n])], grid: [n], threadgroup: [16] });
  cmd.commit();
  cmd.wait();
  expect(Array.from(out.read(Float32Array))).toEqual(Array.from(floats(n, (i) => 101 * i)));
}

/** Asserts that `fn` throws a SmeltError whose message matches every pattern. */
function expectSmeltError(fn: () => unknown, ...patterns: RegExp[]): sm.SmeltError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(sm.SmeltError);
  const error = caught as sm.SmeltError;
  expect(error.name).toBe("SmeltError");
  for (const pattern of patterns) expect(error.message).toMatch(pattern);
  return error;
}

describe("device", () => {
  test("reports its backend, name and limits", () => {
    expect(["metal", "host", "cuda"]).toContain(dev.backend);
    if (process.env.SMELT_BACKEND) expect(dev.backend).toBe(process.env.SMELT_BACKEND as sm.BackendName);
    expect(typeof dev.name).toBe("string");
    expect(dev.name.length).toBeGreaterThan(0);
    expect(dev.limits.maxThreadsPerThreadgroup).toBeGreaterThanOrEqual(256);
    expect(dev.limits.maxThreadgroupMemory).toBeGreaterThanOrEqual(16384);
    expect(dev.limits.maxBufferLength).toBeGreaterThan(1 << 20);
    expect(typeof dev.limits.unifiedMemory).toBe("boolean");
    expect(dev.limits.simdWidth).toBeGreaterThan(0);
  });

  test("device() is one shared device", () => {
    expect(sm.device()).toBe(dev);
  });

  test("pipelines report their limits and slots", () => {
    expect(add.name).toBe("add");
    expect(add.maxThreadsPerThreadgroup).toBeGreaterThan(0);
    expect(add.maxThreadsPerThreadgroup).toBeLessThanOrEqual(dev.limits.maxThreadsPerThreadgroup);
    expect(add.threadExecutionWidth).toBeGreaterThan(0);
    expect(add.bufferMask).toBe(0b1111);
    expect(gap.bufferMask).toBe(0b101);
    expect(groupSum.threadgroupMask).toBe(0b1);
    expect(add.threadgroupMask).toBe(0);
    expect(add.staticThreadgroupMemory).toBe(0);
  });
});

describe("dispatch", () => {
  test("add over a grid that is not a multiple of the threadgroup", () => {
    const n = 1000;
    const a = dev.buffer(floats(n, (i) => i * 0.5));
    const b = dev.buffer(floats(n, (i) => 3 - i));
    const out = dev.buffer(n * 4);
    const cmd = dev.commandBuffer();
    cmd.dispatchThreads(add, { args: [a, b, out, new Uint32Array([n])], grid: [n, 1, 1], threadgroup: [256, 1, 1] });
    cmd.commit();
    cmd.wait();
    expect(Array.from(out.read(Float32Array))).toEqual(Array.from(floats(n, (i) => i * 0.5 + 3 - i)));
    for (const x of [a, b, out, cmd]) x.dispose();
  });

  // Zero-copy views need memory the CPU and the device share (not a discrete GPU's: CUDA).
  if (!sm.device().limits.hostVisible) console.log(`gpu-api.test.ts: SKIPPED the zero-copy view test: ${sm.device().backend} buffers are not host memory`);
  test.skipIf(!sm.device().limits.hostVisible)("buffer views are zero-copy in both directions", () => {
    const n = 64;
    using x = dev.buffer(n * 4);
    using out = dev.buffer(n * 4);
    const xs = x.view(Float32Array);
    const result = out.view(Float32Array);
    for (let i = 0; i < n; i++) xs[i] = i * i;
    using cmd = dev.commandBuffer();
    cmd.dispatchThreads(affine, { args: [x, out, new Float32Array([2, 1])], grid: [n], threadgroup: [32] });
    cmd.commit();
    cmd.wait();
    // The view taken before the dispatch shows what the kernel wrote, so it is the device's memory.
    expect(Array.from(result)).toEqual(Array.from(floats(n, (i) => 2 * i * i + 1)));
    expect(x.view(Uint8Array).byteLength).toBe(n * 4);
  });

  test("buffer(typedArray) copies the data in", () => {
    const source = floats(10, (i) => i + 0.25);
    using buf = dev.buffer(source);
    source[0] = 99;
    expect(buf.byteLength).toBe(40);
    expect(buf.read(Float32Array)[0]).toBe(0.25);
    using fromBytes = dev.buffer(new Uint8Array([1, 2, 3]).buffer);
    expect(Array.from(fromBytes.read(Uint8Array))).toEqual([1, 2, 3]);
    using zeroed = dev.buffer(4096);
    expect(zeroed.read(Uint32Array).every((v) => v === 0)).toBe(true);
  });

  test("constant bytes and device buffers bind the same constant argument", () => {
    const n = 16;
    using x = dev.buffer(floats(n, (i) => i));
    using viaBytes = dev.buffer(n * 4);
    using viaBuffer = dev.buffer(n * 4);
    using params = dev.buffer(new Float32Array([3, -1]));
    using cmd = dev.commandBuffer();
    cmd.dispatchThreads(affine, { args: [x, viaBytes, new Float32Array([3, -1])], grid: [n], threadgroup: [n] });
    cmd.dispatchThreads(affine, { args: [x, viaBuffer, params], grid: [n], threadgroup: [n] });
    // An ArrayBuffer and a DataView are constant bytes too.
    const n2 = new DataView(new ArrayBuffer(4));
    n2.setUint32(0, n, true);
    cmd.dispatchThreads(inc, { args: [viaBuffer, n2], grid: [n], threadgroup: [n] });
    cmd.dispatchThreads(inc, { args: [viaBytes, new Uint32Array([n]).buffer], grid: [n], threadgroup: [n] });
    cmd.commit();
    cmd.wait();
    const expected = Array.from(floats(n, (i) => 3 * i - 1 + 1));
    expect(Array.from(viaBytes.read(Float32Array))).toEqual(expected);
    expect(Array.from(viaBuffer.read(Float32Array))).toEqual(expected);
  });

  test("constant bytes are copied at the dispatch call", () => {
    const n = 8;
    using x = dev.buffer(floats(n, (i) => i));
    using out = dev.buffer(n * 4);
    const p = new Float32Array([1, 5]);
    using cmd = dev.commandBuffer();
    cmd.dispatchThreads(affine, { args: [x, out, p], grid: [n], threadgroup: [n] });
    p[1] = 1000;
    cmd.commit();
    cmd.wait();
    expect(Array.from(out.read(Float32Array))).toEqual(Array.from(floats(n, (i) => i + 5)));
  });

  test("{ buffer, offset } binds at a byte offset", () => {
    const n = 8;
    using a = dev.buffer(floats(n + 4, (i) => i));
    using b = dev.buffer(floats(n, () => 10));
    using out = dev.buffer((n + 4) * 4);
    out.write(new Float32Array(n + 4).fill(-1));
    using cmd = dev.commandBuffer();
    cmd.dispatchThreads(add, {
      args: [{ buffer: a, offset: 16 }, b, { buffer: out, offset: 16 }, new Uint32Array([n])],
      grid: [n],
      threadgroup: [n],
    });
    cmd.commit();
    cmd.wait();
    const result = Array.from(out.read(Float32Array));
    expect(result.slice(0, 4)).toEqual([-1, -1, -1, -1]);
    expect(result.slice(4)).toEqual(Array.from(floats(n, (i) => i + 4 + 10)));
  });

  test("a kernel with a gap in its buffer slots takes undefined there", () => {
    const n = 32;
    using a = dev.buffer(floats(n, (i) => i));
    using out = dev.buffer(n * 4);
    using cmd = dev.commandBuffer();
    cmd.dispatchThreads(gap, { args: [a, undefined, out], grid: [n], threadgroup: [32] });
    cmd.commit();
    cmd.wait();
    expect(Array.from(out.read(Float32Array))).toEqual(Array.from(floats(n, (i) => 2 * i)));
  });

  test("dispatchThreadgroups with threadgroup memory", () => {
    const groups = 5;
    const width = 128;
    using x = dev.buffer(floats(groups * width, (i) => (i % 7) - 3));
    using sums = dev.buffer(groups * 4);
    using cmd = dev.commandBuffer();
    cmd.dispatchThreadgroups(groupSum, {
      args: [x, sums],
      threadgroups: [groups, 1, 1],
      threadgroup: [width, 1, 1],
      threadgroupMemory: [width * 4],
    });
    cmd.commit();
    cmd.wait();
    const expected = Array.from({ length: groups }, (_, g) => {
      let s = 0;
      for (let i = 0; i < width; i++) s += ((g * width + i) % 7) - 3;
      return s;
    });
    expect(Array.from(sums.read(Float32Array))).toEqual(expected);
  });

  test("2-D grids count threads in every dimension", () => {
    // gap reads thread_position_in_grid.x only, so a [n, 3] grid runs each x three times over the same data.
    const n = 16;
    using a = dev.buffer(floats(n, (i) => i));
    using out = dev.buffer(n * 4);
    using cmd = dev.commandBuffer();
    cmd.dispatchThreads(gap, { args: [a, null, out], grid: [n, 3], threadgroup: [8, 2] });
    cmd.commit();
    cmd.wait();
    expect(Array.from(out.read(Float32Array))).toEqual(Array.from(floats(n, (i) => 2 * i)));
  });

  test("barriers order dependent dispatches, across more records than one batch", () => {
    const n = 100;
    const rounds = 300; // 600 records: several smelt_cmd_encode batches
    using x = dev.buffer(n * 4);
    using cmd = dev.commandBuffer();
    for (let r = 0; r < rounds; r++) {
      cmd.dispatchThreads(inc, { args: [x, new Uint32Array([n])], grid: [n], threadgroup: [64] });
      cmd.barrier();
    }
    cmd.commit();
    cmd.wait(120_000);
    expect(Array.from(x.read(Float32Array))).toEqual(new Array(n).fill(rounds));
  });

  test("completed() resolves once the device is done", async () => {
    const n = 256;
    // One buffer per command buffer: nothing orders separate command buffers' writes to one buffer.
    const xs = [1, 2, 3].map(() => dev.buffer(n * 4));
    const cmds = xs.map((x, k) => {
      const cmd = dev.commandBuffer();
      for (let r = 0; r <= k; r++) {
        cmd.dispatchThreads(inc, { args: [x, new Uint32Array([n])], grid: [n], threadgroup: [64] });
        cmd.barrier();
      }
      cmd.commit();
      return cmd;
    });
    await Promise.all(cmds.map((cmd) => cmd.completed()));
    for (const cmd of cmds) expect(cmd.state).toBe("completed");
    xs.forEach((x, k) => expect(Array.from(x.read(Float32Array))).toEqual(new Array(n).fill(k + 1)));
    for (const x of xs) x.dispose();
    // Settled command buffers answer again at once.
    await cmds[0]!.completed();
    cmds[0]!.wait();
    for (const cmd of cmds) cmd.dispose();
    expect(cmds[0]!.state).toBe("disposed");
  });

  test("zero-length buffers", () => {
    using empty = dev.buffer(0);
    expect(empty.byteLength).toBe(0);
    expect(empty.read(Float32Array).length).toBe(0);
    using fromEmpty = dev.buffer(new Float32Array(0));
    expect(fromEmpty.byteLength).toBe(0);
    // Bindable: the kernel reads nothing when n is 0.
    using cmd = dev.commandBuffer();
    cmd.dispatchThreads(add, { args: [empty, fromEmpty, empty, new Uint32Array([0])], grid: [1], threadgroup: [1] });
    cmd.commit();
    cmd.wait();
  });

  test("an empty command buffer commits and completes", async () => {
    using cmd = dev.commandBuffer();
    cmd.commit();
    await cmd.completed();
    expect(cmd.state).toBe("completed");
  });

  test("buffers may be disposed while a committed command buffer still uses them", () => {
    const n = 512;
    const a = dev.buffer(floats(n, (i) => i));
    const b = dev.buffer(floats(n, () => 1));
    using out = dev.buffer(n * 4);
    using cmd = dev.commandBuffer();
    cmd.dispatchThreads(add, { args: [a, b, out, new Uint32Array([n])], grid: [n], threadgroup: [128] });
    cmd.commit();
    a.dispose();
    b.dispose();
    cmd.wait();
    expect(Array.from(out.read(Float32Array))).toEqual(Array.from(floats(n, (i) => i + 1)));
  });
});

describe("lifetimes and stats", () => {
  test("stats count live objects and compiles", () => {
    const before = dev.stats();
    const buf = dev.buffer(8192);
    const withBuffer = dev.stats();
    expect(withBuffer.buffers).toBe(before.buffers + 1);
    expect(withBuffer.bufferBytes).toBeGreaterThanOrEqual(before.bufferBytes + 8192);
    buf.dispose();
    const afterDispose = dev.stats();
    expect(afterDispose.buffers).toBe(before.buffers);
    expect(afterDispose.bufferBytes).toBe(before.bufferBytes);

    const again = dev.compile(KERNELS);
    const compiled = dev.stats();
    expect(compiled.libraries).toBe(before.libraries + 1);
    expect(compiled.compiles + compiled.cacheHits).toBe(before.compiles + before.cacheHits + 1);
    const pipe = again.pipeline("inc");
    expect(dev.stats().pipelines).toBe(before.pipelines + 1);
    pipe.dispose();
    again.dispose();
    const released = dev.stats();
    expect(released.pipelines).toBe(before.pipelines);
    expect(released.libraries).toBe(before.libraries);

    const cmd = dev.commandBuffer();
    expect(dev.stats().commandBuffers).toBe(before.commandBuffers + 1);
    cmd.dispose();
    expect(dev.stats().commandBuffers).toBe(before.commandBuffers);
  });

  test("a finished command buffer gives up its native object before dispose", () => {
    const before = dev.stats().commandBuffers;
    const cmd = dev.commandBuffer();
    cmd.commit();
    cmd.wait();
    expect(dev.stats().commandBuffers).toBe(before);
    cmd.dispose();
  });

  test("`using` disposes buffers, libraries, pipelines and command buffers", () => {
    const before = dev.stats();
    {
      using buf = dev.buffer(4096);
      using other = dev.compile(KERNELS);
      using pipe = other.pipeline("add");
      using cmd = dev.commandBuffer();
      expect(buf.byteLength + pipe.name.length).toBeGreaterThan(0);
      expect(cmd.state).toBe("recording");
    }
    const after = dev.stats();
    expect(after.buffers).toBe(before.buffers);
    expect(after.libraries).toBe(before.libraries);
    expect(after.pipelines).toBe(before.pipelines);
    expect(after.commandBuffers).toBe(before.commandBuffers);
  });

  test("a pipeline outlives the disposed library it came from", () => {
    const other = dev.compile(KERNELS);
    const pipe = other.pipeline("add");
    other.dispose();
    expectSmeltError(() => other.pipeline("add"), /Library\.pipeline/, /library was disposed/);
    expectDeviceWorks(dev, pipe);
    const libraries = dev.stats().libraries;
    pipe.dispose();
    expect(dev.stats().libraries).toBe(libraries - 1);
  });

  test("dispose twice is harmless", () => {
    const buf = dev.buffer(16);
    buf.dispose();
    buf.dispose();
    expect(buf.disposed).toBe(true);
  });
});

describe("errors", () => {
  test("SmeltError is an exported Error class", () => {
    const error = new sm.SmeltError("x");
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe("SmeltError");
  });

  test("compile errors carry the compiler's message with line numbers", () => {
    const source = "#include <metal_stdlib>\nusing namespace metal;\nkernel void broken(device float* x [[buffer(0)]]) { x[0] = undefined_name; }\n";
    const error = expectSmeltError(() => dev.compile(source), /compile/, /undefined_name/);
    expect(error.message).toMatch(/\b3\b/);
    expectDeviceWorks();
  });

  test("an unknown kernel name", () => {
    expectSmeltError(() => lib.pipeline("no_such_kernel"), /no_such_kernel/);
    expectDeviceWorks();
  });

  test("use after dispose: buffer", () => {
    const buf = dev.buffer(floats(4, (i) => i));
    const early = dev.limits.hostVisible ? buf.view(Float32Array) : null;
    buf.dispose();
    expectSmeltError(() => buf.view(Float32Array), /view/, /buffer was disposed/);
    expectSmeltError(() => buf.read(Float32Array), /read/, /buffer was disposed/);
    // Views taken before dispose are detached rather than left pointing at freed memory.
    if (early) expect(early.length).toBe(0);
    using cmd = dev.commandBuffer();
    using b = dev.buffer(16);
    expectSmeltError(
      () => cmd.dispatchThreads(add, { args: [buf, b, b, new Uint32Array([4])], grid: [4], threadgroup: [4] }),
      /dispatchThreads\(add\)/,
      /args\[0\]/,
      /disposed/,
    );
    expectDeviceWorks();
  });

  test("use after dispose: library and pipeline", () => {
    const other = dev.compile(KERNELS);
    const pipe = other.pipeline("add");
    pipe.dispose();
    other.dispose();
    expectSmeltError(() => other.pipeline("add"), /library was disposed/);
    using a = dev.buffer(16);
    using cmd = dev.commandBuffer();
    expectSmeltError(
      () => cmd.dispatchThreads(pipe, { args: [a, a, a, new Uint32Array([4])], grid: [4], threadgroup: [4] }),
      /dispatchThreads\(add\)/,
      /pipeline was disposed/,
    );
    expectDeviceWorks();
  });

  test("use after dispose: command buffer", async () => {
    const cmd = dev.commandBuffer();
    cmd.dispose();
    using a = dev.buffer(16);
    expectSmeltError(
      () => cmd.dispatchThreads(add, { args: [a, a, a, new Uint32Array([4])], grid: [4], threadgroup: [4] }),
      /command buffer was disposed/,
    );
    expectSmeltError(() => cmd.commit(), /commit/, /command buffer was disposed/);
    expectSmeltError(() => cmd.wait(), /wait/, /command buffer was disposed/);
    await expect(cmd.completed()).rejects.toThrow(/command buffer was disposed/);
    expectDeviceWorks();
  });

  test("use after dispose: device", () => {
    const other = sm.openDevice();
    expect(other).not.toBe(dev);
    const otherLib = other.compile(KERNELS);
    const otherAdd = otherLib.pipeline("add");
    const buf = other.buffer(16);
    expectDeviceWorks(other, otherAdd);
    other.dispose();
    expect(other.disposed).toBe(true);
    expectSmeltError(() => other.buffer(16), /Device\.buffer/, /device was disposed/);
    expectSmeltError(() => other.compile(KERNELS), /Device\.compile/, /device was disposed/);
    expectSmeltError(() => other.commandBuffer(), /device was disposed/);
    expectSmeltError(() => other.stats(), /device was disposed/);
    expectSmeltError(() => buf.view(Float32Array), /device was disposed/);
    expectSmeltError(() => otherLib.pipeline("add"), /device was disposed/);
    expect(buf.disposed).toBe(true);
    expectDeviceWorks();
  });

  test("a missing argument names the kernel, the slot and the expected count", () => {
    using a = dev.buffer(16);
    using cmd = dev.commandBuffer();
    expectSmeltError(
      () => cmd.dispatchThreads(add, { args: [a, a, a], grid: [4], threadgroup: [4] }),
      /dispatchThreads\(add\)/,
      /buffer\(3\)/,
      /takes 4 args/,
      /got 3/,
    );
    expectSmeltError(
      () => cmd.dispatchThreads(gap, { args: [a, undefined, undefined], grid: [4], threadgroup: [4] }),
      /gap/,
      /buffer\(2\)/,
    );
    expectDeviceWorks();
  });

  test("an extra argument names the kernel, the slot and the expected count", () => {
    using a = dev.buffer(16);
    using cmd = dev.commandBuffer();
    expectSmeltError(
      () => cmd.dispatchThreads(add, { args: [a, a, a, new Uint32Array([4]), a], grid: [4], threadgroup: [4] }),
      /"add"/,
      /args\[4\]/,
      /buffer\(4\)/,
      /takes 4 args/,
    );
    expectSmeltError(
      () => cmd.dispatchThreads(gap, { args: [a, a, a], grid: [4], threadgroup: [4] }),
      /gap/,
      /args\[1\]/,
      /no \[\[buffer\(1\)\]\]/,
    );
    expectDeviceWorks();
  });

  test("an argument of the wrong type", () => {
    using a = dev.buffer(16);
    using cmd = dev.commandBuffer();
    const bad = [4, "a", {}, { buffer: a, offset: 3.5 }, { buffer: a, offset: 32 }, { buffer: a, offset: -4 }];
    for (const arg of bad) {
      expectSmeltError(
        () => cmd.dispatchThreads(add, { args: [a, a, a, arg as never], grid: [4], threadgroup: [4] }),
        /dispatchThreads\(add\)/,
        /args\[3\]/,
      );
    }
    expectSmeltError(
      () => cmd.dispatchThreads({} as sm.Pipeline, { args: [], grid: [4], threadgroup: [4] }),
      /Pipeline/,
    );
    expectDeviceWorks();
  });

  test("grids of zero or non-integers", () => {
    using a = dev.buffer(16);
    using cmd = dev.commandBuffer();
    const args = [a, a, a, new Uint32Array([4])];
    expectSmeltError(() => cmd.dispatchThreads(add, { args, grid: [0], threadgroup: [4] }), /grid\[0\] is 0/);
    expectSmeltError(() => cmd.dispatchThreads(add, { args, grid: [4, 0, 1], threadgroup: [4] }), /grid\[1\] is 0/);
    expectSmeltError(() => cmd.dispatchThreads(add, { args, grid: [2.5], threadgroup: [4] }), /grid\[0\] is 2\.5/);
    expectSmeltError(() => cmd.dispatchThreads(add, { args, grid: [-1], threadgroup: [4] }), /grid\[0\]/);
    expectSmeltError(() => cmd.dispatchThreads(add, { args, grid: [Number.NaN], threadgroup: [4] }), /grid\[0\]/);
    expectSmeltError(() => cmd.dispatchThreads(add, { args, grid: [], threadgroup: [4] }), /grid must be an array of 1 to 3/);
    expectSmeltError(() => cmd.dispatchThreads(add, { args, grid: [1, 1, 1, 1], threadgroup: [4] }), /grid/);
    expectSmeltError(() => cmd.dispatchThreads(add, { args, grid: [4], threadgroup: [0] }), /threadgroup\[0\] is 0/);
    expectSmeltError(
      () => cmd.dispatchThreadgroups(groupSum, { args: [a, a], threadgroups: [0], threadgroup: [4], threadgroupMemory: [16] }),
      /dispatchThreadgroups\(group_sum\)/,
      /threadgroups\[0\] is 0/,
    );
    expectDeviceWorks();
  });

  test("a threadgroup over the pipeline's maxThreadsPerThreadgroup", () => {
    using a = dev.buffer(16);
    using cmd = dev.commandBuffer();
    const max = add.maxThreadsPerThreadgroup;
    expectSmeltError(
      () => cmd.dispatchThreads(add, { args: [a, a, a, new Uint32Array([4])], grid: [4096], threadgroup: [max + 1] }),
      /maxThreadsPerThreadgroup/,
      new RegExp(`${max + 1} threads`),
    );
    expectSmeltError(
      () => cmd.dispatchThreads(add, { args: [a, a, a, new Uint32Array([4])], grid: [64, 64], threadgroup: [64, 64] }),
      /4096 threads/,
    );
    expectDeviceWorks();
  });

  test("threadgroup memory missing, extra, misaligned or over the device limit", () => {
    using a = dev.buffer(1024);
    using cmd = dev.commandBuffer();
    const base = { args: [a, a], threadgroups: [1], threadgroup: [64] };
    expectSmeltError(() => cmd.dispatchThreadgroups(groupSum, base), /threadgroup\(0\)/, /threadgroupMemory\[0\] is missing/);
    expectSmeltError(
      () => cmd.dispatchThreadgroups(groupSum, { ...base, threadgroupMemory: [256, 256] }),
      /no \[\[threadgroup\(1\)\]\]/,
    );
    expectSmeltError(() => cmd.dispatchThreadgroups(groupSum, { ...base, threadgroupMemory: [0] }), /threadgroupMemory\[0\]/);
    expectSmeltError(() => cmd.dispatchThreadgroups(groupSum, { ...base, threadgroupMemory: [64.5] }), /64\.5/);
    const over = dev.limits.maxThreadgroupMemory + 16;
    expectSmeltError(
      () => cmd.dispatchThreadgroups(groupSum, { ...base, threadgroupMemory: [over] }),
      new RegExp(`${over} bytes`),
      /device limit/,
    );
    expectSmeltError(
      () => cmd.dispatchThreads(add, { args: [a, a, a, new Uint32Array([4])], grid: [4], threadgroup: [4], threadgroupMemory: [16] }),
      /no \[\[threadgroup\(0\)\]\]/,
    );
    expectDeviceWorks();
  });

  test("constant bytes over 4096", () => {
    using a = dev.buffer(16);
    using cmd = dev.commandBuffer();
    expectSmeltError(
      () => cmd.dispatchThreads(add, { args: [a, a, a, new Uint8Array(4100)], grid: [4], threadgroup: [4] }),
      /args\[3\]/,
      /4100 bytes/,
      /4096/,
    );
    expectSmeltError(
      () => cmd.dispatchThreads(add, { args: [a, a, a, new Uint8Array(0)], grid: [4], threadgroup: [4] }),
      /args\[3\] is 0 bytes/,
    );
    expectDeviceWorks();
  });

  test("dispatch after commit, commit twice, wait before commit", async () => {
    using a = dev.buffer(16);
    const args = [a, a, a, new Uint32Array([4])];
    using pending = dev.commandBuffer();
    expectSmeltError(() => pending.wait(), /wait/, /not committed/);
    await expect(pending.completed()).rejects.toThrow(/not committed/);
    using cmd = dev.commandBuffer();
    cmd.dispatchThreads(add, { args, grid: [4], threadgroup: [4] });
    cmd.commit();
    expectSmeltError(() => cmd.dispatchThreads(add, { args, grid: [4], threadgroup: [4] }), /already committed/);
    expectSmeltError(() => cmd.barrier(), /barrier/, /already committed/);
    expectSmeltError(() => cmd.commit(), /commit/, /already committed/, /only once/);
    cmd.wait();
    expectSmeltError(() => cmd.commit(), /commit may be called only once/);
    expectSmeltError(() => cmd.wait(-1), /timeoutMs/);
    expectDeviceWorks();
  });

  test("wait(timeoutMs) throws when the time runs out, and the work still finishes", async () => {
    using slow = dev.compile(`#include <metal_stdlib>
using namespace metal;
kernel void spin(device float* x [[buffer(0)]], constant uint& n [[buffer(1)]], uint i [[thread_position_in_grid]]) {
  float acc = x[i];
  for (uint k = 0; k < n; k++) acc = acc * 0.999999f + 0.5f;
  x[i] = acc;
}`);
    using spin = slow.pipeline("spin");
    using x = dev.buffer(8);
    using cmd = dev.commandBuffer();
    cmd.dispatchThreads(spin, { args: [x, new Uint32Array([50_000_000])], grid: [2], threadgroup: [2] });
    cmd.commit();
    expectSmeltError(() => cmd.wait(1), /wait/, /did not finish within 1 ms/);
    expect(cmd.state).toBe("committed");
    await cmd.completed();
    expect(x.read(Float32Array)[0]).toBeGreaterThan(0);
    expectDeviceWorks();
  });

  // Out-of-bounds checks are a host debug feature; Metal has no equivalent to provoke a failure with.
  test.if(sm.device().backend === "host")("a failed command buffer throws its error from wait() and completed()", async () => {
    const debug = sm.openDevice({ backend: "host", debug: true });
    try {
      const oob = debug
        .compile(`#include <metal_stdlib>
using namespace metal;
kernel void oob(device float* x [[buffer(0)]], uint i [[thread_position_in_grid]]) { x[i + 100] = 1.0f; }`)
        .pipeline("oob");
      const x = debug.buffer(16);
      const viaWait = debug.commandBuffer();
      viaWait.dispatchThreads(oob, { args: [x], grid: [4], threadgroup: [4] });
      viaWait.commit();
      expectSmeltError(() => viaWait.wait(), /wait: the command buffer failed/, /oob/);
      expect(viaWait.state).toBe("failed");
      expectSmeltError(() => viaWait.wait(), /the command buffer failed/);
      const viaPromise = debug.commandBuffer();
      viaPromise.dispatchThreads(oob, { args: [x], grid: [4], threadgroup: [4] });
      viaPromise.commit();
      await expect(viaPromise.completed()).rejects.toThrow(/completed: the command buffer failed/);
      expect(viaPromise.state).toBe("failed");
      const after = debug.commandBuffer();
      after.commit();
      after.wait();
      expect(debug.stats().commandBuffers).toBe(0);
    } finally {
      debug.dispose();
    }
    expectDeviceWorks();
  });

  test("a buffer or pipeline from another device", () => {
    const other = sm.openDevice();
    try {
      const foreign = other.buffer(16);
      const foreignLib = other.compile(KERNELS);
      const foreignAdd = foreignLib.pipeline("add");
      using a = dev.buffer(16);
      using cmd = dev.commandBuffer();
      expectSmeltError(
        () => cmd.dispatchThreads(add, { args: [a, foreign, a, new Uint32Array([4])], grid: [4], threadgroup: [4] }),
        /args\[1\] is a buffer from another device/,
      );
      expectSmeltError(
        () => cmd.dispatchThreads(add, { args: [a, { buffer: foreign, offset: 0 }, a, new Uint32Array([4])], grid: [4], threadgroup: [4] }),
        /args\[1\] is a buffer from another device/,
      );
      expectSmeltError(
        () => cmd.dispatchThreads(foreignAdd, { args: [a, a, a, new Uint32Array([4])], grid: [4], threadgroup: [4] }),
        /pipeline belongs to another device/,
      );
    } finally {
      other.dispose();
    }
    expectDeviceWorks();
  });

  test("bad buffer sizes and views", () => {
    expectSmeltError(() => dev.buffer(-1), /Device\.buffer/, /-1/);
    expectSmeltError(() => dev.buffer(1.5), /Device\.buffer/);
    expectSmeltError(() => dev.buffer("x" as never), /Device\.buffer/);
    using odd = dev.buffer(6);
    expectSmeltError(() => odd.view(Float32Array), /view\(Float32Array\)/, /6 bytes/);
    expectSmeltError(() => odd.read(Float32Array), /read\(Float32Array\)/, /6 bytes/);
    expect(odd.read(Uint16Array).length).toBe(3);
    expect(odd.read(Uint8Array, 2, 3).length).toBe(3);
    expectSmeltError(() => odd.read(Uint16Array, 1), /byteOffset/);
    if (dev.limits.hostVisible) {
      expect(odd.view(Uint16Array).length).toBe(3);
      expect(odd.view(Uint8Array, 2, 3).length).toBe(3);
      expectSmeltError(() => odd.view(Uint16Array, 1), /byteOffset/);
    } else expectSmeltError(() => odd.view(Uint16Array), /not visible to the CPU/);
    expectDeviceWorks();
  });

  test("an unknown SMELT_BACKEND value", () => {
    const saved = process.env.SMELT_BACKEND;
    process.env.SMELT_BACKEND = "vulkan";
    try {
      expectSmeltError(() => sm.openDevice(), /SMELT_BACKEND/, /vulkan/);
    } finally {
      if (saved === undefined) delete process.env.SMELT_BACKEND;
      else process.env.SMELT_BACKEND = saved;
    }
    expectSmeltError(() => sm.openDevice({ backend: "opencl" as never }), /backend/, /opencl/);
    expectDeviceWorks();
  });
});
