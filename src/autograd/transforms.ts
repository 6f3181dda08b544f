/**
 * Function transforms, as MLX's: grad, valueAndGrad, vjp, jvp, stopGradient, checkpoint. There is
 * no tape on tensors: a transform calls fn on fresh identity nodes over its arguments, so fn's
 * graph can be walked back to them (two arguments that are one tensor still get a gradient each),
 * and builds the backward graph with the public ops. Nothing is evaluated until the user asks.
 */
import { SmeltError } from "../errors.ts";
import { isFloating } from "../graph/dtype.ts";
import { gradientStops, type Node, releaseHeld, tracing } from "../graph/node.ts";
import * as ops from "../tensor/ops.ts";
import { Tensor, tidy } from "../tensor/tensor.ts";
import { backward, boundaries } from "./backward.ts";

/** A tensor, or plain objects and arrays of them; other leaves pass through. */
export type Tree = unknown;

/**
 * Per transform being traced: the argument nodes of the checkpoints called inside it, which only
 * the checkpoint's backward reaches (the walk does not enter a checkpoint's graph, so no edge holds
 * them), counted as held by a tensor until the transform returns.
 */
const pins: Node[][] = [];

/** Runs body with evaluated nodes keeping their inputs; the outermost transform cuts them after. */
function traced<T>(body: () => T): T {
  tracing.depth++;
  pins.push([]);
  try {
    return tidy(body);
  } finally {
    for (const n of pins.pop()!) {
      n.tensors--;
      n.collect();
    }
    if (--tracing.depth === 0) releaseHeld();
  }
}

/**
 * Runs body as if no transform traced: nodes it evaluates let go of their inputs, and the handles
 * it makes, but those it returns, are disposed, so in eager mode its intermediates are freed as it
 * returns. Only for graphs no walk will enter.
 */
function untraced<T>(body: () => T): T {
  const depth = tracing.depth;
  tracing.depth = 0;
  try {
    return tidy(body);
  } finally {
    tracing.depth = depth;
  }
}

/**
 * Runs body traced (also inside an untraced walk), then cuts the edges of the nodes it evaluated
 * and disposes its handles but those it returns: for a graph that body itself walks back and
 * nothing walks again.
 */
function walkedOnce<T>(body: () => T): T {
  const start = tracing.held.length;
  tracing.depth++;
  try {
    return tidy(body);
  } finally {
    tracing.depth--;
    for (const n of tracing.held.splice(start)) if (n.data) n.detachInputs();
  }
}

function isPlain(x: unknown): x is Record<string, unknown> {
  return !!x && typeof x === "object" && Object.getPrototypeOf(x) === Object.prototype;
}
/** tree with each tensor leaf replaced by f(leaf, path). */
function mapTree(tree: Tree, f: (t: Tensor, path: string) => unknown, path = ""): unknown {
  if (tree instanceof Tensor) return f(tree, path);
  if (Array.isArray(tree)) return tree.map((x, i) => mapTree(x, f, `${path}[${i}]`));
  if (isPlain(tree)) return Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, mapTree(v, f, `${path}.${k}`)]));
  return tree;
}
function leavesOf(tree: Tree): Tensor[] {
  const out: Tensor[] = [];
  mapTree(tree, (t) => out.push(t));
  return out;
}

/** A fresh node with x's value whose cotangent is x's gradient. */
const identity = (x: Tensor) => ops.reshape(x, x.shape);

/** The tree with its tensors replaced by identity leaves (checked to be floating point). */
function wrapLeaves(op: string, what: string, tree: Tree): { tree: Tree; leaves: Tensor[] } {
  const leaves: Tensor[] = [];
  const wrapped = mapTree(tree, (t, path) => {
    if (!isFloating(t.dtype)) {
      throw new SmeltError(`${op}: ${what}${path} has dtype ${t.dtype}; gradients are taken with respect to floating-point tensors only`);
    }
    const l = identity(t);
    leaves.push(l);
    return l;
  });
  return { tree: wrapped, leaves };
}

function checkArgnums(op: string, argnums: unknown): number[] {
  const list = typeof argnums === "number" ? [argnums] : Array.isArray(argnums) ? argnums : null;
  if (!list || list.length === 0 || list.some((a) => typeof a !== "number" || !Number.isInteger(a) || a < 0))
    throw new SmeltError(`${op}: argnums must be a non-negative integer or a non-empty array of them, got ${JSON.stringify(argnums)}`);
  if (new Set(list).size !== list.length) throw new SmeltError(`${op}: argnums has duplicates: ${JSON.stringify(argnums)}`);
  return list as number[];
}

