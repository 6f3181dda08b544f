/**
 * Evaluation: turns the nodes asked for into kernels, encodes them all into one command buffer
 * (with a barrier only before a kernel that reads what an earlier one in it wrote), commits and
 * waits. Inline nodes (elementwise ops, casts, views, generators) are fused into the kernel of
 * whatever consumes them, so a chain of them becomes a single kernel and its intermediates get no
 * memory; reductions take their inline producers into their loads the same way.
 */
import { SmeltError } from "../errors.ts";
import type { CommandBuffer } from "../runtime/command.ts";
import { REC_DISPATCH_THREADGROUPS, REC_DISPATCH_THREADS } from "../runtime/records.ts";
import type { Pipeline } from "../runtime/resources.ts";
import { type MatmulLayout, type Target, targetOf } from "../runtime/target.ts";
import { isFloating, itemsize } from "../graph/dtype.ts";
import { contiguousStrides, isRowContiguous, MAX_ELEMENTS, sameShape } from "../graph/shape.ts";
import { newMark, type Node } from "../graph/node.ts";
import { postOrder, uncomputed } from "../graph/walk.ts";
import { attrsOf, OPS, viewMapOf } from "../graph/op.ts";
import { type KernelCode, MAX_PARAM_BYTES } from "./emit/builder.ts";
import { isInline, matmulDepth, readFromMemory, readsOwnElement } from "./plan/inline.ts";
import { columnPartial, isRowReduce, pendingReductions, type RowGroup, rowGroup, splitColumns, splitRow } from "./plan/rows.ts";
import { epilogueOf, type MatmulVariant, panelBytes, panelKey, type Panels, pendingMatmuls, summedProduct } from "./plan/matmul.ts";
import { sharedProducts } from "./plan/shared.ts";
import { matmulKernel, plainKernel, rowKernel } from "./plans.ts";
import { finishedSum, isLeadingSum } from "./plan/kernel.ts";
import { memory, type Storage, stats } from "./memory.ts";
import { compileMissing, libraryPipeline, pipelineFor } from "./kernels.ts";
import { type Launch as MultiLaunch, multiTensor, type Step } from "./emit/multi.ts";
import { bindMemory, byDepth } from "./lifetimes.ts";
import { profiling, recordKernel } from "./profile.ts";
import { restrideView } from "./plan/restride.ts";
import { describe, keep, keepCodes, keptCodes, replay, type Replaying, type ScheduleState } from "./replay.ts";

// A fused kernel computes at most this many inline nodes and reads at most this many computed
// ones (Metal has 31 buffer slots); past either, the widest inline input gets a kernel of its own.
// Long chains thus become repeated kernels of the same structure, which the cache compiles once.
// The first bounds a kernel's source and compile time (host: about 0.2 s plus 1.5 ms a node);
// below it, every kernel more costs each evaluation a dispatch and a pass over memory.
const MAX_INLINE = 128;
const MAX_LEAVES = 24;

/**
 * Scheduling: decides which nodes get a kernel (and memory), in an order where every kernel
 * comes after the kernels it reads. Linear in the size of the graph.
 */
class Schedule implements ScheduleState {
  readonly target = targetOf(memory.device);
  readonly order: Node[] = [];
  /** Nodes computed by a row kernel, with the reductions it computes along the way. */
  readonly rows = new Map<Node, RowGroup>();
  /** Nodes computed by a matmul kernel, as its epilogue: the matmul, its kernel and the memory its operands are packed into. */
  readonly matmuls = new Map<Node, { main: Node; variant: MatmulVariant; panels: Panels | null }>();
  /** Multi-output kernels: the node a kernel is ordered by, and the other nodes it writes. */
  readonly outputs = new Map<Node, Node[]>();
  /** Reductions rewired as two stages (plan/rows.ts), in the order they were. */
  readonly splits: { r: Node; columns: boolean }[] = [];
  /** The kept schedule this one replays, or was just kept as (exec/replay.ts). */
  kept: Replaying | null = null;
  /**
   * While mergeOutputs runs: the kernels that read each node from memory (or a view of it), so
   * that merge() finds the ones between a group's members without walking every kernel there.
   * Each merge brings it up to date (reread).
   */
  private readers = new Map<Node, Node[]>();
  /**
   * While mergeOutputs runs: the kernels whose code computes each node (or a view of it) inline
   * when mergeOutputs began, though it has memory: a kernel of its own later in the order. Merges
   * only shrink these; moved before such a kernel, the node is read from memory there.
   */
  private inliners = new Map<Node, Node[]>();
  /** The other way round: for each kernel, the nodes with memory it computes inline. */
  private inlined = new Map<Node, Node[]>();
  /** View to base, for mergeOutputs: the views are all known by then and merging adds none. */
  private bases = new Map<Node, Node>();
  /** Base to its views, for mergeOutputs: the views that move with a kernel. */
  private viewsOf = new Map<Node, Node[]>();
  /** Whether merges left members in the order at places they no longer run at (compact). */
  private holes = false;

  /** What encode() dispatches, once planned (launches()). */
  steps: Step<Launch>[] | null = null;
  /** Views of nodes computed in this evaluation, given their memory at other strides, with their bases. */
  readonly views: [view: Node, base: Node][] = [];
  /**
   * Nodes over a long matmul that several kernels read: each gets a kernel (plan/shared.ts).
   * Found at the first long matmul the walk meets: graphs without one skip the search.
   */
  private shared: ReadonlySet<Node> | null = null;
  constructor(private readonly roots: readonly Node[]) {}

  /** Every node that gets memory: the kernels' nodes, the further outputs of multi-output ones, views. */
  nodes(): Node[] {
    if (!this.outputs.size && !this.views.length) return this.order;
    return [...this.order, ...[...this.outputs.values()].flat(), ...this.views.map(([v]) => v)];
  }

  require(root: Node): void {
    for (const n of postOrder([root], uncomputed, "schedMark")) {
      if (OPS[n.op].readsComputedInputs) for (const i of n.inputs) this.operand(i);
      const inline = isInline(n);
      if (inline || OPS[n.op].kind === "kernel") this.weigh(n, inline);
      if (n.op === "matmul" && !inline) this.shared ??= sharedProducts(this.roots);
      if ((inline && this.sharesDots(n)) || this.shared?.has(n)) this.materialize(n);
      // Row reductions and matmuls wait: the kernel of whatever reads them may compute them. So
      // does a float sum over leading axes read once: its kernel may finish the reader's value.
      const finishes = n.schedConsumers === 1 && isLeadingSum(n);
      if (!inline && !isRowReduce(n) && n.op !== "matmul" && !finishes) this.materialize(n);
    }
    if (!root.data) this.materialize(root);
  }

