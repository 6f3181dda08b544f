/**
 * The code of generated kernels, planned (plan/) and emitted (emit/) once and kept across
 * evaluations: the join of the two, which the scheduler asks for every kernel. A kernel's code is
 * a function of what it computes and reads: the nodes' ops, dtypes, shapes, attributes and
 * connections, which of them are read from memory, and where (strides, offset), plus whatever
 * else its planner is told (a row kernel's threads per row, a matmul's variant). A description of
 * exactly that, taken in one walk over the nodes, finds the code made for an equal one; the kernel
 * then only gets the new inputs' memory, and the scratch memory of this evaluation (a matmul's
 * panels). This spares planning and emitting (and hashing) the source of the same kernels every
 * evaluation, which costs more than building their graph.
 */
import { SmeltError } from "../errors.ts";
import { type Data, newMark, type Node } from "../graph/node.ts";
import { attrsOf, OPS } from "../graph/op.ts";
import { type Bind, type KernelCode, MAX_PARAM_BYTES, type ScalarArg } from "./emit/builder.ts";
import { emitKernel } from "./emit/kernel.ts";
import { arangeInInts, readFromMemory } from "./plan/inline.ts";
import { elementsPerThread, ONE, plainPlan } from "./plan/kernel.ts";
import { type MatmulVariant, type Panels, planMatmul } from "./plan/matmul.ts";
import { planRows, type RowGroup } from "./plan/rows.ts";
import type { Storage } from "./memory.ts";
import type { Target } from "../runtime/target.ts";

export type Word = number | string | boolean | symbol;

/** Where an input's memory comes from: a position in the walk (>= 0), or scratch memory number -1 - slot. */
type Slot = number;

/** A parameter taking a value of the walk's scalars (at `value`), as float bits or an int. */
interface Bound {
  slot: number;
  value: number;
  float: boolean;
}

interface Template {
  words: Word[];
  /** The code and the code of its packs, their memory left out. */
  code: KernelCode;
  leaves: Slot[];
  /** Where a multi-output kernel's further outputs are in the walk. */
  outs: Slot[];
  /** The scalar values the code's parameters were made with. */
  values: number[];
  bound: Bound[];
  packs: { code: KernelCode; leaves: Slot[]; bound: Bound[]; out: number }[];
}

// Separators no attribute key or value can equal.
const LIST = Symbol("list");
const END = Symbol("end");
const SCALAR = Symbol("scalar");
// Kernels kept at most; the oldest go first. Scalars that change every step (a decaying rate) are
// arguments, not part of a kernel's description, so they make no new ones.
const LIMIT = 512;
const templates = new Map<number, Template[]>();
/** codeFor's description of a walk, reused: it keeps its storage from call to call. */
const described: Word[] = [];
let kept = 0;

/**
 * The kernel computing `out` (inline producers, or its own kernel for reduce, scan, putAlong...),
 * and writing the nodes `also` too (a multi-output elementwise kernel).
 */
export function plainKernel(out: Node, target: Pick<Target, "elementwise" | "cpu">, also: readonly Node[] = []): KernelCode {
  // A library kernel: nothing to generate, and its key and arguments change every call.
  if (out.op === "random") return emitKernel(plainPlan(out));
  const per = elementsPerThread(target, out);
  const cpu = target.cpu && (out.op === "quantizedMatmul" || out.op === "dequantize");
  const extra = [...(also.length ? ["outputs", also.length] : []), ...(per.per > 1 ? ["per", per.per, per.run ? 1 : 0] : []), ...(cpu ? ["cpu"] : [])];
  return codeFor(out, extra, () => {
    const code = emitKernel(plainPlan(out, also, per, cpu));
    // Each element of a thread takes parameters of its own for its index math: where they come
    // to more than a dispatch takes (many views or pieces), one element per thread does.
    return per.per > 1 && code.params.byteLength > MAX_PARAM_BYTES ? emitKernel(plainPlan(out, also, ONE, cpu)) : code;
  }, [], undefined, also);
}

/**
 * The row kernel computing `out` (and writing `also`) with `threads` threads per row. The group is not described:
 * plan/rows.ts finds it from the nodes the walk describes, so equal walks have equal groups.
 */
export function rowKernel(out: Node, group: RowGroup, threads: number, also: readonly Node[] = [], maxSteps = 0): KernelCode {
  return codeFor(out, ["rows", threads, also.length, maxSteps], () => emitKernel(planRows(out, group, threads, also, maxSteps)), [], undefined, also);
}

/**
 * The matmul kernel computing `out` as main's epilogue (with the kernels filling its panels).
 * Which node is main, and whether the panels are filled or were kept, are described.
 */
export function matmulKernel(out: Node, main: Node, variant: MatmulVariant, panels: Panels | null): KernelCode {
  const scratch = panels ? [panels.b] : [];
  const extra: Word[] = ["matmul", variant, panels?.fill ?? "-", scratch.length];
  return codeFor(out, extra, () => emitKernel(planMatmul(out, main, variant, panels)), scratch, main);
}

