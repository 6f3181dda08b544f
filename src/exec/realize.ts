/**
 * Evaluation: turns the nodes asked for into kernels, encodes them all into one command buffer
 * (with a barrier only before a kernel that reads what an earlier one in it wrote), commits and
 * waits. Inline nodes (elementwise ops, casts, views, generators) are fused into the kernel of
 * whatever consumes them, so a chain of them becomes a single kernel and its intermediates get no
 * memory; reductions take their inline producers into their loads the same way.
 */
import { SmeltError } from "../errors.ts";
import type { Pipeline } from "../runtime/resources.ts";
import { type Target, targetOf } from "../runtime/target.ts";
import { itemsize } from "../graph/dtype.ts";
import { contiguousStrides, MAX_ELEMENTS } from "../graph/shape.ts";
import type { Node } from "../graph/node.ts";
import { OPS } from "../graph/op.ts";
import type { KernelCode } from "./emit/builder.ts";
import { isInline, matmulDepth } from "./plan/inline.ts";
import { isRowReduce, pendingReductions, type RowGroup, rowGroup, splitRow } from "./plan/rows.ts";
import { epilogueOf, type MatmulVariant, panelBytes, type Panels, pendingMatmuls, summedProduct } from "./plan/matmul.ts";
import { matmulKernel, plainKernel, rowKernel } from "./plans.ts";
import { memory, type Storage, stats } from "./memory.ts";
import { compileMissing, libraryPipeline, pipelineFor } from "./kernels.ts";

// A fused kernel computes at most this many inline nodes and reads at most this many computed
// ones (Metal has 31 buffer slots); past either, the widest inline input gets a kernel of its own.
// Long chains thus become repeated kernels of the same structure, which the cache compiles once.
// The first bounds a kernel's source and compile time (host: about 0.2 s plus 1.5 ms a node);
// below it, every kernel more costs each evaluation a dispatch and a pass over memory.
const MAX_INLINE = 128;
const MAX_LEAVES = 24;
/** Stamps for Node.schedMark: each walk over nodes (postOrder, weigh) marks what it has seen with a new one. */
let marks = 0;

/**
 * Scheduling: decides which nodes get a kernel (and memory), in an order where every kernel
 * comes after the kernels it reads. Linear in the size of the graph.
 */
class Schedule {
  readonly target = targetOf(memory.device);
  readonly order: Node[] = [];
  /** Nodes computed by a row kernel, with the reductions it computes along the way. */
  readonly rows = new Map<Node, RowGroup>();
  /** Nodes computed by a matmul kernel, as its epilogue: the matmul, its kernel and the memory its operands are packed into. */
  readonly matmuls = new Map<Node, { main: Node; variant: MatmulVariant; panels: Panels | null }>();

  require(root: Node): void {
    for (const n of postOrder(root)) {
      if (n.data) continue;
      if (OPS[n.op].readsComputedInputs) for (const i of n.inputs) if (!i.data) this.materialize(i);
      const inline = isInline(n);
      if (inline || OPS[n.op].kind === "kernel") this.weigh(n, inline);
      // Row reductions and matmuls wait: the kernel of whatever reads them may compute them.
      if (!inline && !isRowReduce(n) && n.op !== "matmul") this.materialize(n);
    }
    if (!root.data) this.materialize(root);
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
      const mark = ++marks;
      for (const i of n.inputs) {
        if (i.data || i.consumers > 1) {
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
      if ((cost <= MAX_INLINE && leaves.length <= MAX_LEAVES) || !widest) {
        n.schedInlineCount = cost;
        n.schedReads = leaves;
        n.schedPlansAround = waits;
        return;
      }
      this.materialize(widest);
    }
  }

  private materialize(n: Node): void {
    if (n.data) return;
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
        if (partial) this.materialize(partial);
      }
    }
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

