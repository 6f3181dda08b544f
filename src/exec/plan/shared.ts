/**
 * Long matmuls read by several kernels. A matmul too long to inline waits for the kernel of
 * whatever reads it, which computes it as its epilogue (plan/matmul.ts); but when the nodes over
 * it reach more than one kernel, each of those computes the whole product again. A training step
 * does this twice per layer: the weight gradient feeds the new parameter and both new moments
 * (three kernels, three matmuls), and the pre-activation z = x@W + b feeds the forward activation
 * and the backward pass's mask (the forward matmul run again in the backward). This finds the node
 * where the reads part ways, so that the scheduler gives it a kernel of its own and the product is
 * computed once.
 */
import { OPS } from "../../graph/op.ts";
import type { Node } from "../../graph/node.ts";
import { postOrder, uncomputed } from "../../graph/walk.ts";
import { isInline } from "./inline.ts";

/** Several kernels, as opposed to one. */
const SEVERAL = null;

/**
 * The uncomputed nodes of the graph under roots that compute a long matmul (it or inline nodes
 * over it) and whose consumers in this evaluation fall into more than one kernel. A consumer
 * falls into its own kernel when it is a root, no inline node, or the operand of a matmul-like
 * op that reads its inputs from memory; else into the kernels its own consumers fall into.
 * Consumers outside the evaluation are left out: what they will need is not known yet.
 */
export function sharedProducts(roots: readonly Node[]): Set<Node> {
  // Nodes are numbered by their place in order (schedId), which indexes what is known of them.
  const order = topological(roots);
  const asked = order.map(() => false);
  for (const r of roots) if (!r.data) asked[r.schedId] = true;
  const users: Node[][] = order.map(() => []);
  for (const x of order) {
    for (const i of x.inputs) {
      if (i.data) continue;
      // An input read twice (x * x) makes x one user.
      const list = users[i.schedId]!;
      if (list[list.length - 1] !== x) list.push(x);
    }
  }
  // The long matmuls, and inline nodes computing one.
  const dots = order.map(() => false);
  for (let k = 0; k < order.length; k++) {
    const x = order[k]!;
    dots[k] = x.op === "matmul" ? !isInline(x) : isInline(x) && x.inputs.some((i) => !i.data && dots[i.schedId]);
  }
  const owns = order.map((x, k) => asked[k] || !isInline(x) || users[k]!.some((u) => OPS[u.op].readsComputedInputs));
  const own = (x: Node) => owns[x.schedId]!;
  // The kernel computing each node, or SEVERAL; consumers before their inputs.
  const kernel: (Node | typeof SEVERAL)[] = order.map(() => SEVERAL);
  const out = new Set<Node>();
  for (let k = order.length - 1; k >= 0; k--) {
    const x = order[k]!;
    let into: Node | typeof SEVERAL | undefined;
    for (const u of users[k]!) {
      const v = own(u) ? u : kernel[u.schedId]!;
      into = into === undefined || into === v ? v : SEVERAL;
    }
    if (dots[k] && into === SEVERAL && users[k]!.length > 1) out.add(x);
    kernel[k] = own(x) || out.has(x) || into === undefined ? x : into;
  }
  return lowest(order, out);
}

/**
 * Of the nodes found, those that still compute a long matmul once the ones below them have their
 * kernels: a node over a product that gets a kernel reads it from memory. Softmax over x@W finds
 * the product (read by the row's max and by x - max) and exp(x - max) (read by the row's sum and
 * the division); only the product needs its kernel, and the row kernel stays whole.
 */
function lowest(order: readonly Node[], found: Set<Node>): Set<Node> {
  const computes = new Set<Node>();
  for (const x of order) {
    if (x.op === "matmul" ? !isInline(x) : isInline(x) && x.inputs.some((i) => computes.has(i) && !found.has(i))) computes.add(x);
  }
  return new Set([...found].filter((x) => computes.has(x)));
}

/** The uncomputed nodes under roots, inputs before their consumers, each numbered with its place (schedId). */
function topological(roots: readonly Node[]): Node[] {
  const order = postOrder(roots, uncomputed, "schedMark");
  for (let k = 0; k < order.length; k++) order[k]!.schedId = k;
  return order;
}
