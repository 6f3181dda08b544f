/**
 * Device memory, compiled libraries, and pipelines: the objects a dispatch binds.
 */
import { type Pointer, toArrayBuffer } from "bun:ffi";
import { SmeltError } from "../errors.ts";
import { type DeviceCore, NativeObject } from "./core.ts";
import type { Device } from "./device.ts";
import { clearErr, cstr, errBuf, errLen, errText, handleOf, SMELT_OK } from "./native.ts";

/** A typed-array constructor that can view an ArrayBuffer (Float32Array, Uint8Array, ...). */
export interface TypedArrayConstructor<T> {
  new (buffer: ArrayBuffer, byteOffset?: number, length?: number): T;
  readonly BYTES_PER_ELEMENT: number;
  readonly name: string;
}

// Views keep the memory they show alive: an ArrayBuffer reaches its DeviceBuffer through this map,
// so the FinalizationRegistry never frees memory that a live view still points into.
const ownerOf = new WeakMap<ArrayBuffer, DeviceBuffer>();

/** Bytes given to DeviceBuffer.write and Device.wrap. */
export type ByteSource = ArrayBufferView | ArrayBuffer;

/** The bytes of a typed array, DataView or ArrayBuffer, without a copy. */
export function bytesOf(data: ByteSource): Uint8Array {
  return ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : new Uint8Array(data);
}

export class DeviceBuffer extends NativeObject {
  readonly device: Device;
  readonly byteLength: number;
  /** The memory the device uses, where the CPU can see it; null where only copies reach it. */
  #memory: ArrayBuffer | null;

