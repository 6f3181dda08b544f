/**
 * Shape and stride arithmetic: validation, broadcasting, axes, reshape inference, and the view
 * plans of basic indexing. Strides and offsets are in elements, never bytes. Every check throws a
 * SmeltError naming the op and the offending values, so misuse is reported at graph build.
 */
import { SmeltError } from "../errors.ts";

export type Shape = readonly number[];

/** `[2,3]`: how shapes and axis lists appear in messages. */
function fmt(values: readonly unknown[]): string {
  return `[${values.map((v) => (typeof v === "string" ? JSON.stringify(v) : String(v))).join(",")}]`;
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return fmt(value);
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "symbol") return value.toString();
  if (value === null || typeof value !== "object") return String(value);
  return Object.prototype.toString.call(value);
}

export function shapeSize(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function sameShape(a: Shape, b: Shape): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    // A 0-size dim would zero every outer stride; keep them as if it were 1 so they stay distinct.
    s *= Math.max(shape[i] as number, 1);
  }
  return strides;
}

/**
 * The most elements a tensor may have. Kernels index elements with 32-bit signed integers, and
 * their loops step up to one block of a threadgroup (2^15 elements) past the last index before
 * they stop; the margin keeps that step inside the int range too.
 */
export const MAX_ELEMENTS = 2 ** 31 - 2 ** 16;

/** Throws, naming op, when a tensor of this shape would have more elements than MAX_ELEMENTS. */
export function checkSize(op: string, shape: Shape): void {
  let n = 1;
  for (const d of shape) n *= d;
  if (n > MAX_ELEMENTS) {
    throw new SmeltError(`${op}: shape ${fmt(shape)} has ${n} elements, more than a tensor may have (2^31 - 2^16 = ${MAX_ELEMENTS}: kernels index with 32-bit integers)`);
  }
}

export function checkShape(op: string, shape: unknown, arg = "shape"): number[] {
  if (!Array.isArray(shape)) {
    throw new SmeltError(`${op}: ${arg} must be an array of non-negative integers, got ${describe(shape)}`);
  }
  for (const d of shape as unknown[]) {
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      throw new SmeltError(
        `${op}: ${arg} must be an array of non-negative integers, got ${describe(shape)} (bad dimension ${describe(d)})`,
      );
    }
  }
  const out = (shape as number[]).map((d) => d + 0); // + 0 turns -0 into 0
  checkSize(op, out);
  return out;
}

function joinShapes(shapes: readonly Shape[]): string {
  const parts = shapes.map(fmt);
  if (parts.length <= 2) return parts.join(" and ");
  return `${parts.slice(0, -1).join(", ")} and ${parts[parts.length - 1]}`;
}

/** NumPy broadcasting: align right; each dim pair must be equal or contain a 1. */
export function broadcastShapes(op: string, ...shapes: Shape[]): number[] {
  const ndim = Math.max(0, ...shapes.map((s) => s.length));
  const out = new Array<number>(ndim).fill(1);
  for (const s of shapes) {
    const lead = ndim - s.length;
    for (let j = 0; j < s.length; j++) {
      const d = s[j] as number;
      const cur = out[lead + j] as number;
      if (d === cur || d === 1) continue;
      if (cur !== 1) throw new SmeltError(`${op}: shapes ${joinShapes(shapes)} cannot be broadcast together`);
      out[lead + j] = d;
    }
  }
  checkSize(op, out);
  return out;
}

/** Strides that read `shape` (with `strides`) as the broadcast `target`; broadcast dims get 0. */
export function broadcastStrides(shape: Shape, strides: readonly number[], target: Shape): number[] {
  const lead = target.length - shape.length;
  return target.map((t, i) => {
    const j = i - lead;
    if (j < 0) return 0;
    return shape[j] === 1 && t !== 1 ? 0 : (strides[j] as number);
  });
}

export function normalizeAxis(op: string, axis: number, ndim: number, arg = "axis"): number {
  if (typeof axis !== "number" || !Number.isInteger(axis)) {
    throw new SmeltError(`${op}: ${arg} must be an integer, got ${describe(axis)}`);
  }
  if (axis < -ndim || axis >= ndim) {
    throw new SmeltError(`${op}: ${arg} ${axis} is out of range for a ${ndim}-D array`);
  }
  return axis < 0 ? axis + ndim : axis + 0;
}

