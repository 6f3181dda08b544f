/**
 * The keys and values a decoder has seen, per layer, so that a step computes only its new
 * positions. Each layer's keys (and values) live in one buffer [B, Hkv, capacity, D]; a step
 * writes its positions into it in place (writeSlice) and attention reads a view of it. The old
 * entries are never copied, but when the capacity is reached: it then doubles, so a generation of
 * n tokens copies O(n) entries in all rather than O(n) each step. A step of one position attends
 * to a window of whole blocks of WINDOW positions, the ones past it masked (window()): its graph
 * then has the same shapes for WINDOW steps in a row, so its schedule is replayed (exec/replay.ts)
 * rather than planned every step. Buffers start zeroed, so a masked position holds no NaN that a
 * zero weight would turn into one.
 */
import { SmeltError } from "../errors.ts";
import { full } from "../tensor/ops.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { unwritten, writeSlice } from "../tensor/write.ts";

/** The capacity, in positions, of a layer's first buffer at least: short prompts then never grow it. */
const FIRST_CAPACITY = 256;
/** A step of one position attends to the positions held rounded up to a multiple of this (a power of two). */
const WINDOW = 16;

/** What a layer's extend() gives: all positions' keys and values, and the buffers that hold them (for update). */
export interface Extended {
  /** [B, Hkv, window(T), D]: views of `stored`. */
  keys: Tensor;
  values: Tensor;
  stored: [keys: Tensor, values: Tensor];
}

export class KVCache {
  /** Positions held: the next token's position. */
  offset = 0;
  /** The batch size of what it holds (0 while empty). */
  batch = 0;
  readonly #keys: (Tensor | null)[];
  readonly #values: (Tensor | null)[];
  constructor(readonly numLayers: number) {
    this.#keys = new Array(numLayers).fill(null);
    this.#values = new Array(numLayers).fill(null);
  }

  /** Positions each layer's buffers hold room for (0 while empty). */
  get capacity(): number {
    return this.#keys[0]?.shape[2] ?? 0;
  }

  /**
   * The positions attention reads after T more are written: those held, or for a single position
   * whole blocks of WINDOW of them (never past the capacity, a multiple of WINDOW), where the
   * positions past offset + 1 must be masked.
   */
  window(T: number): number {
    const held = this.offset + T;
    return T === 1 ? Math.ceil(held / WINDOW) * WINDOW : held;
  }

  /**
   * Writes k and v [B, Hkv, T, D] (T new positions) after layer i's cached ones. The cache itself
   * is unchanged until update() takes `stored`; until then the writes are graphs, evaluated with
   * the step (the old buffers are consumed by them, so update() must follow before another extend).
   */
  extend(layer: number, k: Tensor, v: Tensor): Extended {
    const T = k.shape[2]!;
    const stored: [Tensor, Tensor] = [this.#room(this.#keys[layer] ?? null, k, T), this.#room(this.#values[layer] ?? null, v, T)];
    stored[0] = writeSlice(stored[0], k, 2, this.offset);
    stored[1] = writeSlice(stored[1], v, 2, this.offset);
    const read = { start: 0, stop: this.window(T) };
    return { keys: stored[0].slice({}, {}, read), values: stored[1].slice({}, {}, read), stored };
  }

  /**
   * The buffer to write T more positions of x's shape into: the layer's own while it has room;
   * else new memory for twice the room (at least FIRST_CAPACITY positions), zeroed and with the
   * positions so far written into it as part of the step.
   */
  #room(buffer: Tensor | null, x: Tensor, T: number): Tensor {
    const need = this.offset + T;
    if (buffer && buffer.shape[2]! >= need) return buffer;
    let capacity = Math.max(FIRST_CAPACITY, buffer ? 2 * buffer.shape[2]! : 0);
    while (capacity < need) capacity *= 2;
    const [B, H, , D] = x.shape as [number, number, number, number];
    const shape = [B, H, capacity, D];
    const grown = writeSlice(unwritten(shape, x.dtype), full(shape, 0, x.dtype), 2, 0);
    return buffer && this.offset > 0 ? writeSlice(grown, buffer.slice({}, {}, { stop: this.offset }), 2, 0) : grown;
  }

  /** Takes every layer's `stored` buffers (from extend) holding T more positions, releasing the old ones. */
  update(stored: readonly (readonly [Tensor, Tensor])[], T: number, batch: number): void {
    if (stored.length !== this.numLayers) throw new SmeltError(`KVCache.update: ${stored.length} layers given, the cache has ${this.numLayers}`);
    stored.forEach(([k, v], i) => {
      if (this.#keys[i] !== k) this.#keys[i]?.dispose();
      if (this.#values[i] !== v) this.#values[i]?.dispose();
      this.#keys[i] = k;
      this.#values[i] = v;
    });
    this.offset += T;
    this.batch = batch;
  }

  /** The keys and values of layer i [B, Hkv, offset, D] (views of its buffers), or null while empty. */
  layer(i: number): { keys: Tensor; values: Tensor } | null {
    const k = this.#keys[i], v = this.#values[i];
    const live = { start: 0, stop: this.offset };
    return k && v ? { keys: k.slice({}, {}, live), values: v.slice({}, {}, live) } : null;
  }

  /** Every buffer the cache holds, keys then values per layer: [B, Hkv, capacity, D]. */
  tensors(): Tensor[] {
    return [...this.#keys, ...this.#values].filter((t): t is Tensor => t !== null);
  }

  /** Frees the cached keys and values; the cache is empty again. */
  reset(): void {
    for (const t of this.tensors()) t.dispose();
    this.#keys.fill(null);
    this.#values.fill(null);
    this.offset = 0;
    this.batch = 0;
  }
  dispose(): void {
    this.reset();
  }
  [Symbol.dispose](): void {
    this.reset();
  }
}
