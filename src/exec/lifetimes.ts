/**
 * Memory within one evaluation. Its nodes (and its kernels' scratch memory) are planned with
 * storages that have no buffer yet; once the kernel order is final, each kernel's outputs get one
 * in that order: a storage whose values no later kernel reads and nothing can read after the
 * evaluation, or a new one. A chain of kernels thus holds a few buffers at once rather than one
 * per kernel, and a checkpointed segment recomputed in the backward pass does not keep its
 * forward values alive. The kernel that takes a storage over comes after the last one reading it
 * in the same command buffer, behind a barrier (realize.ts, encode).
 */
import { newMark, type Node, tracing } from "../graph/node.ts";
import { postOrder } from "../graph/walk.ts";
import { memory, type Storage } from "./memory.ts";
import { readFromMemory } from "./plan/inline.ts";

/** A kernel: the nodes it writes (its main node first), and scratch memory used by it alone. */
export interface KernelMemory {
  writes: readonly Node[];
  scratch: readonly { b: Storage }[];
}

/**
 * Gives every kernel's outputs and scratch memory a buffer, in kernel order. views: nodes given
 * the memory of a node computed here, with that node; roots: the nodes the evaluation was asked for.
 */
export function bindMemory(kernels: readonly KernelMemory[], views: readonly (readonly [Node, Node])[], roots: readonly Node[]): void {
  // The nodes sharing each storage planned here: its node, and views of it.
  // A storage bound already (a writeSlice's, which is its dst's) is neither taken nor freed here.
  const holders = new Map<Storage, Node[]>();
  for (const k of kernels) for (const o of k.writes) if (!o.data!.storage.bound) holders.set(o.data!.storage, [o]);
  for (const [v] of views) holders.get(v.data!.storage)?.push(v);
  // After which kernel each storage is free to take over.
  const freedAt: Storage[][] = kernels.map(() => []);
  const dead = tracing.depth > 0 ? null : deadAfter(roots);
  if (dead) {
    const last = lastReads(kernels);
    for (const [s, nodes] of holders) {
      if (nodes.every((n) => n.lifeMark === dead)) freedAt[last.get(s) ?? nodes[0]!.schedOrder]!.push(s);
    }
  }
  const free = new Map<number, Storage[]>();
  const take = (s: Storage, op: string): Storage | null => {
    const reuse = free.get(s.bytes)?.pop();
    if (!reuse) memory.bind(s, op);
    return reuse ?? null;
  };
  const release = (s: Storage) => {
    const list = free.get(s.bytes);
    if (list) list.push(s);
    else free.set(s.bytes, [s]);
  };
  for (let i = 0; i < kernels.length; i++) {
    const { writes, scratch } = kernels[i]!;
    for (const o of writes) {
      const s = o.data!.storage;
      if (s.bound) continue;
      // The storage planned for o never gets a buffer: o and its views hold the reused one instead.
      const reuse = take(s, o.op);
      if (reuse) for (const h of holders.get(s)!) h.data!.storage = reuse.retain();
    }
    for (const sc of scratch) {
      if (sc.b.bound) continue; // kept with a weight, for later evaluations
      const reuse = take(sc.b, writes[0]!.op);
      if (reuse) sc.b = reuse.retain();
      release(sc.b);
    }
    // Through a holder: the storage it holds now, maybe one it took over.
    for (const planned of freedAt[i]!) release(holders.get(planned)![0]!.data!.storage);
  }
}

/**
 * For each storage planned here that kernels read, the last kernel reading it. A kernel reads a
 * node from memory where an earlier kernel computed it (readFromMemory); nodes it computes inline
 * it walks into.
 */
