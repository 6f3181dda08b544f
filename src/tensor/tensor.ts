/**
 * Tensor: the handle users hold. It shows one graph node; reading it (toArray, data, item)
 * evaluates the node. Handles are freed deterministically with dispose(), `using`, or tidy();
 * a FinalizationRegistry only catches handles that were dropped without either.
 */
import { SmeltError } from "../errors.ts";
import { awaitStorage, evalNodes, evalNodesAsync } from "../exec/realize.ts";
import { bf16BitsToNumber, decode, type DType, f16BitsToNumber, itemsize, numberToBf16Bits, numberToF16Bits, storageFor } from "../graph/dtype.ts";
import { formatTensor } from "./format.ts";
import { contiguousStrides, isRowContiguous } from "../graph/shape.ts";
import type { Node } from "../graph/node.ts";

export type Mode = "lazy" | "eager";
let mode: Mode = "lazy";

export function setDefaultMode(m: Mode): void {
  if (m !== "lazy" && m !== "eager") throw new SmeltError(`setDefaultMode: mode must be "lazy" or "eager", got ${String(m)}`);
  mode = m;
}
export function getDefaultMode(): Mode {
  return mode;
}
/** Runs fn with every op evaluated as soon as it is created (one kernel each). */
export function eager<T>(fn: () => T): T {
  const saved = mode;
  mode = "eager";
  try {
    return fn();
  } finally {
    mode = saved;
  }
}

const scopes: Tensor[][] = [];
const registry = new FinalizationRegistry<Node>((node) => {
  node.tensors--;
  node.collect();
});

/** Frees the tensor's node if the handle is dropped without dispose() (set in Tensor, for its private fields). */
let watch: (t: Tensor) => void;