  /**
   * Whether inline n computes a matmul inline (a low-rank product, say) and has more than one
   * consumer: each consumer's kernel would compute the dot products again for every element, and
   * a CPU pays for that (a LoRA layer's output, read by the activation and by the backward pass,
   * cost a matmul's epilogue several times the matmul). Computed once, it is the epilogue of the
   * matmul it adds to, or a kernel of its own.
   */
  private sharesDots(n: Node): boolean {
    n.schedDots = n.op === "matmul" || n.inputs.some((i) => !i.data && i.schedDots);
    return n.schedDots && n.schedConsumers > 1;
  }

  // n.schedInlineCount: the inline nodes n's kernel would compute (an upper bound when nodes are shared);
  // n.schedReads: the computed nodes it would read, each once, and the shared inline nodes among the
  // ones it would compute: another consumer may get them a kernel first, and n's then reads them.
  // So n.schedReads.length bounds the buffers n's kernel binds, in time linear in the graph (a list
  // longer than MAX_LEAVES has its node materialized by the consumer).
  // n.schedPlansAround: n is no inline node, or its kernel would read a row reduction or matmul that waits.
  private weigh(n: Node, inline: boolean): void {
    for (;;) {
      let cost = 1, widest: Node | null = null, waits = !inline;
      const leaves: Node[] = [];
      const mark = newMark();
      for (const i of n.inputs) {
        if (i.data || i.schedConsumers > 1) {
          if (i.schedMark !== mark) leaves.push(i);
          i.schedMark = mark;
        }
        if (i.data) continue;
        for (const l of i.schedReads) {
          if (l.schedMark !== mark) leaves.push(l);
          l.schedMark = mark;
        }
        cost += i.schedInlineCount;
        waits ||= i.schedPlansAround;
        if (!widest || i.schedInlineCount > widest.schedInlineCount) widest = i;
      }
      // The sum counts a node shared by several inputs once per path to it (a backward pass shares
      // a lot): past the cap, count the distinct nodes instead.
      if (cost > MAX_INLINE) cost = distinctUncomputed(n, MAX_INLINE + 1);
      if ((cost <= MAX_INLINE && leaves.length <= MAX_LEAVES) || !widest) {
        n.schedInlineCount = cost;
        n.schedReads = leaves;
        n.schedPlansAround = waits;
        return;
      }
      this.materialize(widest);
    }
  }

  /**
   * An input that a kernel reads from memory (a matmul's operand). A view of a node (a reshape, a
   * transpose of a product) is that node's memory at other strides: the node gets a kernel, the
   * view only its strides, not a copy of its own.
   */
  private operand(n: Node): void {
    if (n.data) return;
    const kind = OPS[n.op].kind;
    if (kind !== "view" && kind !== "reshape") return this.materialize(n);
    const base = n.inputs[0]!;
    this.operand(base);
    const d = base.data!;
    let map: { strides: number[]; offset: number } | null;
    if (isRowContiguous(base.shape, d.strides)) {
      const m = kind === "view" ? viewMapOf(n) : { strides: contiguousStrides(n.shape), offset: 0 };
      map = { strides: m.strides, offset: d.offset + m.offset };
    } else map = kind === "view" ? restrideView(n, d.strides, d.offset) : null;
    if (!map) return this.materialize(n);
    n.data = { storage: d.storage.retain(), strides: map.strides, offset: map.offset };
    n.schedOrder = base.schedOrder;
    this.views.push([n, base]);
  }

  private materialize(n: Node): void {
    if (n.data) return;
    // A view (heads split off a projection plus its low-rank term, keys transposed) is its
    // base's memory at other strides: the base gets the kernel (a matmul's, with the sum in its
    // epilogue), not a copy computing it in the view's order.
    if (viewOfUncomputed(n)) return this.operand(n);
    // An elementwise kernel: no reductions or matmuls to plan around.
    if (!n.schedPlansAround) return this.allocate(n);
    const matmuls = pendingMatmuls(n);
    if (matmuls.length) {
      const main = pendingReductions(n).length ? null : epilogueOf(n);
      if (main) {
        const variant = matmulVariant(this.target, main);
        this.matmuls.set(n, { main, variant, panels: variant === "panel" ? this.panels(n, main) : null });
        this.allocate(n);
        return;
      }
      for (const m of matmuls) if (m !== n) this.materialize(m);
    }
    // A single value (a loss, a mean) computed from long single-row reductions: they first get
    // their partials computed (plan/rows.ts splitRow). Where the kernel also writes the row's elements
    // (softmax of one row), it stays one kernel.
    if (n.size === 1) {
      for (const r of [...pendingReductions(n), n]) {
        const partial = splitRow(r);
        if (!partial) continue;
        this.splits.push({ r, columns: false });
        this.materialize(partial);
      }
    }
    // An elementwise finish of a sum over rows that reads nothing else (a gradient cast to its
    // weight's dtype, or added to an earlier one) is computed by the sum's kernel.
    const sum = finishedSum(n);
    if (sum && sum !== n && sum.schedConsumers === 1) {
      this.sumInputs(sum);
      return this.allocate(n);
    }
    if (n.op === "reduce") this.sumInputs(n);
    const pending = pendingReductions(n);
    if (pending.length || isRowReduce(n)) {
      let group = rowGroup(n);
      if (!group) {
        // Rows of another shape inside: compute the inputs of the reductions first (row groups
        // of their own, like a per-row loss before its mean), then try again; failing that,
        // compute the reductions on their own. A reduction's own input goes first: the per-row
        // loss of a summed loss takes in the rows' reductions, which are then no longer pending.
        const inputOf = (r: Node) => {
          const input = r.inputs[0]!;
          if (isInline(input) && pendingReductions(input).length) this.materialize(input);
        };
        if (n.op === "reduce") inputOf(n);
        for (const r of pendingReductions(n)) inputOf(r);
        group = rowGroup(n);
      }
      if (!group) {
        for (const r of pendingReductions(n)) this.materialize(r);
        group = isRowReduce(n) ? rowGroup(n) : null;
      }
      if (group) this.rows.set(n, group);
    }
    this.allocate(n);
  }

  /** Before sum r's kernel: its partials over many rows, or else the row kernel of its input. */
  private sumInputs(r: Node): void {
    // A reduction over many rows: its partials first (plan/rows.ts splitColumns).
    const partial = splitColumns(r);
    if (partial) {
      this.splits.push({ r, columns: true });
      return this.partialSums(partial);
    }
    // A reduction over leading axes of an input that reads row reductions (a norm's weight
    // gradient) and too few rows to split: the input is a row kernel of its own first, as no row
    // group can hold both.
    if (isRowReduce(r)) return;
    const input = r.inputs[0]!;
    if (isInline(input) && pendingReductions(input).length) this.materialize(input);
  }

