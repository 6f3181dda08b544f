/**
 * Schedules kept across evaluations. A training step, an optimizer update or a decoding step
 * builds a graph of the same structure every time, and planning it (which nodes get kernels,
 * merges, memory) costs a few microseconds a node in JavaScript: more than the device's work for
 * small models. An evaluation is described in one walk (ops, dtypes, shapes, attributes, edges,
 * consumer counts, handles, the layout of what it reads, which of those share memory); a
 * description seen before finds the schedule made for it, which is given to the new nodes by
 * their place in the walk: the same kernels in the same order, the same merges, memory bound the
 * same way. Scalar attributes (a learning rate, a bias correction, a position) are not part of
 * the description: they are kernel arguments (plans.ts), so a loop whose scalars change still
 * finds its schedule. Like `mx.compile`, but without asking: an equal description is the
 * guarantee, since the scheduler decides from nothing else.
 */
import { SmeltError } from "../errors.ts";
import { type Data, newMark, type Node, tracing } from "../graph/node.ts";
import { postOrder, uncomputed } from "../graph/walk.ts";
import { attrsOf, OPS } from "../graph/op.ts";
import type { Target } from "../runtime/target.ts";
import { arangeInInts } from "./plan/inline.ts";
import { type MatmulVariant, panelKey, type Panels } from "./plan/matmul.ts";
import { type RowGroup, splitColumns, splitRow } from "./plan/rows.ts";
import { memory, stats, type Storage } from "./memory.ts";
import type { KernelCode } from "./emit/builder.ts";
import { isWord, mix, sameWords, scalarAt, type Word, word } from "./plans.ts";

/** What the scheduler decided, on nodes: realize.ts's Schedule. */
export interface ScheduleState {
  readonly target: Target;
  readonly order: Node[];
  readonly rows: Map<Node, RowGroup>;
  readonly matmuls: Map<Node, { main: Node; variant: MatmulVariant; panels: Panels | null }>;
  readonly outputs: Map<Node, Node[]>;
  readonly views: [view: Node, base: Node][];
  /** The reductions split in two stages while planning, in order (plan/rows.ts rewires the graph). */
  readonly splits: { r: Node; columns: boolean }[];
  /** The kept schedule this one replays or was kept as, with its nodes by place. */
  kept: Replaying | null;
  nodes(): Node[];
}

/** A kept schedule and the nodes of one evaluation of it, by their places (Ref). */
export interface Replaying {
  readonly entry: Kept;
  readonly nodes: readonly Node[];
  readonly leaves: readonly Node[];
}

/** Where a kernel's input lies: a node's memory, or the panels of the schedule's matmul number `panel`. */
type DataRef = { node: Ref } | { panel: number };
interface KeptArg {
  slot: number;
  node: Ref;
  place: number;
  float: boolean;
}
/** A kernel's code without this evaluation's memory and scalars: where they come from instead. */
interface KeptCode {
  code: KernelCode;
  inputs: DataRef[];
  outputs: DataRef[] | null;
  args: KeptArg[];
  packs: { code: KernelCode; inputs: DataRef[]; args: KeptArg[]; panel: number }[] | null;
}

/** One walk over an evaluation: its description, and its nodes by their place in it. */
export interface Walk {
  words: Word[];
  hash: number;
  /** The uncomputed nodes, inputs first. */
  nodes: Node[];
  /** The computed nodes they read, in the order met. */
  leaves: Node[];
  /** The distinct storages of the leaves, in the order met. */
  storages: Storage[];
}

/**
 * A node of the schedule: its place among the walk's nodes (>= 0), or after them, the nodes the
 * splits made (three per split: the reshape of the input, the partials, the reshape r reads).
 */
type Ref = number;
/** A storage: one bound for this evaluation (>= 0), or a leaf's (-1 - its place among the walk's storages). */
type StorageRef = number;