/**
 * The code kept for a walk from `out` and `also` equal to this one (and equal `extra` words, and
 * `marked` at the same place in it), else make()'s, kept. Its inputs get this walk's memory and
 * `scratch`.
 */
function codeFor(out: Node, extra: Word[], make: () => KernelCode, scratch: Storage[] = [], marked?: Node, also: readonly Node[] = []): KernelCode {
  // Breadth first from out (and a multi-output kernel's other outputs), inputs numbered as found;
  // a node computed before out's kernel (readFromMemory) is read, not walked into.
  const walk = [out, ...also];
  // Nodes numbered so far hold this stamp in schedMark, their number in schedId.
  const numbered = newMark();
  for (let k = 0; k < also.length; k++) {
    also[k]!.schedMark = numbered;
    also[k]!.schedId = k + 1;
  }
  // The other outputs may be inputs of nodes with one consumer: every node is looked up then.
  const multi = also.length > 0;
  // The description, written into the reused array from index 0 to len.
  const words = described;
  let len = 0;
  for (const w of extra) words[len++] = w;
  // A hash of some of the words (shapes, ops, connections) finds the kernels worth comparing.
  let hash = extra.length;
  let cacheable = true;
  // The values of scalar attributes (OpInfo.scalars) in walk order: the kernel's arguments; and
  // where each comes from (its node, and its place among the node's values).
  const values: number[] = [];
  const valueNodes: Node[] = [];
  const valuePlaces: number[] = [];
  for (let k = 0; k < walk.length; k++) {
    const n = walk[k]!;
    const read = readFromMemory(n, out);
    words[len++] = n.dtype;
    words[len++] = read ? 2 : n.data ? 1 : 0;
    words[len++] = n.shape.length;
    hash = mix(hash, n.shape.length);
    for (const d of n.shape) {
      words[len++] = d;
      hash = mix(hash, d);
    }
    if (n.data) {
      words[len++] = n.data.offset;
      for (const d of n.data.strides) words[len++] = d;
    }
    if (read) continue;
    words[len++] = n.op;
    hash = mix(hash, n.op.length);
    if (n.op === "scalar") {
      // The commonest node, whose one attribute is an argument.
      values.push(attrsOf(n, "scalar").value);
      valueNodes.push(n);
      valuePlaces.push(0);
      words[len++] = SCALAR;
    } else {
      const attrs = n.attrs as Record<string, unknown>;
      const scalars = OPS[n.op].scalars;
      if (scalars) {
        const from = values.length;
        pushValues(n, scalars, values);
        for (let j = from; j < values.length; j++) {
          valueNodes.push(n);
          valuePlaces.push(j - from);
        }
        if (n.op === "arange") words[len++] = arangeInInts(n);
      }
      for (const key in attrs) {
        const v = attrs[key];
        if (scalars?.includes(key)) {
          words[len++] = SCALAR;
        } else if (Array.isArray(v)) {
          words[len++] = key;
          words[len++] = LIST;
          words[len++] = v.length;
          for (const x of v) {
            words[len++] = x;
            cacheable &&= isWord(x);
          }
        } else {
          words[len++] = key;
          words[len++] = v as Word;
          cacheable &&= isWord(v);
        }
      }
    }
    words[len++] = END;
    for (const i of n.inputs) {
      // A node with one consumer is reached once; only shared ones can be met again.
      const shared = multi || i.consumers > 1;
      let id: number;
      if (shared && i.schedMark === numbered) id = i.schedId;
      else {
        id = walk.length;
        walk.push(i);
        if (shared) {
          i.schedMark = numbered;
          i.schedId = id;
        }
      }
      words[len++] = id;
      hash = mix(hash, id);
    }
    words[len++] = END;
  }
  if (marked) words[len++] = walk.indexOf(marked);
  if (!cacheable) return make();
  const memoryOf = (slot: Slot): Data => (slot >= 0 ? walk[slot]!.data! : { storage: scratch[-1 - slot]!, strides: [], offset: 0 });
  const hit = templates.get(hash)?.find((t) => same(t.words, words, len));
  const bindsOf = (bound: readonly Bound[]): Bind[] => bound.map((b) => ({ slot: b.slot, node: valueNodes[b.value]!, place: valuePlaces[b.value]!, float: b.float }));
  if (hit) {
    // Unchanged scalars (constants such as an epsilon) keep the kept parameters themselves.
    const fresh = sameWords(hit.values, values) ? null : values;
    const code: KernelCode = { ...hit.code, params: bind(hit.code.params, hit.bound, fresh), inputs: hit.leaves.map(memoryOf), binds: bindsOf(hit.bound) };
    if (hit.outs.length) code.outputs = hit.outs.map(memoryOf);
    if (hit.packs.length)
      code.packs = hit.packs.map((p) => ({
        code: { ...p.code, params: bind(p.code.params, p.bound, fresh), inputs: p.leaves.map(memoryOf), binds: bindsOf(p.bound) },
        out: scratch[p.out]!,
      }));
    return code;
  }
  const description = words.slice(0, len);
  const code = make();
  // Kept with where its inputs were found (all of them, or it is not kept), not with the memory of
  // this evaluation's nodes: a node's memory in the walk, or whole scratch memory.
  const at = new Map(walk.map((n, k) => [n.data, k]));
  const slotOf = (d: Data): Slot => {
    const k = at.get(d);
    if (k !== undefined) return k;
    const j = scratch.indexOf(d.storage);
    return j >= 0 && d.offset === 0 && d.strides.length === 0 ? -1 - j : NaN;
  };
  const leaves = code.inputs.map(slotOf);
  const outs = (code.outputs ?? []).map(slotOf);
  // Each scalar argument as a position in `values`: where its node's start, then its attribute's.
  const starts = new Map<Node, number>();
  let count = 0;
  for (const n of walk) {
    const scalars = OPS[n.op].scalars;
    if (!scalars || readFromMemory(n, out) || starts.has(n)) continue;
    starts.set(n, count);
    count += valueCount(n, scalars);
  }
  const boundOf = (args: ScalarArg[] | undefined): Bound[] =>
    (args ?? []).map((a) => {
      const start = starts.get(a.node);
      if (start === undefined) return { slot: a.slot, value: NaN, float: a.float };
      const scalars = OPS[a.node.op].scalars!;
      const before = valueCount(a.node, scalars.slice(0, scalars.indexOf(a.attr)));
      return { slot: a.slot, value: start + before + a.index, float: a.float };
    });
  const bound = boundOf(code.args);
  const packs = (code.packs ?? []).map((p) => ({
    code: { ...p.code, inputs: [], args: [] },
    leaves: p.code.inputs.map(slotOf),
    bound: boundOf(p.code.args),
    out: scratch.indexOf(p.out),
  }));
  const all = [bound, ...packs.map((p) => p.bound)].flat();
  const found =
    leaves.every((k) => !Number.isNaN(k)) &&
    outs.every((k) => !Number.isNaN(k)) &&
    packs.every((p) => p.out >= 0 && p.leaves.every((k) => !Number.isNaN(k))) &&
    all.every((b) => !Number.isNaN(b.value));
  if (found) {
    const { packs: _, outputs: __, ...bare } = code;
    // Kept without the nodes its arguments came from: a hit binds this walk's values instead.
    keep(hash, { words: description, code: { ...bare, inputs: [], args: [] }, leaves, outs, values, bound, packs });
    code.binds = bindsOf(bound);
    code.packs?.forEach((p, i) => (p.code.binds = bindsOf(packs[i]!.bound)));
  }
  return code;
}

