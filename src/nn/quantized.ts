/**
 * Layers over GGML block-quantized weights, which stay quantized in memory: the matmul kernel
 * dequantizes each block as it reads it. The weights are not parameters (they cannot be trained
 * in place); adapters (LoRA) wrap these layers instead.
 */
import { SmeltError } from "../errors.ts";
import { dequantizeBlocks, QuantizedTensor, quantizedMatmul } from "../tensor/quantized.ts";
import * as ops from "../tensor/ops.ts";
import { take } from "../tensor/ops-structure.ts";
import { composite, Tensor } from "../tensor/tensor.ts";
import { Module } from "./module.ts";

/** y = x Wᵀ + b with W [out, in] quantized. */
export class QuantizedLinear extends Module {
  readonly weight: QuantizedTensor;
  bias?: Tensor;
  constructor(weight: QuantizedTensor, bias?: Tensor) {
    super();
    if (!(weight instanceof QuantizedTensor) || weight.ndim !== 2) throw new SmeltError("QuantizedLinear: weight must be a 2-D QuantizedTensor [out, in]");
    if (bias !== undefined && (!(bias instanceof Tensor) || bias.ndim !== 1 || bias.shape[0] !== weight.shape[0]))
      throw new SmeltError(`QuantizedLinear: bias must have shape [${weight.shape[0]}], got [${bias instanceof Tensor ? bias.shape : typeof bias}]`);
    this.weight = weight;
    if (bias) this.bias = bias;
  }
  get inDims(): number {
    return this.weight.shape[1]!;
  }
  get outDims(): number {
    return this.weight.shape[0]!;
  }
  override forward(x: Tensor): Tensor {
    if (x.shape[x.ndim - 1] !== this.inDims) throw new SmeltError(`QuantizedLinear: the input's last dimension must be ${this.inDims}, got shape [${x.shape}]`);
    return composite(() => {
      const y = quantizedMatmul(x, this.weight);
      return this.bias ? ops.add(y, this.bias) : y;
    });
  }
}

/**
 * A lookup table [num, dims] kept quantized: the rows of blocks a lookup needs are gathered, then
 * dequantized, so the float table never exists (49152 x 576 float32 would be 113 MB).
 */
export class QuantizedEmbedding extends Module {
  readonly weight: QuantizedTensor;
  readonly #rows: Tensor;
  constructor(weight: QuantizedTensor) {
    super();
    if (!(weight instanceof QuantizedTensor) || weight.ndim !== 2) throw new SmeltError("QuantizedEmbedding: weight must be a 2-D QuantizedTensor [num, dims]");
    this.weight = weight;
    // Every row holds whole blocks (the last axis is a multiple of the block), so rows are byte ranges.
    this.#rows = weight.blocks.reshape([weight.shape[0]!, weight.nbytes / weight.shape[0]!]);
  }
  get dims(): number {
    return this.weight.shape[1]!;
  }
  override forward(ids: Tensor): Tensor {
    return composite(() => dequantizeBlocks(take(this.#rows, ids, 0), this.weight.format, [...ids.shape, this.dims]));
  }
  /** x Wᵀ: the table as an output head tied to the input embedding. */
  asLinear(x: Tensor): Tensor {
    if (x.shape[x.ndim - 1] !== this.dims) throw new SmeltError(`QuantizedEmbedding.asLinear: the input's last dimension must be ${this.dims}, got shape [${x.shape}]`);
    return quantizedMatmul(x, this.weight);
  }
}
