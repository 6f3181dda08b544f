/**
 * The device: opening one on the chosen backend, and the factory calls for everything else.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SmeltError } from "../errors.ts";
import { CommandBuffer } from "./command.ts";
import { DeviceCore } from "./core.ts";
import {
  type BackendName,
  backendList,
  clearErr,
  cstr,
  errBuf,
  errLen,
  errText,
  handleOf,
  isBackendName,
  loadNative,
  platformBackend,
  requestedBackend,
  SMELT_OK,
} from "./native.ts";
import { deviceOptions, type OpenDeviceOptions } from "./options.ts";
import { bytesOf, DeviceBuffer, Library } from "./resources.ts";

export interface DeviceLimits {
  maxThreadsPerThreadgroup: number;
  /** Bytes of threadgroup memory one threadgroup may use. */
  maxThreadgroupMemory: number;
  /** Bytes. */
  maxBufferLength: number;
  /** True when the CPU and the device share memory. */
  unifiedMemory: boolean;
  /** True when buffers have a CPU view (DeviceBuffer.view); read() and write() work either way. */
  hostVisible: boolean;
  simdWidth: number;
  maxBufferSlots: number;
}

export interface DeviceStats {
  /** Live buffers and their bytes. */
  buffers: number;
  bufferBytes: number;
  libraries: number;
  pipelines: number;
  commandBuffers: number;
  /** Libraries compiled from source since the device opened. */
  compiles: number;
  /** Libraries loaded from the compiled-kernel cache instead. */
  cacheHits: number;
}

export interface CompileOptions {
  /** Let the compiler reassociate and assume no NaN or infinity (default false). */
  fastMath?: boolean;
  /**
   * The MSL version to compile as: "3.0" (macOS 13, no bfloat) or "3.1" (macOS 14 and later).
   * Default: the newest the system offers (host: 3.1).
   */
  languageVersion?: "3.0" | "3.1";
}

/** The byte source of Device.buffer(): its bytes are copied into the new buffer. */
export type BufferSource = ArrayBufferView | ArrayBuffer;

// A device nobody can reach any more is closed, with everything still made from it.
const abandoned = new FinalizationRegistry<DeviceCore>((core) => core.close());

export class Device {
  readonly backend: BackendName;
  readonly name: string;
  readonly limits: Readonly<DeviceLimits>;
  readonly #core: DeviceCore;

  /** @internal Use openDevice() or device(). */
  constructor(core: DeviceCore) {
    this.#core = core;
    this.backend = core.backend;
    const native = core.native;
    const name = new Uint8Array(256);
    this.name =
      native.smelt_device_name(core.handle, name, name.byteLength) === SMELT_OK
        ? new TextDecoder().decode(name.subarray(0, Math.max(0, name.indexOf(0)))) || core.backend
        : core.backend;
    const raw = new Uint8Array(32);
    if (native.smelt_device_limits(core.handle, raw) !== SMELT_OK) {
      throw new SmeltError("openDevice: the backend could not report the device's limits");
    }
    const v = new DataView(raw.buffer);
    this.limits = Object.freeze({
      maxBufferLength: Number(v.getBigUint64(0, true)),
      maxThreadsPerThreadgroup: v.getUint32(8, true),
      maxThreadgroupMemory: v.getUint32(12, true),
      maxBufferSlots: v.getUint32(16, true),
      simdWidth: v.getUint32(20, true),
      unifiedMemory: v.getUint32(24, true) !== 0,
      hostVisible: v.getUint32(28, true) !== 0,
    });
    abandoned.register(this, core, this);
  }

  get disposed(): boolean {
    return this.#core.closed;
  }

  /** Why the device is lost (a command buffer was abandoned), or undefined; a lost device only disposes. */
  get lost(): string | undefined {
    return this.#core.lost;
  }

  /** Command buffers of this device finished so far, in commit order (every one once disposed). */
  completedCount(): number {
    return this.#core.completedCount();
  }