  /**
   * Column partials p (plan/rows.ts columnPartial) of what reads row reductions (a norm's weight
   * gradient): the row kernel of those reductions writes them, a block of rows per threadgroup.
   * Else what they sum is computed first, and p is a sum of its own.
   */
  private partialSums(p: Node): void {
    const x = columnPartial(p)!;
    if (isInline(x) && pendingReductions(x).length) {
      const group = rowGroup(p);
      if (group) {
        this.rows.set(p, group);
        return this.allocate(p);
      }
      this.materialize(x);
    }
    this.materialize(p);
  }

  /**
   * Memory for the panels of matmul main computed by n's kernel. The panels of a B computed
   * before this evaluation (a weight) are kept with it, since its contents never change: later
   * evaluations skip the copy. Each panel storage holds a reference until the evaluation ends.
   */
  private panels(n: Node, main: Node): Panels {
    const B = main.inputs[1]!;
    let b: Storage, fill = true, keeper: Storage | null = null;
    if (B.schedOrder < 0) {
      // A weight's float form that gave its buffer back is read through its kept panels alone.
      if (!B.data!.storage.bound && !B.data!.storage.kept(panelKey(B))) {
        throw new SmeltError("eval: the panels kept for a quantized weight were dropped while the step reading them was built (memory ran short); evaluate it again");
      }
      const kept = B.data!.storage.derive(panelKey(B), () => memory.allocate(panelBytes(main), "matmul"));
      b = kept.storage.retain();
      fill = kept.fresh;
      if (fill) keeper = B.data!.storage;
    } else {
      b = memory.reserve(panelBytes(main));
    }
    const summed = summedProduct(n, main);
    return { b, fill, keeper, summed };
  }

  /**
   * Multi-output kernels: elementwise kernels of one shape that compute some of the same work (one
   * computes another's node inline, as a new parameter does its new moments; or both compute a
   * producer they share) become one kernel writing all of their nodes, the shared work done once;
   * so do row kernels of one row shape that fold the same reductions (a norm's dx and the
   * products its weight gradient sums), and float sums over the same axes of inputs of one shape
   * (a weight's and a bias's gradient), which share their loop. See merge() for where a group
   * runs, and when it stays apart.
   */
  mergeOutputs(): void {
    const keys = new Map<Node, string>();
    for (const n of this.order) {
      const key = this.mergeKind(n);
      if (key !== null) keys.set(n, key);
    }
    if (keys.size < 2) return;
    const cands = new Set(keys.keys());
    const parent = new Map<Node, Node>();
    const find = (n: Node): Node => {
      let r = n;
      while (parent.get(r) !== undefined) r = parent.get(r)!;
      return r;
    };
    const join = (a: Node, b: Node) => {
      // Row kernels of one row shape may write nodes of other shapes (column partials).
      if (keys.get(a) !== keys.get(b) || (!keys.get(a)!.startsWith("rows") && !sameShape(a.shape, b.shape))) return;
      const [ra, rb] = [find(a), find(b)];
      if (ra !== rb) parent.set(ra.schedOrder < rb.schedOrder ? ra : rb, ra.schedOrder < rb.schedOrder ? rb : ra);
    };
    // Which kernel first computes each inline node that does arithmetic (views and constants shared
    // by two kernels are not work worth a merge).
    const owner = new Map<Node, Node>();
    const sums = new Map<string, Node>();
    // The first row kernel reading each node from memory, and the column partials of such nodes:
    // a partial of what a row kernel reads (a norm's bias gradient: the sum of the cotangent that
    // its dx reads) is written by that kernel too.
    const rowReads = new Map<Node, Node>();
    const partials: [Node, Node][] = [];
    this.bases = new Map(this.views);
    for (const [v, base] of this.views) {
      const list = this.viewsOf.get(base);
      if (list) list.push(v);
      else this.viewsOf.set(base, [v]);
    }
    // One walk per kernel indexes what it reads (for merge) and finds the work candidates share.
    for (const k of this.order) {
      const cand = cands.has(k);
      const key = !cand || this.rows.has(k) ? null : sumKey(sumKernel(k));
      if (key !== null) {
        const first = sums.get(key);
        if (first) join(first, k);
        else sums.set(key, k);
        const x = columnPartial(k);
        if (x && readFromMemory(x, k)) partials.push([k, x]);
      }
      inlineWalk(k, (x, inline) => {
        this.index(k, x, inline);
        if (!cand) return;
        if (!inline) {
          if (this.rows.has(k) && !rowReads.has(x)) rowReads.set(x, k);
          return;
        }
        if (x.data && cands.has(x)) join(k, x);
        const kind = OPS[x.op].kind;
        if (kind === "view" || kind === "reshape" || kind === "generator") return;
        const o = owner.get(x);
        if (!o) owner.set(x, k);
        else if (o !== k) join(o, k);
      });
    }
    for (const [k, x] of partials) {
      const r = rowReads.get(x);
      if (r) join(k, r);
    }
    const groups = new Map<Node, Node[]>();
    for (const k of cands) {
      const r = find(k);
      const g = groups.get(r);
      if (g) g.push(k);
      else groups.set(r, [k]);
    }
    for (const g of groups.values()) {
      if (g.length < 2 || this.merge(g, true)) continue;
      // Not all at once: runs of them that can be, in order.
      let run = [g[0]!];
      for (const k of g.slice(1)) {
        if (this.merge([...run, k], false)) run.push(k);
        else {
          if (run.length > 1) this.merge(run, true);
          run = [k];
        }
      }
      if (run.length > 1) this.merge(run, true);
    }
    this.compact();
    this.readers = new Map();
    this.inliners = new Map();
    this.inlined = new Map();
    this.viewsOf = new Map();
  }

  /**
   * Indexes that kernel k reads x from memory, directly or through views of it (readers), or
   * computes inline x that has memory, or a view of it (inliners, inlined).
   */
  private index(k: Node, x: Node, inline: boolean): void {
    if (inline && !x.data) return;
    if (inline) {
      const list = this.inlined.get(k);
      if (list) list.push(x);
      else this.inlined.set(k, [x]);
    }
    const into = inline ? this.inliners : this.readers;
    for (let y: Node | undefined = x; y; y = this.bases.get(y)) {
      const list = into.get(y);
      if (!list) into.set(y, [k]);
      else if (list[list.length - 1] !== k) list.push(k);
    }
  }

  /** What k (a kernel of the order, or a further output of one) reads from memory now, views with their bases. */
  private readsOf(k: Node): Set<Node> {
    const reads = new Set<Node>();
    inlineWalk(k, (x, inline) => {
      if (!inline) for (let y: Node | undefined = x; y; y = this.bases.get(y)) reads.add(y);
    });
    return reads;
  }

