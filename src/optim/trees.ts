/** Gradient trees: clipping by norm or value, and accumulation over micro-batches. */
import { SmeltError } from "../errors.ts";
import * as ops from "../tensor/ops.ts";
import { Tensor, tidy } from "../tensor/tensor.ts";

/** tree with each tensor leaf replaced by f(leaf, dotted path). */
export function mapLeaves(tree: unknown, f: (t: Tensor, path: string) => unknown, path = ""): unknown {
  const at = (k: string | number) => (path ? `${path}.${k}` : String(k));
  if (tree instanceof Tensor) return f(tree, path);
  if (Array.isArray(tree)) return tree.map((x, i) => mapLeaves(x, f, at(i)));
  if (tree && typeof tree === "object") return Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, mapLeaves(v, f, at(k))]));
  return tree;
}
export function leaves(tree: unknown): Tensor[] {
  const out: Tensor[] = [];
  mapLeaves(tree, (t) => out.push(t));
  return out;
}
/** Disposes every tensor of a tree (gradients once applied, say). */
export function disposeTree(tree: unknown): void {
  for (const t of leaves(tree)) t.dispose();
}

/**
 * `[clipped, totalNorm]`: the gradients scaled by min(1, maxNorm / (norm + 1e-6)), where norm is
 * the 2-norm of all of them together, as torch.nn.utils.clip_grad_norm_. Lazy: nothing is read.
 */
export function clipGradNorm<T>(grads: T, maxNorm: number): [T, Tensor] {
  if (!(maxNorm > 0)) throw new SmeltError(`clipGradNorm: maxNorm must be positive, got ${maxNorm}`);
  const gs = leaves(grads);
  if (gs.length === 0) throw new SmeltError("clipGradNorm: the tree holds no tensors");
  return tidy(() => {
    const total = ops.sqrt(gs.map((g) => ops.sum(ops.square(ops.astype(g, "float32")))).reduce((a, b) => ops.add(a, b)));
    const scale = ops.minimum(ops.divide(maxNorm, ops.add(total, 1e-6)), 1);
    return [mapLeaves(grads, (g) => ops.astype(ops.multiply(g, scale), g.dtype)) as T, total];
  });
}
/** Each gradient element clipped to [-maxValue, maxValue]. */
export function clipGradValue<T>(grads: T, maxValue: number): T {
  if (!(maxValue >= 0)) throw new SmeltError(`clipGradValue: maxValue must be non-negative, got ${maxValue}`);
  return mapLeaves(grads, (g) => ops.clip(g, -maxValue, maxValue)) as T;
}

/**
 * Sums gradients over micro-batches: returns sum + grads·scale and disposes the handles of both
 * inputs, so evaluating the result each micro-batch keeps one tree in memory. Pass undefined first.
 */
export function accumulate<T>(sum: T | undefined, grads: T, scale = 1): T {
  const next = tidy(() => {
    if (sum === undefined) return mapLeaves(grads, (g) => (scale === 1 ? ops.add(g, 0) : ops.multiply(g, scale))) as T;
    const flat = new Map<string, Tensor>();
    mapLeaves(grads, (g, p) => flat.set(p, g));
    return mapLeaves(sum, (s, p) => {
      const g = flat.get(p);
      if (!g) throw new SmeltError(`accumulate: the gradients have no ${p}`);
      return ops.add(s, scale === 1 ? g : ops.multiply(g, scale));
    }) as T;
  });
  if (sum !== undefined) disposeTree(sum);
  disposeTree(grads);
  return next;
}
