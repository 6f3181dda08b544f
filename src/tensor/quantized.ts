/**
 * A weight kept in a GGML block-quantized format: its blocks live on the device as a uint8
 * tensor, and it has the logical shape of the float tensor it stands for. Row-major like any
 * tensor: the last axis is the one the blocks run along (GGUF's ne[0]).
 */
import { SmeltError } from "../errors.ts";
import { Node, tracing } from "../graph/node.ts";
import type { QuantFormat } from "../graph/op.ts";
import { QUANT_BLOCKS, quantBytes } from "../graph/quant.ts";
import { checkShape, contiguousStrides, isRowContiguous } from "../graph/shape.ts";
import { evalNodes, readsPanels } from "../exec/realize.ts";
import { panelKeyOf } from "../exec/plan/matmul.ts";
import { targetOf } from "../runtime/target.ts";
import { memory, stats } from "../exec/memory.ts";
import { isFloating } from "../graph/dtype.ts";
import { astype, fromBytes, matmul, transpose } from "./ops.ts";
import { composite, Tensor } from "./tensor.ts";

export const QUANT_FORMATS = Object.keys(QUANT_BLOCKS) as QuantFormat[];

export class QuantizedTensor {
  private constructor(
    /** The blocks, in file order: uint8 of shape [bytes]. */
    readonly blocks: Tensor,
    readonly format: QuantFormat,
    readonly shape: readonly number[],
  ) {}

  /** From the bytes of the blocks (one copy onto the device), checking they fit the shape. */
  static fromBytes(bytes: ArrayBuffer | ArrayBufferView, shape: readonly number[], format: QuantFormat): QuantizedTensor {
    const op = "QuantizedTensor.fromBytes";
    if (!QUANT_FORMATS.includes(format)) {
      throw new SmeltError(`${op}: unknown format ${JSON.stringify(format)} (known: ${QUANT_FORMATS.join(", ")})`);
    }
    const s = checkShape(op, shape);
    const per = QUANT_BLOCKS[format].elements;
    const last = s.length === 0 ? 1 : s[s.length - 1]!;
    if (last % per !== 0) {
      throw new SmeltError(`${op}: the last axis of shape [${s}] must be a multiple of ${format}'s block of ${per} values`);
    }
    const want = quantBytes(format, s.reduce((a, d) => a * d, 1));
    const got = bytes.byteLength;
    if (got !== want) throw new SmeltError(`${op}: shape [${s}] of ${format} needs ${want} bytes, got ${got}`);
    return new QuantizedTensor(fromBytes(bytes, [want], "uint8"), format, s);
  }

  /**
   * Over blocks already on the device (uint8, one axis of exactly the bytes the shape needs): how
   * loaders hand on blocks they reordered with tensor ops.
   */
  static fromBlocks(blocks: Tensor, shape: readonly number[], format: QuantFormat): QuantizedTensor {
    const op = "QuantizedTensor.fromBlocks";
    if (!(blocks instanceof Tensor) || blocks.dtype !== "uint8" || blocks.ndim !== 1) throw new SmeltError(`${op}: blocks must be a 1-D uint8 tensor`);
    if (!QUANT_FORMATS.includes(format)) throw new SmeltError(`${op}: unknown format ${JSON.stringify(format)} (known: ${QUANT_FORMATS.join(", ")})`);
    const s = checkShape(op, shape);
    if ((s[s.length - 1] ?? 1) % QUANT_BLOCKS[format].elements !== 0)
      throw new SmeltError(`${op}: the last axis of shape [${s}] must be a multiple of ${format}'s block of ${QUANT_BLOCKS[format].elements} values`);
    const want = quantBytes(format, s.reduce((a, d) => a * d, 1));
    if (blocks.shape[0] !== want) throw new SmeltError(`${op}: shape [${s}] of ${format} needs ${want} bytes, got ${blocks.shape[0]}`);
    return new QuantizedTensor(blocks, format, s);
  }