  /** @internal Made by Device.buffer() and Device.wrap(); `keep` is wrapped memory to hold on to. */
  constructor(device: Device, core: DeviceCore, handle: Pointer, byteLength: number, keep?: ArrayBuffer) {
    super(core, handle, "buffer", "buffer", [], keep);
    this.device = device;
    this.byteLength = byteLength;
    if (byteLength === 0) {
      this.#memory = new ArrayBuffer(0);
    } else if (!device.limits.hostVisible) {
      this.#memory = null;
    } else {
      const contents = handleOf(core.native.smelt_buffer_contents(handle));
      if (!contents) throw new SmeltError("Device.buffer: the backend returned no contents pointer");
      this.#memory = toArrayBuffer(contents, 0, byteLength);
    }
    if (this.#memory) ownerOf.set(this.#memory, this);
  }

  /**
   * A zero-copy view of the buffer's memory, which the device reads and writes. Wait for command
   * buffers that write the buffer before reading through it. Only where `device.limits.hostVisible`;
   * read() and write() work everywhere.
   */
  view<T>(ctor: TypedArrayConstructor<T>, byteOffset = 0, length?: number): T {
    const call = `DeviceBuffer.view(${ctor.name})`;
    this.handleFor(call);
    const [offset, count] = this.#range(call, ctor, byteOffset, length);
    if (!this.#memory) {
      throw new SmeltError(
        `${call}: this device's buffers are not visible to the CPU (limits.hostVisible is false); use read() and write()`,
      );
    }
    return new ctor(this.#memory, offset, count);
  }

  /**
   * A copy of `length` elements (default: the rest of the buffer) from `byteOffset`, through the
   * buffer's memory where the CPU sees it, else copied by the backend. Wait for command buffers
   * that write the buffer first.
   */
  read<T>(ctor: TypedArrayConstructor<T>, byteOffset = 0, length?: number): T {
    const call = `DeviceBuffer.read(${ctor.name})`;
    const handle = this.handleFor(call);
    const [offset, count] = this.#range(call, ctor, byteOffset, length);
    const bytes = count * ctor.BYTES_PER_ELEMENT;
    if (this.#memory) return new ctor(this.#memory.slice(offset, offset + bytes), 0, count);
    const out = new ArrayBuffer(bytes);
    if (bytes > 0) {
      clearErr();
      if (this.core.native.smelt_buffer_read(handle, offset, new Uint8Array(out), bytes, errBuf, errLen) !== SMELT_OK) {
        throw new SmeltError(`${call}: ${errText()}`);
      }
    }
    return new ctor(out, 0, count);
  }

  /**
   * @internal For code that only reads what it gets at once (the engine's readback): the buffer's
   * own memory where the CPU sees it, else a copy. Never written to nor kept past the next dispatch.
   */
  peek<T>(ctor: TypedArrayConstructor<T>, byteOffset = 0, length?: number): T {
    const call = `DeviceBuffer.peek(${ctor.name})`;
    this.handleFor(call);
    if (!this.#memory) return this.read(ctor, byteOffset, length);
    const [offset, count] = this.#range(call, ctor, byteOffset, length);
    return new ctor(this.#memory, offset, count);
  }

  /** Copies `data` into the buffer at `byteOffset`. Wait for command buffers that use those bytes first. */
  write(data: ByteSource, byteOffset = 0): void {
    const call = "DeviceBuffer.write";
    const handle = this.handleFor(call);
    if (!ArrayBuffer.isView(data) && !(data instanceof ArrayBuffer)) {
      throw new SmeltError(`${call}: expected a typed array, ArrayBuffer or DataView, got ${typeof data}`);
    }
    const src = bytesOf(data);
    if (!Number.isInteger(byteOffset) || byteOffset < 0 || byteOffset + src.byteLength > this.byteLength) {
      throw new SmeltError(
        `${call}: ${src.byteLength} bytes at byteOffset ${byteOffset} do not fit the buffer's ${this.byteLength} bytes`,
      );
    }
    if (src.byteLength === 0) return;
    if (this.#memory) {
      new Uint8Array(this.#memory, byteOffset, src.byteLength).set(src);
      return;
    }
    clearErr();
    if (this.core.native.smelt_buffer_write(handle, byteOffset, src, src.byteLength, errBuf, errLen) !== SMELT_OK) {
      throw new SmeltError(`${call}: ${errText()}`);
    }
  }

  /** Checks an element range of the buffer; returns its byte offset and element count. */
  #range<T>(call: string, ctor: TypedArrayConstructor<T>, byteOffset: number, length: number | undefined): [number, number] {
    const size = ctor.BYTES_PER_ELEMENT;
    if (!Number.isInteger(byteOffset) || byteOffset < 0 || byteOffset > this.byteLength || byteOffset % size !== 0) {
      throw new SmeltError(`${call}: byteOffset must be a multiple of ${size} from 0 to ${this.byteLength}, got ${byteOffset}`);
    }
    const available = (this.byteLength - byteOffset) / size;
    if (length === undefined) {
      if (!Number.isInteger(available)) {
        throw new SmeltError(`${call}: ${this.byteLength - byteOffset} bytes is not a whole number of ${size}-byte elements`);
      }
      return [byteOffset, available];
    }
    if (!Number.isInteger(length) || length < 0 || length > available) {
      throw new SmeltError(`${call}: length must be an integer from 0 to ${Math.floor(available)}, got ${length}`);
    }
    return [byteOffset, length];
  }

  protected override onDispose(): void {
    // Detaching turns every view made so far into an empty one instead of a window onto freed memory.
    if (this.byteLength > 0 && this.#memory) this.#memory = this.#memory.transfer(0);
  }
}

export class Library extends NativeObject {
  readonly device: Device;

  /** @internal Made by Device.compile(). */
  constructor(device: Device, core: DeviceCore, handle: Pointer) {
    super(core, handle, "library", "library");
    this.device = device;
  }

  /** The kernel function `name` of this library, ready to dispatch. */
  pipeline(name: string): Pipeline {
    const call = `Library.pipeline(${JSON.stringify(name)})`;
    const lib = this.handleFor(call);
    if (typeof name !== "string" || name.length === 0) {
      throw new SmeltError(`${call}: the kernel name must be a non-empty string`);
    }
    const native = this.core.native;
    clearErr();
    const handle = handleOf(native.smelt_pipeline_new(lib, cstr(name), errBuf, errLen));
    if (!handle) throw new SmeltError(`${call}: ${errText()}`);
    const info = new Uint32Array(6);
    if (native.smelt_pipeline_info_get(handle, info) !== SMELT_OK) {
      native.smelt_pipeline_free(handle);
      throw new SmeltError(`${call}: the backend could not describe the pipeline`);
    }
    return new Pipeline(this, this.core, handle, name, info);
  }
}

export class Pipeline extends NativeObject {
  readonly device: Device;
  readonly library: Library;
  /** The kernel function's name. */
  readonly name: string;
  readonly maxThreadsPerThreadgroup: number;
  readonly threadExecutionWidth: number;
  /** Bytes of threadgroup memory the kernel body declares, as far as the backend knows. */
  readonly staticThreadgroupMemory: number;
  /** Bit i set: the kernel has a [[buffer(i)]] argument. */
  readonly bufferMask: number;
  /** Bit i set: the kernel has a [[threadgroup(i)]] argument. */
  readonly threadgroupMask: number;

  /** @internal Made by Library.pipeline(). */
  constructor(library: Library, core: DeviceCore, handle: Pointer, name: string, info: Uint32Array) {
    // Pinning the library keeps a backend's compiled code loaded for as long as the pipeline lives.
    super(core, handle, "pipeline", "pipeline", [library.handleFor("Library.pipeline")]);
    this.device = library.device;
    this.library = library;
    this.name = name;
    this.maxThreadsPerThreadgroup = info[0]!;
    this.threadExecutionWidth = info[1]!;
    this.staticThreadgroupMemory = info[2]!;
    this.bufferMask = info[3]!;
    this.threadgroupMask = info[4]!;
  }
}