  /**
   * The kernels whose reads a merge about to commit changes (members at a later place read what
   * kernels between computed; moved earlier, they are read by the kernels between that computed
   * them inline), each with what it reads before the merge.
   */
  private readsBefore(g: readonly Node[], members: ReadonlySet<Node>, between: boolean): Map<Node, Set<Node>> {
    const out = new Map<Node, Set<Node>>();
    const first = g[0]!.schedOrder, last = g[g.length - 1]!.schedOrder;
    if (!between) {
      // Only those computing inline a node with memory that will come before them.
      for (const m of g.slice(0, -1)) if (this.inlined.get(m)?.some((x) => x.schedOrder < last)) out.set(m, this.readsOf(m));
      return out;
    }
    // What the members read comes before the first (merge checks), so theirs stay the same.
    for (const m of g) {
      for (const k of this.inliners.get(m) ?? []) {
        if (!members.has(k) && !out.has(k) && k.schedOrder > first && k.schedOrder < last) out.set(k, this.readsOf(k));
      }
    }
    return out;
  }

  /** After a merge: the readers of what the kernels of readsBefore read now, and no longer read. */
  private reread(changed: ReadonlyMap<Node, ReadonlySet<Node>>): void {
    const readers = this.readers;
    for (const [k, before] of changed) {
      const after = this.readsOf(k);
      for (const y of after) {
        if (before.has(y)) continue;
        const list = readers.get(y);
        if (!list) readers.set(y, [k]);
        else list.push(k);
      }
      for (const y of before) {
        if (after.has(y)) continue;
        const list = readers.get(y)!;
        readers.set(y, list.filter((r) => r !== k));
      }
    }
  }

  /**
   * Which kernels n's may merge with (those of an equal key): elementwise ones, row ones writing
   * every row element or column partials (by row shape, with sums that are column partials of
   * rows of that shape), float sums over the same axes of inputs of one shape (and elementwise
   * kernels finishing one: plan/kernel.ts finishedSum); or none.
   */
  private mergeKind(n: Node): string | null {
    const kind = OPS[n.op].kind;
    if (this.matmuls.has(n)) return null;
    const group = this.rows.get(n);
    if (group) return group.perRow ? null : `rows ${group.rowShape} ${group.trailing}`;
    const x = columnPartial(n);
    if (x) return `rows ${x.shape} ${n.shape.length - 1}`;
    const sum = sumKernel(n);
    if (sum) return sumKey(sum);
    return kind === "kernel" || kind === "data" ? null : "elementwise";
  }

  /**
   * Makes the kernels g (in schedule order) one kernel, if it can: at the last one's place, or,
   * where a kernel in between reads one of them (a sum's partials and their fold), at the first
   * one's, if what they all read is computed before it. Whether it could; with `commit` false,
   * only that, the schedule left as it was.
   */
  private merge(g: Node[], commit: boolean): boolean {
    const members = new Set(g);
    const first = g[0]!.schedOrder, last = g[g.length - 1]!.schedOrder;
    // What a kernel reads of them: a member, or a view of one that has the member's memory.
    const bases = this.bases;
    const readsMember = (x: Node): boolean => members.has(x) || (bases.has(x) && readsMember(bases.get(x)!));
    let between = false;
    // A reader counts at its kernel's place: a kernel merged before writes further outputs, whose
    // reads count as its root's.
    const placed = (k: Node): Node | undefined => {
      const r = this.order[k.schedOrder];
      return r === k || (r && this.outputs.get(r)?.includes(k)) ? r : undefined;
    };
    const inOrder = (k: Node) => {
      const r = placed(k);
      return r !== undefined && !members.has(r) && k.schedOrder > first && k.schedOrder < last;
    };
    between = g.some((m) => this.readers.get(m)?.some(inOrder));
    let early = true;
    if (between) for (const m of g) inlineWalk(m, (x, inline) => (early &&= inline || x.schedOrder < first));
    if (between && !early) return false;
    const root = between ? g[0]! : g[g.length - 1]!;
    // With a row kernel among them, the root writes the others as a row kernel too.
    const rows = g.some((m) => this.rows.has(m));
    // The caps of one kernel, counted on what the group computes at the root's place.
    // Members and the nodes counted hold this stamp.
    const seen = newMark();
    for (const m of g) m.schedMark = seen;
    let leaves = 0, inline = 0;
    const stack = g.flatMap((m) => m.inputs);
    // A sum cannot compute another inline: each is its kernel's loop.
    const sum = sumKernel(root) !== null && !rows;
    while (stack.length) {
      const x = stack.pop()!;
      if (x.schedMark === seen) {
        if (sum && members.has(x)) return false;
        continue;
      }
      // A view given a member's memory would be computed inline at the member's place: not planned.
      if (bases.has(x) && readsMember(x)) return false;
      x.schedMark = seen;
      if (x.data && (x.schedOrder < 0 || x.schedOrder < root.schedOrder)) leaves++;
      else {
        inline++;
        for (const i of x.inputs) stack.push(i);
      }
    }
    if (leaves > MAX_LEAVES || inline + g.length > MAX_INLINE) return false;
    if (!commit && !rows) return true;
    const also = g.filter((m) => m !== root);
    // At the last member's place, kernels only move later: they leave holes in the order, closed
    // once (compact) rather than by renumbering the whole order for every group.
    const changed = commit ? this.readsBefore(g, members, between) : null;
    if (!between && !rows) {
      // Only they and their views move: the rest of the order keeps its places.
      for (const m of also) this.place(m, root.schedOrder);
      this.holes = true;
      root.schedInlineCount = inline + g.length;
      this.outputs.set(root, also);
      this.reread(changed!);
      return true;
    }
    this.compact();
    const before = [...this.order];
    const order = before.filter((n) => n === root || !members.has(n));
    const renumber = (nodes: Node[]) => {
      this.order.length = 0;
      for (const n of nodes) {
        n.schedOrder = this.order.length;
        this.order.push(n);
      }
      this.placeOutputs();
    };
    renumber(order);
    for (const m of also) m.schedOrder = root.schedOrder;
    this.placeOutputs();
    // One row group must compute every output, at the new places.
    const group = rows ? rowGroup(root, also) : null;
    if (!commit || (rows && !group)) {
      renumber(before);
      return commit ? false : !rows || group !== null;
    }
    if (group) {
      this.rows.set(root, group);
      for (const m of also) this.rows.delete(m);
    }
    root.schedInlineCount = inline + g.length;
    this.outputs.set(root, also);
    this.reread(changed!);
    return true;
  }

