/**
 * The keys and values a decoder has seen, per layer, so that a step computes only its new
 * positions. Each step makes a layer's keys the old ones with the new appended (one copy of the
 * cache per step, which attention reads in full anyway); kernels are keyed by their structure,
 * not their lengths, so a growing cache compiles nothing new.
 */
import { SmeltError } from "../errors.ts";
import { concatenate } from "../tensor/ops-structure.ts";
import type { Tensor } from "../tensor/tensor.ts";

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

  /** Layer i's keys and values [B, Hkv, offset + T, D] with k and v (of T new positions) appended; the cache is unchanged until update. */
  extend(layer: number, k: Tensor, v: Tensor): [Tensor, Tensor] {
    const ok = this.#keys[layer], ov = this.#values[layer];
    if (!ok || !ov) return [k, v];
    return [concatenate([ok, k], 2), concatenate([ov, v], 2)];
  }

  /** Takes the extended keys and values of every layer (from extend) for T more positions, releasing the old ones. */
  update(kv: readonly [Tensor, Tensor][], T: number, batch: number): void {
    if (kv.length !== this.numLayers) throw new SmeltError(`KVCache.update: ${kv.length} layers given, the cache has ${this.numLayers}`);
    kv.forEach(([k, v], i) => {
      if (this.#keys[i] !== k) this.#keys[i]?.dispose();
      if (this.#values[i] !== v) this.#values[i]?.dispose();
      this.#keys[i] = k;
      this.#values[i] = v;
    });
    this.offset += T;
    this.batch = batch;
  }

  /** The keys and values of layer i [B, Hkv, offset, D], or null while empty. */
  layer(i: number): { keys: Tensor; values: Tensor } | null {
    const k = this.#keys[i], v = this.#values[i];
    return k && v ? { keys: k, values: v } : null;
  }

  /** Every cached tensor, keys then values per layer. */
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