interface Kept {
  words: Word[];
  target: Target;
  splits: { r: Ref; columns: boolean }[];
  order: Ref[];
  inlineCounts: number[];
  /** Every node given memory (kernels, further outputs, views): where, and its place in the order. */
  data: { node: Ref; storage: StorageRef; strides: number[]; offset: number; at: number }[];
  rows: { node: Ref; group: Omit<RowGroup, "reductions" | "broadcasts" | "sums">; reductions: Ref[]; broadcasts: Ref[]; sums: Ref[] }[];
  matmuls: {
    node: Ref;
    main: Ref;
    variant: MatmulVariant;
    /** kept: panels derived from a weight's memory; else the storage they were given. */
    panels: null | { kept: boolean; storage: StorageRef; bytes: number; fill: boolean; summed: { sum: Ref; product: Ref; scale: Ref | null } | null };
  }[];
  outputs: { root: Ref; also: Ref[] }[];
  views: { view: Ref; base: Ref }[];
  /** The storages bound for the evaluation: bytes, the op named if binding fails, how many hold each. */
  storages: { bytes: number; op: string; holders: number }[];
  /** Each kernel's code (null: made every time, as a random kernel's), once the first evaluation made it. */
  codes: (KeptCode | null)[] | null;
}

// Separators no attribute key or value can equal.
const LIST = Symbol("list");
const LEAF = Symbol("leaf");
const ROOTS = Symbol("roots");
// An op as a number for the hash.
const OP_CODES = new Map(Object.keys(OPS).map((op, i) => [op, i + 1]));
// Schedules kept at most, and words of their descriptions (about 8 bytes each) at most; the
// oldest go first.
const LIMIT = 64;
const WORDS_LIMIT = 1 << 22;
const kept = new Map<number, Kept[]>();
let keptCount = 0;
let keptWords = 0;
/** Descriptions met once: a schedule is kept the second time, so graphs that never repeat (a growing cache) cost no copies. */
const seen = new Set<number>();
const SEEN_LIMIT = 4096;
/** The description of the last walk, reused from call to call; copied only when kept. */
const described: Word[] = [];

const disabled = process.env.SMELT_REPLAY === "0";

/**
 * Describes the evaluation of roots: every uncomputed node under them, inputs first, and the
 * computed ones they read. Null when some attribute is no plain value (nothing to compare).
 */
export function describe(roots: readonly Node[]): Walk | null {
  if (disabled) return null;
  const words = described;
  let len = 0;
  let hash = roots.length;
  // The uncomputed nodes, inputs first; numbered as they are described.
  const nodes = postOrder(roots, uncomputed, "schedMark");
  const leaves: Node[] = [], storages: Storage[] = [];
  const mark = newMark();
  // Leaves are numbered in schedId as -1 - place; uncomputed nodes as their place.
  const refOf = (x: Node): number => {
    if (x.schedMark === mark) return x.schedId;
    // A computed node met for the first time.
    x.schedMark = mark;
    x.schedId = -1 - leaves.length;
    leaves.push(x);
    const d = x.data!;
    const st = d.storage;
    if (st.walkMark !== mark) {
      st.walkMark = mark;
      st.walkId = storages.length;
      storages.push(st);
    }
    const s = st.walkId;
    words[len++] = LEAF;
    words[len++] = x.dtype;
    words[len++] = s;
    words[len++] = d.offset;
    words[len++] = x.shape.length;
    for (const v of x.shape) words[len++] = v;
    for (const v of d.strides) words[len++] = v;
    return x.schedId;
  };
  for (let k = 0; k < nodes.length; k++) {
    const n = nodes[k]!;
    // Inputs first: their numbers (and the leaves' descriptions) come before n's.
    const refs = n.inputs.map(refOf);
    n.schedMark = mark;
    n.schedId = k;
    words[len++] = n.op;
    words[len++] = n.dtype;
    words[len++] = n.consumers;
    words[len++] = n.tensors > 0;
    words[len++] = n.shape.length;
    hash = mix(hash, OP_CODES.get(n.op)!);
    for (const v of n.shape) {
      words[len++] = v;
      hash = mix(hash, v);
    }
    if (n.op === "random") {
      // Its arguments and key are read when its kernel is made; only their form matters here.
      const a = attrsOf(n as Node<"random">, "random");
      words[len++] = a.kernel;
      words[len++] = a.params.length;
      words[len++] = a.key === null;
    } else if (n.op !== "scalar") {
      const scalars = OPS[n.op].scalars;
      if (n.op === "arange") words[len++] = arangeInInts(n);
      const attrs = n.attrs as Record<string, unknown>;
      for (const key in attrs) {
        if (scalars?.includes(key)) continue;
        const v = attrs[key];
        words[len++] = key;
        if (Array.isArray(v)) {
          words[len++] = LIST;
          words[len++] = v.length;
          for (const x of v) {
            if (!isWord(x)) return null;
            words[len++] = x;
          }
        } else {
          if (!isWord(v)) return null;
          words[len++] = v as Word;
        }
      }
    }
    words[len++] = refs.length;
    for (const r of refs) {
      words[len++] = r;
      hash = mix(hash, r);
    }
  }
  words[len++] = ROOTS;
  words[len++] = tracing.depth > 0;
  for (const root of roots) words[len++] = refOf(root);
  words.length = len;
  return { words, hash, nodes, leaves, storages };
}


