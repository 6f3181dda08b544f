/**
 * The one walk over a graph that the scheduler and the memory planner share: nodes in post-order
 * (each after its inputs), iteratively, since a lazy chain as long as a training run (a loss
 * summed over every step) would overflow the stack.
 */
import { newMark, type Node } from "./node.ts";

/**
 * The nodes under roots that `take` accepts, each once and after the inputs it takes; a node not
 * taken is neither listed nor walked through. The walk stamps what it reaches with a new mark in
 * the field `mark` names: the caller picks the one it is not relying on at the time.
 */
export function postOrder(roots: readonly Node[], take: (n: Node) => boolean, mark: "schedMark" | "lifeMark"): Node[] {
  const out: Node[] = [];
  const seen = newMark();
  // The stack: nodes, and the next input of each to visit.
  const stack: Node[] = [], next: number[] = [];
  for (const root of roots) {
    if (root[mark] === seen || !take(root)) continue;
    root[mark] = seen;
    stack.push(root);
    next.push(0);
    while (stack.length) {
      const top = stack.length - 1;
      const n = stack[top]!, i = next[top]!;
      if (i < n.inputs.length) {
        next[top] = i + 1;
        const c = n.inputs[i]!;
        if (c[mark] !== seen && take(c)) {
          c[mark] = seen;
          stack.push(c);
          next.push(0);
        }
      } else {
        stack.pop();
        next.pop();
        out.push(n);
      }
    }
  }
  return out;
}

/** For postOrder: the nodes still to compute. */
export const uncomputed = (n: Node): boolean => !n.data;