function checkScalar(op: string, v: unknown): Tensor {
  if (!(v instanceof Tensor))
    throw new SmeltError(`${op}: fn must return a scalar tensor (or an array whose first element is one), got ${v === null ? "null" : typeof v}`);
  if (v.size !== 1) throw new SmeltError(`${op}: fn must return a scalar, got shape [${v.shape}]; use vjp with a cotangent for other outputs`);
  if (!isFloating(v.dtype)) throw new SmeltError(`${op}: fn's output has dtype ${v.dtype}; only floating-point outputs have gradients`);
  return v;
}

/** Replaces the tensors of tree, in leaf order, by grads. */
function refill(tree: Tree, grads: Tensor[]): unknown {
  let k = 0;
  return mapTree(tree, () => grads[k++]);
}

/** The transform; without keepValue, fn's outputs made inside it are disposed with the rest. */
function valueAndGradOf(op: string, fn: (...args: never[]) => unknown, argnums: number | readonly number[], keepValue: boolean) {
  const nums = checkArgnums(op, argnums);
  return (...args: unknown[]): [unknown, unknown] =>
    traced(() => {
      for (const a of nums)
        if (a >= args.length) throw new SmeltError(`${op}: argnums ${a} is out of range for ${args.length} argument${args.length === 1 ? "" : "s"}`);
      const callArgs = [...args];
      const chosen = nums.map((a) => {
        const w = wrapLeaves(op, `argument ${a}`, args[a]);
        callArgs[a] = w.tree;
        return w;
      });
      // fn's intermediates are reached through the graph's edges, not handles, so the walk can
      // let go of them one by one.
      const result = tidy(() => (fn as (...a: unknown[]) => unknown)(...callArgs));
      const value = checkScalar(op, Array.isArray(result) ? result[0] : result);
      const leaves = chosen.flatMap((c) => c.leaves);
      const grads = backward([value.node(op)], [ops.onesLike(value)], leaves.map((l) => l.node(op)), tracing.depth === 1);
      let k = 0;
      const trees = chosen.map((c) => refill(args[nums[k++]!], grads.splice(0, c.leaves.length)));
      return [keepValue ? result : null, typeof argnums === "number" ? trees[0] : trees];
    });
}

/**
 * fn's value and its gradient with respect to the arguments argnums picks: one gradient tree when
 * argnums is a number, an array of them when it is an array. fn returns a scalar, or an array
 * whose first element is the scalar (the rest are passed through).
 */
export function valueAndGrad<A extends unknown[]>(fn: (...args: A) => unknown, argnums: number | readonly number[] = 0) {
  const f = valueAndGradOf("valueAndGrad", fn as never, argnums, true);
  return (...args: A) => f(...args) as [any, any];
}

/** The gradient of fn's scalar output with respect to the arguments argnums picks. */
export function grad<A extends unknown[]>(fn: (...args: A) => unknown, argnums: number | readonly number[] = 0) {
  const f = valueAndGradOf("grad", fn as never, argnums, false);
  return (...args: A): any => f(...args)[1];
}

function outputsOf(op: string, out: unknown): Tensor[] {
  const list = out instanceof Tensor ? [out] : Array.isArray(out) ? out : null;
  if (!list || list.some((t) => !(t instanceof Tensor))) throw new SmeltError(`${op}: fn must return a tensor or an array of tensors`);
  return list as Tensor[];
}

function checkLike(op: string, what: string, given: unknown[], like: Tensor[]): Tensor[] {
  if (given.length !== like.length) throw new SmeltError(`${op}: ${like.length} ${what} expected, got ${given.length}`);
  return given.map((g, i) => {
    const l = like[i]!;
    if (!(g instanceof Tensor)) throw new SmeltError(`${op}: ${what}[${i}] must be a tensor`);
    if (g.ndim !== l.ndim || g.shape.some((d, k) => d !== l.shape[k]))
      throw new SmeltError(`${op}: ${what}[${i}] has shape [${g.shape}], expected [${l.shape}]`);
    return g;
  });
}