/**
 * Gives s the schedule kept for an evaluation described as walk, if there is one and it still
 * holds (panels a weight kept may have been dropped since): the nodes get the kernels, memory and
 * places it gave the nodes at their places then. False when there is none; s is then untouched.
 */
export function replay(walk: Walk, s: ScheduleState): boolean {
  const k = kept.get(walk.hash)?.find((c) => c.target === s.target && sameWords(c.words, walk.words) && panelsHold(c, walk));
  if (!k) return false;
  const nodes = walk.nodes.slice();
  for (const { r, columns } of k.splits) {
    const node = nodes[r]!;
    const partial = columns ? splitColumns(node) : splitRow(node);
    // The same structure splits the same way: this cannot fail.
    if (!partial) throw new SmeltError(`eval: internal error: a kept schedule's split of ${node.op} did not apply; please report it`);
    nodes.push(partial.inputs[0]!, partial, node.inputs[0]!);
  }
  const at = (ref: Ref) => nodes[ref]!;
  const bound: Storage[] = [];
  // Panels kept with weights, retained here; weights whose panels were made here.
  const retained: Storage[] = [];
  const derived: Storage[] = [];
  const panels: (Panels | null)[] = [];
  try {
    for (const b of k.storages) {
      const st = memory.reserve(b.bytes);
      memory.bind(st, b.op);
      st.refs = b.holders;
      bound.push(st);
    }
    for (const m of k.matmuls) {
      const p = m.panels;
      if (!p) {
        panels.push(null);
        continue;
      }
      const main = at(m.main);
      const summed = p.summed && { sum: at(p.summed.sum), product: at(p.summed.product), scale: p.summed.scale === null ? null : at(p.summed.scale) };
      if (!p.kept) {
        panels.push({ b: bound[p.storage]!, fill: true, keeper: null, summed });
        continue;
      }
      const B = main.inputs[1]!;
      const weight = B.data!.storage;
      const d = weight.derive(panelKey(B), () => memory.allocate(p.bytes, "matmul"));
      if (d.fresh) derived.push(weight);
      retained.push(d.storage.retain());
      panels.push({ b: d.storage, fill: p.fill, keeper: p.fill ? weight : null, summed });
    }
  } catch (e) {
    for (const st of bound) {
      st.refs = 1;
      st.release();
    }
    for (const st of retained) st.release();
    for (const w of derived) w.dropDerived();
    throw e;
  }
  const storageOf = (ref: StorageRef): Storage => (ref >= 0 ? bound[ref]! : walk.storages[-1 - ref]!.retain());
  for (const d of k.data) {
    const n = at(d.node);
    n.data = { storage: storageOf(d.storage), strides: d.strides.slice(), offset: d.offset };
    n.schedOrder = d.at;
  }
  for (let i = 0; i < k.order.length; i++) {
    const n = at(k.order[i]!);
    n.schedInlineCount = k.inlineCounts[i]!;
    s.order.push(n);
  }
  for (const r of k.rows) s.rows.set(at(r.node), { ...r.group, reductions: r.reductions.map(at), broadcasts: r.broadcasts.map(at), sums: r.sums.map(at) });
  k.matmuls.forEach((m, i) => s.matmuls.set(at(m.node), { main: at(m.main), variant: m.variant, panels: panels[i]! }));
  for (const o of k.outputs) s.outputs.set(at(o.root), o.also.map(at));
  for (const v of k.views) s.views.push([at(v.view), at(v.base)]);
  s.kept = { entry: k, nodes, leaves: walk.leaves };
  stats.schedulesReplayed++;
  return true;
}

