/**
 * Device memory for tensors: reference-counted storages carved from a size-bucketed cache of
 * device buffers (kept from reuse while a running command buffer uses them), the memory and
 * cache limits, and the counters sm.stats() reports.
 */
import { SmeltError } from "../errors.ts";
import { device, type Device, guardSharedDevice } from "../runtime/device.ts";
import type { DeviceBuffer } from "../runtime/resources.ts";

export interface EngineStats {
  kernelsDispatched: number;
  /** Evaluations that dispatched kernels; each commits one command buffer or more (exec/realize.ts). */
  evaluations: number;
  commandBuffers: number;
  kernelCompiles: number;
  kernelDiskCacheHits: number;
  kernelCacheHits: number;
  fusedGroups: number;
  /** Evaluations given a schedule kept from an earlier one of the same structure (exec/replay.ts). */
  schedulesReplayed: number;
  bytesAllocated: number;
  peakBytes: number;
  bytesCached: number;
}

export const stats: EngineStats = {
  kernelsDispatched: 0,
  evaluations: 0,
  commandBuffers: 0,
  kernelCompiles: 0,
  kernelDiskCacheHits: 0,
  kernelCacheHits: 0,
  fusedGroups: 0,
  schedulesReplayed: 0,
  bytesAllocated: 0,
  peakBytes: 0,
  bytesCached: 0,
};

/**
 * A device buffer shared by every tensor that views it; returned to the cache at zero refs. Its
 * contents never change once computed, so data derived from them (a matmul operand packed into
 * panels) can be kept beside it, and is freed with it. A storage planned for a node of an
 * evaluation gets its buffer only once the evaluation's kernel order is known (exec/lifetimes.ts),
 * and none when the node takes over another's storage instead.
 */
export class Storage {
  refs = 1;
  /** The sequence number of the last command buffer that reads or writes it (0: none): what reusing it waits for. */
  busy = 0;
  /** The sequence number of the last command buffer that writes it (0: none): what the CPU reading it waits for. */
  written = 0;
  /** While an evaluation is encoded (realize.ts encode): the span between barriers that last wrote it, and that last read it. */
  writtenIn = 0;
  readIn = 0;
  /** While an evaluation is described (replay.ts describe): that walk's stamp, and the storage's number in it. */
  walkMark = 0;
  walkId = 0;
  private derived: Map<string, Storage> | null = null;
  constructor(
    private buf: DeviceBuffer | null,
    readonly bytes: number,
  ) {}
  get buffer(): DeviceBuffer {
    if (!this.buf) throw new SmeltError("eval: internal error: memory used before it was given a buffer; please report it");
    return this.buf;
  }
  get bound(): boolean {
    return this.buf !== null;
  }
  /** Gives a planned storage its buffer (Memory.bind). */
  attach(buffer: DeviceBuffer): void {
    this.buf = buffer;
  }
  retain(): this {
    this.refs++;
    return this;
  }
  release(): void {
    if (--this.refs > 0) return;
    this.dropDerived();
    if (this.buf) memory.recycle(this);
  }
  /**
   * Keys of derived data that, once all are kept, serve every reader of this storage: it then
   * gives its buffer back (a weight's float form, read through the panels of its two products
   * alone: tensor/quantized.ts keepFloat).
   */
  servedBy: readonly string[] | null = null;
  /**
   * Gives the buffer back if what servedBy names is all kept, keeping what was derived from it;
   * called as an evaluation fills panels. A kernel that would read it then finds no buffer.
   */
  giveBackIfServed(): void {
    if (!this.buf || !this.servedBy?.every((k) => this.derived?.has(k))) return;
    memory.derivedBytes -= this.bytes;
    stats.bytesAllocated -= this.bytes;
    // Freed, not cached: a buffer of a weight's size seldom serves anything else. The device
    // frees it once no command buffer in flight uses it.
    this.buf.dispose();
    this.buf = null;
  }
  /** The storage derived under key, if it is kept. */
  kept(key: string): Storage | undefined {
    return this.derived?.get(key);
  }
  /** The storage derived under key, made by make() when absent (fresh: its contents are still to be written). */
  derive(key: string, make: () => Storage): { storage: Storage; fresh: boolean } {
    const hit = this.derived?.get(key);
    if (hit) return { storage: hit, fresh: false };
    const storage = make();
    (this.derived ??= new Map()).set(key, storage);
    memory.deriving.add(this);
    memory.derivedBytes += storage.bytes;
    return { storage, fresh: true };
  }
  dropDerived(): void {
    if (!this.derived) return;
    const derived = this.derived;
    this.derived = null;
    for (const d of derived.values()) {
      if (d.bound) memory.derivedBytes -= d.bytes;
      d.release();
    }
    memory.deriving.delete(this);
  }
}

