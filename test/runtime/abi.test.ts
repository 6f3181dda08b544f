// The C ABI's newer calls through the raw API on the host backend: one record decoder for every
// path, buffers reached by copies (as on a discrete GPU) or wrapped without a copy, abandoning a
// runaway command buffer, and compiling off the JS thread.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { errBuf, errLen, errText, loadNative } from "../../src/runtime/native.ts";
import { RecordStream, REC_DISPATCH_THREADS, tooManyThreadgroupSlots } from "../../src/runtime/records.ts";

setDefaultTimeout(120_000);

const KERNELS = `#include <metal_stdlib>
using namespace metal;

kernel void inc(device float* x [[buffer(0)]], constant uint& n [[buffer(1)]], uint i [[thread_position_in_grid]]) {
  if (i < n) x[i] += 1.0f;
}

kernel void group_copy(device const float* x [[buffer(0)]], device float* out [[buffer(1)]],
                       threadgroup float* scratch [[threadgroup(0)]],
                       uint tid [[thread_position_in_threadgroup]], uint i [[thread_position_in_grid]]) {
  scratch[tid] = x[i];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  out[i] = scratch[tid];
}

// Spins until flag[0] is set: an atomic load the compiler must repeat.
kernel void spin(device atomic_uint* flag [[buffer(0)]], device uint* out [[buffer(1)]], uint i [[thread_position_in_grid]]) {
  while (atomic_load_explicit(flag, memory_order_relaxed) == 0u) {}
  out[i] = 7u;
}
`;

function message(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(sm.SmeltError);
    return (e as Error).message;
  }
  throw new Error("expected a SmeltError");
}

describe("one record decoder", () => {
  test("a dispatch with one threadgroup slot too many gets the same words from TS and from the native decoder", () => {
    using dev = sm.openDevice({ backend: "host" });
    const pipe = dev.compile(KERNELS).pipeline("group_copy");
    const x = dev.buffer(64);
    const lengths = Array.from({ length: 32 }, () => 16);
    const cmd = dev.commandBuffer();
    const ts = message(() => cmd.dispatchThreads(pipe, { args: [x, x], grid: [4], threadgroup: [4], threadgroupMemory: lengths }));

    // The same record, packed by hand past the TS checks, straight into smelt_cmd_encode.
    const native = loadNative("host").symbols;
    const raw = dev.commandBuffer();
    const stream = new RecordStream();
    const bind = (index: number) => ({ index, kind: 1 as const, buffer: x.handleFor("test"), offset: 0 });
    stream.dispatch(REC_DISPATCH_THREADS, pipe.handleFor("test"), [4, 1, 1], [4, 1, 1], [bind(0), bind(1)], lengths);
    const rc = native.smelt_cmd_encode(raw.handleFor("test"), stream.bytes, stream.bytes.byteLength, errBuf, errLen);
    expect(rc).not.toBe(0);
    const c = errText();

    const words = tooManyThreadgroupSlots(32);
    expect(words).toContain("Metal has 31 threadgroup memory slots");
    expect(ts).toBe(`dispatchThreads(group_copy): ${words}`);
    expect(c).toBe(`encode: record at byte 0 (group_copy): ${words}`);

    // 31 lengths pass the count check on both paths (the kernel then lacks slots 1..30).
    expect(message(() => cmd.dispatchThreads(pipe, { args: [x, x], grid: [4], threadgroup: [4], threadgroupMemory: lengths.slice(1) }))).toContain(
      "has no [[threadgroup(1)]] argument",
    );
    stream.reset();
    stream.dispatch(REC_DISPATCH_THREADS, pipe.handleFor("test"), [4, 1, 1], [4, 1, 1], [bind(0), bind(1)], lengths.slice(1));
    expect(native.smelt_cmd_encode(raw.handleFor("test"), stream.bytes, stream.bytes.byteLength, errBuf, errLen)).toBe(0);
  });
});