/** Axes for a reduction: sorted ascending, unique; undefined/null means every axis. */
export function normalizeAxes(
  op: string,
  axes: number | readonly number[] | undefined | null,
  ndim: number,
): number[] {
  if (axes === undefined || axes === null) return Array.from({ length: ndim }, (_, i) => i);
  if (typeof axes === "number") return [normalizeAxis(op, axes, ndim)];
  if (!Array.isArray(axes)) {
    throw new SmeltError(`${op}: axis must be an integer or an array of integers, got ${describe(axes)}`);
  }
  const seen = new Set<number>();
  for (const a of axes) {
    const n = normalizeAxis(op, a, ndim);
    if (seen.has(n)) throw new SmeltError(`${op}: duplicate axis ${a} in ${fmt(axes)}`);
    seen.add(n);
  }
  return [...seen].sort((x, y) => x - y);
}

export function reducedShape(shape: Shape, axes: readonly number[], keepdims: boolean): number[] {
  const reduced = new Set(axes);
  const out: number[] = [];
  shape.forEach((d, i) => {
    if (!reduced.has(i)) out.push(d);
    else if (keepdims) out.push(1);
  });
  return out;
}

/** Resolves a reshape target with at most one -1 against the source size. */
export function inferReshape(op: string, from: Shape, to: readonly number[]): number[] {
  let unknown = -1;
  let known = 1;
  if (!Array.isArray(to)) throw new SmeltError(`${op}: shape must be an array of integers, got ${describe(to)}`);
  to.forEach((d, i) => {
    if (d === -1) {
      if (unknown >= 0) throw new SmeltError(`${op}: can only specify one unknown dimension (-1), got ${fmt(to)}`);
      unknown = i;
    } else if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      throw new SmeltError(`${op}: shape must hold non-negative integers or one -1, got ${fmt(to)}`);
    } else {
      known *= d;
    }
  });
  const size = shapeSize(from);
  const mismatch = () =>
    new SmeltError(`${op}: cannot reshape array of shape ${fmt(from)} (size ${size}) into shape ${fmt(to)}`);
  const out = to.map((d) => d + 0);
  if (unknown >= 0) {
    // With a 0 among the known dims, any value fits -1 (or none does): ambiguous, as in NumPy.
    if (known === 0) throw mismatch();
    if (size % known !== 0) throw mismatch();
    out[unknown] = size / known;
  } else if (known !== size) {
    throw mismatch();
  }
  return out;
}

/** Whether a row-major walk of `shape` visits memory consecutively. Size-1 dims never move, so their strides are ignored; an empty array is trivially contiguous. */
export function isRowContiguous(shape: Shape, strides: readonly number[]): boolean {
  if (shape.includes(0)) return true;
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const d = shape[i] as number;
    if (d === 1) continue;
    if (strides[i] !== expected) return false;
    expected *= d;
  }
  return true;
}

/** Validates a transpose permutation (negative axes allowed) and returns it normalized; default reverses the axes. */
export function permuteShape(op: string, ndim: number, axes?: readonly number[]): number[] {
  if (axes === undefined) return Array.from({ length: ndim }, (_, i) => ndim - 1 - i);
  if (!Array.isArray(axes)) throw new SmeltError(`${op}: axes must be an array of integers, got ${describe(axes)}`);
  if (axes.length !== ndim) {
    throw new SmeltError(`${op}: axes ${fmt(axes)} do not match a ${ndim}-D array (need ${ndim} axes)`);
  }
  const seen = new Set<number>();
  return axes.map((a) => {
    const n = normalizeAxis(op, a, ndim);
    if (seen.has(n)) throw new SmeltError(`${op}: repeated axis ${a} in ${fmt(axes)}`);
    seen.add(n);
    return n;
  });
}

export interface SliceRange {
  start?: number | null;
  stop?: number | null;
  step?: number | null;
}

/** null adds a size-1 axis (Python's None), "..." is the ellipsis, a number picks one index and drops the axis. */
export type IndexItem = number | SliceRange | null | "...";

const INT = /^[+-]?\d+$/;

/** Parses Python-style index text, e.g. "1:3, ::2, None, ..., -1". */
export function parseSliceString(op: string, spec: string): IndexItem[] {
  if (typeof spec !== "string") throw new SmeltError(`${op}: index spec must be a string, got ${describe(spec)}`);
  if (spec.trim() === "") return [];
  const parts = spec.split(",").map((p) => p.trim());
  // A single trailing comma is allowed, as in Python's `x[1,]`.
  if (parts.length > 1 && parts[parts.length - 1] === "") parts.pop();
  return parts.map((part): IndexItem => {
    const bad = (why: string) => new SmeltError(`${op}: cannot parse index ${JSON.stringify(part)} in ${JSON.stringify(spec)}: ${why}`);
    if (part === "...") return "...";
    if (part === "None" || part === "newaxis") return null;
    if (part === "") throw bad("empty item");
    if (!part.includes(":")) {
      if (!INT.test(part)) throw bad("expected an integer, a slice, None, newaxis or ...");
      return Number(part) + 0;
    }
    const fields = part.split(":").map((f) => f.trim());
    if (fields.length > 3) throw bad("a slice has at most start:stop:step");
    const [start, stop, step] = fields.map((f) => {
      if (f === "") return null;
      if (!INT.test(f)) throw bad(`${JSON.stringify(f)} is not an integer`);
      return Number(f) + 0;
    });
    return { start: start ?? null, stop: stop ?? null, step: step ?? null };
  });
}