// Buckets: powers of two from 256 bytes to 64 KiB, so a freed small buffer serves any request up
// to its size; above that, eight sizes per doubling (multiples of 8 KiB or more), so a large
// buffer, such as a model's weight, takes at most an eighth more than it asks, not nearly double.
const POWER_OF_TWO_UP_TO = 1 << 16;
export function bucketOf(bytes: number): number {
  let b = 256;
  while (b < bytes) b *= 2;
  if (b <= POWER_OF_TWO_UP_TO) return b;
  const step = b / 16;
  return Math.ceil(bytes / step) * step;
}

class Memory {
  private cache = new Map<number, DeviceBuffer[]>();
  /** Freed storages that a command buffer still running reads or writes: reusable once it is done. */
  private pending: Storage[] = [];
  /** Command buffers of the device known to be done, so most checks need not read the counter. */
  private completed = 0;
  private dev: Device | null = null;
  limit = Infinity;
  cacheLimit = Infinity;
  /** Storages holding derived data, which goes first when memory runs short. */
  readonly deriving = new Set<Storage>();
  /** Bytes of the derived data they hold (some of it may also be in use by an evaluation). */
  derivedBytes = 0;

  /** The shared device: after it was disposed, the one that device() opens next. */
  get device(): Device {
    // A lost device (a runaway command buffer was abandoned) is replaced by a fresh one.
    if (this.dev?.lost !== undefined) device();
    return (this.dev ??= device());
  }

  allocate(bytes: number, op: string): Storage {
    const s = this.reserve(bytes);
    this.bind(s, op, bytes);
    return s;
  }

  /** A storage of `bytes` without a buffer yet: no memory is in use for it until bind(). */
  reserve(bytes: number): Storage {
    return new Storage(null, bucketOf(Math.max(bytes, 1)));
  }

  /** Gives a reserved storage its buffer, from the cache or the device; op and bytes (asked for) are for errors. */
  bind(s: Storage, op: string, bytes = s.bytes): void {
    const bucket = s.bytes;
    if (this.pending.length) this.reap();
    if (stats.bytesAllocated + bucket > this.limit) this.dropDerived();
    if (stats.bytesAllocated + bucket > this.limit) {
      this.clearCache();
      throw new SmeltError(
        `${op}: allocating ${bytes} bytes would bring tensor memory to ${stats.bytesAllocated + bucket} bytes, ` +
          `over the limit of ${this.limit} set with sm.setMemoryLimit (in use: ${stats.bytesAllocated})`,
      );
    }
    const free = this.cache.get(bucket);
    let buffer = free?.pop();
    if (buffer) stats.bytesCached -= bucket;
    else {
      // The limit bounds what the device holds: cached buffers give way before a new one passes it.
      if (stats.bytesAllocated + stats.bytesCached + bucket > this.limit) this.clearCache();
      buffer = this.device.buffer(bucket);
    }
    stats.bytesAllocated += bucket;
    stats.peakBytes = Math.max(stats.peakBytes, stats.bytesAllocated);
    s.attach(buffer);
  }

  /** Lets go of all derived data. */
  dropDerived(): void {
    for (const s of [...this.deriving]) s.dropDerived();
  }