/** Traces fn over primals (an array of argument trees) with every tensor of them a leaf. */
function trace(op: string, fn: (...args: never[]) => unknown, primals: unknown) {
  if (!Array.isArray(primals)) throw new SmeltError(`${op}: primals must be an array of arguments`);
  const wrapped = primals.map((p, i) => wrapLeaves(op, `primals[${i}]`, p));
  const outputs = outputsOf(op, tidy(() => (fn as (...a: unknown[]) => unknown)(...wrapped.map((w) => w.tree))));
  for (const [i, o] of outputs.entries())
    if (!isFloating(o.dtype)) throw new SmeltError(`${op}: output ${i} has dtype ${o.dtype}; only floating-point outputs have gradients`);
  return { wrapped, outputs, leaves: wrapped.flatMap((w) => w.leaves) };
}

/** [outputs, vjps]: fn's outputs and the cotangents of the primals given those of the outputs. */
export function vjp(fn: (...args: any[]) => unknown, primals: unknown[], cotangents: Tensor[]): [Tensor[], any[]] {
  const op = "vjp";
  return traced(() => {
    const { wrapped, outputs, leaves } = trace(op, fn as never, primals);
    const cts = checkLike(op, "cotangents", Array.isArray(cotangents) ? cotangents : [cotangents], outputs);
    const grads = backward(outputs.map((o) => o.node(op)), cts, leaves.map((l) => l.node(op)), tracing.depth === 1);
    return [outputs, wrapped.map((w, i) => refill(primals[i], grads.splice(0, w.leaves.length)))];
  });
}

/**
 * [outputs, jvps]: fn's outputs and their tangents given those of the primals (one tree per
 * primal). The vjp is linear in its cotangent u, so the jvp is the vjp of the vjp with respect to u.
 */
export function jvp(fn: (...args: any[]) => unknown, primals: unknown[], tangents: unknown[]): [Tensor[], Tensor[]] {
  const op = "jvp";
  return traced(() => {
    const { outputs, leaves } = trace(op, fn as never, primals);
    if (!Array.isArray(tangents)) throw new SmeltError(`${op}: tangents must be an array like primals`);
    const ts = checkLike(op, "tangents", tangents.flatMap((t) => leavesOf(t)), leaves);
    const us = outputs.map((o) => identity(ops.zerosLike(o)));
    const inner = backward(outputs.map((o) => o.node(op)), us, leaves.map((l) => l.node(op)));
    const jvps = backward(inner.map((g) => g.node(op)), ts, us.map((u) => u.node(op)), tracing.depth === 1);
    return [outputs, jvps];
  });
}

/** x's value, through which no gradient flows. */
export function stopGradient(x: Tensor): Tensor {
  if (!(x instanceof Tensor)) throw new SmeltError("stopGradient: expected a tensor");
  const y = identity(x);
  gradientStops.add(y.node("stopGradient"));
  return y;
}

/**
 * fn, whose intermediates a transform does not keep for the backward pass: it calls fn again
 * there, on the same arguments. Outside a transform it is fn. The walk never enters fn's forward
 * graph (its outputs are boundaries), so in eager mode that graph's intermediates are freed as fn
 * returns; in the last backward pass (one no transform differentiates again) so is each
 * recomputation, once its gradients are built.
 */
export function checkpoint<A extends Tensor[], R extends Tensor | Tensor[]>(fn: (...args: A) => R): (...args: A) => R {
  return (...args: A): R => {
    if (tracing.depth === 0) return fn(...args);
    const args0 = args.map((a) => {
      if (!(a instanceof Tensor)) throw new SmeltError("checkpoint: the arguments of a checkpointed function must be tensors");
      return a.node("checkpoint");
    });
    for (const n of args0) n.tensors++;
    pins.at(-1)!.push(...args0);
    const out0 = untraced(() => fn(...args));
    const outs = outputsOf("checkpoint", out0).map((o, index) => {
      // A fresh node per output: the walk stops there, and an output that is an argument does not
      // become its own input.
      const kept = identity(o);
      const vjp = (xs: Tensor[], ct: Tensor, final: boolean) => {
        const leaves = xs.map((x) => (isFloating(x.dtype) ? identity(x) : x));
        const again = outputsOf("checkpoint", fn(...(leaves as A)))[index]!;
        const floats = leaves.filter((l) => isFloating(l.dtype));
        const gs = backward([again.node("checkpoint")], [ct], floats.map((l) => l.node("checkpoint")), final);
        return leaves.map((l) => (isFloating(l.dtype) ? gs.shift()! : null));
      };
      boundaries.set(kept.node("checkpoint"), {
        args: args0,
        vjp: (xs, ct, final) => (final ? walkedOnce(() => vjp(xs, ct, final)) : vjp(xs, ct, final)),
      });
      return kept;
    });
    return (Array.isArray(out0) ? outs : outs[0]) as R;
  };
}
