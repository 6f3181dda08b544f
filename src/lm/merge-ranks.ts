/**
 * BPE merge ranks in the form @huggingface/tokenizers reads them: a map from the JSON of a pair,
 * `["a","b"]`, to the merge's rank, of which the library calls get() alone. A Map of those
 * strings holds a string and an entry per merge; here a merge of two vocabulary tokens is one
 * element of two typed arrays, its tokens' ids paired into one number and sorted for a binary
 * search, and only the other merges (a half that is no token) keep their string.
 */

/** Ids below this pair into one number exactly (their product stays below 2^53). */
const MAX_ID = 2 ** 26;
const pairable = (id: number | undefined): id is number => Number.isInteger(id) && id! >= 0 && id! < MAX_ID;

export class MergeRanks extends Map<string, number> {
  readonly #ids: ReadonlyMap<string, number>;
  /** One more than the largest id that pairs: a pair is first * width + second. */
  readonly #width: number;
  /** The paired ids of the merges of two tokens, ascending, and their ranks. */
  readonly #pairs: Float64Array;
  readonly #ranks: Uint32Array;
  readonly #others = new Map<string, number>();

  /**
   * merges: "a b" strings, split at spaces into their first two parts, or pairs, as the library
   * reads them all in the first one's form; a merge listed twice has its later rank. ids: the
   * vocabulary, which must not change afterwards (pairs are looked up by its ids).
   */
  constructor(merges: readonly unknown[], ids: ReadonlyMap<string, number>) {
    super();
    this.#ids = ids;
    let width = 0;
    for (const id of ids.values()) if (pairable(id)) width = Math.max(width, id + 1);
    this.#width = width;
    const split = !Array.isArray(merges[0]);
    const codes = new Float64Array(merges.length);
    let paired = 0;
    for (let i = 0; i < merges.length; i++) {
      const pair: unknown = split ? (merges[i] as string).split(" ", 2) : merges[i];
      const code = Array.isArray(pair) && pair.length === 2 ? this.#code(pair[0], pair[1]) : undefined;
      codes[i] = code ?? -1;
      if (code === undefined) this.#others.set(JSON.stringify(pair), i);
      else paired++;
    }
    const order = new Uint32Array(paired);
    for (let i = 0, k = 0; i < merges.length; i++) if (codes[i]! >= 0) order[k++] = i;
    order.sort((x, y) => codes[x]! - codes[y]! || x - y);
    // Of a pair listed twice, the last listing's rank stands, as a Map's set leaves it.
    let n = 0;
    for (let k = 0; k < paired; k++) if (k + 1 === paired || codes[order[k + 1]!] !== codes[order[k]!]) order[n++] = order[k]!;
    this.#pairs = new Float64Array(n);
    this.#ranks = new Uint32Array(n);
    for (let k = 0; k < n; k++) {
      this.#pairs[k] = codes[order[k]!]!;
      this.#ranks[k] = order[k]!;
    }
  }

  /** The pair's number, or undefined when a half is not a token with an id that pairs. */
  #code(a: unknown, b: unknown): number | undefined {
    const first = typeof a === "string" ? this.#ids.get(a) : undefined;
    const second = typeof b === "string" ? this.#ids.get(b) : undefined;
    return pairable(first) && pairable(second) ? first * this.#width + second : undefined;
  }

  override get(key: string): number | undefined {
    const pair = JSON.parse(key) as unknown;
    const code = Array.isArray(pair) && pair.length === 2 ? this.#code(pair[0], pair[1]) : undefined;
    if (code === undefined) return this.#others.get(key);
    const pairs = this.#pairs;
    let lo = 0, hi = pairs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (pairs[mid]! < code) lo = mid + 1;
      else hi = mid;
    }
    return pairs[lo] === code ? this.#ranks[lo] : undefined;
  }
}
