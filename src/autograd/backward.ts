/**
 * The reverse walk: from output nodes and their cotangents back to chosen leaf nodes, applying
 * each node's rule (rules.ts). It only builds graph; nothing is evaluated here (in eager mode
 * each op it builds is, as any op). The forward graph is intact while it runs because a transform
 * traces with Node's `tracing` depth raised (computed nodes keep their inputs).
 */
import { isFloating, type DType } from "../graph/dtype.ts";
import { gradientStops, type Node, tracing } from "../graph/node.ts";
import { OPS } from "../graph/op.ts";
import * as ops from "../tensor/ops.ts";
import { Tensor } from "../tensor/tensor.ts";
import { type Ctx, RULES } from "./rules.ts";

/**
 * Outputs of sm.checkpoint: the walk does not enter the graph that computed them; it asks
 * `vjp` to recompute it from `args` and give their cotangents.
 */
export interface Boundary {
  args: readonly Node[];
  /** `final`: the backward graph being built will not be differentiated again. */
  vjp(args: Tensor[], ct: Tensor, final: boolean): (Tensor | null)[];
}
export const boundaries = new WeakMap<Node, Boundary>();

/** Runs body with evaluated nodes letting go of their inputs, as outside any transform. */
function untraced(body: () => void): void {
  const depth = tracing.depth;
  tracing.depth = 0;
  try {
    body();
  } finally {
    tracing.depth = depth;
  }
}

const isHalf = (d: DType) => d === "float16" || d === "bfloat16";

/**
 * The cotangents of `leaves` (zeros where no path leads) given those of `outputs`. The tensors it
 * makes on the way belong to the caller's tidy scope. `final`: no transform will differentiate
 * the graph built here, so the walk builds it untraced and lets go of each node once its rule has
 * run (its handles, its cotangent, its edges to its inputs): in eager mode a forward value is freed
 * as soon as the backward has consumed it, and so is a checkpoint's recomputation.
 */
export function backward(outputs: readonly Node[], cts: readonly Tensor[], leaves: readonly Node[], final = false): Tensor[] {
  const leafSet = new Set(leaves);
  const edges = (n: Node): readonly Node[] => boundaries.get(n)?.args ?? n.inputs;
  // Post-order over what the outputs depend on, stopping at leaves and stopped nodes; a node is
  // relevant when a leaf lies below it.
  const order: Node[] = [];
  const relevant = new Set<Node>();
  const seen = new Set<Node>();
  for (const root of outputs) {
    if (seen.has(root)) continue;
    seen.add(root);
    const stack: [Node, number][] = [[root, 0]];
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const [n, i] = top;
      const ins = leafSet.has(n) || gradientStops.has(n) ? [] : edges(n);
      if (i < ins.length) {
        top[1]++;
        const c = ins[i]!;
        if (!seen.has(c)) {
          seen.add(c);
          stack.push([c, 0]);
        }
        continue;
      }
      stack.pop();
      order.push(n);
      if (leafSet.has(n) || ins.some((c) => relevant.has(c))) relevant.add(n);
    }
  }

  const handles = new Map<Node, Tensor>();
  const own = new Set<Tensor>();
  const wrap = (n: Node) => {
    let t = handles.get(n);
    if (!t) {
      handles.set(n, (t = new Tensor(n)));
      own.add(t);
    }
    return t;
  };
  const grads = new Map<Node, Tensor>();
  // A final walk disposes the handles it made once used, but never the caller's cotangents, a
  // handle that is still some node's cotangent (a rule may pass a cotangent or an input on
  // unchanged), or a node's own handle before that node is released.
  const theirs = new Set(cts);
  const holders = new Map<Tensor, number>();
  const hold = (t: Tensor, d: number) => holders.set(t, (holders.get(t) ?? 0) + d);
  const setGrad = (n: Node, t: Tensor | null) => {
    const old = grads.get(n);
    if (old) hold(old, -1);
    if (t) {
      grads.set(n, t);
      hold(t, 1);
    } else grads.delete(n);
  };
  const drop = (t: Tensor | undefined) => {
    if (t && final && !theirs.has(t) && !own.has(t) && !(holders.get(t)! > 0)) {
      holders.delete(t);
      t.dispose();
    }
  };
  const accumulate = (n: Node, g: Tensor) => {
    if (g.dtype !== n.dtype) g = ops.astype(g, n.dtype);
    const prev = grads.get(n);
    setGrad(n, prev ? ops.add(prev, g) : g);
    if (prev) [prev, g].forEach(drop);
  };
  outputs.forEach((o, k) => {
    if (relevant.has(o) && isFloating(o.dtype)) accumulate(o, cts[k]!);
  });

  const release = (n: Node) => {
    const ct = grads.get(n);
    setGrad(n, null);
    drop(ct);
    const h = handles.get(n);
    handles.delete(n);
    if (h) own.delete(h);
    drop(h);
    if (n.data) n.detachInputs();
  };
  const walk = () => {
    for (let k = order.length - 1; k >= 0; k--) {
      const n = order[k]!;
      if (leafSet.has(n)) continue;
      step(n);
      if (final) release(n);
    }
  };
  const step = (n: Node) => {
    const ct = grads.get(n);
    if (!ct || gradientStops.has(n) || !isFloating(n.dtype)) return;
    const boundary = boundaries.get(n);
    if (boundary) {
      const gs = boundary.vjp(boundary.args.map(wrap), ct, final);
      boundary.args.forEach((a, i) => {
        const g = gs[i];
        if (g && relevant.has(a) && isFloating(a.dtype)) accumulate(a, g);
      });
      return;
    }
    const rule = RULES[n.op];
    if (rule === "none") return;
    // float16/bfloat16 elementwise rules compute in float32: (1 - y^2) and friends lose the
    // few bits a half has when rounded at each step.
    const up = OPS[n.op].kind === "elementwise" && isHalf(n.dtype) ? (t: Tensor) => (isFloating(t.dtype) ? ops.astype(t, "float32") : t) : (t: Tensor) => t;
    const ctx: Ctx = { node: n, x: (i) => up(wrap(n.inputs[i]!)), y: () => up(wrap(n)), ct: up(ct) };
    n.inputs.forEach((input, i) => {
      if (!relevant.has(input) || !isFloating(input.dtype)) return;
      const g = rule(ctx, i);
      if (g) accumulate(input, g);
    });
  };
  if (final) {
    // Each node keeps a handle until its own rule has run: releasing a consumer cuts its edge,
    // which would otherwise free an input whose rule is still to come.
    for (const n of order) if (relevant.has(n) && !leafSet.has(n)) wrap(n);
    untraced(walk);
  } else walk();
  return leaves.map((l) => grads.get(l) ?? ops.zeros(l.shape, l.dtype));
}