  /**
   * Memory for the panels of matmul main computed by n's kernel. The panels of a B computed
   * before this evaluation (a weight) are kept with it, since its contents never change: later
   * evaluations skip the copy. Each panel storage holds a reference until the evaluation ends.
   */
  private panels(n: Node, main: Node): Panels {
    const B = main.inputs[1]!;
    let b: Storage, fill = true, keeper: Storage | null = null;
    if (B.schedOrder < 0) {
      const d = B.data!;
      const kept = d.storage.derive(`panels ${B.dtype} ${d.offset} ${d.strides} ${B.shape}`, () => memory.allocate(panelBytes(main), "matmul"));
      b = kept.storage.retain();
      fill = kept.fresh;
      if (fill) keeper = d.storage;
    } else {
      b = memory.allocate(panelBytes(main), "matmul");
    }
    const summed = summedProduct(n, main);
    return { b, fill, keeper, summed: summed && { ...summed, panels: memory.allocate(panelBytes(summed.product), "matmul") } };
  }

  private allocate(n: Node): void {
    const storage: Storage = memory.allocate(n.size * itemsize(n.dtype), n.op);
    n.data = { storage, strides: contiguousStrides(n.shape), offset: 0 };
    n.schedReads = []; // planned: the list would only keep nodes alive
    n.schedOrder = this.order.length;
    this.order.push(n);
  }
}

/** The uncomputed nodes n depends on, inputs before their consumers, n last (iteratively). */
function postOrder(root: Node): Node[] {
  const out: Node[] = [];
  const seen = ++marks;
  root.schedMark = seen;
  // The stack: nodes, and the next input of each to visit.
  const stack = [root];
  const next = [0];
  while (stack.length) {
    const top = stack.length - 1;
    const n = stack[top]!, i = next[top]!;
    if (i < n.inputs.length && !n.data) {
      next[top] = i + 1;
      const c = n.inputs[i]!;
      if (!c.data && c.schedMark !== seen) {
        c.schedMark = seen;
        stack.push(c);
        next.push(0);
      }
    } else {
      stack.pop();
      next.pop();
      out.push(n);
    }
  }
  return out;
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
  const M = main.shape[main.shape.length - 2]!;
  const { small, large, smallRows, smallWork } = target.matmul;
  const layout = M <= smallRows || main.size * matmulDepth(main) < smallWork ? small : large;
  // Panels pad B's columns to 16: past MAX_ELEMENTS their 32-bit indices would overflow.
  return layout === "panel" && panelBytes(main) / 4 > MAX_ELEMENTS ? "column" : layout;
}

/** The code of the kernel the schedule gives node: a matmul's, a row group's, or a plain one. */
export function planOf(schedule: Schedule, node: Node): KernelCode {
  const mm = schedule.matmuls.get(node);
  if (mm) return matmulKernel(node, mm.main, mm.variant, mm.panels);
  const group = schedule.rows.get(node);
  return group ? rowKernel(node, group, rowThreads(schedule.target, group)) : plainKernel(node);
}

/** The sources of the kernels that encode() will dispatch. */
function kernelSources(schedule: Schedule): string[] {
  const plans = schedule.order.flatMap((n) => {
    const k = planOf(schedule, n);
    return [k, ...(k.packs ?? []).map((p) => p.code)];
  });
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
  if (d.threadgroups && !rows && w !== 32) return null;
  if (x * y * z <= limit) return d.group;
  if (rows) return [limit >= w ? limit - (limit % w) : limit, 1, 1];
  if (d.threadgroups) return null;
  while (x * y * z > limit && x > 1) x = Math.ceil(x / 2);
  while (x * y * z > limit && y > 1) y = Math.ceil(y / 2);
  while (x * y * z > limit && z > 1) z = Math.ceil(z / 2);
  return [x, y, z];
}