  /** Closes the holes merges left in the order: the members merged into a kernel at a later place. */
  private compact(): void {
    if (!this.holes) return;
    this.holes = false;
    const kept = this.order.filter((n, i) => n.schedOrder === i);
    this.order.length = 0;
    for (const n of kept) {
      n.schedOrder = this.order.length;
      this.order.push(n);
    }
    this.placeOutputs();
  }

  /** Puts n, and the views of it computed with it, at place `at`. */
  private place(n: Node, at: number): void {
    n.schedOrder = at;
    for (const v of this.viewsOf.get(n) ?? []) this.place(v, at);
  }

  /**
   * The further outputs of kernels merged before, and views computed with their bases, stay at
   * their kernels' places when kernels move: a kernel decides from these places whether it reads
   * a node or computes it inline, and a row kernel's node cannot be computed inline elsewhere.
   */
  private placeOutputs(): void {
    for (const [root, also] of this.outputs) for (const m of also) m.schedOrder = root.schedOrder;
    for (const [v, base] of this.views) v.schedOrder = base.schedOrder;
  }

  private allocate(n: Node): void {
    // Its buffer comes once the kernel order is final (bindMemory): maybe one an earlier node is
    // done with. A writeSlice writes into its dst's buffer instead (bindMemory leaves it bound).
    const into = n.op === "writeSlice" ? n.inputs[0]!.data : null;
    const storage: Storage = into ? into.storage.retain() : memory.reserve(n.size * itemsize(n.dtype));
    n.data = { storage, strides: contiguousStrides(n.shape), offset: 0 };
    n.schedReads = []; // planned: the list would only keep nodes alive
    n.schedOrder = this.order.length;
    this.order.push(n);
  }
}

/**
 * The sum a scheduled node's kernel computes (the node, or the sum it finishes), or null. An
 * elementwise kernel that read no reduction while weighed (schedPlansAround) finishes none.
 */
function sumKernel(n: Node): Node | null {
  return n.op === "reduce" ? n : n.schedPlansAround ? finishedSum(n) : null;
}

/**
 * What float sums (not row kernels) over the same axes of inputs of one shape share, which may
 * merge: every float dtype is summed in float (emit/plain.ts), whatever dtypes they read or give.
 */
function sumKey(n: Node | null): string | null {
  if (!n || n.op !== "reduce") return null;
  const { kind, axes } = attrsOf(n, "reduce");
  const input = n.inputs[0]!;
  return kind === "sum" && isFloating(input.dtype) ? `reduce ${axes} ${input.shape}` : null;
}

/**
 * Calls f on every node kernel k's code reaches: inline ones (computed by k, walked into) and
 * the ones it reads from memory (not walked into).
 */
function inlineWalk(k: Node, f: (x: Node, inline: boolean) => void): void {
  const seen = newMark();
  const stack = k.inputs.slice();
  while (stack.length) {
    const x = stack.pop()!;
    if (x.schedMark === seen) continue;
    x.schedMark = seen;
    const inline = !readFromMemory(x, k);
    f(x, inline);
    if (inline) for (const i of x.inputs) stack.push(i);
  }
}

/** For sm.profile: the kind of kernel, its node's op and shape, and the ops computed inline in it. */
function kernelLabel(k: Node, what: string): string {
  const ops = new Set<string>();
  inlineWalk(k, (x, inline) => {
    if (inline && OPS[x.op].kind !== "view") ops.add(x.op);
  });
  const fused = [...ops].sort();
  const more = fused.length > 6 ? ` +${fused.length - 6}` : "";
  return `${what} ${k.op} [${k.shape.join(", ")}]${fused.length ? ` (${fused.slice(0, 6).join(", ")}${more})` : ""}`;
}

/**
 * How many computations of uncomputed nodes n's kernel would emit, n included (at most about
 * `limit`): a node once per element it is read at, not once per path to it. Paths through views
 * of the same index map read it at the same element; a view of another map, a gather or an inline
 * matmul reads its input at other elements, so the nodes under two different views of one node
 * count twice (a chain of shifted views of views doubles at every level).
 */
function distinctUncomputed(n: Node, limit: number): number {
  // Where a node is read: 0 at n's element, else an id per sequence of index maps passed.
  const seen = new Map<Node, Set<number>>();
  const through = new Map<string, number>();
  const mapOf = (x: Node): string => {
    if (OPS[x.op].kind !== "view") return `node ${through.size}`; // gathers, matmuls: their own
    const m = viewMapOf(x);
    return `${x.inputs[0]!.shape}>${x.shape} ${m.strides}@${m.offset}`;
  };
  let ids = 1;
  const stack: [Node, number][] = [[n, 0]];
  let count = 0;
  while (stack.length && count < limit) {
    const [x, at] = stack.pop()!;
    count++;
    let below = at;
    if (!readsOwnElement(x) && OPS[x.op].kind !== "reshape" && x.op !== "reduce") {
      const key = `${at} ${mapOf(x)}`;
      below = through.get(key) ?? ids++;
      through.set(key, below);
    }
    for (const i of x.inputs) {
      if (i.data) continue;
      let s = seen.get(i);
      if (!s) seen.set(i, (s = new Set()));
      if (s.has(below)) continue;
      s.add(below);
      stack.push([i, below]);
    }
  }
  return count;
}


/** Threads per row of a row kernel: the target's, or on a GPU a SIMD group per 8 elements or so of the row. */
function rowThreads(target: Target, g: RowGroup): number {
  if (target.rowThreads > 0) return target.rowThreads;
  const n = g.rowShape.slice(g.rowShape.length - g.trailing).reduce((a, b) => a * b, 1);
  let t = target.simdWidth;
  while (t < target.maxThreadsPerThreadgroup && t * 8 < n) t *= 2;
  return t;
}

/**
 * Which matmul kernel: the target's layout for small products, where a wider one would not pay
 * for itself (packing B into panels, tiles of 8 x 8), else its layout for large ones.
 */
function matmulVariant(target: Target, main: Node): MatmulVariant {
  const M = main.shape[main.shape.length - 2]!, N = main.shape[main.shape.length - 1]!;
  const layout = layoutFor(target, M, N, main.size * matmulDepth(main), panelBytes(main) / 4);
  // A product of few rows (a low-rank factor's gradient, (x A)ᵀ @ dy) reads a B computed in this
  // evaluation in place where B's rows are contiguous: its blocks read B once per 6 rows, and
  // packing it into panels (B read and written once more by a kernel of its own) cost about 3
  // times the product. A weight's panels are kept, and stay.
  const B = main.inputs[1]!, sb = B.data!.strides;
  if (layout === "panel" && M <= IN_PLACE_ROWS && B.schedOrder >= 0 && sb[sb.length - 1] === 1) return "narrow";
  return layout;
}