  /** A storage nothing refers to: cached for reuse, once no command buffer in flight uses it. */
  recycle(s: Storage): void {
    stats.bytesAllocated -= s.bytes;
    // Memory of a device that was lost and replaced goes with that device.
    if (s.buffer.disposed) return;
    if (s.busy > this.completed && s.busy > (this.completed = this.dev?.completedCount() ?? Infinity)) {
      stats.bytesCached += s.bytes;
      this.pending.push(s);
      return;
    }
    this.keep(s.buffer, s.bytes);
  }

  private keep(buffer: DeviceBuffer, bytes: number): void {
    if (stats.bytesCached + bytes > this.cacheLimit) {
      buffer.dispose();
      return;
    }
    stats.bytesCached += bytes;
    let list = this.cache.get(bytes);
    if (!list) this.cache.set(bytes, (list = []));
    list.push(buffer);
  }

  /** Moves the pending storages whose command buffers are done to the cache. */
  private reap(): void {
    const done = (this.completed = this.dev?.completedCount() ?? Infinity);
    const still: Storage[] = [];
    for (const s of this.pending) {
      if (s.busy > done) still.push(s);
      else {
        stats.bytesCached -= s.bytes;
        this.keep(s.buffer, s.bytes);
      }
    }
    this.pending = still;
  }

  /** Frees every cached buffer (the device frees those still in use by a command buffer once it is done). */
  clearCache(): void {
    for (const list of this.cache.values()) for (const b of list) b.dispose();
    for (const s of this.pending) s.buffer.dispose();
    this.cache.clear();
    this.pending = [];
    stats.bytesCached = 0;
  }

  /** Frees cached buffers until the cache fits the cache limit, largest first. */
  trim(): void {
    const sizes = [...this.cache.keys()].sort((a, b) => b - a);
    for (const size of sizes) {
      const list = this.cache.get(size)!;
      while (list.length && stats.bytesCached > this.cacheLimit) {
        list.pop()!.dispose();
        stats.bytesCached -= size;
      }
    }
  }

  /**
   * Called as the shared device is disposed: refused while tensors hold memory on it; otherwise
   * the engine lets it go (closing it frees the cached buffers) and moves to the next one.
   */
  deviceClosing(dev: Device): void {
    if (this.dev !== dev) return;
    if (stats.bytesAllocated > 0 && dev.lost === undefined) {
      throw new SmeltError(
        `Device.dispose: tensors still hold ${stats.bytesAllocated} bytes on the shared device (sm.getActiveMemory()); ` +
          "dispose them first (dispose(), `using`, sm.tidy). Once it is disposed, tensor ops use the device sm.device() opens next",
      );
    }
    this.cache.clear();
    this.pending = [];
    stats.bytesCached = 0;
    this.completed = 0;
    this.dev = null;
  }
}

export const memory = new Memory();
guardSharedDevice((d) => memory.deviceClosing(d));

/** Caps the bytes of tensor memory in use; returns the previous limit. */
export function setMemoryLimit(bytes: number): number {
  if (!(bytes > 0)) throw new SmeltError(`setMemoryLimit: the limit must be a positive number of bytes, got ${bytes}`);
  const previous = memory.limit;
  memory.limit = bytes;
  return previous;
}
/** Caps the bytes of freed buffers kept for reuse (0 keeps none); returns the previous limit. */
export function setCacheLimit(bytes: number): number {
  if (!(bytes >= 0)) throw new SmeltError(`setCacheLimit: the limit must be a non-negative number of bytes, got ${bytes}`);
  const previous = memory.cacheLimit;
  memory.cacheLimit = bytes;
  memory.trim();
  return previous;
}
/** Frees every cached buffer. */
export function clearCache(): void {
  memory.clearCache();
}
/** Bytes of tensor memory in use (stats().bytesAllocated). */
export const getActiveMemory = (): number => stats.bytesAllocated;
/** Bytes of freed buffers kept for reuse (stats().bytesCached). */
export const getCacheMemory = (): number => stats.bytesCached;
/** The most tensor memory in use at once since the start or resetPeakMemory(). */
export const getPeakMemory = (): number => stats.peakBytes;
export function resetPeakMemory(): void {
  stats.peakBytes = stats.bytesAllocated;
}