function lastReads(kernels: readonly KernelMemory[]): Map<Storage, number> {
  const last = new Map<Storage, number>();
  const stack: Node[] = [];
  for (let i = 0; i < kernels.length; i++) {
    const seen = newMark();
    for (const o of kernels[i]!.writes) {
      for (const x of o.inputs) stack.push(x);
      while (stack.length) {
        const x = stack.pop()!;
        if (x.schedMark === seen) continue;
        x.schedMark = seen;
        if (!readFromMemory(x, o)) for (const y of x.inputs) stack.push(y);
        else if (x.schedOrder >= 0) last.set(x.data!.storage, i);
      }
    }
  }
  return last;
}

/**
 * Marks the nodes computed in this evaluation that nothing can reach once it is done: not asked
 * for, held by no tensor, and read only by nodes that let go of them as it settles (computed ones
 * detach their inputs; uncomputed ones that nothing can reach are freed). Returns the stamp they
 * hold in lifeMark, which holds until the next deadAfter.
 */
function deadAfter(roots: readonly Node[]): number {
  // The evaluation's nodes (uncomputed before it), each after its inputs.
  const order = postOrder(roots, (n) => !(n.data && n.schedOrder < 0), "lifeMark");
  // Per node, the edges from consumers that let go of it (inputs outside the evaluation are
  // counted too, never read).
  for (const n of order) n.lifeCount = 0;
  const asked = newMark(), dead = newMark();
  for (const root of roots) root.lifeMark = asked;
  for (let j = order.length - 1; j >= 0; j--) {
    const n = order[j]!;
    const dies = n.lifeMark !== asked && n.tensors === 0 && n.lifeCount === n.consumers;
    if (dies) n.lifeMark = dead;
    if (dies || n.data) for (const x of n.inputs) x.lifeCount++;
  }
  return dead;
}

/**
 * The nodes to evaluate in the order to schedule them: those that share uncomputed nodes with
 * another, and that no other one reads, are reordered among their places, the ones with the
 * shortest chain of uncomputed nodes below them first. Scheduling each in turn computes what it
 * needs then, so a root that needs little (the gradient of a network's last layer) takes the
 * values it shares as soon as they are computed and lets them die, rather than after everything
 * the deepest root needs. A root that another reads keeps its place (the other's kernel may
 * compute it and write it too: a parameter's step and its new moments, one multi-output kernel),
 * and so does one sharing nothing.
 */
export function byDepth(roots: readonly Node[]): Node[] {
  if (roots.length < 2) return [...roots];
  const asked = newMark();
  for (const root of roots) root.schedMark = asked;
  // A node's depth (lifeCount) and the root whose walk reached it first (lifeOwner) are known
  // once it holds this stamp; roots sharing nodes, roots read by others.
  const known = newMark();
  const sharing = new Set<Node>(), read = new Set<Node>();
  const stack: Node[] = [];
  for (let r = 0; r < roots.length; r++) {
    const root = roots[r]!;
    stack.push(root);
    while (stack.length) {
      const n = stack[stack.length - 1]!;
      if (n.data || n.lifeMark === known) {
        stack.pop();
        continue;
      }
      let d = 0, ready = true;
      for (const x of n.inputs) {
        if (x.data) continue;
        if (x.lifeMark !== known) {
          ready = false;
          stack.push(x);
        } else if (x.lifeCount > d) d = x.lifeCount;
      }
      if (!ready) continue;
      for (const x of n.inputs) {
        if (x.schedMark === asked) read.add(x);
        if (x.lifeMark !== known) continue;
        const o = roots[x.lifeOwner]!;
        if (o !== root) sharing.add(o).add(root);
      }
      n.lifeMark = known;
      n.lifeCount = d + 1;
      n.lifeOwner = r;
      stack.pop();
    }
  }
  const moves = (n: Node) => sharing.has(n) && !read.has(n);
  const moved = roots.filter(moves).map((n, i) => ({ n, i, d: n.lifeMark === known ? n.lifeCount : 0 }));
  moved.sort((a, b) => a.d - b.d || a.i - b.i);
  let next = 0;
  return roots.map((n) => (moves(n) ? moved[next++]!.n : n));
}