/** Up to this many rows, a product reads a B computed in its evaluation in place (matmulVariant). */
const IN_PLACE_ROWS = 16;

/** matmulVariant for a product of M rows (a batch) and N columns, work multiply-adds in all, with panelElements floats of panels. */
function layoutFor(target: Target, M: number, N: number, work: number, panelElements: number): MatmulLayout {
  const { small, large, smallRows, smallWork, skinny } = target.matmul;
  // Panels are 16 columns wide: a B of one panel or less is read in place rather than copied into it
  // by a kernel of its own (a low-rank factor's gradient).
  const narrow = large === "panel" && N <= 16;
  const layout = M <= smallRows || narrow || work < smallWork ? small : large;
  // Rows enough for the panel kernel's blocks: they take B's few columns in place.
  if (layout === "column" && narrow && M > smallRows && work >= smallWork) return "narrow";
  // A GPU's tiles are 32 columns wide: B of 16 or fewer gets a SIMD-group per row instead.
  if (skinny && layout === large && N <= 16) return "skinny";
  if (layout === "skinny" && N > 16) return "dot";
  // Panels pad B's columns to 16: past MAX_ELEMENTS their 32-bit indices would overflow.
  return layout === "panel" && panelElements > MAX_ELEMENTS ? "column" : layout;
}

/**
 * Whether the shared device runs a product of `rows` rows in all, M of them a batch, by a 2-D B
 * of `depth` rows and `columns` columns with the panel kernel, which reads B's panels alone.
 */
export function readsPanels(M: number, rows: number, columns: number, depth: number): boolean {
  return layoutFor(targetOf(memory.device), M, columns, rows * columns * depth, Math.ceil(columns / 16) * depth * 16) === "panel";
}

/**
 * Whether n is better computed as its base's memory at other strides: a chain of uncomputed
 * views and reshapes, none over more elements than it shows (a slice would have its whole base
 * computed), down to an uncomputed node that reads no row reduction (those are planned as row
 * kernels, views and all), where either a matmul kernel can compute the base (its epilogue) or
 * the chain moves the last axis (a copy would gather across rows; a matmul reads any strides).
 * Other views stay copies: a reshape merging heads back needs its rows contiguous.
 */
function viewOfUncomputed(n: Node): boolean {
  let x = n, transposes = false;
  while (!x.data && (OPS[x.op].kind === "view" || OPS[x.op].kind === "reshape")) {
    if (x.inputs[0]!.size > x.size) return false;
    if (x.op === "permute") {
      const axes = attrsOf(x, "permute").axes;
      transposes ||= axes[axes.length - 1] !== axes.length - 1;
    }
    x = x.inputs[0]!;
  }
  if (x === n || x.data || isRowReduce(x) || pendingReductions(x).length) return false;
  return transposes || (isInline(x) && epilogueOf(x) !== null);
}

/** The code of the kernel the schedule gives node: a matmul's, a row group's, or a plain one. */
export function planOf(schedule: Schedule, node: Node): KernelCode {
  const mm = schedule.matmuls.get(node);
  if (mm) return matmulKernel(node, mm.main, mm.variant, mm.panels);
  const group = schedule.rows.get(node);
  const also = schedule.outputs.get(node);
  return group ? rowKernel(node, group, rowThreads(schedule.target, group), also, schedule.target.rowSteps) : plainKernel(node, schedule.target, also);
}

/** A kernel of the schedule, with the node it is ordered by. */
type Launch = MultiLaunch & { node: Node };

/**
 * The kernels encode() dispatches, kernels of one source over many tensors as one (emit/multi.ts).
 * Made once per schedule: asyncEval asks for them twice (the sources to compile, then to encode).
 */
function launches(schedule: Schedule): Step<Launch>[] {
  if (schedule.steps) return schedule.steps;
  const kept = schedule.kept;
  const keptCode = kept ? keptCodes(kept, schedule) : null;
  const codes = schedule.order.map((node, i) => keptCode?.[i] ?? planOf(schedule, node));
  if (kept && !keptCode) keepCodes(kept, schedule, codes);
  const launches = schedule.order.map((node, i): Launch => {
    const shares = !schedule.rows.has(node) && !schedule.matmuls.has(node) && (OPS[node.op].kind !== "kernel" || node.op === "reduce");
    return { node, code: codes[i]!, out: node.data!, shares };
  });
  schedule.steps = schedule.target.multiTensor ? multiTensor(launches) : launches.map((l) => ({ ...l, members: [l] }));
  return schedule.steps;
}

/** The sources of the kernels that encode() will dispatch. */
function kernelSources(schedule: Schedule): string[] {
  const plans = launches(schedule).flatMap(({ code: k }) => [k, ...(k.packs ?? []).map((p) => p.code)]);
  return plans.filter((k) => !k.library && k.dispatch.size.every((x) => x > 0)).map((k) => k.source);
}

/**
 * The plan's threadgroup within its pipeline's maxThreadsPerThreadgroup, which Metal lowers below
 * 1024 for kernels that use many registers; null when the plan cannot take a smaller one. Threads
 * of a row kernel stride over their row, so it takes whole SIMD groups up to the limit; kernels
 * dispatched by threads index the grid and take any shape; other threadgroup kernels cannot.
 * Pipelines report their own SIMD width (threadExecutionWidth), 32 on every Apple GPU.
 */
export function fitGroup(d: KernelCode["dispatch"], pipeline: Pipeline, rows: boolean): KernelCode["dispatch"]["group"] | null {
  const w = pipeline.threadExecutionWidth;
  // A row kernel's SIMD groups leave one partial each, which one SIMD group folds (prelude's
  // smelt_row_fold): at most w groups, so w * w threads. Then emit/rows.ts's partial[32] always
  // has room: w * w threads make w <= 32 groups below a width of 32, and 1024 threads make
  // 1024 / w <= 32 groups from 32 up.
  const limit = rows ? Math.min(pipeline.maxThreadsPerThreadgroup, w * w) : pipeline.maxThreadsPerThreadgroup;
  let [x, y, z] = d.group;
  // The simdgroup matmul spreads its 8 x 8 tiles over SIMD groups of 32 threads.
  if (d.threadgroups && !rows && w !== 32 && !d.anyWidth) return null;
  if (x * y * z <= limit) return d.group;
  if (d.whole) return null;
  if (d.anyWidth) return limit >= 32 ? [limit - (limit % 32), 1, 1] : null;
  if (rows) return [limit >= w ? limit - (limit % w) : limit, 1, 1];
  if (d.threadgroups) return null;
  while (x * y * z > limit && x > 1) x = Math.ceil(x / 2);
  while (x * y * z > limit && y > 1) y = Math.ceil(y / 2);
  while (x * y * z > limit && z > 1) z = Math.ceil(z / 2);
  return [x, y, z];
}