describe("buffers the CPU cannot see", () => {
  test("with host_visible=0 contents is NULL, view() refuses, and write/read copy, around a kernel", () => {
    using dev = sm.openDevice({ backend: "host", hostVisible: false });
    expect(dev.limits.hostVisible).toBe(false);
    const inc = dev.compile(KERNELS).pipeline("inc");
    const x = dev.buffer(new Float32Array([1, 2, 3, 4, 5, 6]));
    const native = loadNative("host").symbols;
    expect(native.smelt_buffer_contents(x.handleFor("test"))).toBeNull();
    expect(message(() => x.view(Float32Array))).toContain("not visible to the CPU");
    expect(Array.from(x.read(Float32Array))).toEqual([1, 2, 3, 4, 5, 6]);
    x.write(new Float32Array([10, 20]), 8);
    expect(Array.from(x.read(Float32Array, 4, 4))).toEqual([2, 10, 20, 5]);
    const cmd = dev.commandBuffer();
    cmd.dispatchThreads(inc, { args: [x, new Uint32Array([6])], grid: [6], threadgroup: [6] });
    cmd.commit();
    cmd.wait();
    expect(Array.from(x.read(Float32Array))).toEqual([2, 3, 11, 21, 6, 7]);
    // a read is a copy: changing it leaves the buffer alone
    const copy = x.read(Float32Array);
    copy[0] = 99;
    expect(x.read(Float32Array)[0]).toBe(2);
  });

  test("on a visible device read() and write() go through the buffer's own memory", () => {
    using dev = sm.openDevice({ backend: "host" });
    expect(dev.limits.hostVisible).toBe(true);
    const x = dev.buffer(16);
    x.write(new Uint32Array([5, 6]), 4);
    expect(Array.from(x.view(Uint32Array))).toEqual([0, 5, 6, 0]);
    x.view(Uint32Array)[3] = 9;
    expect(Array.from(x.read(Uint32Array))).toEqual([0, 5, 6, 9]);
  });

  test("peek() is the buffer's own memory where visible and a copy elsewhere", () => {
    using shown = sm.openDevice({ backend: "host" });
    using hidden = sm.openDevice({ backend: "host", hostVisible: false });
    for (const dev of [shown, hidden]) {
      const x = dev.buffer(new Int32Array([1, 2, 3]));
      const p = x.peek(Int32Array, 4);
      expect(Array.from(p)).toEqual([2, 3]);
      p[0] = 20;
      expect(x.read(Int32Array)[1]).toBe(dev === shown ? 20 : 2);
    }
  });

  test("the tensor engine runs on a device whose buffers the CPU cannot see (SMELT_HOST_VISIBLE=0)", () => {
    const script = `
      import * as sm from "./src/index.ts";
      const a = sm.array([[1, 2, 3], [4, 5, 6]]);
      const out = { visible: sm.device().limits.hostVisible, sum: sm.sum(a.mul(2), 0).toArray(), t: a.transpose().toArray() };
      console.log(JSON.stringify(out));`;
    const child = Bun.spawnSync({
      cmd: [process.execPath, "-e", script],
      cwd: join(import.meta.dir, "..", ".."),
      env: { ...process.env, SMELT_BACKEND: "host", SMELT_HOST_VISIBLE: "0" },
      stdout: "pipe",
      stderr: "pipe",
    });
    expect(child.stderr.toString()).toBe("");
    expect(JSON.parse(child.stdout.toString().trim())).toEqual({ visible: false, sum: [10, 14, 18], t: [1, 4, 2, 5, 3, 6] });
  });

  test("out-of-bounds copies are refused by TS and by the backend", () => {
    using dev = sm.openDevice({ backend: "host", hostVisible: false });
    const x = dev.buffer(16);
    expect(message(() => x.write(new Uint8Array(8), 12))).toContain("8 bytes at byteOffset 12 do not fit the buffer's 16 bytes");
    expect(message(() => x.write(new Uint8Array(1), -1))).toContain("do not fit");
    expect(message(() => x.read(Uint32Array, 8, 3))).toContain("length must be an integer from 0 to 2, got 3");
    expect(message(() => x.read(Uint32Array, 2))).toContain("byteOffset must be a multiple of 4");
    const native = loadNative("host").symbols;
    const h = x.handleFor("test");
    const host = new Uint8Array(32);
    expect(native.smelt_buffer_write(h, 8, host, 16, errBuf, errLen)).toBe(-1);
    expect(errText()).toBe("smelt_buffer_write: bytes 8..24 are outside the buffer's 16 bytes");
    expect(native.smelt_buffer_read(h, 17, host, 0, errBuf, errLen)).toBe(-1);
    expect(errText()).toBe("smelt_buffer_read: bytes 17..17 are outside the buffer's 16 bytes");
    expect(native.smelt_buffer_read(h, 4, null, 4, errBuf, errLen)).toBe(-1);
    expect(errText()).toBe("smelt_buffer_read: the host pointer is NULL");
    expect(native.smelt_buffer_read(h, 0, host, 16, errBuf, errLen)).toBe(0);
    expect(native.smelt_buffer_write(h, 16, host, 0, errBuf, errLen)).toBe(0);
  });

  test("wrap() hands the caller's memory to kernels without a copy, and refuses empty data", () => {
    using dev = sm.openDevice({ backend: "host" });
    const inc = dev.compile(KERNELS).pipeline("inc");
    const weights = new Float32Array([1, 2, 3, 4]);
    const x = dev.wrap(weights.subarray(1));
    expect(x.byteLength).toBe(12);
    const cmd = dev.commandBuffer();
    cmd.dispatchThreads(inc, { args: [x, new Uint32Array([3])], grid: [3], threadgroup: [3] });
    cmd.commit();
    cmd.wait();
    expect(Array.from(weights)).toEqual([1, 3, 4, 5]);
    weights[3] = 50;
    expect(x.read(Float32Array)[2]).toBe(50);
    expect(message(() => dev.wrap(new Uint8Array(0)))).toContain("Device.wrap: the data must be 1 to maxBufferLength");
    const native = loadNative("host").symbols;
    expect(native.smelt_buffer_wrap(null, null, 4, errBuf, errLen)).toBeNull();
    expect(dev.stats().buffers).toBe(1);
    x.dispose();
    expect(dev.stats().buffers).toBe(0);
    expect(Array.from(weights)).toEqual([1, 3, 4, 50]); // freeing a wrapped buffer leaves the memory alone
  });
});

