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
import { checkSize } from "./shape.ts";

export interface Data {
  storage: Storage;
  strides: number[];
  offset: number;
}

export type Attrs = Record<string, unknown>;

const NONE: readonly Node[] = [];
const NO_ATTRS: Attrs = Object.freeze({});

export class Node {
  data: Data | null = null;
  tensors = 0;
  consumers = 0;
  // Scratch of the scheduler (src/exec/realize.ts), valid while it plans one evaluation.
  cost = 0;
  leaves: readonly Node[] = NONE;
  mark = 0;
  /** Whether the node's kernel may have row reductions or matmuls to plan around: until weighed, yes. */
  waits = true;
  /** While an evaluation is pending: this node's place in its kernel order (else -1). */
  step = -1;
  constructor(
    readonly op: string,
    public inputs: Node[],
    readonly shape: number[],
    readonly dtype: DType,
    readonly attrs: Attrs = NO_ATTRS,
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

  /** Called once `data` is set and the device is done with the inputs: they are not needed any more. */
  detachInputs(): void {
    const inputs = this.inputs;
    this.inputs = [];
    for (const i of inputs) {
      i.consumers--;
      i.collect();
    }
  }

  /** Frees what nothing refers to any more. */
  collect(): void {
    if (this.tensors > 0 || this.consumers > 0) return;
    if (this.data) {
      this.data.storage.release();
      this.data = null;
    }
    this.detachInputs();
  }
}
