/**
 * Which kernels of a schedule read a node from memory, so that merging kernels into one
 * (realize.ts, mergeOutputs) can ask whether a kernel placed between a group's first and last
 * member reads one of them without walking every kernel in between: a training step has
 * thousands of kernels and hundreds of groups, and that walk made merging quadratic.
 */
import type { Node } from "../graph/node.ts";

/** Calls f on every node kernel k's code reaches, saying whether k computes it inline. */
export type KernelWalk = (k: Node, f: (x: Node, inline: boolean) => void) => void;

export class Readers {
  /** A node (or the base of a view given that node's memory) and the kernels that read it from memory. */
  readonly #by = new Map<Node, Node[]>();
  /** A kernel merged into another: the kernel that now computes it, in its place. */
  readonly #into = new Map<Node, Node>();

  /**
   * Reads are taken once, from the kernels in schedule order before any merge. Merging only moves
   * a group to its first or last member's place: moved late, it passes no kernel that reads it
   * (that is what a merge checks), so no kernel's reads change; moved early, a kernel in between
   * that computed a member inline reads it instead, and no longer reaches what the member's
   * inline code read. The taken reads are then a superset of the true ones, so a merge may be
   * refused that could have been made, never allowed where it must not be.
   */
  constructor(order: readonly Node[], readonly bases: ReadonlyMap<Node, Node>, walk: KernelWalk) {
    for (const k of order) {
      walk(k, (x, inline) => {
        if (inline) return;
        for (let y: Node | undefined = x; y; y = bases.get(y)) {
          const list = this.#by.get(y);
          if (!list) this.#by.set(y, [k]);
          else if (list[list.length - 1] !== k) list.push(k);
        }
      });
    }
  }

  /** Records that the kernels of `also` now run as part of `root`'s, at its place. */
  merged(root: Node, also: readonly Node[]): void {
    for (const m of also) this.#into.set(m, root);
  }

  /**
   * Whether a kernel other than the members, placed strictly between `first` and `last` in the
   * schedule, reads one of the members (or a view given its memory).
   */
  readBetween(members: ReadonlySet<Node>, first: number, last: number): boolean {
    for (const m of members) {
      for (const k of this.#by.get(m) ?? []) {
        if (members.has(k)) continue;
        let at = k;
        for (let r = this.#into.get(at); r; r = this.#into.get(at)) at = r;
        if (members.has(at)) continue;
        if (at.schedOrder > first && at.schedOrder < last) return true;
      }
    }
    return false;
  }
}
