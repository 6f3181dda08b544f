/**
 * The lazy graph: a Node is one op's result, with its inputs, shape and dtype. A node that has
 * been computed holds `data`: a storage and the strides and offset (in elements) at which its
 * elements lie there, so views of computed data are index math over the same storage.
 *
 * Lifetime: a node is kept alive by the Tensor handles that show it and by the uncomputed nodes
 * that read it. When both counts reach zero it gives back its storage and lets go of its inputs.
 */
import type { DType } from "./dtype.ts";
import type { Storage } from "../exec/memory.ts";
import type { AttrsOf, Op } from "./op.ts";
import { checkSize } from "./shape.ts";

export interface Data {
  storage: Storage;
  strides: number[];
  offset: number;
}

const NONE: readonly Node[] = [];
const NO_ATTRS = Object.freeze({}) as AttrsOf<Op>;

/** The attributes argument: required for ops that have some, optional for the others. */
type AttrsArg<O extends Op> = Record<string, never> extends AttrsOf<O> ? [attrs?: AttrsOf<O>] : [attrs: AttrsOf<O>];

/**
 * Nodes the backward walk treats as constants: those made by stopGradient, and the shifts by the
 * row max inside softmax, logSoftmax and logsumexp, which change no result, so a gradient through
 * them would be exactly zero and only cost a pass over the row.
 */
export const gradientStops = new WeakSet<Node>();

/** Transforms being traced (nested: grad of grad), and the computed nodes whose inputs they hold. */
export const tracing = { depth: 0, held: [] as Node[] };

/** Cuts the edges held while tracing, once no transform needs them (computed nodes only). */
export function releaseHeld(): void {
  const held = tracing.held;
  tracing.held = [];
  for (const n of held) if (n.data) n.detachInputs();
}

let marks = 0;
/**
 * A stamp no walk over nodes has used: a walk marks what it has seen with one (Node.schedMark,
 * Node.lifeMark), which spares it a Set or Map keyed by node.
 */
export function newMark(): number {
  return ++marks;
}

export class Node<O extends Op = Op> {
  data: Data | null = null;
  tensors = 0;
  consumers = 0;
  // Scratch of the scheduler (src/exec/realize.ts), valid while it plans one evaluation.
  /** The inline nodes this node's kernel would compute. */
  schedInlineCount = 0;
  /** The nodes this node's kernel would read from memory. */
  schedReads: readonly Node[] = NONE;
  /** The stamp of the last walk over the graph that saw this node. */
  schedMark = 0;
  /** The node's number in the walk whose stamp schedMark holds, where that walk numbers nodes (plans.ts). */
  schedId = 0;
  /** Whether the node's kernel may have row reductions or matmuls to plan around: until weighed, yes. */
  schedPlansAround = true;
  /** Whether the node's inline code would compute a matmul inline (a dot product per element). */
  schedDots = false;
  /**
   * The node's consumers among the nodes the evaluation computes. `consumers` also counts nodes
   * outside it, among them dropped ones that the garbage collector has yet to finalize: planned
   * on that count, the kernels would depend on when it ran.
   */
  schedConsumers = 0;
  /** While an evaluation is pending: this node's place in its kernel order (else -1). */
  schedOrder = -1;
  // Scratch of the memory planner (src/exec/lifetimes.ts), valid under its stamp in lifeMark.
  /** The stamp of the last walk of the memory planner that saw this node. */
  lifeMark = 0;
  /** A count that walk keeps per node (a depth, the edges let go of). */
  lifeCount = 0;
  /** The root whose walk reached this node first, as its index among the roots. */
  lifeOwner = -1;
  constructor(op: O, inputs: Node[], shape: number[], dtype: DType, ...attrs: AttrsArg<O>);
  constructor(
    readonly op: O,
    public inputs: Node[],
    readonly shape: number[],
    readonly dtype: DType,
    readonly attrs: AttrsOf<O> = NO_ATTRS as AttrsOf<O>,
  ) {
    // Ops whose shape no shape.ts check sees (concat, pad, take, matmul, arange) are caught here.
    checkSize(op, shape);
    for (const i of inputs) i.consumers++;
  }

  get size(): number {
    let n = 1;
    for (const d of this.shape) n *= d;
    return n;
  }

  /**
   * Called once `data` is set and the device is done with the inputs. While a transform traces
   * (src/autograd), the edges are the graph its backward pass walks: they are held until the
   * outermost transform has built that pass, then cut by releaseHeld().
   */
  settleInputs(): void {
    if (tracing.depth > 0) tracing.held.push(this);
    else this.detachInputs();
  }

  /** Lets go of the inputs: they are not needed any more. */
  detachInputs(): void {
    const inputs = this.inputs;
    this.inputs = [];
    for (const i of inputs) {
      i.consumers--;
      i.collect();
    }
  }

  /**
   * Frees what nothing refers to any more. A loop, not recursion: a lazy chain as long as a
   * training run (a loss summed over every step) would otherwise overflow the stack.
   */
  collect(): void {
    if (this.tensors > 0 || this.consumers > 0) return;
    const free: Node[] = [this];
    while (free.length) {
      const n = free.pop()!;
      if (n.data) {
        n.data.storage.release();
        n.data = null;
      }
      const inputs = n.inputs;
      n.inputs = [];
      for (const i of inputs) if (--i.consumers === 0 && i.tensors === 0) free.push(i);
    }
  }
}
