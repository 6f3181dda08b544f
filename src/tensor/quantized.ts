/**
 * A weight kept in a GGML block-quantized format: its blocks live on the device as a uint8
 * tensor, and it has the logical shape of the float tensor it stands for. Row-major like any
 * tensor: the last axis is the one the blocks run along (GGUF's ne[0]).
 */
import { SmeltError } from "../errors.ts";
import { Node } from "../graph/node.ts";
import type { QuantFormat } from "../graph/op.ts";
import { QUANT_BLOCKS, quantBytes } from "../graph/quant.ts";
import { checkShape } from "../graph/shape.ts";
import { isFloating } from "../graph/dtype.ts";
import { fromBytes } from "./ops.ts";
import { Tensor } from "./tensor.ts";

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
    const s = checkShape(op, shape);
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

/**
 * x @ dequantize(w)^T for a weight w of shape [N, K] (a linear layer's [out, in]) and x of shape
 * [..., K]: [..., N] in x's dtype, the weights dequantized inside the kernel as it reads them.
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
  return new Tensor(new Node(op, [n, w.blocks.node(op)], shape, n.dtype, { format: w.format }));
}