  get size(): number {
    return this.shape.reduce((a, d) => a * d, 1);
  }
  get ndim(): number {
    return this.shape.length;
  }
  /** Bytes the blocks take on the device. */
  get nbytes(): number {
    return quantBytes(this.format, this.size);
  }

  /** The float32 tensor the blocks encode, computed by a kernel of its own (lazy like any op). */
  dequantize(): Tensor {
    return dequantizeBlocks(this.blocks, this.format, this.shape);
  }

  dispose(): void {
    this.blocks.dispose();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** The float32 values of blocks of the given format holding a tensor of `shape` (checked by the caller). */
export function dequantizeBlocks(blocks: Tensor, format: QuantFormat, shape: readonly number[]): Tensor {
  return new Tensor(new Node("dequantize", [blocks.node("dequantize")], [...shape], "float32", { format }));
}

/** Where the float form of blocks holding a tensor of `shape` is kept: a key of the blocks' storage. */
function floatKey(blocks: Node, format: QuantFormat, shape: readonly number[]): string | null {
  const d = blocks.data;
  return d ? `dequantized ${format} ${d.offset} ${d.strides} ${shape}` : null;
}

/** The panel keys of a kept float form [N, K]: as x @ wᵀ reads it (a forward pass), and as g @ w (its backward). */
const panelKeys = (shape: readonly number[]): [string, string] => [
  panelKeyOf("float32", 0, [1, shape[1]!], [shape[1]!, shape[0]!]),
  panelKeyOf("float32", 0, contiguousStrides(shape), shape),
];

/**
 * Keeps the float form of a frozen weight that a training step reads (under a transform: its
 * backward reads the weight too) beside its computed blocks, as derived data of their storage,
 * computing it now unless it is kept already: later steps read it as a computed tensor, so they
 * neither dequantize it again nor pack it into matmul panels again (those are kept beside it in
 * turn). Once both sets of panels are kept (the forward's and the backward's), the evaluation
 * that filled the last gives the float form's buffer back and the panels alone stay: the
 * matmuls read nothing else. Inference alone never keeps one (the float form is 6 to 8 times
 * the blocks). Derived data is kept within half the memory limit, and goes first when memory
 * runs short; a weight not kept is dequantized per step. Returns whether the float form is kept.
 */
export function keepFloat(blocks: Tensor, format: QuantFormat, shape: readonly number[]): boolean {
  const b = blocks.node("dequantize");
  const key = floatKey(b, format, shape);
  if (key === null) return false;
  const d = b.data!;
  // Kept data takes at most half the memory limit, leaving the rest to the steps. A limit lowered
  // under what is kept lets it all go, before a step holds it for its whole evaluation.
  if (memory.derivedBytes > memory.limit / 2) memory.dropDerived();
  const kept = d.storage.kept(key);
  if (kept) {
    if (kept.bound || kept.servedBy!.every((k) => kept.kept(k) !== undefined)) return true;
    // Given back, and memory running short took its panels since: dequantized again.
    d.storage.dropDerived();
  }
  const bytes = 3 * 4 * shape.reduce((a, e) => a * e, 1);
  if (memory.derivedBytes + bytes > memory.limit / 2 || stats.bytesAllocated + bytes > memory.limit) return false;
  const n = new Node("dequantize", [b], [...shape], "float32", { format });
  evalNodes([n]);
  const f = n.data!;
  // A kernel's output has a storage of its own, row-major from offset 0: anything else is not kept.
  const own = f.offset === 0 && isRowContiguous(n.shape, f.strides);
  if (own) {
    d.storage.derive(key, () => f.storage.retain());
    f.storage.servedBy = panelKeys(shape);
  }
  n.collect();
  return own;
}

/**
 * Bytes per element of a quantized weight that keepFloat keeps from the second training step on:
 * the two sets of panels where products read panels (a CPU's), else the float form.
 */
export function keptBytesPerElement(): number {
  return targetOf(memory.device).matmul.large === "panel" ? 8 : 4;
}

/**
 * dequantizeBlocks, served from the float form keepFloat kept when there is one. `read` says how
 * a float32 matmul reads the result, `rows` [..., M, ·] of x (transposed: x @ wᵀ) or of a gradient
 * g @ w: a form that gave its buffer back serves only a product the panel kernel runs, whose panels
 * are kept; any other read gets the weight dequantized for its evaluation.
 */
export function floatWeight(blocks: Tensor, format: QuantFormat, shape: readonly number[], read?: { rows: readonly number[]; transposed: boolean }): Tensor {
  const b = blocks.node("dequantize");
  const n = new Node("dequantize", [b], [...shape], "float32", { format });
  const key = floatKey(b, format, shape);
  const kept = key === null ? undefined : b.data!.storage.kept(key);
  if (kept && !kept.bound) {
    if (!read) return new Tensor(n);
    const { rows, transposed } = read;
    const M = rows.length > 1 ? rows[rows.length - 2]! : 1, all = rows.slice(0, -1).reduce((a, e) => a * e, 1);
    const [N, K] = shape as [number, number];
    const served = transposed ? readsPanels(M, all, N, K) : readsPanels(M, all, K, N);
    if (!served || kept.kept(panelKeys(shape)[transposed ? 0 : 1]) === undefined) return new Tensor(n);
  }
  if (kept) n.data = { storage: kept.retain(), strides: contiguousStrides(n.shape), offset: 0 };
  return new Tensor(n);
}

/**
 * From this many rows of x on (all of x's axes but the last), quantizedMatmul dequantizes the
 * weight once and runs the tiled matmul, which then outruns the kernel dequantizing as it reads
 * (that one decodes every weight once per 8 rows and multiplies without vector tiles). Below
 * it no float copy of the weight is made.
 */
export const DEQUANTIZE_ROWS = 32;

/**
 * x @ dequantize(w)^T for a weight w of shape [N, K] (a linear layer's [out, in]) and x of shape
 * [..., K]: [..., N] in x's dtype. For fewer than DEQUANTIZE_ROWS rows of x (decoding, short
 * inputs) the weights are dequantized inside the kernel as it reads them; from DEQUANTIZE_ROWS
 * rows on (a prompt) the weight is dequantized into a temporary float tensor that the tiled
 * matmul (and its epilogues) reads, kept until the evaluation ends.
 */
export function quantizedMatmul(x: Tensor, w: QuantizedTensor): Tensor {
  const op = "quantizedMatmul";
  if (!(x instanceof Tensor)) throw new SmeltError(`${op}: x must be a Tensor`);
  if (!(w instanceof QuantizedTensor)) throw new SmeltError(`${op}: w must be a QuantizedTensor`);
  if (w.ndim !== 2) throw new SmeltError(`${op}: w must be 2-D [N, K], got shape [${w.shape}]`);
  const n = x.node(op);
  if (!isFloating(n.dtype)) throw new SmeltError(`${op}: x must be floating-point, got ${n.dtype}`);
  const [N, K] = w.shape as [number, number];
  if (n.shape.length === 0 || n.shape[n.shape.length - 1] !== K) {
    throw new SmeltError(`${op}: x's last axis must be w's K = ${K} (w is [${w.shape}]), got x of shape [${n.shape}]`);
  }
  const shape = [...n.shape.slice(0, -1), N];
  // A kept float form serves any number of rows: its panels are kept too, and outrun decoding.
  const kept = tracing.depth > 0 && keepFloat(w.blocks, w.format, w.shape);
  if (kept || n.size / K >= DEQUANTIZE_ROWS) {
    return composite(() => {
      const wf = floatWeight(w.blocks, w.format, w.shape, n.dtype === "float32" ? { rows: n.shape, transposed: true } : undefined);
      return matmul(x, transpose(n.dtype === "float32" ? wf : astype(wf, n.dtype)));
    });
  }
  return new Tensor(new Node(op, [n, w.blocks.node(op)], shape, n.dtype, { format: w.format }));
}
