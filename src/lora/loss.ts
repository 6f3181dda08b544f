/** The language-model loss LoRA training minimises. */
import { SmeltError } from "../errors.ts";
import { crossEntropy } from "../nn/losses.ts";
import * as ops from "../tensor/ops.ts";
import { composite, type Tensor } from "../tensor/tensor.ts";

/**
 * Mean next-token cross-entropy of logits [B, L, V] against targets [B, L] (int32), over the
 * positions where weights [B, L] (float32, 1 or 0) is 1: padding and, with a prompt mask, the
 * prompt count nothing. `count` is the number of ones, known from the batch without a device read.
 */
export function maskedLoss(logits: Tensor, targets: Tensor, weights: Tensor, count: number): Tensor {
  const [b, l] = targets.shape;
  if (logits.ndim !== 3 || logits.shape[0] !== b || logits.shape[1] !== l)
    throw new SmeltError(`lora.maskedLoss: logits [${logits.shape}] do not match targets [${targets.shape}]`);
  if (!(count > 0)) throw new SmeltError("lora.maskedLoss: the batch has no target tokens (every position is masked)");
  return composite(() => ops.divide(ops.sum(ops.multiply(crossEntropy(logits, targets), weights)), count));
}