/** Spans between barriers numbered so far, across evaluations: encode's marks on storages. */
let spans = 0;

/**
 * Dispatches before the first commit of an evaluation, and at most between two commits. A device
 * starts on a command buffer only once it is committed: one per evaluation left it idle while the
 * whole of a training step (thousands of kernels) was encoded, and the JavaScript thread idle while
 * the device ran them. The first commit comes early so that the device starts soon; later ones
 * are further apart, each costing a submission.
 */
const FIRST_COMMIT = 32;
const MOST_PER_COMMIT = 512;

/** The command buffers an evaluation was committed in, in commit order. */
class Submission {
  constructor(readonly cmds: readonly CommandBuffer[]) {}
  /** The last one's: the device finishes command buffers in commit order. */
  get sequence(): number {
    return this.cmds.at(-1)!.sequence;
  }
  /** Every one completed (a failed one is not finished: waiting reports it). */
  get finished(): boolean {
    return this.cmds.every((c) => c.state === "completed" || c.state === "disposed");
  }
  /** Waits for each in order; throws the first failure. */
  wait(): void {
    for (const c of this.cmds) c.wait();
  }
  async completed(): Promise<void> {
    for (const c of this.cmds) await c.completed();
  }
}

/** Generates, compiles (once per structure) and encodes the scheduled kernels, committing as it goes. */
function encode(schedule: Schedule): Submission {
  const dev = memory.device;
  let cmd = dev.commandBuffer();
  const cmds: CommandBuffer[] = [];
  let dispatched = 0;
  let nextCommit = FIRST_COMMIT;
  stats.evaluations++;
  const commit = () => {
    cmd.commit();
    stats.commandBuffers++;
    cmds.push(cmd);
  };
  // The span since the last barrier, numbered across evaluations (Storage.writtenIn, readIn). A
  // kernel's output may be memory that earlier kernels of this command buffer wrote and read
  // (lifetimes.ts), so writing it waits for them as reading it would.
  let span = ++spans;
  const read: Storage[] = [];
  const written: Storage[] = [];
  const put = (k: KernelCode, out: Storage, node: Node, what: string, fused: boolean, rows = false): boolean => {
    const op = node.op;
    const outs = k.outputs;
    let barrier = out.writtenIn === span || out.readIn === span;
    written.push(out);
    for (const d of k.inputs) {
      const r = d.storage;
      if (r.buffer.device !== dev) {
        const why = r.buffer.device.lost ?? "it was disposed";
        throw new SmeltError(`eval: ${op} reads a tensor whose memory was on a device that is gone (${why}); compute it again from its sources`);
      }
      if (r.writtenIn === span) barrier = true;
      read.push(r);
    }
    if (outs) {
      for (const d of outs) {
        const s = d.storage;
        if (s.writtenIn === span || s.readIn === span) barrier = true;
        written.push(s);
      }
    }
    if (barrier) {
      cmd.barrier();
      span = ++spans;
    }
    for (const d of k.inputs) d.storage.readIn = span;
    if (k.params.byteLength > MAX_PARAM_BYTES) {
      throw new SmeltError(`eval: the kernel for ${op} needs ${k.params.byteLength} bytes of parameters, over ${MAX_PARAM_BYTES}`);
    }
    const d = k.dispatch;
    if (d.size.every((x) => x > 0)) {
      const lib = k.library;
      const pipeline = lib ? libraryPipeline(k.source, lib.entry) : pipelineFor(k.source);
      const group = fitGroup(d, pipeline, rows);
      if (!group) return false;
      if (lib) {
        const key = lib.key ?? { buffer: k.inputs[0]!.storage.buffer, offset: k.inputs[0]!.offset * 4 };
        const args = [key, out.buffer, k.params] as never;
        if (d.threadgroups) cmd.dispatchThreadgroups(pipeline, { args, threadgroups: d.size, threadgroup: group });
        else cmd.dispatchThreads(pipeline, { args, grid: d.size, threadgroup: group });
      } else {
        const buffers = [out.buffer];
        for (const x of k.inputs) buffers.push(x.storage.buffer);
        if (outs) for (const x of outs) buffers.push(x.storage.buffer);
        cmd.dispatchKernel(d.threadgroups ? REC_DISPATCH_THREADGROUPS : REC_DISPATCH_THREADS, pipeline, d.size, group, k.params, buffers);
      }
      stats.kernelsDispatched++;
      if (fused) stats.fusedGroups++;
      if (profiling()) {
        // Alone in its command buffer, waited for: its time is its own.
        const t0 = performance.now();
        commit();
        cmd.wait();
        recordKernel(kernelLabel(node, what), performance.now() - t0);
        cmd = dev.commandBuffer();
        span = ++spans;
      } else if (++dispatched === nextCommit) {
        commit();
        cmd = dev.commandBuffer();
        span = ++spans;
        nextCommit += Math.min(nextCommit, MOST_PER_COMMIT);
      }
    }
    out.writtenIn = span;
    if (outs) for (const x of outs) x.storage.writtenIn = span;
    return true;
  };
  const single = (node: Node, k: KernelCode) => {
    for (const p of k.packs ?? []) put(p.code, p.out, node, "pack", false);
    const fused = node.schedInlineCount > 1;
    const mm = schedule.matmuls.get(node);
    const rows = schedule.rows.has(node);
    if (put(k, node.data!.storage, node, mm ? `matmul ${mm.variant}` : rows ? "row" : "kernel", fused, rows)) return;
    // A row kernel whose threads each keep a fixed number of steps loops over the row instead.
    const group = schedule.rows.get(node);
    if (group && put(rowKernel(node, group, rowThreads(schedule.target, group), schedule.outputs.get(node)), node.data!.storage, node, "row", fused, true)) return;
    // The GPU matmuls are built around threadgroups of 128 or 256 threads, which a pipeline heavy
    // in registers may not take: the dot kernel (any multiple of 32 threads) computes the same
    // product.
    const limit = pipelineFor(k.source).maxThreadsPerThreadgroup;
    if (!mm || !k.dispatch.threadgroups || !put(matmulKernel(node, mm.main, "dot", null), node.data!.storage, node, "matmul dot", fused)) {
      throw new SmeltError(`eval: the kernel for ${node.op} needs ${k.dispatch.group.join(" x ")} threads per threadgroup; its pipeline allows ${limit}`);
    }
  };
  for (const step of launches(schedule)) {
    // A multi-tensor dispatch whose pipeline takes smaller threadgroups runs its members one by one.
    const fused = step.members.some((m) => m.node.schedInlineCount > 1);
    if (step.members.length > 1 && put(step.code, step.out.storage, step.members[0]!.node, `multi-tensor x${step.members.length}`, fused)) continue;
    for (const { node, code } of step.members) single(node, code);
  }
  commit();
  // Disposed while the device still uses them (asyncEval), they must not be reused before it is
  // done; the CPU reads what it writes once it is done.
  for (const s of read) s.busy = cmd.sequence;
  for (const s of written) s.busy = s.written = cmd.sequence;
  return new Submission(cmds);
}

