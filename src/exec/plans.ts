/**
 * Plans of generated kernels (codegen.ts, rows.ts), kept across evaluations. A plan is a function
 * of what its kernel computes and reads: the nodes' ops, dtypes, shapes, attributes and
 * connections, which of them are read from memory, and where (strides, offset), plus whatever
 * else its maker is told (a row kernel's threads per row, a matmul's variant). A description of
 * exactly that, taken in one walk over the nodes, finds the plan made for an equal one; the kernel
 * then only gets the new inputs' memory, and the scratch memory of this evaluation (a matmul's
 * panels). This spares generating (and hashing) the source of the same kernels every evaluation,
 * which costs more than building their graph.
 */
import type { Data, Node } from "../tensor/node.ts";
import { type KernelOp, OPS } from "../tensor/op.ts";
import { boundaryKernels, elementwiseKernel, type KernelPlan } from "./codegen.ts";
import { type MatmulVariant, matmulKernel, type Panels } from "./matmul.ts";
import type { Storage } from "./memory.ts";
import { type RowGroup, rowKernel } from "./rows.ts";

type Word = number | string | boolean | symbol;

/** Where an input's memory comes from: a position in the walk (>= 0), or scratch memory number -1 - slot. */
type Slot = number;

interface Template {
  words: Word[];
  /** The plan and the plans of its packs, their memory left out. */
  plan: KernelPlan;
  leaves: Slot[];
  packs: { plan: KernelPlan; leaves: Slot[]; out: number }[];
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
export function plainPlan(out: Node): KernelPlan {
  return planFor(out, [], () => (OPS[out.op].kind === "kernel" ? boundaryKernels[out.op as KernelOp] : elementwiseKernel)(out));
}

/**
 * The plan of the row kernel computing `out` with `threads` threads per row. The group is not
 * described: rows.ts finds it from the nodes the walk describes, so equal walks have equal groups.
 */
export function rowPlan(out: Node, group: RowGroup, threads: number): KernelPlan {
  return planFor(out, ["rows", threads], () => rowKernel(out, group, threads));
}

/**
 * The plan of the matmul kernel computing `out` as main's epilogue (with the kernels filling its
 * panels). Which node is main, and whether the panels are filled or were kept, are described.
 */
export function matmulPlan(out: Node, main: Node, variant: MatmulVariant, panels: Panels | null): KernelPlan {
  const scratch = panels ? [panels.b, ...(panels.summed ? [panels.summed.panels] : [])] : [];
  const extra: Word[] = ["matmul", variant, panels?.fill ?? "-", scratch.length];
  return planFor(out, extra, () => matmulKernel(out, main, variant, panels), scratch, main);
}

/**
 * The plan kept for a walk from `out` equal to this one (and equal `extra` words, and `marked` at
 * the same place in it), else make()'s, kept. Its inputs get this walk's memory and `scratch`.
 */
function planFor(out: Node, extra: Word[], make: () => KernelPlan, scratch: Storage[] = [], marked?: Node): KernelPlan {
  // Breadth first from out, inputs numbered as found; a node computed before out's kernel
  // (Builder.computed) is read, not walked into.
  const walk = [out];
  const ids = new Map<Node, number>();
  const words: Word[] = [...extra];
  // A hash of some of the words (shapes, ops, connections) finds the plans worth comparing.
  let hash = extra.length;
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
    const attrs = n.attrs as Record<string, unknown>;
    for (const key in attrs) {
      const v = attrs[key];
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
  if (marked) words.push(walk.indexOf(marked));
  if (!cacheable) return make();
  const memoryOf = (slot: Slot): Data => (slot >= 0 ? walk[slot]!.data! : { storage: scratch[-1 - slot]!, strides: [], offset: 0 });
  const hit = templates.get(hash)?.find((t) => same(t.words, words));
  if (hit) {
    const plan: KernelPlan = { ...hit.plan, inputs: hit.leaves.map(memoryOf) };
    if (hit.packs.length) plan.packs = hit.packs.map((p) => ({ plan: { ...p.plan, inputs: p.leaves.map(memoryOf) }, out: scratch[p.out]! }));
    return plan;
  }
  const plan = make();
  // Kept with where its inputs were found (all of them, or it is not kept), not with the memory of
  // this evaluation's nodes: a node's memory in the walk, or whole scratch memory.
  const at = new Map(walk.map((n, k) => [n.data, k]));
  const slotOf = (d: Data): Slot => {
    const k = at.get(d);
    if (k !== undefined) return k;
    const j = scratch.indexOf(d.storage);
    return j >= 0 && d.offset === 0 && d.strides.length === 0 ? -1 - j : NaN;
  };
  const leaves = plan.inputs.map(slotOf);
  const packs = (plan.packs ?? []).map((p) => ({ plan: { ...p.plan, inputs: [] }, leaves: p.plan.inputs.map(slotOf), out: scratch.indexOf(p.out) }));
  const found = leaves.every((k) => !Number.isNaN(k)) && packs.every((p) => p.out >= 0 && p.leaves.every((k) => !Number.isNaN(k)));
  if (found) {
    const { packs: _, ...bare } = plan;
    keep(hash, { words, plan: { ...bare, inputs: [] }, leaves, packs });
  }
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