/** Generates, compiles (once per structure) and encodes the scheduled kernels into one command buffer. */
function encode(schedule: Schedule) {
  const dev = memory.device;
  const cmd = dev.commandBuffer();
  let written = new Set<Storage>();
  const used: Storage[] = [];
  const put = (k: KernelCode, out: Storage, op: string, fused: boolean, rows = false): boolean => {
    const reads = k.inputs.map((d) => d.storage);
    for (const r of reads) {
      if (r.buffer.device !== dev) {
        const why = r.buffer.device.lost ?? "it was disposed";
        throw new SmeltError(`eval: ${op} reads a tensor whose memory was on a device that is gone (${why}); compute it again from its sources`);
      }
    }
    used.push(out, ...reads);
    if (reads.some((s) => written.has(s))) {
      cmd.barrier();
      written = new Set();
    }
    const lib = k.library;
    const args: unknown[] = lib
      ? [lib.key ?? { buffer: k.inputs[0]!.storage.buffer, offset: k.inputs[0]!.offset * 4 }, out.buffer, k.params]
      : [k.params, out.buffer, ...k.inputs.map((d) => d.storage.buffer)];
    if (k.params.byteLength > 4096) {
      throw new SmeltError(`eval: the kernel for ${op} needs ${k.params.byteLength} bytes of parameters, over 4096`);
    }
    const d = k.dispatch;
    if (d.size.every((x) => x > 0)) {
      const pipeline = lib ? libraryPipeline(k.source, lib.entry) : pipelineFor(k.source);
      const group = fitGroup(d, pipeline, rows);
      if (!group) return false;
      if (d.threadgroups) cmd.dispatchThreadgroups(pipeline, { args: args as never, threadgroups: d.size, threadgroup: group });
      else cmd.dispatchThreads(pipeline, { args: args as never, grid: d.size, threadgroup: group });
      stats.kernelsDispatched++;
      if (fused) stats.fusedGroups++;
    }
    written.add(out);
    return true;
  };
  for (const node of schedule.order) {
    const k = planOf(schedule, node);
    for (const p of k.packs ?? []) put(p.code, p.out, node.op, false);
    const fused = node.schedInlineCount > 1;
    if (put(k, node.data!.storage, node.op, fused, schedule.rows.has(node))) continue;
    // Only the simdgroup matmul is built around its threadgroup (4 SIMD groups): the dot kernel
    // computes the same product with threadgroups of any size.
    const mm = schedule.matmuls.get(node);
    const limit = pipelineFor(k.source).maxThreadsPerThreadgroup;
    if (mm?.variant !== "simd" || !put(matmulKernel(node, mm.main, "dot", null), node.data!.storage, node.op, fused)) {
      throw new SmeltError(`eval: the kernel for ${node.op} needs ${k.dispatch.group.join(" x ")} threads per threadgroup; its pipeline allows ${limit}`);
    }
  }
  cmd.commit();
  stats.commandBuffers++;
  // Disposed while the device still uses them (asyncEval), they must not be reused before it is done.
  for (const s of used) s.busy = cmd.sequence;
  return cmd;
}

function settle(schedule: Schedule, failed: boolean): void {
  releasePanels(schedule, failed);
  for (const n of schedule.order) n.schedOrder = -1;
  if (!failed) {
    for (const n of schedule.order) n.settleInputs();
    return;
  }
  // What a failed command buffer was to compute is unknown: the nodes go back to uncomputed,
  // with their inputs, so that reading one evaluates it again (or reports why it cannot).
  for (const n of schedule.order) {
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
    panels?.b.release();
    panels?.summed?.panels.release();
  }
  schedule.matmuls.clear();
}

/** Decides the kernels that compute the nodes (exported for the scheduling benchmark). */
export function schedule(nodes: readonly Node[]): Schedule {
  const s = new Schedule();
  try {
    for (const n of nodes) s.require(n);
  } catch (e) {
    // Nothing was computed: give the memory back so no node claims data it does not have.
    releasePanels(s, true);
    for (const n of s.order) {
      n.data!.storage.release();
      n.data = null;
      n.schedOrder = -1;
    }
    throw e;
  }
  return s;
}

/** Runs a schedule's kernels and waits for the device. */
export function execute(s: Schedule): void {
  if (s.order.length === 0) return;
  let failed = true;
  try {
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

/** Computes the nodes; resolves when the device is done. */
export async function evalNodesAsync(nodes: readonly Node[]): Promise<void> {
  const s = schedule(nodes);
  if (s.order.length === 0) return;
  // The user may dispose these tensors while the evaluation awaits (compiling, then the device):
  // a hold like a handle's keeps each node and its memory until the evaluation is settled.
  for (const n of s.order) n.tensors++;
  let failed = true;
  try {
    // The kernels the evaluation lacks compile together, off the JS thread, before encoding.
    await compileMissing(kernelSources(s));
    await encode(s).completed();
    failed = false;
  } finally {
    settle(s, failed);
    for (const n of s.order) {
      n.tensors--;
      n.collect();
    }
  }
}