function settle(schedule: Schedule, failed: boolean): void {
  releasePanels(schedule, failed);
  const nodes = schedule.nodes();
  schedule.steps = null;
  schedule.outputs.clear();
  schedule.views.length = 0;
  for (const n of nodes) n.schedOrder = -1;
  if (!failed) {
    for (const n of nodes) n.settleInputs();
    return;
  }
  // What a failed command buffer was to compute is unknown: the nodes go back to uncomputed,
  // with their inputs, so that reading one evaluates it again (or reports why it cannot).
  for (const n of nodes) {
    n.data?.storage.release();
    n.data = null;
  }
}

/**
 * Scratch memory of packed matmul operands, given back once the kernels that use it are done;
 * panels this evaluation was to fill for keeping are dropped if it failed.
 */
function releasePanels(schedule: Schedule, failed: boolean): void {
  for (const { panels } of schedule.matmuls.values()) {
    if (failed) panels?.keeper?.dropDerived();
    else panels?.keeper?.giveBackIfServed();
    panels?.b.release();
  }
  schedule.matmuls.clear();
}

/** Each node to compute under roots gets its consumers among them (schedConsumers). */
function countConsumers(roots: readonly Node[]): void {
  const nodes = postOrder(roots, uncomputed, "schedMark");
  for (const n of nodes) n.schedConsumers = 0;
  for (const n of nodes) for (const i of n.inputs) if (!i.data) i.schedConsumers++;
}

/** Decides the kernels that compute the nodes (exported for the scheduling benchmark). */
export function schedule(nodes: readonly Node[]): Schedule {
  releasePendingMarks();
  const s = new Schedule(nodes);
  const walk = describe(nodes);
  if (walk && replay(walk, s)) return s;
  try {
    countConsumers(nodes);
    for (const n of byDepth(nodes)) s.require(n);
    s.mergeOutputs();
    const panels = (n: Node) => s.matmuls.get(n)?.panels;
    bindMemory(s.order.map((n) => ({ writes: [n, ...(s.outputs.get(n) ?? [])], scratch: panels(n) ? [panels(n)!] : [] })), s.views, nodes);
  } catch (e) {
    // Nothing was computed: give the memory back so no node claims data it does not have.
    releasePanels(s, true);
    for (const n of s.nodes()) {
      n.data!.storage.release();
      n.data = null;
      n.schedOrder = -1;
    }
    throw e;
  }
  if (walk) keep(walk, s);
  return s;
}

/** Runs a schedule's kernels and waits for the device. */
export function execute(s: Schedule): void {
  if (s.order.length === 0) return;
  let failed = true;
  try {
    // Pending asyncEval evaluations were scheduled first: their kernels are committed ahead of
    // this one's, so that commit order never runs against the order nodes were given memory.
    encodePending();
    encode(s).wait();
    failed = false;
  } finally {
    settle(s, failed);
  }
}

/** Computes the nodes and waits for the device. */
export function evalNodes(nodes: readonly Node[]): void {
  execute(schedule(nodes));
}

/**
 * asyncEval's evaluations until they resolve, in the order they were scheduled. Their nodes get
 * memory, and so count as computed, when they are scheduled, before their kernels are compiled
 * and encoded. Without this, toArray() of such a node before the evaluation resolved found
 * nothing to compute and copied the buffer out before any kernel wrote it (on every backend; on
 * the host it read the memory directly).
 */
interface Pending {
  readonly schedule: Schedule;
  cmd: Submission | null;
  /** What encoding it threw when another evaluation encoded it: its own caller rethrows it. */
  error: unknown;
}
const pending: Pending[] = [];

/** Encodes (and so commits) every pending evaluation not yet encoded, in schedule order. */
function encodePending(): void {
  for (const p of pending) {
    if (p.cmd || p.error !== undefined) continue;
    try {
      p.cmd = encode(p.schedule);
    } catch (e) {
      p.error = e;
    }
  }
}

/**
 * A graph built on the results of a pending asyncEval sees its nodes as computed inputs: their
 * schedule's marks (its kernel order) would otherwise be read as this evaluation's own. Encoding
 * first is what lets the marks go, since only encoding reads them, and it keeps commit order the
 * order the evaluations were scheduled in. An evaluation whose encoding failed keeps its marks:
 * its own caller reports the failure, and anything built on it fails to schedule.
 */
function releasePendingMarks(): void {
  if (pending.length === 0) return;
  encodePending();
  for (const p of pending) if (p.cmd) for (const n of p.schedule.nodes()) n.schedOrder = -1;
}

/**
 * Before the CPU reads s: waits for the pending evaluations up to the last one that writes it.
 * Not for later ones that only read it: generation reads a step's token while the next step,
 * which reads that token too, is already on the device.
 */
export function awaitStorage(s: Storage): void {
  if (pending.length === 0) return;
  encodePending();
  // The device finishes command buffers in commit order, so waiting for the latest one not after
  // s.written covers the one that wrote s.
  let last: Submission | undefined;
  for (const { cmd } of pending) if (cmd && cmd.sequence <= s.written && (!last || cmd.sequence > last.sequence)) last = cmd;
  // wait() throws when it failed: the reader gets that failure rather than the buffer's old bytes.
  if (last && !last.finished) last.wait();
}

/** Computes the nodes; resolves when the device is done. */
export async function evalNodesAsync(nodes: readonly Node[]): Promise<void> {
  const s = schedule(nodes);
  if (s.order.length === 0) return;
  // The user may dispose these tensors while the evaluation awaits (compiling, then the device):
  // a hold like a handle's keeps each node and its memory until the evaluation is settled.
  const held = s.nodes();
  for (const n of held) n.tensors++;
  const p: Pending = { schedule: s, cmd: null, error: undefined };
  pending.push(p);
  let failed = true;
  try {
    // The kernels the evaluation lacks compile together, off the JS thread, before encoding.
    await compileMissing(kernelSources(s));
    // Evaluations scheduled before this one commit first, since this one may read what they compute.
    encodePending();
    if (p.error !== undefined) throw p.error;
    await p.cmd!.completed();
    failed = false;
  } finally {
    pending.splice(pending.indexOf(p), 1);
    settle(s, failed);
    for (const n of held) {
      n.tensors--;
      n.collect();
    }
  }
}
