/**
 * One open native device and the lifetimes of the native objects made from it.
 *
 * Native frees are keyed by handle, not by JS object, so that three paths agree: an explicit
 * dispose(), the FinalizationRegistry safety net, and dependencies between native objects (a
 * command buffer pins the buffers and pipelines it encoded until it finishes; a pipeline pins its
 * library). A released object is freed natively once nothing pins it, so no path can free memory
 * that the device may still read.
 */
import type { Pointer } from "bun:ffi";
import { toArrayBuffer } from "bun:ffi";
import { SmeltError } from "../errors.ts";
import { type BackendName, clearErr, errBuf, errLen, errText, handleOf, type NativeSymbols } from "./native.ts";

type Kind = "cmd" | "pipeline" | "library" | "buffer";

/** Wrapped memory of lost devices, which their stuck kernels may read for as long as the process lives. */
const keptForLostDevices: unknown[] = [];

/** Device close frees in this order: work first, then what work uses. */
const closeOrder: readonly Kind[] = ["cmd", "pipeline", "library", "buffer"];

interface Entry {
  readonly kind: Kind;
  /** Weak, so that tracking never keeps an object from being collected. */
  readonly owner: WeakRef<NativeObject>;
  pins: number;
  released: boolean;
  /** Handles this object pinned; unpinned when it is freed. */
  readonly deps: Set<number>;
  /** Memory the native object uses without owning it (a wrapped ArrayBuffer), kept until it is freed. */
  readonly keep: unknown;
}

export class DeviceCore {
  readonly native: NativeSymbols;
  readonly handle: Pointer;
  readonly backend: BackendName;
  #closed = false;
  #lost: string | undefined;
  /** Compilations still running natively; each is finished before the device closes. */
  readonly #jobs = new Set<Pointer>();
  readonly #live = new Map<number, Entry>();
  readonly #registry = new FinalizationRegistry<number>((handle) => this.#onCollected(handle));
  readonly #counter: Uint32Array;