  /** Compiles MSL source; a compile error throws with the compiler's messages and line numbers. */
  compile(source: string, options: CompileOptions = {}): Library {
    const call = "Device.compile";
    const [text, opts] = this.#compileArgs(call, source, options);
    clearErr();
    const handle = handleOf(this.#core.native.smelt_library_new(this.#core.handle, text, text.byteLength - 1, opts, errBuf, errLen));
    if (!handle) throw new SmeltError(`${call}: ${errText()}`);
    return new Library(this, this.#core, handle);
  }

  /**
   * Compiles MSL source on a native thread, leaving the JS thread free meanwhile; several may run
   * at once. Rejects with the compiler's messages as compile() throws them.
   */
  async compileAsync(source: string, options: CompileOptions = {}): Promise<Library> {
    const call = "Device.compileAsync";
    const [text, opts] = this.#compileArgs(call, source, options);
    const handle = await this.#core.compileAsync(call, text, text.byteLength - 1, opts);
    return new Library(this, this.#core, handle);
  }

  #compileArgs(call: string, source: string, options: CompileOptions): [Uint8Array, Uint8Array] {
    this.#core.check(call);
    if (typeof source !== "string") throw new SmeltError(`${call}: the source must be a string of MSL`);
    const fastMath = options.fastMath ?? false;
    if (typeof fastMath !== "boolean") throw new SmeltError(`${call}: fastMath must be a boolean`);
    const version = options.languageVersion;
    if (version !== undefined && version !== "3.0" && version !== "3.1")
      throw new SmeltError(`${call}: languageVersion must be "3.0" or "3.1", got ${JSON.stringify(version)}`);
    dumpSource(source, version);
    return [cstr(source), cstr(`fast_math=${fastMath ? 1 : 0}${version ? `;msl=${version}` : ""}`)];
  }

  /** A zero-filled buffer of `byteLength` bytes, or a buffer holding a copy of `data`. */
  buffer(init: number | BufferSource): DeviceBuffer {
    const call = "Device.buffer";
    this.#core.check(call);
    let data: Uint8Array | undefined;
    let byteLength: number;
    if (typeof init === "number") {
      byteLength = init;
    } else if (ArrayBuffer.isView(init)) {
      data = new Uint8Array(init.buffer, init.byteOffset, init.byteLength);
      byteLength = data.byteLength;
    } else if (init instanceof ArrayBuffer) {
      data = new Uint8Array(init);
      byteLength = data.byteLength;
    } else {
      throw new SmeltError(`${call}: expected a byte length or a typed array, ArrayBuffer or DataView, got ${typeof init}`);
    }
    if (!Number.isInteger(byteLength) || byteLength < 0 || byteLength > this.limits.maxBufferLength) {
      throw new SmeltError(
        `${call}: the byte length must be an integer from 0 to maxBufferLength (${this.limits.maxBufferLength}), got ${byteLength}`,
      );
    }
    clearErr();
    // The ABI has no empty buffers; one byte stands in and byteLength still reports 0.
    const handle = handleOf(this.#core.native.smelt_buffer_new(this.#core.handle, Math.max(1, byteLength), errBuf, errLen));
    if (!handle) throw new SmeltError(`${call}(${byteLength} bytes): ${errText()}`);
    const buffer = new DeviceBuffer(this, this.#core, handle, byteLength);
    if (data && byteLength > 0) buffer.write(data);
    return buffer;
  }

  /**
   * A buffer over `data`'s own memory (weights, a file from Bun.mmap), without a copy where the
   * backend can (host: always; Metal: page-aligned memory); kernels then read and write `data`
   * itself. The buffer keeps `data` alive; memory mapped read-only must not be written by kernels.
   */
  wrap(data: BufferSource): DeviceBuffer {
    const call = "Device.wrap";
    this.#core.check(call);
    if (!ArrayBuffer.isView(data) && !(data instanceof ArrayBuffer)) {
      throw new SmeltError(`${call}: expected a typed array, ArrayBuffer or DataView, got ${typeof data}`);
    }
    const bytes = bytesOf(data);
    if (bytes.byteLength === 0 || bytes.byteLength > this.limits.maxBufferLength) {
      throw new SmeltError(
        `${call}: the data must be 1 to maxBufferLength (${this.limits.maxBufferLength}) bytes, got ${bytes.byteLength}`,
      );
    }
    clearErr();
    const handle = handleOf(this.#core.native.smelt_buffer_wrap(this.#core.handle, bytes, bytes.byteLength, errBuf, errLen));
    if (!handle) throw new SmeltError(`${call}(${bytes.byteLength} bytes): ${errText()}`);
    return new DeviceBuffer(this, this.#core, handle, bytes.byteLength, bytes.buffer as ArrayBuffer);
  }

  /** A new command buffer to record dispatches into. */
  commandBuffer(): CommandBuffer {
    const call = "Device.commandBuffer";
    this.#core.check(call);
    clearErr();
    const handle = handleOf(this.#core.native.smelt_cmd_new(this.#core.handle, errBuf, errLen));
    if (!handle) throw new SmeltError(`${call}: ${errText()}`);
    return new CommandBuffer(this, this.#core, handle);
  }

  /** Live native objects and compile counters, as the backend counts them. */
  stats(): DeviceStats {
    const call = "Device.stats";
    this.#core.check(call);
    const raw = new BigUint64Array(7);
    if (this.#core.native.smelt_device_stats_get(this.#core.handle, raw) !== SMELT_OK) {
      throw new SmeltError(`${call}: the backend could not report its statistics`);
    }
    const [buffers, bufferBytes, libraries, pipelines, commandBuffers, compiles, cacheHits] = Array.from(raw, Number);
    return {
      buffers: buffers!,
      bufferBytes: bufferBytes!,
      libraries: libraries!,
      pipelines: pipelines!,
      commandBuffers: commandBuffers!,
      compiles: compiles!,
      cacheHits: cacheHits!,
    };
  }

  /**
   * Waits for running work, frees everything made from this device, and closes it. A lost device
   * closes at once; the thread stuck in its runaway kernel and the memory it uses are left behind.
   */
  dispose(): void {
    if (this.#core.closed) return;
    if (shared === this) sharedGuard?.(this);
    abandoned.unregister(this);
    this.#core.close();
    if (shared === this) shared = undefined;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

function open(backend: BackendName, options: OpenDeviceOptions): Device {
  const native = loadNative(backend).symbols;
  const text = cstr(deviceOptions(backend, options));
  clearErr();
  const handle = handleOf(native.smelt_device_open(text, errBuf, errLen));
  if (!handle) throw new SmeltError(`openDevice(${backend}): ${errText()}`);
  let core: DeviceCore;
  try {
    core = new DeviceCore(native, handle, backend);
  } catch (error) {
    native.smelt_device_close(handle);
    throw error;
  }
  try {
    return new Device(core);
  } catch (error) {
    core.close();
    throw error;
  }
}

/**
 * SMELT_DUMP_MSL=DIR writes every source a device compiles into DIR, once per distinct source
 * (named by its hash; ".msl30" marks MSL 3.0), so that scripts/check-cuda.sh can compile the
 * kernels a test run generates with NVRTC.
 */
function dumpSource(source: string, version: string | undefined): void {
  const dir = process.env.SMELT_DUMP_MSL;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${Bun.hash(source).toString(16)}${version === "3.0" ? ".msl30" : ""}.metal`);
  if (!existsSync(path)) writeFileSync(path, source);
}

let gpuUnavailable: string | undefined;

function fallBackToHost(backend: BackendName, reason: unknown): void {
  gpuUnavailable = reason instanceof Error ? reason.message : String(reason);
  process.stderr.write(`smelt: the ${backend} backend is unavailable, using the host backend instead (${gpuUnavailable})\n`);
}

/** The backend a device gets when none is named: SMELT_BACKEND, else the platform's. */
function defaultBackend(): BackendName {
  return requestedBackend() ?? (gpuUnavailable === undefined ? platformBackend() : "host");
}

/**
 * Builds (when stale) and loads the native library of the default backend, so that the slow
 * first build happens when smelt is imported rather than inside the first call that needs it.
 */
export function prepareDefaultBackend(): void {
  const backend = defaultBackend();
  if (backend !== "host" && requestedBackend() === undefined) {
    try {
      loadNative(backend);
      return;
    } catch (error) {
      fallBackToHost(backend, error);
    }
  }
  loadNative(defaultBackend());
}

/** Opens a device of its own (its objects cannot mix with another device's). */
export function openDevice(options: OpenDeviceOptions = {}): Device {
  if (options.backend !== undefined && !isBackendName(options.backend)) {
    throw new SmeltError(`openDevice: backend must be ${backendList()}, got ${JSON.stringify(options.backend)}`);
  }
  const backend = options.backend ?? defaultBackend();
  const explicit = options.backend !== undefined || requestedBackend() !== undefined;
  if (backend !== "host" && !explicit) {
    try {
      return open(backend, options);
    } catch (error) {
      fallBackToHost(backend, error);
      return open("host", options);
    }
  }
  return open(backend, options);
}

let shared: Device | undefined;
let sharedGuard: ((d: Device) => void) | undefined;

/**
 * @internal The tensor engine's say before the shared device is disposed: it throws to refuse
 * while its tensors live there, else lets the device go.
 */
export function guardSharedDevice(guard: (d: Device) => void): void {
  sharedGuard = guard;
}

/** The process's shared device, opened on first use (again after it was disposed or lost). */
export function device(): Device {
  if (shared?.lost !== undefined) shared.dispose();
  shared ??= openDevice();
  return shared;
}