/** The value at `place` among n's scalar attributes (OpInfo.scalars), in their order. */
export function scalarAt(n: Node, place: number): number {
  const attrs = n.attrs as Record<string, number | number[]>;
  for (const key of OPS[n.op].scalars!) {
    const v = attrs[key]!;
    if (typeof v === "number") {
      if (place === 0) return v;
      place--;
    } else {
      if (place < v.length) return v[place]!;
      place -= v.length;
    }
  }
  throw new SmeltError(`eval: internal error: ${n.op} has no scalar argument ${place}; please report it`);
}

export const mix = (hash: number, x: number) => Math.imul(hash ^ x, 0x9e3779b1);

/** Appends the values of n's scalar attributes `keys`, in their order. */
function pushValues(n: Node, keys: readonly string[], values: number[]): void {
  const attrs = n.attrs as Record<string, number | number[]>;
  for (const key of keys) {
    const v = attrs[key]!;
    if (typeof v === "number") values.push(v);
    else for (const x of v) values.push(x);
  }
}

/** How many values n's scalar attributes `keys` hold. */
function valueCount(n: Node, keys: readonly string[]): number {
  const attrs = n.attrs as Record<string, number | number[]>;
  let c = 0;
  for (const key of keys) {
    const v = attrs[key]!;
    c += typeof v === "number" ? 1 : v.length;
  }
  return c;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** A value as the parameter word a kernel reads it from. */
export function word(v: number, float: boolean): number {
  if (!float) return v >>> 0;
  f32[0] = v;
  return u32[0]!;
}

/**
 * params with the bound slots holding this walk's values (null: those it was made with): the
 * kept array itself while they are the same, else a copy (the kept code's stay as they are).
 */
function bind(params: Uint32Array, bound: readonly Bound[], values: readonly number[] | null): Uint32Array {
  if (values === null) return params;
  let out = params;
  for (const b of bound) {
    const w = word(values[b.value]!, b.float);
    if (out[b.slot] === w) continue;
    if (out === params) out = params.slice();
    out[b.slot] = w;
  }
  return out;
}

export function isWord(x: unknown): boolean {
  return typeof x === "number" || typeof x === "string" || typeof x === "boolean";
}

/** Whether a equals b word for word. Object.is: a scalar -0 is not 0 (nor NaN unequal to itself). */
export function sameWords(a: readonly Word[], b: readonly Word[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

/** Whether a equals the first `len` words of b. */
function same(a: readonly Word[], b: readonly Word[], len: number): boolean {
  if (a.length !== len) return false;
  for (let i = 0; i < len; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

/** @internal How many kernels are kept (for tests: a loop whose scalars change must not add any). */
export function keptPlans(): number {
  return kept;
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