/**
 * The code of each kernel of a replayed schedule, from the code kept with it: this evaluation's
 * memory and scalars bound; null for a kernel whose code is made every time. Null before the
 * schedule has kept its code (keepCodes).
 */
export function keptCodes(r: Replaying, s: ScheduleState): (KernelCode | null)[] | null {
  const codes = r.entry.codes;
  if (!codes) return null;
  const at = (ref: Ref) => (ref >= 0 ? r.nodes[ref]! : r.leaves[-1 - ref]!);
  const panels = [...s.matmuls.values()].map((m) => m.panels);
  const dataOf = (d: DataRef): Data => ("node" in d ? at(d.node).data! : { storage: panels[d.panel]!.b, strides: [], offset: 0 });
  const params = (kept: Uint32Array, args: readonly KeptArg[]): Uint32Array => {
    let out = kept;
    for (const a of args) {
      const w = word(scalarAt(at(a.node), a.place), a.float);
      if (out[a.slot] === w) continue;
      if (out === kept) out = kept.slice();
      out[a.slot] = w;
    }
    return out;
  };
  return codes.map((c) => {
    if (!c) return null;
    const code: KernelCode = { ...c.code, params: params(c.code.params, c.args), inputs: c.inputs.map(dataOf) };
    if (c.outputs) code.outputs = c.outputs.map(dataOf);
    if (c.packs) code.packs = c.packs.map((p) => ({ code: { ...p.code, params: params(p.code.params, p.args), inputs: p.inputs.map(dataOf) }, out: panels[p.panel]!.b }));
    return code;
  });
}

/**
 * Keeps with r's schedule the code of each of its kernels (in order), as where its memory and
 * scalars come from; code that plans.ts did not keep (binds absent) is made again every time.
 */
export function keepCodes(r: Replaying, s: ScheduleState, codes: readonly KernelCode[]): void {
  const refs = new Map<Node, Ref>();
  r.nodes.forEach((n, i) => refs.set(n, i));
  r.leaves.forEach((n, j) => refs.set(n, -1 - j));
  const dataRefs = new Map<Data, Ref>();
  for (const [n, ref] of refs) if (n.data) dataRefs.set(n.data, ref);
  const panelOf = new Map<Storage, number>();
  [...s.matmuls.values()].forEach((m, i) => m.panels && panelOf.set(m.panels.b, i));
  let lost = false;
  const refOf = (d: Data): DataRef => {
    const node = dataRefs.get(d);
    if (node !== undefined) return { node };
    const panel = panelOf.get(d.storage);
    if (panel === undefined || d.offset !== 0 || d.strides.length !== 0) lost = true;
    return { panel: panel ?? -1 };
  };
  const argsOf = (code: KernelCode): KeptArg[] =>
    code.binds!.map((b) => {
      const node = refs.get(b.node);
      if (node === undefined) lost = true;
      return { slot: b.slot, node: node ?? 0, place: b.place, float: b.float };
    });
  const bare = (code: KernelCode): KernelCode => {
    const { inputs: _, outputs: __, packs: ___, args: ____, binds: _____, ...rest } = code;
    return { ...rest, inputs: [] };
  };
  r.entry.codes = codes.map((code) => {
    if (!code.binds || code.library || code.packs?.some((p) => !p.code.binds)) return null;
    lost = false;
    const kept: KeptCode = {
      code: bare(code),
      inputs: code.inputs.map(refOf),
      outputs: code.outputs ? code.outputs.map(refOf) : null,
      args: argsOf(code),
      packs: code.packs
        ? code.packs.map((p) => {
            const panel = panelOf.get(p.out);
            if (panel === undefined) lost = true;
            return { code: bare(p.code), inputs: p.code.inputs.map(refOf), args: argsOf(p.code), panel: panel ?? -1 };
          })
        : null,
    };
    return lost ? null : kept;
  });
}

/**
 * Whether the panels kept with weights are there where k read them, and missing where it filled
 * them: memory running short drops them, and a new weight has none yet.
 */
function panelsHold(k: Kept, walk: Walk): boolean {
  for (const m of k.matmuls) {
    const p = m.panels;
    if (!p?.kept) continue;
    const B = walk.nodes[m.main]!.inputs[1]!;
    if ((B.data!.storage.kept(panelKey(B)) === undefined) !== p.fill) return false;
  }
  return true;
}

