/**
 * Plans of elementwise and boundary kernels (codegen.ts), kept across evaluations. A plan is a
 * function of what its kernel computes and reads: the nodes' ops, dtypes, shapes, attributes and
 * connections, which of them are read from memory, and where (strides, offset). A description of
 * exactly that, taken in one walk over the nodes, finds the plan made for an equal one; the
 * kernel then only gets the new inputs' memory. This spares generating (and hashing) the source
 * of the same kernels every evaluation, which costs more than building their graph.
 */
import type { Node } from "../tensor/node.ts";
import { boundaryKernels, elementwiseKernel, type KernelPlan } from "./codegen.ts";

type Word = number | string | boolean | symbol;

interface Template {
  words: Word[];
  plan: KernelPlan;
  /** Positions, in the walk, of the nodes whose memory the plan's inputs are. */
  leaves: number[];
}

// Separators no attribute key or value can equal.
const LIST = Symbol("list");
const END = Symbol("end");
// Plans kept at most (scalars that change every step, like a decaying rate, make new ones); the
// oldest go first.
const LIMIT = 512;
const templates = new Map<number, Template[]>();
let kept = 0;

/** The plan of the kernel computing `out` (inline producers, or its own kernel for reduce, scan, putAlong). */
export function plainKernel(out: Node): KernelPlan {
  // Breadth first from out, inputs numbered as found; a node computed before out's kernel
  // (Builder.computed) is read, not walked into.
  const walk = [out];
  const ids = new Map<Node, number>();
  const words: Word[] = [];
  // A hash of some of the words (shapes, ops, connections) finds the plans worth comparing.
  let hash = 0;
  let cacheable = true;
  for (let k = 0; k < walk.length; k++) {
    const n = walk[k]!;
    const read = n.data !== null && n !== out && (n.step < 0 || n.step < out.step);
    words.push(n.dtype, read ? 2 : n.data ? 1 : 0, n.shape.length);
    hash = mix(hash, n.shape.length);
    for (const d of n.shape) {
      words.push(d);
      hash = mix(hash, d);
    }
    if (n.data) {
      words.push(n.data.offset);
      for (const d of n.data.strides) words.push(d);
    }
    if (read) continue;
    words.push(n.op);
    hash = mix(hash, n.op.length);
    for (const key in n.attrs) {
      const v = n.attrs[key];
      if (Array.isArray(v)) {
        words.push(key, LIST, v.length);
        for (const x of v) {
          words.push(x);
          cacheable &&= isWord(x);
        }
      } else {
        words.push(key, v as Word);
        cacheable &&= isWord(v);
      }
    }
    words.push(END);
    for (const i of n.inputs) {
      // A node with one consumer is reached once; only shared ones can be met again.
      let id = i.consumers > 1 ? ids.get(i) : undefined;
      if (id === undefined) {
        id = walk.length;
        walk.push(i);
        if (i.consumers > 1) ids.set(i, id);
      }
      words.push(id);
      hash = mix(hash, id);
    }
    words.push(END);
  }
  const make = boundaryKernels[out.op] ?? elementwiseKernel;
  if (!cacheable) return make(out);
  const hit = templates.get(hash)?.find((t) => same(t.words, words));
  if (hit) return { ...hit.plan, inputs: hit.leaves.map((k) => walk[k]!.data!) };
  const plan = make(out);
  // Kept with where its inputs were found in the walk (all of them, or it is not kept), not with
  // the memory of this evaluation's nodes.
  const at = new Map(walk.map((n, k) => [n.data, k]));
  const leaves = plan.inputs.map((d) => at.get(d) ?? -1);
  if (!leaves.includes(-1)) keep(hash, { words, plan: { ...plan, inputs: [] }, leaves });
  return plan;
}

const mix = (hash: number, x: number) => Math.imul(hash ^ x, 0x9e3779b1);

function isWord(x: unknown): boolean {
  return typeof x === "number" || typeof x === "string" || typeof x === "boolean";
}

// Object.is: a scalar -0 is not 0 (nor NaN unequal to itself).
function same(a: readonly Word[], b: readonly Word[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

function keep(hash: number, t: Template): void {
  if (kept >= LIMIT) {
    const [oldest, list] = templates.entries().next().value!;
    templates.delete(oldest);
    kept -= list.length;
  }
  const list = templates.get(hash);
  if (list) list.push(t);
  else templates.set(hash, [t]);
  kept++;
}
