// Host backend buffers through the C ABI: where their contents start. Buffers of a MiB or more are
// staggered within their first page (shim/host/abi.cpp, smelt_buffer_new), so that kernels
// streaming one into another do not hit 4 KiB aliasing; smaller ones end at the guard page that
// follows every buffer (test/host/faults.test.ts), starting 32-byte aligned.
import { describe, expect, test } from "bun:test";
import { toArrayBuffer } from "bun:ffi";
import { cstr, errBuf, errLen, handleOf, loadNative } from "../../src/runtime/native.ts";
import { deviceOptions } from "../../src/runtime/options.ts";

describe("host buffers", () => {
  test("large buffers start at 16 different 256-byte offsets in turn, small ones end on a page; all zero-filled", () => {
    const native = loadNative("host").symbols;
    const dev = handleOf(native.smelt_device_open(cstr(deviceOptions("host", {})), errBuf, errLen));
    expect(dev).not.toBeNull();
    const made: NonNullable<ReturnType<typeof handleOf>>[] = [];
    const start = (length: number) => {
      const b = handleOf(native.smelt_buffer_new(dev!, length, errBuf, errLen));
      expect(b).not.toBeNull();
      made.push(b!);
      return { at: Number(native.smelt_buffer_contents(b!)), buffer: b! };
    };
    try {
      const large = Array.from({ length: 16 }, () => start(1 << 21));
      for (const { at } of large) expect(at % 256).toBe(0);
      expect(new Set(large.map(({ at }) => at % 4096)).size).toBe(16);
      const small = Array.from({ length: 4 }, () => start(60_000));
      for (const { at } of small) expect((at + 60_000) % 4096).toBe(0);
      const odd = start(1001).at; // rounded up to 1024 bytes, which end on the page
      expect(odd % 32).toBe(0);
      expect((odd + 1024) % 4096).toBe(0);
      // the whole requested length is there, zero-filled, at the staggered start
      const last = large.at(-1)!;
      expect(Number(native.smelt_buffer_length(last.buffer))).toBe(1 << 21);
      const bytes = new Uint8Array(toArrayBuffer(native.smelt_buffer_contents(last.buffer)!, 0, 1 << 21));
      expect(bytes.every((v) => v === 0)).toBe(true);
      bytes.fill(7); // writable to its last byte
      expect(bytes[(1 << 21) - 1]).toBe(7);
    } finally {
      for (const b of made) native.smelt_buffer_free(b);
      native.smelt_device_close(dev!);
    }
  });
});