/** A view of existing storage: strides and offset in elements. */
export interface ViewPlan {
  shape: number[];
  strides: number[];
  offset: number;
}

function checkInt(op: string, what: string, v: unknown): number | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "number" || !Number.isSafeInteger(v)) {
    throw new SmeltError(`${op}: ${what} must be an integer or null, got ${describe(v)}`);
  }
  return v;
}

/** Python's slice.indices(n) followed by the slice's length. */
function resolveSlice(op: string, s: SliceRange, n: number, axis: number): { start: number; step: number; len: number } {
  const step = checkInt(op, `slice step on axis ${axis}`, s.step) ?? 1;
  if (step === 0) throw new SmeltError(`${op}: slice step cannot be zero (axis ${axis})`);
  let start = checkInt(op, `slice start on axis ${axis}`, s.start);
  let stop = checkInt(op, `slice stop on axis ${axis}`, s.stop);
  // Bounds a slice end to [lo, hi] after counting negatives from the end, as Python does.
  const lo = step > 0 ? 0 : -1;
  const hi = step > 0 ? n : n - 1;
  const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, lo), hi);
  start = start === null ? (step > 0 ? 0 : n - 1) : clamp(start);
  stop = stop === null ? (step > 0 ? n : -1) : clamp(stop);
  const span = step > 0 ? stop - start : start - stop;
  const len = span > 0 ? Math.floor((span - 1) / Math.abs(step)) + 1 : 0;
  return { start, step, len };
}

/**
 * NumPy basic indexing as a view: integers (negative from the end) drop their axis, slices clamp
 * like Python's, null inserts a size-1 axis, one "..." stands for the axes not named, and axes
 * left over at the end are kept whole.
 */
export function planIndex(
  op: string,
  shape: Shape,
  strides: readonly number[],
  offset: number,
  items: readonly IndexItem[],
): ViewPlan {
  const ndim = shape.length;
  let ellipses = 0;
  let consumed = 0;
  for (const it of items) {
    if (it === "...") ellipses++;
    else if (it !== null) consumed++;
  }
  if (ellipses > 1) throw new SmeltError(`${op}: an index can only have a single ellipsis ("..."), got ${ellipses}`);
  if (consumed > ndim) {
    throw new SmeltError(`${op}: too many indices for a ${ndim}-D array: ${consumed} were given`);
  }
  const out: ViewPlan = { shape: [], strides: [], offset };
  let axis = 0;
  const keepWhole = (count: number) => {
    for (let k = 0; k < count; k++, axis++) {
      out.shape.push(shape[axis] as number);
      out.strides.push(strides[axis] as number);
    }
  };
  for (const it of items) {
    if (it === "...") {
      keepWhole(ndim - consumed);
    } else if (it === null) {
      out.shape.push(1);
      out.strides.push(0);
    } else if (typeof it === "number") {
      const n = shape[axis] as number;
      if (!Number.isSafeInteger(it)) throw new SmeltError(`${op}: index on axis ${axis} must be an integer, got ${it}`);
      if (it < -n || it >= n) {
        throw new SmeltError(`${op}: index ${it} is out of bounds for axis ${axis} with size ${n}`);
      }
      out.offset += (it < 0 ? it + n : it) * (strides[axis] as number);
      axis++;
    } else if (typeof it === "object" && !Array.isArray(it)) {
      const stride = strides[axis] as number;
      const { start, step, len } = resolveSlice(op, it, shape[axis] as number, axis);
      out.shape.push(len);
      out.strides.push(stride * step);
      // An empty slice's start may be one past the end; leave the offset where reads are valid.
      if (len > 0) out.offset += start * stride;
      axis++;
    } else {
      throw new SmeltError(`${op}: invalid index item ${describe(it)}; expected an integer, a slice, null or "..."`);
    }
  }
  keepWhole(ndim - axis);
  return out;
}