export class Tensor {
  #node: Node | null;
  #watched = false;
  static {
    watch = (t) => {
      if (!t.#node) return;
      t.#watched = true;
      registry.register(t, t.#node, t);
    };
  }

  constructor(node: Node) {
    this.#node = node;
    node.tensors++;
    // A handle made inside tidy() is disposed or handed on when it ends; only the others are
    // watched for being dropped (registering costs more than the op that made the handle).
    const scope = scopes[scopes.length - 1];
    if (scope) scope.push(this);
    else watch(this);
    if (mode === "eager") evalNodes([node]);
  }

  /** The node, for ops; throws once disposed. */
  node(op: string): Node {
    if (!this.#node) throw new SmeltError(`${op}: the tensor was disposed`);
    return this.#node;
  }
  get shape(): number[] {
    return [...this.node("shape").shape];
  }
  get dtype(): DType {
    return this.node("dtype").dtype;
  }
  get ndim(): number {
    return this.node("ndim").shape.length;
  }
  get size(): number {
    return this.node("size").size;
  }
  get disposed(): boolean {
    return this.#node === null;
  }

  dispose(): void {
    const n = this.#node;
    if (!n) return;
    this.#node = null;
    if (this.#watched) registry.unregister(this);
    n.tensors--;
    n.collect();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Evaluates the tensor (lazy mode) and waits for the device. */
  eval(): this {
    evalNodes([this.node("eval")]);
    return this;
  }

  /** The elements in row-major order, in the dtype's storage type (float16/bfloat16 as bits). */
  raw(): ArrayLike<number> {
    const n = this.node("toArray");
    evalNodes([n]);
    return readRaw(n);
  }
  /**
   * Flat elements as numbers (booleans for a bool tensor), evaluating first. The element type is
   * not tracked by the compiler: it is number unless given, as in `mask.toArray<boolean>()`.
   */
  toArray<T extends number | boolean = number>(): T[] {
    const n = this.node("toArray");
    evalNodes([n]);
    return decode(n.dtype, readRaw(n) as never) as T[];
  }
  /** The elements as float32 values in row-major order (bool as 0/1), evaluating first. */
  toFloat32Array(): Float32Array {
    const n = this.node("toFloat32Array");
    evalNodes([n]);
    const raw = readRaw(n);
    if (n.dtype === "float32") return raw as Float32Array;
    return Float32Array.from(decode(n.dtype, raw as never) as ArrayLike<number | boolean>, Number);
  }
  async data<T extends number | boolean = number>(): Promise<T[]> {
    await evalNodesAsync([this.node("data")]);
    // Asked again: the tensor may have been disposed while the device computed it.
    const n = this.node("data");
    return decode(n.dtype, readRaw(n) as never) as T[];
  }
  item<T extends number | boolean = number>(): T {
    const n = this.node("item");
    if (n.size !== 1) throw new SmeltError(`item: the tensor has ${n.size} elements, item() needs exactly one (shape [${n.shape}])`);
    return this.toArray<T>()[0]!;
  }
  /** Nested arrays of the tensor's shape. */
  tolist(): unknown {
    const flat = this.toArray() as unknown[];
    const shape = this.shape;
    const build = (d: number, at: number): unknown => {
      if (d === shape.length) return flat[at];
      const stride = shape.slice(d + 1).reduce((a, b) => a * b, 1);
      return Array.from({ length: shape[d]! }, (_, i) => build(d + 1, at + i * stride));
    };
    return build(0, 0);
  }
  /** NumPy's repr: `array([[1, 2],\n       [3, 4]], dtype=int32)`, evaluating the tensor (src/tensor/format.ts). */
  toString(): string {
    const n = this.#node;
    if (!n) return "array(<disposed>)";
    evalNodes([n]);
    const raw = readRaw(n);
    const at = (i: number) => (n.dtype === "bool" ? raw[i] !== 0 : n.dtype === "float16" ? f16BitsToNumber(raw[i]!) : n.dtype === "bfloat16" ? bf16BitsToNumber(raw[i]!) : raw[i]!);
    return formatTensor(n.shape, n.dtype, at, ROUND[n.dtype] ?? ((v) => v));
  }
  /** What console.log and Bun.inspect print: the same as toString(). */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return this.toString();
  }
}

/** Rounding to a float dtype, with which the printer finds the shortest digits that read back. */
const ROUND: Partial<Record<DType, (v: number) => number>> = {
  float32: Math.fround,
  float16: (v) => f16BitsToNumber(numberToF16Bits(v)),
  bfloat16: (v) => bf16BitsToNumber(numberToBf16Bits(v)),
};

/** Copies a computed node's elements out of its storage in row-major order. */
function readRaw(n: Node): ArrayLike<number> {
  const d = n.data!;
  const Ctor = storageFor(n.dtype);
  const size = n.size;
  awaitStorage(d.storage);
  const all = d.storage.buffer.peek(Ctor as never, 0, d.storage.bytes / itemsize(n.dtype)) as unknown as ArrayLike<number> & {
    slice(a: number, b: number): ArrayLike<number>;
  };
  if (isRowContiguous(n.shape, d.strides)) return all.slice(d.offset, d.offset + size);
  const out = new (Ctor as unknown as new (n: number) => ArrayLike<number> & Record<number, number>)(size);
  const cs = contiguousStrides(n.shape);
  for (let i = 0; i < size; i++) {
    let at = d.offset;
    for (let k = 0; k < n.shape.length; k++) at += Math.floor(i / cs[k]!) % n.shape[k]! * d.strides[k]!;
    out[i] = all[at]!;
  }
  return out;
}

/** Evaluates every tensor given (nested arrays and objects of tensors too) in one command buffer. */
export function evalTensors(...xs: unknown[]): void {
  evalNodes(collectNodes(xs));
}
export async function asyncEval(...xs: unknown[]): Promise<void> {
  await evalNodesAsync(collectNodes(xs));
}
function collectNodes(xs: unknown[], out: Node[] = []): Node[] {
  for (const x of xs) {
    if (x instanceof Tensor) out.push(x.node("eval"));
    else if (Array.isArray(x)) collectNodes(x, out);
    else if (isPlainContainer(x)) collectNodes(Object.values(x), out);
  }
  return out;
}

/** Objects whose values may hold tensors; typed arrays and buffers (results read back) never do. */
function isPlainContainer(x: unknown): x is object {
  return !!x && typeof x === "object" && !ArrayBuffer.isView(x) && !(x instanceof ArrayBuffer);
}

/**
 * Runs fn and disposes every tensor it created, except those it returns (found in returned
 * arrays and objects too). fn must be synchronous: the scope ends when fn returns, and a handle
 * made after an await could land in whichever scope is open at that moment.
 */
export function tidy<T>(fn: () => T): T {
  const scope: Tensor[] = [];
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    // Nothing is disposed: the handles are left to the finalizer, as if made outside tidy.
    for (const t of scope) watch(t);
    throw e;
  } finally {
    scopes.pop();
  }
  if (typeof (result as { then?: unknown } | null)?.then === "function") {
    // The async function still runs and may use what it made before its first await.
    for (const t of scope) watch(t);
    throw new SmeltError(
      "tidy: the function returned a Promise; tidy scopes synchronous code only. Inside an async function, " +
        "wrap each synchronous step in its own tidy, or dispose the tensors (dispose(), `using`) after the await",
    );
  }
  const keep = new Set<Tensor>();
  const mark = (x: unknown) => {
    if (x instanceof Tensor) keep.add(x);
    else if (Array.isArray(x)) x.forEach(mark);
    else if (isPlainContainer(x)) Object.values(x).forEach(mark);
  };
  mark(result);
  for (const t of scope) {
    if (!keep.has(t)) t.dispose();
    else handOn(t);
  }
  return result;
}

/** A handle that outlives the scope it was made in goes to the enclosing scope, else to the finalizer. */
function handOn(t: Tensor): void {
  const outer = scopes[scopes.length - 1];
  if (outer) outer.push(t);
  else watch(t);
}

/**
 * Builds a composite op (softmax from max, exp, sum and divide; variance from mean...): the
 * handles fn makes for intermediates are disposed when it returns, so only the graph keeps their
 * nodes alive and disposing the result frees them all. Left to the finalizer instead, they would
 * hold their inputs' memory until the JS loop yields. Cheaper than tidy: one result, no search.
 */
export function composite(fn: () => Tensor): Tensor {
  const scope: Tensor[] = [];
  scopes.push(scope);
  let result: Tensor;
  try {
    result = fn();
  } catch (e) {
    // The intermediates never reached the caller, so nothing else can hold them.
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  let made = false;
  for (const t of scope) {
    if (t !== result) t.dispose();
    else made = true;
  }
  // A result that is one of the inputs (a no-op cast) stays as the caller has it.
  if (made) handOn(result);
  return result;
}