  constructor(native: NativeSymbols, handle: Pointer, backend: BackendName) {
    this.native = native;
    this.handle = handle;
    this.backend = backend;
    const counter = handleOf(native.smelt_device_completion_counter(handle));
    if (!counter) throw new SmeltError("openDevice: the backend returned no completion counter");
    this.#counter = new Uint32Array(toArrayBuffer(counter, 0, 8));
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Throws when the device was disposed or lost; every public call starts here. */
  check(call: string): void {
    if (this.#closed) throw new SmeltError(`${call}: the device was disposed`);
    if (this.#lost !== undefined) throw new SmeltError(`${call}: ${this.#lost}`);
  }

  /** Why the device is lost (smelt_cmd_abandon), or undefined. */
  get lost(): string | undefined {
    return this.#lost;
  }

  markLost(text: string): void {
    this.#lost ??= text;
  }

  /** Starts compiling off the JS thread (smelt_library_new_async); resolves with the library handle. */
  async compileAsync(call: string, source: Uint8Array, length: number, options: Uint8Array): Promise<Pointer> {
    clearErr();
    const job = handleOf(this.native.smelt_library_new_async(this.handle, source, length, options, errBuf, errLen));
    if (!job) throw new SmeltError(`${call}: ${errText()}`);
    this.#jobs.add(job);
    // Compiles take tens of milliseconds or more: a poll each millisecond costs nothing next to them.
    while (this.#jobs.has(job) && this.native.smelt_compile_done(job) === 0) await Bun.sleep(1);
    if (!this.#jobs.delete(job)) throw new SmeltError(`${call}: the device was disposed while compiling`);
    clearErr();
    const lib = handleOf(this.native.smelt_compile_finish(job, errBuf, errLen));
    if (!lib) throw new SmeltError(`${call}: ${errText()}`);
    if (this.#closed || this.#lost !== undefined) {
      this.native.smelt_library_free(lib);
      this.check(call);
    }
    return lib;
  }

  /** Command buffers finished so far (smelt_device_completion_counter), read without a native call. */
  completedCount(): number {
    // Nothing more finishes on a lost device: waiters stop counting and find the error.
    if (this.#closed || this.#lost !== undefined) return Number.MAX_SAFE_INTEGER;
    // Little-endian uint64; the high word matters only after 2^32 command buffers.
    return this.#counter[0]! + this.#counter[1]! * 4294967296;
  }

  /** Starts tracking a native object; `owner` is the JS object whose collection releases it. */
  track(handle: Pointer, kind: Kind, owner: NativeObject, deps: readonly Pointer[] = [], keep?: unknown): void {
    const entry: Entry = { kind, owner: new WeakRef(owner), pins: 0, released: false, deps: new Set(), keep };
    this.#live.set(handle, entry);
    for (const dep of deps) this.depend(handle, dep);
    this.#registry.register(owner, handle, owner);
  }

  /** Keeps `dep` from being freed until `handle` is freed. */
  depend(handle: Pointer, dep: Pointer): void {
    const entry = this.#live.get(handle);
    const target = this.#live.get(dep);
    if (!entry || !target || entry.deps.has(dep)) return;
    entry.deps.add(dep);
    target.pins++;
  }

  /** The owner is done with the object: free it now, or once nothing pins it. */
  release(handle: Pointer, owner: object): void {
    this.#registry.unregister(owner);
    this.#release(handle);
  }

  #onCollected(handle: number): void {
    if (!this.#closed) this.#release(handle);
  }

  #release(handle: number): void {
    const entry = this.#live.get(handle);
    if (!entry || entry.released) return;
    entry.released = true;
    if (entry.pins === 0) this.#free(handle, entry);
  }

  #unpin(handle: number): void {
    const entry = this.#live.get(handle);
    if (!entry) return;
    entry.pins--;
    if (entry.pins === 0 && entry.released) this.#free(handle, entry);
  }

  #free(handle: number, entry: Entry): void {
    this.#live.delete(handle);
    this.#freeNative(handle as Pointer, entry.kind);
    for (const dep of entry.deps) this.#unpin(dep);
  }

  #freeNative(handle: Pointer, kind: Kind): void {
    const n = this.native;
    if (kind === "cmd") n.smelt_cmd_free(handle);
    else if (kind === "pipeline") n.smelt_pipeline_free(handle);
    else if (kind === "library") n.smelt_library_free(handle);
    else n.smelt_buffer_free(handle);
  }

  /**
   * Frees every native object still alive (waiting for running work), then the device. A lost
   * device returns at once: the backend leaves its runaway work to itself (smelt.h).
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const job of this.#jobs) {
      const lib = handleOf(this.native.smelt_compile_finish(job, null, 0));
      if (lib) this.native.smelt_library_free(lib);
    }
    this.#jobs.clear();
    for (const entry of this.#live.values()) entry.owner.deref()?.closedWithDevice();
    for (const kind of closeOrder) {
      for (const [handle, entry] of this.#live) {
        if (entry.kind !== kind) continue;
        // A runaway kernel of a lost device may still use wrapped memory: it is never let go.
        if (this.#lost !== undefined && entry.keep !== undefined) keptForLostDevices.push(entry.keep);
        this.#live.delete(handle);
        this.#freeNative(handle as Pointer, kind);
      }
    }
    this.native.smelt_device_close(this.handle);
  }
}

/**
 * Base of the JS objects that own one native handle: dispose(), `using`, and the checks that
 * turn use after dispose into a SmeltError.
 */
export abstract class NativeObject {
  protected readonly core: DeviceCore;
  readonly #handle: Pointer;
  readonly #what: string;
  #disposed = false;
  #released = false;

  protected constructor(
    core: DeviceCore,
    handle: Pointer,
    kind: Kind,
    what: string,
    deps: readonly Pointer[] = [],
    keep?: unknown,
  ) {
    this.core = core;
    this.#handle = handle;
    this.#what = what;
    core.track(handle, kind, this, deps, keep);
  }

  /** True once dispose() was called (or the device was disposed). */
  get disposed(): boolean {
    return this.#disposed || this.core.closed;
  }

  /** @internal The native handle, after checking that this object and its device are still usable. */
  handleFor(call: string): Pointer {
    this.core.check(call);
    if (this.#disposed) throw new SmeltError(`${call}: the ${this.#what} was disposed`);
    return this.#handle;
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.onDispose();
    this.releaseNative();
  }

  /** Gives the native object up (it is freed once nothing pins it); safe to call more than once. */
  protected releaseNative(): void {
    if (this.#released) return;
    this.#released = true;
    this.core.release(this.#handle, this);
  }

  /** @internal The device is closing and frees the native object itself. */
  closedWithDevice(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#released = true;
    this.onDispose();
  }

  /** Runs before the native release; subclasses detach what they exposed. */
  protected onDispose(): void {}

  [Symbol.dispose](): void {
    this.dispose();
  }
}
