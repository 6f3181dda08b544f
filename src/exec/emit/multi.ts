/**
 * Multi-tensor kernels: the elementwise and reduction kernels of one evaluation whose generated
 * source is the same (one body over other buffers, parameters and element counts, as the update
 * of every parameter of a model by one optimizer is) run as one dispatch. Its threads are the members' elements one after
 * the other, each member's range rounded up to whole threadgroups, so that a threadgroup belongs
 * to one member: a thread finds its member from its threadgroup's first thread, with a table of
 * where each member starts, its element count and where its parameters are.
 *
 * Buffers are bound directly, as every kernel's are, so a dispatch takes as many members as the
 * buffer slots hold (Metal's 31, smelt.h SMELT_MAX_BUFFER_SLOTS): no ABI for device addresses,
 * and the same code on every backend. A kernel's source names the number of members it was made
 * for, and groups are always made that size (missing members get no threads), so an evaluation
 * compiles one multi-tensor kernel per body whatever the number or shapes of its members.
 */
import type { Data } from "../../graph/node.ts";
import { MAX_BUFFER_SLOTS } from "../../runtime/records.ts";
import type { Storage } from "../memory.ts";
import { ELEMENT_POSITION, type KernelCode, MAX_PARAM_BYTES } from "./builder.ts";

/**
 * A kernel in evaluation order, with the memory it writes; `shares` when it may be a member: it
 * writes each of its elements once, from its inputs alone (elementwise kernels and reductions),
 * so that threads repeating some of its elements write the same values.
 */
export interface Launch {
  code: KernelCode;
  out: Data;
  shares: boolean;
}

/** A dispatch: one kernel, or members run by one multi-tensor kernel (out: the first member's). */
export interface Step<L extends Launch = Launch> {
  code: KernelCode;
  out: Data;
  members: readonly L[];
}

/** Threads per threadgroup of a multi-tensor kernel, at most (usual kernels' size). */
const GROUP = 256;

/**
 * The threadgroup size of a multi-tensor kernel with a member of n elements: no more than n, as a
 * group covers elements of one member only; members are grouped by it.
 */
const groupFor = (n: number) => Math.min(GROUP, 2 ** Math.floor(Math.log2(n)));
// What the signature() of an elementwise or reduce kernel ends with: one thread per element.
const SEPARATOR = ",\n              ";
const POSITION = `${SEPARATOR}${ELEMENT_POSITION.join(SEPARATOR)}) {\n`;
const HEAD = "kernel void k(";

/** The declarations of a generated kernel's buffers, in slot order, without their attributes. */
function bufferDecls(source: string): string[] | null {
  const end = source.indexOf(POSITION);
  if (!source.startsWith(HEAD) || end < 0 || source.indexOf(") {\n") !== end + POSITION.length - 4) return null;
  const decls = source.slice(HEAD.length, end).split(SEPARATOR);
  const out: string[] = [];
  for (const [i, d] of decls.entries()) {
    const attr = ` [[buffer(${i})]]`;
    if (!d.endsWith(attr)) return null;
    out.push(d.slice(0, -attr.length));
  }
  return out;
}

/**
 * How many members a multi-tensor kernel of code takes (0: it cannot be one): generated kernels
 * of one thread per element in threadgroups of the usual size (a kernel given a smaller one
 * spreads its few threads over the cores), whose buffers leave room for at least two.
 */
function capacity(code: KernelCode): number {
  if (code.library || code.packs?.length || code.dispatch.threadgroups) return 0;
  const [x, y, z] = code.dispatch.size;
  if (x <= 0 || y !== 1 || z !== 1 || code.dispatch.group[0] !== Math.min(GROUP, x)) return 0;
  const n = Math.floor((MAX_BUFFER_SLOTS - 1) / (1 + code.inputs.length + (code.outputs?.length ?? 0)));
  return n >= 2 && bufferDecls(code.source) ? n : 0;
}

/** The buffers of member m, as a multi-tensor kernel binds them: first outputs, inputs, other outputs. */
function memberBuffers<T>(m: number, count: number, first: T, inputs: readonly T[], outputs: readonly T[]): { slot: number; buffer: T }[] {
  // Slot 0 is the table, slot 1 member 0's first output; then every member's inputs (what the
  // dispatch reads), then the other outputs (what it writes), as encode() binds a kernel's.
  const written = 2 + count * inputs.length;
  const outAt = (k: number) => written + m * (1 + outputs.length) - 1 + k;
  return [
    { slot: m === 0 ? 1 : outAt(0), buffer: first },
    ...inputs.map((buffer, i) => ({ slot: 2 + m * inputs.length + i, buffer })),
    ...outputs.map((buffer, i) => ({ slot: outAt(i + 1), buffer })),
  ];
}

const sources = new Map<string, string>();

/**
 * The multi-tensor kernel of `count` members of kernel `member`: the member's kernel becomes a
 * function of its buffers and element, called with the buffers of the thread's member.
 */
