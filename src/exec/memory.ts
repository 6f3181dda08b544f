/**
 * Device memory for tensors: reference-counted storages carved from a size-bucketed cache of
 * device buffers, a memory limit, and the counters sm.stats() reports.
 */
import { SmeltError } from "../errors.ts";
import { device, type Device } from "../runtime/device.ts";
import type { DeviceBuffer } from "../runtime/resources.ts";

export interface EngineStats {
  kernelsDispatched: number;
  commandBuffers: number;
  kernelCompiles: number;
  kernelDiskCacheHits: number;
  kernelCacheHits: number;
  fusedGroups: number;
  bytesAllocated: number;
  peakBytes: number;
  bytesCached: number;
}

export const stats: EngineStats = {
  kernelsDispatched: 0,
  commandBuffers: 0,
  kernelCompiles: 0,
  kernelDiskCacheHits: 0,
  kernelCacheHits: 0,
  fusedGroups: 0,
  bytesAllocated: 0,
  peakBytes: 0,
  bytesCached: 0,
};

/**
 * A device buffer shared by every tensor that views it; returned to the cache at zero refs. Its
 * contents never change once computed, so data derived from them (a matmul operand packed into
 * panels) can be kept beside it, and is freed with it.
 */
export class Storage {
  refs = 1;
  private derived: Map<string, Storage> | null = null;
  constructor(
    readonly buffer: DeviceBuffer,
    readonly bytes: number,
  ) {}
  retain(): this {
    this.refs++;
    return this;
  }
  release(): void {
    if (--this.refs > 0) return;
    this.dropDerived();
    memory.recycle(this);
  }
  /** The storage derived under key, made by make() when absent (fresh: its contents are still to be written). */
  derive(key: string, make: () => Storage): { storage: Storage; fresh: boolean } {
    const hit = this.derived?.get(key);
    if (hit) return { storage: hit, fresh: false };
    const storage = make();
    (this.derived ??= new Map()).set(key, storage);
    memory.deriving.add(this);
    return { storage, fresh: true };
  }
  dropDerived(): void {
    if (!this.derived) return;
    for (const d of this.derived.values()) d.release();
    this.derived = null;
    memory.deriving.delete(this);
  }
}

// Buckets: powers of two from 256 bytes, so a freed buffer serves any request up to its size.
function bucketOf(bytes: number): number {
  let b = 256;
  while (b < bytes) b *= 2;
  return b;
}

class Memory {
  private cache = new Map<number, DeviceBuffer[]>();
  private dev: Device | null = null;
  limit = Infinity;
  /** Storages holding derived data, which goes first when memory runs short. */
  readonly deriving = new Set<Storage>();

  get device(): Device {
    return (this.dev ??= device());
  }

  allocate(bytes: number, op: string): Storage {
    const bucket = bucketOf(Math.max(bytes, 1));
    if (stats.bytesAllocated + bucket > this.limit) for (const s of [...this.deriving]) s.dropDerived();
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
    else buffer = this.device.buffer(bucket);
    stats.bytesAllocated += bucket;
    stats.peakBytes = Math.max(stats.peakBytes, stats.bytesAllocated);
    return new Storage(buffer, bucket);
  }

  recycle(s: Storage): void {
    stats.bytesAllocated -= s.bytes;
    stats.bytesCached += s.bytes;
    let list = this.cache.get(s.bytes);
    if (!list) this.cache.set(s.bytes, (list = []));
    list.push(s.buffer);
  }

  clearCache(): void {
    for (const list of this.cache.values()) for (const b of list) b.dispose();
    this.cache.clear();
    stats.bytesCached = 0;
  }
}

export const memory = new Memory();

export function setMemoryLimit(bytes: number): void {
  if (!(bytes > 0)) throw new SmeltError(`setMemoryLimit: the limit must be a positive number of bytes, got ${bytes}`);
  memory.limit = bytes;
}
