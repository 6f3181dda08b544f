/**
 * Evaluation: turns the nodes asked for into kernels, encodes them all into one command buffer
 * (with a barrier only before a kernel that reads what an earlier one in it wrote), commits and
 * waits. Inline nodes (elementwise ops, casts, views, generators) are fused into the kernel of
 * whatever consumes them, so a chain of them becomes a single kernel and its intermediates get no
 * memory; reductions take their inline producers into their loads the same way.
 */
import { SmeltError } from "../errors.ts";
import type { Pipeline } from "../runtime/resources.ts";
import { itemsize } from "../tensor/dtype.ts";
import { contiguousStrides } from "../tensor/shape.ts";
import type { Node } from "../tensor/node.ts";
import type { KernelPlan } from "./codegen.ts";
import { boundaryKernels, elementwiseKernel, isInline, readsComputedInputs } from "./codegen.ts";
import { memory, type Storage, stats } from "./memory.ts";

const pipelines = new Map<string, Pipeline>();

function pipelineFor(source: string): Pipeline {
  let p = pipelines.get(source);
  if (p) {
    stats.kernelCacheHits++;
    return p;
  }
  stats.kernelCompiles++;
  p = memory.device.compile(source).pipeline("k");
  pipelines.set(source, p);
  return p;
}

// Kernels a node's consumers would otherwise read through more than this many leaves are split.
const MAX_LEAVES = 24;

interface Step {
  node: Node;
  plan: KernelPlan;
  fused: number;
}

class Plan {
  steps: Step[] = [];
  computed: Node[] = [];

  /** Makes n computed (in this plan): its inputs first, then its kernel. */
  require(n: Node): void {
    if (n.data) return;
    if (readsComputedInputs.has(n.op)) for (const i of n.inputs) this.require(i);
    else this.requireLeaves(n, new Set());
    const size = n.size;
    const storage: Storage = memory.allocate(size * itemsize(n.dtype), n.op);
    const build = boundaryKernels[n.op] ?? elementwiseKernel;
    const plan = build(n);  // before n has data: its kernel computes n, it does not load it
    n.data = { storage, strides: contiguousStrides(n.shape), offset: 0 };
    this.steps.push({ node: n, plan, fused: countInline(n) });
    this.computed.push(n);
  }

  /** Computes every non-inline node that n's kernel will read, splitting kernels with too many leaves. */
  private requireLeaves(n: Node, seen: Set<Node>): void {
    for (const i of n.inputs) {
      if (seen.has(i) || i.data) continue;
      seen.add(i);
      if (isInline(i)) this.requireLeaves(i, seen);
      else this.require(i);
    }
    if (leafCount(n) > MAX_LEAVES) {
      const widest = [...n.inputs].filter(isInline).sort((a, b) => leafCount(b) - leafCount(a))[0];
      if (widest) this.require(widest);
    }
  }
}

function leafCount(n: Node, seen = new Set<Node>()): number {
  let c = 0;
  for (const i of n.inputs) {
    if (seen.has(i)) continue;
    seen.add(i);
    c += isInline(i) ? leafCount(i, seen) : 1;
  }
  return c;
}

function countInline(n: Node, seen = new Set<Node>()): number {
  let c = 1;
  for (const i of n.inputs)
    if (!seen.has(i) && isInline(i)) {
      seen.add(i);
      c += countInline(i, seen);
    }
  return c;
}

/** Encodes the plan's kernels into one command buffer. */
function encode(plan: Plan) {
  const dev = memory.device;
  const cmd = dev.commandBuffer();
  let written = new Set<Storage>();
  for (const step of plan.steps) {
    const { plan: k, node } = step;
    const reads = k.inputs.map((d) => d.storage);
    if (reads.some((s) => written.has(s))) {
      cmd.barrier();
      written = new Set();
    }
    const out = node.data!.storage;
    const args: unknown[] = [k.params, out.buffer, ...k.inputs.map((d) => d.storage.buffer)];
    if (k.params.byteLength > 4096) {
      throw new SmeltError(`eval: the kernel for ${node.op} needs ${k.params.byteLength} bytes of parameters, over 4096`);
    }
    if (k.threads > 0) {
      cmd.dispatchThreads(pipelineFor(k.source), { args: args as never, grid: [k.threads, 1, 1], threadgroup: [Math.min(256, k.threads), 1, 1] });
      stats.kernelsDispatched++;
      if (step.fused > 1) stats.fusedGroups++;
    }
    written.add(out);
  }
  cmd.commit();
  stats.commandBuffers++;
  return cmd;
}

function settle(plan: Plan): void {
  for (const n of plan.computed) n.detachInputs();
}

/** Computes the nodes and waits for the device. */
export function evalNodes(nodes: readonly Node[]): void {
  const plan = new Plan();
  for (const n of nodes) plan.require(n);
  if (plan.steps.length === 0) return;
  const cmd = encode(plan);
  try {
    cmd.wait();
  } finally {
    settle(plan);
  }
}

/** Computes the nodes; resolves when the device is done. */
export async function evalNodesAsync(nodes: readonly Node[]): Promise<void> {
  const plan = new Plan();
  for (const n of nodes) plan.require(n);
  if (plan.steps.length === 0) return;
  const cmd = encode(plan);
  try {
    await cmd.completed();
  } finally {
    settle(plan);
  }
}