function multiSource(member: string, inputs: number, count: number): string {
  const key = `${count} ${member}`;
  const known = sources.get(key);
  if (known) return known;
  const [params, ...decls] = bufferDecls(member)!;
  const fn = `static inline void k_member(${[params, ...decls, "uint gid"].join(", ")}) {\n${member.slice(member.indexOf(POSITION) + POSITION.length)}`;
  // A declaration's type, and the name of member m's buffer j.
  const type = (d: string) => d.slice(0, d.lastIndexOf(" "));
  const name = (m: number, j: number) => `b${m}_${j}`;
  const idx = decls.map((_, j) => j);
  const slots: string[] = ["constant uint* T [[buffer(0)]]"];
  for (let m = 0; m < count; m++) {
    for (const { slot, buffer: j } of memberBuffers(m, count, 0, idx.slice(1, 1 + inputs), idx.slice(1 + inputs)))
      slots[slot] = `${type(decls[j]!)} ${name(m, j)} [[buffer(${slot})]]`;
  }
  // A threadgroup belongs to one member and its threads take consecutive elements: a member's
  // last group is moved back to end at its last element (recomputing a few, to the same values),
  // so that no thread checks a bound. The host backend's loop over a group's threads then has one
  // member, buffers and base, and vectorizes (a bound check or clamped index made it gather).
  const lines = [
    "  uint first = group * threads;",
    `  uint j = ${Array.from({ length: count - 1 }, (_, m) => `uint(first >= T[${m + 1}])`).join(" + ")};`,
    `  uint e = min(first - T[j], T[${count} + j] - threads) + tid;`,
  ];
  const args = [`T + T[${2 * count} + j]`];
  decls.forEach((d, j) => {
    lines.push(`  ${type(d)} const p${j}s[${count}] = {${Array.from({ length: count }, (_, m) => name(m, j)).join(", ")}};`);
    args.push(`p${j}s[j]`);
  });
  lines.push(`  k_member(${[...args, "e"].join(", ")});`);
  const position = ["uint group [[threadgroup_position_in_grid]]", "uint threads [[threads_per_threadgroup]]", "uint tid [[thread_position_in_threadgroup]]"].join(SEPARATOR);
  const source = `${fn}\n${HEAD}${[...slots, position].join(SEPARATOR)}) {\n${lines.join("\n")}\n}\n`;
  sources.set(key, source);
  return source;
}

/** One dispatch running members (at most count of them) of one source. */
function multiKernel<L extends Launch>(members: readonly L[], count: number, group: number): Step<L> {
  const first = members[0]!.code;
  // The table: where each member's threads start, its elements, where its parameters are; then
  // the parameters. Missing members start past every thread, have none, and bind the last one's
  // buffers.
  const starts: number[] = [], counts: number[] = [], at: number[] = [], params: number[] = [];
  let threads = 0;
  const fill = (m: number) => members[Math.min(m, members.length - 1)]!;
  const buffers: Data[] = [];
  for (let m = 0; m < count; m++) {
    const k = members[m]?.code;
    starts.push(threads);
    counts.push(k ? k.dispatch.size[0] : 0);
    at.push(3 * count + params.length);
    if (k) {
      threads += Math.ceil(k.dispatch.size[0] / group) * group;
      params.push(...k.params);
    }
    const l = fill(m);
    for (const { slot, buffer } of memberBuffers(m, count, l.out, l.code.inputs, l.code.outputs ?? [])) buffers[slot] = buffer;
  }
  const code: KernelCode = {
    source: multiSource(first.source, first.inputs.length, count),
    params: Uint32Array.from([...starts, ...counts, ...at, ...params], (x) => x >>> 0),
    inputs: buffers.slice(2, 2 + count * first.inputs.length),
    outputs: buffers.slice(2 + count * first.inputs.length),
    dispatch: { threadgroups: false, size: [threads, 1, 1], group: [group, 1, 1] },
  };
  return { code, out: members[0]!.out, members };
}

/** The memory a launch reads, or writes (its packs' included). */
function storages(l: Launch, written: boolean): Storage[] {
  const packs = l.code.packs ?? [];
  if (written) return [l.out.storage, ...(l.code.outputs ?? []).map((d) => d.storage), ...packs.map((p) => p.out)];
  return [...l.code.inputs, ...packs.flatMap((p) => p.code.inputs)].map((d) => d.storage);
}

/** Members gathered so far for one source, with what they read and write. */
interface Open<L extends Launch> {
  members: L[];
  count: number;
  group: number;
  words: number;
  reads: Set<Storage>;
  writes: Set<Storage>;
}

/** Parameter words a dispatch may take. */
const MAX_WORDS = MAX_PARAM_BYTES / 4;

/**
 * The dispatches of launches (in evaluation order): kernels of one source that can run as one
 * become one multi-tensor dispatch, placed where its last member can go. A member moves later
 * past the kernels between it and there, so none of those may read what it writes or write what
 * it reads or writes; nor may a member read or write what another one writes (they run at once).
 */
export function multiTensor<L extends Launch>(launches: readonly L[]): Step<L>[] {
  const steps: Step<L>[] = [];
  const open = new Map<string, Open<L>>();
  const close = (key: string) => {
    const g = open.get(key)!;
    open.delete(key);
    steps.push(g.members.length === 1 ? { ...g.members[0]!, members: g.members } : multiKernel(g.members, g.count, g.group));
  };
  const conflicts = (g: Open<L>, l: L) =>
    storages(l, false).some((s) => g.writes.has(s)) || storages(l, true).some((s) => g.writes.has(s) || g.reads.has(s));
  for (const l of launches) {
    const count = l.shares ? capacity(l.code) : 0;
    const group = groupFor(l.code.dispatch.size[0]);
    const key = count ? `${group} ${l.code.source}` : null;
    for (const [k, g] of [...open]) if (k !== key && conflicts(g, l)) close(k);
    if (key === null) {
      steps.push({ ...l, members: [l] });
      continue;
    }
    let g = open.get(key);
    if (g && (g.members.length === g.count || g.words + l.code.params.length > MAX_WORDS || conflicts(g, l))) {
      close(key);
      g = undefined;
    }
    if (!g) open.set(key, (g = { members: [], count, group, words: 3 * count, reads: new Set(), writes: new Set() }));
    g.members.push(l);
    g.words += l.code.params.length;
    for (const s of storages(l, false)) g.reads.add(s);
    for (const s of storages(l, true)) g.writes.add(s);
  }
  for (const k of [...open.keys()]) close(k);
  return steps;
}