/**
 * Keeps what s decided for the evaluation described as walk (once s has bound its memory), the
 * second time such an evaluation is met. Nothing is kept when some part of s is not found among
 * the walk's nodes and storages.
 */
export function keep(walk: Walk, s: ScheduleState): void {
  if (!seen.has(walk.hash)) {
    if (seen.size >= SEEN_LIMIT) seen.clear();
    seen.add(walk.hash);
    return;
  }
  const refs = new Map<Node, Ref>();
  walk.nodes.forEach((n, i) => refs.set(n, i));
  let extra = walk.nodes.length;
  for (const { r } of s.splits) {
    const outer = r.inputs[0]!, partial = outer.inputs[0]!, inner = partial.inputs[0]!;
    refs.set(inner, extra++);
    refs.set(partial, extra++);
    refs.set(outer, extra++);
  }
  let missing = false;
  const ref = (n: Node): Ref => {
    const r = refs.get(n);
    if (r === undefined) missing = true;
    return r ?? -1;
  };
  const leafStorage = new Map(walk.storages.map((st, i) => [st, -1 - i]));
  const boundRefs = new Map<Storage, StorageRef>();
  const storages: Kept["storages"] = [];
  const storageRef = (st: Storage, op: string): StorageRef => {
    const leaf = leafStorage.get(st);
    if (leaf !== undefined) return leaf;
    let r = boundRefs.get(st);
    if (r === undefined) {
      r = storages.length;
      boundRefs.set(st, r);
      storages.push({ bytes: st.bytes, op, holders: 0 });
    }
    storages[r]!.holders++;
    return r;
  };
  const data: Kept["data"] = s.nodes().map((n) => ({ node: ref(n), storage: storageRef(n.data!.storage, n.op), strides: n.data!.strides.slice(), offset: n.data!.offset, at: n.schedOrder }));
  const matmuls: Kept["matmuls"] = [];
  for (const [n, { main, variant, panels: p }] of s.matmuls) {
    let panels: Kept["matmuls"][number]["panels"] = null;
    if (p) {
      const keptPanels = main.inputs[1]!.schedOrder < 0;
      const summed = p.summed && { sum: ref(p.summed.sum), product: ref(p.summed.product), scale: p.summed.scale && ref(p.summed.scale) };
      panels = { kept: keptPanels, storage: keptPanels ? 0 : storageRef(p.b, "matmul"), bytes: p.b.bytes, fill: p.fill, summed };
    }
    matmuls.push({ node: ref(n), main: ref(main), variant, panels });
  }
  const entry: Kept = {
    words: walk.words.slice(),
    target: s.target,
    splits: s.splits.map(({ r, columns }) => ({ r: ref(r), columns })),
    order: s.order.map(ref),
    inlineCounts: s.order.map((n) => n.schedInlineCount),
    data,
    rows: [...s.rows].map(([n, g]) => {
      const { reductions, broadcasts, sums, ...group } = g;
      return { node: ref(n), group, reductions: reductions.map(ref), broadcasts: broadcasts.map(ref), sums: sums.map(ref) };
    }),
    matmuls,
    outputs: [...s.outputs].map(([root, also]) => ({ root: ref(root), also: also.map(ref) })),
    views: s.views.map(([v, b]) => ({ view: ref(v), base: ref(b) })),
    storages,
    codes: null,
  };
  // A node the walk did not reach, or memory it cannot name: planning did something not described.
  if (missing) return;
  while (kept.size > 0 && (keptCount >= LIMIT || keptWords + entry.words.length > WORDS_LIMIT)) {
    const [oldest, list] = kept.entries().next().value!;
    kept.delete(oldest);
    keptCount -= list.length;
    for (const k of list) keptWords -= k.words.length;
  }
  const list = kept.get(walk.hash);
  if (list) list.push(entry);
  else kept.set(walk.hash, [entry]);
  keptCount++;
  keptWords += entry.words.length;
  const nodes = walk.nodes.slice();
  for (const { r } of s.splits) {
    const outer = r.inputs[0]!, partial = outer.inputs[0]!;
    nodes.push(partial.inputs[0]!, partial, outer);
  }
  s.kept = { entry, nodes, leaves: walk.leaves };
}

/** @internal For tests: how many schedules are kept. */
export function keptSchedules(): number {
  return keptCount;
}


