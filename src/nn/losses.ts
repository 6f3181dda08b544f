/**
 * Losses, with MLX's names and default reductions and PyTorch's formulas (so values match
 * torch.nn.functional given the same reduction).
 */
import { SmeltError } from "../errors.ts";
import { isFloating, isInteger } from "../graph/dtype.ts";
import * as ops from "../tensor/ops.ts";
import { composite, type Tensor } from "../tensor/tensor.ts";

export type Reduction = "none" | "mean" | "sum";

function reduce(op: string, loss: Tensor, reduction: Reduction): Tensor {
  if (reduction === "none") return loss;
  if (reduction === "mean") return ops.mean(loss);
  if (reduction === "sum") return ops.sum(loss);
  throw new SmeltError(`losses.${op}: reduction must be "none", "mean" or "sum", got ${JSON.stringify(reduction)}`);
}
function sameShape(op: string, a: Tensor, b: Tensor, an: string, bn: string): void {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i]))
    throw new SmeltError(`losses.${op}: ${an} [${a.shape}] and ${bn} [${b.shape}] must have the same shape`);
}

/**
 * Cross-entropy of logits [..., C] with class indices [...] (integers) or probabilities [..., C].
 * As torch.nn.functional.cross_entropy: `weights` [C] scale each class, and a mean over indices
 * divides by the summed weights of the targets counted; `ignoreIndex` targets count nothing;
 * labelSmoothing ε mixes the target with the uniform distribution. Default reduction "none" (MLX).
 */
export function crossEntropy(
  logits: Tensor,
  targets: Tensor,
  opts: { reduction?: Reduction; ignoreIndex?: number; labelSmoothing?: number; weights?: Tensor } = {},
): Tensor {
  const op = "crossEntropy";
  const reduction = opts.reduction ?? "none";
  const eps = opts.labelSmoothing ?? 0;
  if (!(eps >= 0 && eps <= 1)) throw new SmeltError(`losses.${op}: labelSmoothing must be in [0, 1], got ${eps}`);
  if (!isFloating(logits.dtype)) throw new SmeltError(`losses.${op}: logits must be floating point, got ${logits.dtype}`);
  if (logits.shape.length === 0) throw new SmeltError(`losses.${op}: logits must have a class axis, got a scalar`);
  const c = logits.shape[logits.shape.length - 1]!;
  if (opts.weights && (opts.weights.shape.length !== 1 || opts.weights.shape[0] !== c))
    throw new SmeltError(`losses.${op}: weights must have shape [${c}], got [${opts.weights.shape}]`);
  const byIndex = isInteger(targets.dtype);
  if (byIndex) {
    const want = logits.shape.slice(0, -1);
    if (targets.shape.length !== want.length || targets.shape.some((d, i) => d !== want[i]))
      throw new SmeltError(`losses.${op}: class-index targets must have shape [${want}] for logits [${logits.shape}], got [${targets.shape}]`);
  } else if (isFloating(targets.dtype)) sameShape(op, logits, targets, "logits", "probability targets");
  else throw new SmeltError(`losses.${op}: targets must be integer class indices or floating probabilities, got ${targets.dtype}`);
  if (!byIndex && opts.ignoreIndex !== undefined) throw new SmeltError(`losses.${op}: ignoreIndex applies to class-index targets only`);

  return composite(() => {
    const logp = ops.logSoftmax(logits, -1);
    const w = opts.weights;
    // Σ_c w_c·logp_c over the classes (w = 1 without weights): the smoothing term.
    const smoothTerm = () => ops.negative(ops.sum(w ? ops.multiply(logp, w) : logp, -1));
    if (!byIndex) {
      const p = eps > 0 ? ops.add(ops.multiply(targets, 1 - eps), eps / c) : targets;
      const terms = ops.multiply(logp, p);
      return reduce(op, ops.negative(ops.sum(w ? ops.multiply(terms, w) : terms, -1)), reduction);
    }
    const oneHot = ops.equal(ops.expandDims(targets, -1), ops.arange(0, c, 1, "int32"));
    const keep = opts.ignoreIndex === undefined ? null : ops.notEqual(targets, opts.ignoreIndex);
    const picked = ops.sum(ops.where(oneHot, logp, 0), -1);
    let wt: Tensor | number = w ? ops.sum(ops.where(oneHot, w, 0), -1) : 1;
    if (keep) wt = ops.where(keep, wt, 0);
    let loss = ops.negative(ops.multiply(picked, wt));
    if (eps > 0) {
      const smooth = keep ? ops.where(keep, smoothTerm(), 0) : smoothTerm();
      loss = ops.add(ops.multiply(loss, 1 - eps), ops.multiply(smooth, eps / c));
    }
    if (reduction === "mean" && (w || keep)) return ops.divide(ops.sum(loss), ops.sum(ops.broadcastTo(wt, loss.shape)));
    return reduce(op, loss, reduction);
  });
}

/** -logProbs[target] per item: targets are class indices over the last axis. Default reduction "none". */
export function nll(logProbs: Tensor, targets: Tensor, opts: { reduction?: Reduction } = {}): Tensor {
  if (!isInteger(targets.dtype)) throw new SmeltError(`losses.nll: targets must be integer class indices, got ${targets.dtype}`);
  const c = logProbs.shape[logProbs.shape.length - 1] ?? 0;
  return composite(() => {
    const oneHot = ops.equal(ops.expandDims(targets, -1), ops.arange(0, c, 1, "int32"));
    return reduce("nll", ops.negative(ops.sum(ops.where(oneHot, logProbs, 0), -1)), opts.reduction ?? "none");
  });
}

export function mse(predictions: Tensor, targets: Tensor, opts: { reduction?: Reduction } = {}): Tensor {
  sameShape("mse", predictions, targets, "predictions", "targets");
  return composite(() => reduce("mse", ops.square(ops.subtract(predictions, targets)), opts.reduction ?? "mean"));
}

export function l1(predictions: Tensor, targets: Tensor, opts: { reduction?: Reduction } = {}): Tensor {
  sameShape("l1", predictions, targets, "predictions", "targets");
  return composite(() => reduce("l1", ops.abs(ops.subtract(predictions, targets)), opts.reduction ?? "mean"));
}

/**
 * Binary cross-entropy of logits (withLogits, the default: computed stably as
 * softplus(x) - x·t) or of probabilities (log clamped at -100, as PyTorch). Default reduction "mean".
 */
export function binaryCrossEntropy(inputs: Tensor, targets: Tensor, opts: { withLogits?: boolean; weights?: Tensor; reduction?: Reduction } = {}): Tensor {
  sameShape("binaryCrossEntropy", inputs, targets, "inputs", "targets");
  return composite(() => {
    let loss: Tensor;
    if (opts.withLogits ?? true) loss = ops.subtract(ops.softplus(inputs), ops.multiply(inputs, targets));
    else {
      const logP = ops.maximum(ops.log(inputs), -100);
      const log1mP = ops.maximum(ops.log(ops.subtract(1, inputs)), -100);
      loss = ops.negative(ops.add(ops.multiply(targets, logP), ops.multiply(ops.subtract(1, targets), log1mP)));
    }
    if (opts.weights) loss = ops.multiply(loss, opts.weights);
    return reduce("binaryCrossEntropy", loss, opts.reduction ?? "mean");
  });
}