describe("a runaway kernel", () => {
  test("abandon() loses the device at once, later calls fail fast, dispose returns, a new device works", () => {
    const started = performance.now();
    const dev = sm.openDevice({ backend: "host" });
    const spin = dev.compile(KERNELS).pipeline("spin");
    const flag = new Uint32Array(1);
    const flagBuffer = dev.wrap(flag);
    const out = dev.buffer(4);
    const cmd = dev.commandBuffer();
    cmd.dispatchThreads(spin, { args: [flagBuffer, out], grid: [1], threadgroup: [1] });
    cmd.commit();
    const behind = dev.commandBuffer();
    behind.dispatchThreads(spin, { args: [flagBuffer, out], grid: [1], threadgroup: [1] });
    behind.commit();
    expect(message(() => cmd.wait(100))).toContain("did not finish within 100 ms");
    // Handles taken now, to call the backend past the TS guard once the device is lost.
    const behindHandle = behind.handleFor("test");
    const outHandle = out.handleFor("test");
    const libHandle = spin.library.handleFor("test");

    const text = cmd.abandon()!;
    expect(text).toMatch(/^device lost: command buffer #1 was abandoned unfinished in kernel 'spin'/);
    expect(dev.lost).toBe(text);
    expect(cmd.state).toBe("failed");
    expect(message(() => cmd.wait(0))).toContain(text);
    expect(message(() => behind.wait(0))).toContain(text);
    expect(message(() => dev.buffer(4))).toContain(`Device.buffer: ${text}`);
    expect(message(() => dev.commandBuffer())).toContain(text);
    expect(message(() => dev.compile(KERNELS))).toContain(text);

    // The backend itself fails fast: the command buffer queued behind the runaway was dropped.
    const native = loadNative("host").symbols;
    const waited = performance.now();
    expect(native.smelt_cmd_wait(behindHandle, 0, errBuf, errLen)).toBe(-1);
    expect(errText()).toBe(text);
    expect(native.smelt_cmd_status(behindHandle, errBuf, errLen)).toBe(-1);
    expect(native.smelt_buffer_write(outHandle, 0, new Uint8Array(4), 4, errBuf, errLen)).toBe(-1);
    expect(errText()).toBe(text);
    expect(native.smelt_pipeline_new(libHandle, new TextEncoder().encode("spin\0"), errBuf, errLen)).toBeNull();
    expect(errText()).toBe(text);
    expect(performance.now() - waited).toBeLessThan(1000);

    const disposing = performance.now();
    dev.dispose();
    expect(performance.now() - disposing).toBeLessThan(1000);

    using fresh = sm.openDevice({ backend: "host" });
    const inc = fresh.compile(KERNELS).pipeline("inc");
    const x = fresh.buffer(new Float32Array([1, 2]));
    const c2 = fresh.commandBuffer();
    c2.dispatchThreads(inc, { args: [x, new Uint32Array([2])], grid: [2], threadgroup: [2] });
    c2.commit();
    c2.wait(5000);
    expect(Array.from(x.read(Float32Array))).toEqual([2, 3]);
    // Let the stuck thread go, so it stops taking a core for the rest of the run.
    Atomics.store(flag, 0, 1);
    expect(performance.now() - started).toBeLessThan(20_000);
  });

  test("abandoning a finished command buffer changes nothing", () => {
    using dev = sm.openDevice({ backend: "host" });
    const inc = dev.compile(KERNELS).pipeline("inc");
    const x = dev.buffer(new Float32Array([1]));
    const cmd = dev.commandBuffer();
    cmd.dispatchThreads(inc, { args: [x, new Uint32Array([1])], grid: [1], threadgroup: [1] });
    cmd.commit();
    cmd.wait();
    expect(cmd.abandon()).toBeUndefined();
    expect(dev.lost).toBeUndefined();
    expect(dev.buffer(4).byteLength).toBe(4);
  });
});

// A kernel source no cache has seen: the compile below is a real one.
function uniqueKernel(): string {
  const tag = `${process.pid}_${Date.now()}_${Math.floor(Math.random() * 1e9)}`;
  return `#include <metal_stdlib>
using namespace metal;
kernel void fresh_${tag}(device float* x [[buffer(0)]], uint i [[thread_position_in_grid]]) { x[i] = x[i] * 3.0f + 1.0f; }
`;
}

/** Runs `work` while a 10 ms interval counts its ticks; returns the ticks and the time taken. */
async function ticking(work: () => Promise<unknown>): Promise<{ ticks: number; ms: number }> {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  const t0 = performance.now();
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return { ticks, ms: performance.now() - t0 };
}

describe("compiling off the JS thread", () => {
  test("compileAsync keeps timers firing, and a second device counts the disk-cache hit as one", async () => {
    const cacheDir = mkdtempSync(join(tmpdir(), "smelt-abi-"));
    try {
      const source = uniqueKernel();
      const name = source.match(/kernel void (\w+)/)![1]!;
      const dev = sm.openDevice({ backend: "host", cacheDir });
      let lib: sm.Library | undefined;
      const { ticks, ms } = await ticking(async () => (lib = await dev.compileAsync(source)));
      expect(ms).toBeGreaterThan(50); // a real compile, long enough for the ticks to mean something
      expect(ticks).toBeGreaterThanOrEqual(Math.max(3, Math.floor(ms / 10 / 4)));
      expect(dev.stats()).toMatchObject({ compiles: 1, cacheHits: 0, libraries: 1 });
      const x = dev.buffer(new Float32Array([1, 2]));
      const cmd = dev.commandBuffer();
      cmd.dispatchThreads(lib!.pipeline(name), { args: [x], grid: [2], threadgroup: [2] });
      cmd.commit();
      cmd.wait();
      expect(Array.from(x.read(Float32Array))).toEqual([4, 7]);
      dev.dispose();

      using again = sm.openDevice({ backend: "host", cacheDir });
      await again.compileAsync(source);
      expect(again.stats()).toMatchObject({ compiles: 0, cacheHits: 1 });
      await expect(again.compileAsync("kernel void broken( {")).rejects.toThrow(/Device.compileAsync: MSL compilation failed/);
    } finally {
      rmSync(cacheDir, { recursive: true, force: true });
    }
  });

  test("a device disposed during compileAsync rejects it", async () => {
    const cacheDir = mkdtempSync(join(tmpdir(), "smelt-abi-"));
    try {
      const dev = sm.openDevice({ backend: "host", cacheDir });
      const pending = dev.compileAsync(uniqueKernel());
      dev.dispose();
      await expect(pending).rejects.toThrow(/disposed while compiling/);
    } finally {
      rmSync(cacheDir, { recursive: true, force: true });
    }
  });

  test("asyncEval compiles a cold kernel with the event loop free; stats tell compiles from disk hits", () => {
    // Two processes on a kernel cache of their own, so that the shared cache (and CI's check that
    // a second test run compiles nothing) never sees this deliberately new kernel.
    const cacheDir = mkdtempSync(join(tmpdir(), "smelt-abi-"));
    // A chain of unary ops in a random order is a kernel structure no cache has seen. Only ops that
    // keep values bounded: exp or square could overflow, and NaN does not survive JSON below.
    const ops = ["sin", "cos", "tanh", "abs", "negative", "sigmoid"] as const;
    const chain = Array.from({ length: 14 }, () => ops[Math.floor(Math.random() * ops.length)]!);
    const script = (measure: boolean) => `
      import * as sm from "./src/index.ts";
      const chain = ${JSON.stringify(chain)};
      const t = chain.reduce((t, op) => sm[op](t), sm.array([0.1, 0.2, 0.3]));
      sm.resetStats();
      let ticks = 0;
      const timer = ${measure} ? setInterval(() => ticks++, 10) : null;
      const t0 = performance.now();
      await sm.asyncEval(t);
      const ms = performance.now() - t0;
      if (timer) clearInterval(timer);
      console.log(JSON.stringify({ ticks, ms, stats: sm.stats(), values: t.toArray() }));`;
    const run = (measure: boolean) => {
      const child = Bun.spawnSync({
        cmd: [process.execPath, "-e", script(measure)],
        cwd: join(import.meta.dir, "..", ".."),
        env: { ...process.env, SMELT_CACHE_DIR: cacheDir, SMELT_BACKEND: "host" },
        stdout: "pipe",
        stderr: "pipe",
      });
      if (child.exitCode !== 0) throw new Error(child.stderr.toString());
      return JSON.parse(child.stdout.toString().trim().split("\n").at(-1)!);
    };
    try {
      const cold = run(true);
      expect(cold.ms).toBeGreaterThan(50);
      expect(cold.ticks).toBeGreaterThanOrEqual(Math.max(3, Math.floor(cold.ms / 10 / 4)));
      expect(cold.stats.kernelCompiles).toBeGreaterThanOrEqual(1);
      expect(cold.stats.kernelDiskCacheHits).toBe(0);
      // Another process with the same kernel cache loads it from disk: a hit, not a compile.
      const warm = run(false);
      expect(warm.values).toEqual(cold.values);
      expect(warm.stats.kernelCompiles).toBe(0);
      expect(warm.stats.kernelDiskCacheHits).toBeGreaterThanOrEqual(1);
    } finally {
      rmSync(cacheDir, { recursive: true, force: true });
    }
  });
});
