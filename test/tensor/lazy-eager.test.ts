/**
 * Lazy evaluation must work wherever eager does: random graphs of a few ops (elementwise with
 * broadcasting, reductions, row ops, matmuls short and long enough to get kernels of their own,
 * views, joins, pads, gathers, scans, casts) are evaluated lazily (one eval at the end), eagerly,
 * and by a float64 interpreter of the same graph that also bounds each element's rounding error.
 * Both evaluations must land within that bound. A failure prints its seed and the graph.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { rng, roundTo, sliceIndices, sizeOf, unravel } from "./helpers.ts";

setDefaultTimeout(300_000);

type F = "float32" | "float16" | "bfloat16";
/** A value of the graph: float64 contents and, per element, a bound on float32/16 rounding error (Infinity: any value is right). */
interface Val {
  shape: number[];
  dtype: F;
  x: Float64Array;
  e: Float64Array;
}
interface Step {
  text: string;
  ins: number[];
  build: (ts: sm.Tensor[]) => sm.Tensor;
}

const UNIT: Record<F, number> = { float32: 2 ** -24, float16: 2 ** -11, bfloat16: 2 ** -8 };
const u32 = UNIT.float32;

function make(shape: number[], dtype: F, f: (i: number) => [number, number]): Val {
  const n = sizeOf(shape);
  const x = new Float64Array(n), e = new Float64Array(n);
  for (let i = 0; i < n; i++) [x[i], e[i]] = f(i);
  return { shape, dtype, x, e };
}
const stridesOf = (shape: readonly number[]) => {
  const s = new Array<number>(shape.length).fill(1);
  for (let d = shape.length - 2; d >= 0; d--) s[d] = s[d + 1]! * shape[d + 1]!;
  return s;
};
const maxAbs = (v: Val) => v.x.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
const fmt = (xs: readonly unknown[]) => `[${xs.join(", ")}]`;

/** The reference of a view: element i of the result is element at(i) of v. */
function gatherVal(v: Val, shape: number[], at: (idx: number[]) => number): Val {
  return make(shape, v.dtype, (i) => {
    const j = at(unravel(i, shape));
    return [v.x[j]!, v.e[j]!];
  });
}

/** Indices of v that share an output element when reducing over axes: groups[out] = input indices. */
function groups(shape: number[], axes: number[]): { outShape: number[]; groups: number[][] } {
  const kept = shape.map((_, d) => d).filter((d) => !axes.includes(d));
  const outShape = kept.map((d) => shape[d]!);
  const gs: number[][] = Array.from({ length: sizeOf(outShape) }, () => []);
  const os = stridesOf(outShape);
  for (let i = 0; i < sizeOf(shape); i++) {
    const idx = unravel(i, shape);
    let o = 0;
    kept.forEach((d, k) => (o += idx[d]! * os[k]!));
    gs[o]!.push(i);
  }
  return { outShape, groups: gs };
}
const keptShape = (shape: number[], axes: number[], keepdims: boolean) =>
  keepdims ? shape.map((d, i) => (axes.includes(i) ? 1 : d)) : shape.filter((_, i) => !axes.includes(i));

/** The float64 reference of reductions, with error bounds of a float32 accumulation (pairwise or not). */
function reduceVal(v: Val, axes: number[], keepdims: boolean, kind: string): Val {
  const { groups: gs } = groups(v.shape, axes);
  const shape = keptShape(v.shape, axes, keepdims);
  const out = (dtype: F) => make(shape, dtype, (o) => {
    const g = gs[o]!;
    const xs = g.map((i) => v.x[i]!), es = g.map((i) => v.e[i]!);
    const n = g.length;
    const sumE = es.reduce((a, b) => a + b, 0), sumAbs = xs.reduce((a, b) => a + Math.abs(b), 0);
    const round = UNIT[dtype];
    switch (kind) {
      case "sum": {
        const s = xs.reduce((a, b) => a + b, 0);
        return [s, sumE + n * u32 * sumAbs + round * Math.abs(s)];
      }
      case "mean": {
        const s = xs.reduce((a, b) => a + b, 0) / n;
        return [s, (sumE + (n + 2) * u32 * sumAbs) / n + round * Math.abs(s)];
      }
      case "prod": {
        const p = xs.reduce((a, b) => a * b, 1);
        const rel = xs.reduce((a, x, k) => a + es[k]! / Math.abs(x), 0);
        return [p, Math.abs(p) * (rel * 1.01 + (n + 1) * u32) + round * Math.abs(p)];
      }
      case "max":
      case "min": {
        let best = 0;
        for (let k = 1; k < n; k++) if (kind === "max" ? xs[k]! > xs[best]! : xs[k]! < xs[best]!) best = k;
        return [xs[best]!, Math.max(...es)];
      }
      case "argmax": {
        let best = 0;
        for (let k = 1; k < n; k++) if (xs[k]! > xs[best]!) best = k;
        // A near tie may go either way within rounding.
        const tie = xs.some((x, k) => k !== best && xs[best]! - x <= es[best]! + es[k]! + 2 * u32 * Math.abs(x));
        return [best, tie ? Infinity : 0];
      }
      default: throw new Error(kind);
    }
  });
  return out(kind === "argmax" ? "float32" : v.dtype);
}

/** softmax, logSoftmax or logsumexp over one axis (keepdims for logsumexp), computed in float32. */
function rowOpVal(v: Val, axis: number, kind: string): Val {
  const { groups: gs } = groups(v.shape, [axis]);
  const lse = gs.map((g) => {
    const m = Math.max(...g.map((i) => v.x[i]!));
    const s = g.reduce((a, i) => a + Math.exp(v.x[i]! - m), 0);
    return { m, l: m + Math.log(s), me: Math.max(...g.map((i) => v.e[i]!)), n: g.length };
  });
  const outOf = new Int32Array(v.x.length);
  gs.forEach((g, o) => g.forEach((i) => (outOf[i] = o)));
  const round = UNIT[v.dtype];
  if (kind === "logsumexp") {
    return make(keptShape(v.shape, [axis], true), v.dtype, (o) => {
      const r = lse[o]!;
      return [r.l, r.me + u32 * (2 * Math.abs(r.l) + 2 * r.n + 8) + round * Math.abs(r.l)];
    });
  }
  return make([...v.shape], v.dtype, (i) => {
    const r = lse[outOf[i]!]!;
    const z = v.x[i]! - r.l;
    if (kind === "logSoftmax") return [z, v.e[i]! + r.me + u32 * (Math.abs(v.x[i]! - r.m) + Math.abs(r.l) + 2 * r.n + 8) + round * Math.abs(z)];
    const s = Math.exp(z);
    return [s, s * (v.e[i]! + r.me + u32 * (2 * r.n + 8) + round) + round * s];
  });
}

function matmulVal(a: Val, b: Val): Val {
  const M = a.shape[a.shape.length - 2]!, K = a.shape[a.shape.length - 1]!, N = b.shape[b.shape.length - 1]!;
  const ab = a.shape.slice(0, -2), bb = b.shape.slice(0, -2);
  const batch = ab.length >= bb.length ? ab : bb;
  const nb = sizeOf(batch);
  const aBatch = sizeOf(ab) === nb ? (t: number) => t : () => 0;
  const bBatch = sizeOf(bb) === nb ? (t: number) => t : () => 0;
  return make([...batch, M, N], "float32", (o) => {
    const t = Math.floor(o / (M * N)), i = Math.floor(o / N) % M, j = o % N;
    let s = 0, err = 0, mag = 0;
    for (let k = 0; k < K; k++) {
      const ai = aBatch(t) * M * K + i * K + k, bi = bBatch(t) * K * N + k * N + j;
      const x = a.x[ai]!, y = b.x[bi]!;
      s += x * y;
      mag += Math.abs(x * y);
      err += Math.abs(x) * b.e[bi]! + Math.abs(y) * a.e[ai]! + a.e[ai]! * b.e[bi]!;
    }
    return [s, err + (K + 1) * u32 * mag];
  });
}

const UNARY: Record<string, { ok: (v: Val) => boolean; f: (x: number) => number; d: (x: number) => number; t: (a: sm.Tensor) => sm.Tensor }> = {
  neg: { ok: () => true, f: (x) => -x, d: () => 1, t: (a) => sm.negative(a) },
  exp: { ok: (v) => maxAbs(v) <= 4, f: Math.exp, d: Math.exp, t: (a) => sm.exp(a) },
  tanh: { ok: () => true, f: Math.tanh, d: (x) => 1 - Math.tanh(x) ** 2, t: (a) => sm.tanh(a) },
  square: { ok: (v) => maxAbs(v) <= 100, f: (x) => x * x, d: (x) => 2 * Math.abs(x), t: (a) => sm.square(a) },
  abs: { ok: () => true, f: Math.abs, d: () => 1, t: (a) => sm.abs(a) },
  sigmoid: { ok: () => true, f: (x) => 1 / (1 + Math.exp(-x)), d: (x) => 0.25, t: (a) => sm.sigmoid(a) },
};
const BINARY: Record<string, { f: (a: number, b: number) => number; e: (a: number, b: number, ea: number, eb: number) => number; t: (a: sm.Tensor, b: sm.Tensor) => sm.Tensor }> = {
  add: { f: (a, b) => a + b, e: (_a, _b, ea, eb) => ea + eb, t: sm.add },
  subtract: { f: (a, b) => a - b, e: (_a, _b, ea, eb) => ea + eb, t: sm.subtract },
  multiply: { f: (a, b) => a * b, e: (a, b, ea, eb) => Math.abs(b) * ea + Math.abs(a) * eb + ea * eb, t: sm.multiply },
  maximum: { f: Math.max, e: (_a, _b, ea, eb) => Math.max(ea, eb), t: sm.maximum },
};

/** Generates a random graph (steps over a growing pool of values) and its float64 reference. */
function generate(seed: number) {
  const r = rng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  // Fisher-Yates, one draw per place. Sorting by a random comparator draws once per comparison,
  // and how many comparisons JavaScriptCore's sort makes is not fixed: the same seed then made
  // other graphs now and then, whose kernels a second test run had to compile.
  const shuffled = <T>(xs: T[]): T[] => {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [xs[i], xs[j]] = [xs[j]!, xs[i]!];
    }
    return xs;
  };
  const vals: Val[] = [];
  const steps: Step[] = [];
  let inputs = 0;
  const dim = () => (r() < 0.12 ? int(33, 45) : int(1, 5));
  const freshInput = (shape: number[]) => {
    const data = Array.from({ length: sizeOf(shape) }, () => roundTo("float32", r() * 4 - 2));
    const name = `input${inputs++}`;
    vals.push(make(shape, "float32", (i) => [data[i]!, 0]));
    steps.push({ text: `v${vals.length - 1} = ${name} ${fmt(shape)} float32`, ins: [], build: () => sm.array(data).reshape(shape) });
    return vals.length - 1;
  };
  freshInput(Array.from({ length: int(1, 3) }, dim));
  const ops = Math.max(2, int(2, 6));
  for (let made = 0; made < ops; ) {
    // Mostly a chain from the newest value; sometimes an older one.
    const at = r() < 0.75 ? vals.length - 1 : int(0, vals.length - 1);
    const v = vals[at]!;
    const nd = v.shape.length;
    const kind = pick(["unary", "binary", "binary", "reduce", "reduce", "rowop", "matmul", "matmul", "view", "view", "join", "pad", "take", "cumsum", "astype"]);
    const push = (text: string, ins: number[], val: Val, build: Step["build"]) => {
      if (sizeOf(val.shape) > 4096 || val.shape.length > 4) return;
      vals.push(val);
      steps.push({ text: `v${vals.length - 1} = ${text}`, ins, build });
      made++;
    };
    const axesOf = () => {
      const axes = Array.from({ length: nd }, (_, d) => d).filter(() => r() < 0.5);
      return axes.length ? axes : [int(0, nd - 1)];
    };
    switch (kind) {
      case "unary": {
        const name = pick(Object.keys(UNARY).filter((k) => UNARY[k]!.ok(v)));
        const op = UNARY[name]!, u = UNIT[v.dtype];
        push(`${name}(v${at})`, [at], make([...v.shape], v.dtype, (i) => {
          const y = op.f(v.x[i]!);
          return [y, op.d(v.x[i]!) * v.e[i]! * 1.01 + 4 * u * Math.abs(y) + u * 1e-3];
        }), ([a]) => op.t(a!));
        break;
      }
      case "binary": {
        // The other operand: a fresh input whose shape broadcasts against v's (dims set to 1, leading ones dropped), either side.
        if (v.dtype !== "float32") break;
        const drop = int(0, nd);
        const shape = v.shape.map((d) => (r() < 0.3 ? 1 : d)).slice(drop);
        const j = freshInput(shape);
        const w = vals[j]!;
        const swap = r() < 0.5;
        const name = pick(Object.keys(BINARY));
        const op = BINARY[name]!;
        const lead = nd - shape.length;
        const ws = stridesOf(shape);
        const val = make([...v.shape], "float32", (i) => {
          const idx = unravel(i, v.shape);
          let k = 0;
          shape.forEach((d, q) => (k += (d === 1 ? 0 : idx[lead + q]!) * ws[q]!));
          const [a, b, ea, eb] = swap ? [w.x[k]!, v.x[i]!, w.e[k]!, v.e[i]!] : [v.x[i]!, w.x[k]!, v.e[i]!, w.e[k]!];
          const y = op.f(a, b);
          return [y, op.e(a, b, ea, eb) + u32 * Math.abs(y)];
        });
        push(`${name}(${swap ? `v${j}, v${at}` : `v${at}, v${j}`})`, swap ? [j, at] : [at, j], val, ([a, b]) => op.t(a!, b!));
        break;
      }
      case "reduce": {
        if (nd === 0) break;
        const rk = pick(["sum", "mean", "max", "min", "prod", "argmax"]);
        const keepdims = r() < 0.5;
        if (rk === "argmax") {
          const axis = int(0, nd - 1);
          push(`astype(argmax(v${at}, ${axis}, ${keepdims}), float32)`, [at], reduceVal(v, [axis], keepdims, "argmax"), ([a]) => sm.argmax(a!, axis, keepdims).astype("float32"));
          break;
        }
        const axes = r() < 0.2 ? Array.from({ length: nd }, (_, d) => d) : axesOf();
        if (rk === "prod" && axes.reduce((a, d) => a * v.shape[d]!, 1) > 12) break;
        const f = { sum: sm.sum, mean: sm.mean, max: sm.max, min: sm.min, prod: sm.prod }[rk]!;
        push(`${rk}(v${at}, ${fmt(axes)}, ${keepdims})`, [at], reduceVal(v, axes, keepdims, rk), ([a]) => f(a!, axes, keepdims));
        break;
      }
      case "rowop": {
        if (nd === 0) break;
        const axis = int(0, nd - 1);
        const rk = pick(["softmax", "logSoftmax", "logsumexp"]);
        const f: Record<string, (a: sm.Tensor) => sm.Tensor> = {
          softmax: (a) => sm.softmax(a, axis), logSoftmax: (a) => sm.logSoftmax(a, axis), logsumexp: (a) => sm.logsumexp(a, axis, true),
        };
        push(`${rk}(v${at}, ${axis})`, [at], rowOpVal(v, axis, rk), ([a]) => f[rk]!(a!));
        break;
      }
      case "matmul": {
        if (v.dtype !== "float32" || nd === 0) break;
        if (nd === 1 || r() < 0.5) {
          // v on the right: [.., K, N] (a vector is [K, 1])
          const B = nd === 1 ? { ...v, shape: [v.shape[0]!, 1] } : v;
          const K = B.shape[B.shape.length - 2]!;
          const batched = B.shape.length === 2 && r() < 0.3;
          const aShape = [...(batched ? [int(2, 3)] : []), int(1, 6), r() < 0.5 ? K : K];
          const j = freshInput(aShape);
          push(`matmul(v${j}, v${at}${nd === 1 ? " as [K, 1]" : ""})`, [j, at], matmulVal(vals[j]!, B), ([a, b]) => sm.matmul(a!, nd === 1 ? b!.reshape(B.shape) : b!));
        } else {
          const K = v.shape[nd - 1]!;
          const N = int(1, 6);
          const j = freshInput(r() < 0.3 && nd === 2 ? [int(2, 3), K, N] : [K, N]);
          push(`matmul(v${at}, v${j})`, [at, j], matmulVal(v, vals[j]!), ([a, b]) => sm.matmul(a!, b!));
        }
        break;
      }
      case "view": {
        const vk = pick(["transpose", "reshape", "slice", "broadcastTo", "expandDims"]);
        if (vk === "transpose") {
          const perm = shuffled(Array.from({ length: nd }, (_, d) => d));
          const shape = perm.map((p) => v.shape[p]!);
          const s = stridesOf(v.shape);
          push(`transpose(v${at}, ${fmt(perm)})`, [at], gatherVal(v, shape, (idx) => idx.reduce((a, x, d) => a + x * s[perm[d]!]!, 0)), ([a]) => sm.transpose(a!, perm));
        } else if (vk === "reshape") {
          // Split the flat size into random factors.
          let n = sizeOf(v.shape);
          const shape: number[] = [];
          for (let p = 2; p <= n && shape.length < 3; ) if (n % p === 0 && r() < 0.6) { shape.push(p); n /= p; } else p++;
          shape.push(n);
          shuffled(shape);
          push(`reshape(v${at}, ${fmt(shape)})`, [at], { ...v, shape }, ([a]) => a!.reshape(shape));
        } else if (vk === "slice") {
          const items = v.shape.map((d) => {
            const step = pick([1, 1, 2, -1]);
            const start = r() < 0.5 ? null : int(-d, d - 1), stop = r() < 0.5 ? null : int(-d, d);
            return { start, stop, step, list: sliceIndices(d, start, stop, step) };
          });
          if (items.some((it) => it.list.length === 0)) break;
          const shape = items.map((it) => it.list.length);
          const s = stridesOf(v.shape);
          push(`slice(v${at}, ${items.map((it) => `${it.start ?? ""}:${it.stop ?? ""}:${it.step}`).join(", ")})`, [at],
            gatherVal(v, shape, (idx) => idx.reduce((a, x, d) => a + items[d]!.list[x]! * s[d]!, 0)),
            ([a]) => sm.slice(a!, ...items.map(({ start, stop, step }) => ({ start, stop, step }))));
        } else if (vk === "broadcastTo") {
          const ones = v.shape.map((d, i) => (d === 1 ? i : -1)).filter((i) => i >= 0);
          const shape = [...(r() < 0.5 || !ones.length ? [int(2, 3)] : []), ...v.shape.map((d) => (d === 1 ? int(1, 4) : d))];
          const lead = shape.length - nd;
          const s = stridesOf(v.shape);
          push(`broadcastTo(v${at}, ${fmt(shape)})`, [at], gatherVal(v, shape, (idx) => v.shape.reduce((a, d, q) => a + (d === 1 ? 0 : idx[lead + q]! * s[q]!), 0)), ([a]) => sm.broadcastTo(a!, shape));
        } else {
          const axis = int(0, nd);
          const shape = [...v.shape.slice(0, axis), 1, ...v.shape.slice(axis)];
          push(`expandDims(v${at}, ${axis})`, [at], { ...v, shape }, ([a]) => sm.expandDims(a!, axis));
        }
        break;
      }
      case "join": {
        // With an older value of the same shape if there is one, else with itself.
        const other = vals.findIndex((w, k) => k !== at && w.dtype === v.dtype && w.shape.join() === v.shape.join());
        const j = other >= 0 ? other : at;
        const w = vals[j]!;
        if (r() < 0.5 && nd > 0) {
          const axis = int(0, nd - 1);
          const shape = v.shape.map((d, q) => (q === axis ? 2 * d : d));
          const s = stridesOf(v.shape);
          const val = make(shape, v.dtype, (i) => {
            const idx = unravel(i, shape);
            const second = idx[axis]! >= v.shape[axis]!;
            if (second) idx[axis]! -= v.shape[axis]!;
            const k = idx.reduce((a, x, d) => a + x * s[d]!, 0);
            return second ? [w.x[k]!, w.e[k]!] : [v.x[k]!, v.e[k]!];
          });
          push(`concatenate([v${at}, v${j}], ${axis})`, [at, j], val, ([a, b]) => sm.concatenate([a!, b!], axis));
        } else {
          const axis = int(0, nd);
          const shape = [...v.shape.slice(0, axis), 2, ...v.shape.slice(axis)];
          const inner = sizeOf(v.shape.slice(axis));
          const val = make(shape, v.dtype, (i) => {
            const second = Math.floor(i / inner) % 2 === 1;
            const k = Math.floor(i / (2 * inner)) * inner + (i % inner);
            return second ? [w.x[k]!, w.e[k]!] : [v.x[k]!, v.e[k]!];
          });
          push(`stack([v${at}, v${j}], ${axis})`, [at, j], val, ([a, b]) => sm.stack([a!, b!], axis));
        }
        break;
      }
      case "pad": {
        if (nd === 0) break;
        const widths = v.shape.map(() => [int(0, 2), int(0, 2)] as [number, number]);
        const value = pick([0, 1.5]);
        const shape = v.shape.map((d, q) => d + widths[q]![0] + widths[q]![1]);
        const s = stridesOf(v.shape);
        const val = make(shape, v.dtype, (i) => {
          const idx = unravel(i, shape).map((x, q) => x - widths[q]![0]);
          if (idx.some((x, q) => x < 0 || x >= v.shape[q]!)) return [value, 0];
          const k = idx.reduce((a, x, d) => a + x * s[d]!, 0);
          return [v.x[k]!, v.e[k]!];
        });
        push(`pad(v${at}, ${JSON.stringify(widths)}, ${value})`, [at], val, ([a]) => sm.pad(a!, widths, value));
        break;
      }
      case "take": {
        if (nd === 0) break;
        const axis = int(0, nd - 1);
        const len = v.shape[axis]!;
        const indices = Array.from({ length: int(1, 4) }, () => int(-len, len - 1));
        const shape = [...v.shape.slice(0, axis), indices.length, ...v.shape.slice(axis + 1)];
        const s = stridesOf(v.shape);
        const val = gatherVal(v, shape, (idx) => {
          const k = indices[idx[axis]!]!;
          idx[axis] = k < 0 ? k + len : k;
          return idx.reduce((a, x, d) => a + x * s[d]!, 0);
        });
        push(`take(v${at}, ${fmt(indices)}, ${axis})`, [at], val, ([a]) => sm.take(a!, sm.array(indices, "int32"), axis));
        break;
      }
      case "cumsum": {
        if (nd === 0) break;
        const axis = int(0, nd - 1);
        const s = stridesOf(v.shape)[axis]!;
        const u = UNIT[v.dtype];
        const val = make([...v.shape], v.dtype, (i) => {
          const t = unravel(i, v.shape)[axis]!;
          let acc = 0, e = 0, mag = 0;
          for (let q = 0; q <= t; q++) {
            const k = i - (t - q) * s;
            acc += v.x[k]!;
            e += v.e[k]!;
            mag += Math.abs(v.x[k]!);
          }
          return [acc, e + (t + 1) * u32 * mag + u * Math.abs(acc)];
        });
        push(`cumsum(v${at}, ${axis})`, [at], val, ([a]) => sm.cumsum(a!, axis));
        break;
      }
      case "astype": {
        const to: F = v.dtype === "float32" ? pick(["float16", "bfloat16"] as const) : "float32";
        if (to === "float16" && maxAbs(v) > 1000) break;
        const val = make([...v.shape], to, (i) => {
          const y = roundTo(to, v.x[i]!);
          return [v.x[i]!, v.e[i]! + Math.abs(y - v.x[i]!) + UNIT[to] * Math.abs(v.x[i]!)];
        });
        push(`astype(v${at}, ${to})`, [at], val, ([a]) => a!.astype(to));
        break;
      }
    }
  }
  return { steps, vals };
}

/** Builds the graph's tensors (in the current mode) and reads the outputs with one evaluation. */
function run(steps: Step[], outputs: number[]): Float64Array[] {
  return sm.tidy(() => {
    const ts: sm.Tensor[] = [];
    for (const s of steps) ts.push(s.build(s.ins.map((i) => ts[i]!)));
    const outs = outputs.map((o) => ts[o]!);
    sm.eval(...outs);
    return outs.map((t) => Float64Array.from(t.astype("float32").toArray() as number[]));
  });
}

function compare(got: Float64Array, want: Val): string | null {
  const bad: string[] = [];
  for (let i = 0; i < want.x.length; i++) {
    const w = want.x[i]!, e = want.e[i]!, g = got[i]!;
    if (!Number.isFinite(e)) continue;
    if (!(Math.abs(g - w) <= 8 * e + 1e-6)) bad.push(`[${unravel(i, want.shape)}] got ${g}, want ${w} +- ${8 * e + 1e-6}`);
  }
  return bad.length ? `${bad.length} of ${want.x.length} elements off: ${bad.slice(0, 4).join("; ")}` : null;
}

/** Runs graph `seed` lazily and eagerly against its reference; a description of what failed, or null. */
function checkGraph(seed: number): string | null {
  const { steps, vals } = generate(seed);
  const last = vals.length - 1;
  // Sometimes an intermediate value is read as well, in the same evaluation.
  const extra = rng(seed ^ 0x5eed)() < 0.3 ? [Math.floor(rng(seed + 7)() * last)] : [];
  return checkModes(`graph ${seed}`, steps, vals, [last, ...extra]);
}

/** Evaluates `outputs` of a graph lazily (one eval) and eagerly against its reference; what failed, or null. */
function checkModes(name: string, steps: Step[], vals: Val[], outputs: number[]): string | null {
  const graph = () => `${name}:\n  ${steps.map((s) => s.text).join("\n  ")}`;
  const problems: string[] = [];
  for (const mode of ["lazy", "eager"] as const) {
    let got: Float64Array[];
    try {
      got = mode === "lazy" ? run(steps, outputs) : sm.eager(() => run(steps, outputs));
    } catch (e) {
      problems.push(`${mode}: threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
      continue;
    }
    outputs.forEach((o, k) => {
      const why = compare(got[k]!, vals[o]!);
      if (why) problems.push(`${mode} v${o}: ${why}`);
    });
  }
  return problems.length ? `${graph()}\n${problems.join("\n")}` : null;
}

// Seeds FIRST, FIRST + 1, ...: the same graphs every run, so the host backend's kernel cache serves
// their kernels after the first run (which compiles several hundred). SMELT_GRAPH_CASES and
// SMELT_GRAPH_SEED run others; a failure prints the seed and graph to rerun it alone.
const CASES = Number(process.env.SMELT_GRAPH_CASES) || 300;
const FIRST = Number(process.env.SMELT_GRAPH_SEED) || 1;
const BATCH = 25;

/**
 * Multi-output kernels: graph `seed`'s last value read together with siblings computed from it
 * (two elementwise functions of it and their sum), which share its work, in one evaluation.
 */
function checkSiblings(seed: number): string | null {
  const { steps, vals } = generate(seed);
  const r = rng(seed ^ 0x51b1);
  const last = vals.length - 1;
  const v = vals[last]!;
  const u = UNIT[v.dtype];
  const names = Object.keys(UNARY).filter((k) => UNARY[k]!.ok(v));
  const sibs: number[] = [];
  for (let k = 0; k < 2; k++) {
    const name = names[Math.floor(r() * names.length)]!;
    const op = UNARY[name]!;
    vals.push(make([...v.shape], v.dtype, (i) => {
      const y = op.f(v.x[i]!);
      return [y, op.d(v.x[i]!) * v.e[i]! * 1.01 + 4 * u * Math.abs(y) + u * 1e-3];
    }));
    steps.push({ text: `v${vals.length - 1} = ${name}(v${last})`, ins: [last], build: ([a]) => op.t(a!) });
    sibs.push(vals.length - 1);
  }
  const [p, q] = sibs.map((k) => vals[k]!) as [Val, Val];
  vals.push(make([...v.shape], v.dtype, (i) => {
    const y = p.x[i]! + q.x[i]!;
    return [y, p.e[i]! + q.e[i]! + u * Math.abs(y)];
  }));
  steps.push({ text: `v${vals.length - 1} = add(v${sibs[0]}, v${sibs[1]})`, ins: sibs, build: ([a, b]) => sm.add(a!, b!) });
  return checkModes(`graph ${seed} with siblings`, steps, vals, [last, ...sibs, vals.length - 1]);
}

describe("lazy equals eager equals float64 on random graphs", () => {
  for (let from = FIRST; from < FIRST + CASES; from += BATCH) {
    const to = Math.min(from + BATCH, FIRST + CASES);
    test(`graphs ${from} to ${to - 1}`, () => {
      const failures: string[] = [];
      for (let seed = from; seed < to; seed++) {
        const f = checkGraph(seed);
        if (f) failures.push(f);
      }
      if (failures.length) console.error(failures.join("\n\n"));
      expect(failures.length).toBe(0);
    });
  }
});

/**
 * Graph `seed` evaluated lazily three times: the third evaluation of the structure gets the
 * schedule kept from the second (src/exec/replay.ts), and must land within the same bound.
 */
function checkReplayed(seed: number): string | null {
  const { steps, vals } = generate(seed);
  const last = vals.length - 1;
  const outputs = [last];
  let got: Float64Array[] = [];
  let replays = 0;
  try {
    for (let k = 0; k < 3; k++) {
      const before = sm.stats().schedulesReplayed;
      got = run(steps, outputs);
      replays = sm.stats().schedulesReplayed - before;
    }
  } catch (e) {
    return `graph ${seed} replayed: threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`;
  }
  const why = compare(got[0]!, vals[last]!);
  const problems = [...(why ? [`v${last}: ${why}`] : []), ...(replays === 0 ? ["the third evaluation was planned again, not replayed"] : [])];
  return problems.length ? `graph ${seed} replayed:\n  ${steps.map((s) => s.text).join("\n  ")}\n${problems.join("\n")}` : null;
}

describe("the same replayed: a structure's third evaluation reuses the second's schedule", () => {
  const cases = Math.min(CASES, 100);
  for (let from = FIRST; from < FIRST + cases; from += BATCH) {
    const to = Math.min(from + BATCH, FIRST + cases);
    test(`graphs ${from} to ${to - 1}, three times`, () => {
      const failures: string[] = [];
      for (let seed = from; seed < to; seed++) {
        const f = checkReplayed(seed);
        if (f) failures.push(f);
      }
      if (failures.length) console.error(failures.join("\n\n"));
      expect(failures.length).toBe(0);
    });
  }
});

describe("the same with sibling outputs of one evaluation (multi-output kernels)", () => {
  const cases = Math.min(CASES, 25);
  for (let from = FIRST; from < FIRST + cases; from += BATCH) {
    const to = Math.min(from + BATCH, FIRST + cases);
    test(`graphs ${from} to ${to - 1} with siblings`, () => {
      const failures: string[] = [];
      for (let seed = from; seed < to; seed++) {
        const f = checkSiblings(seed);
        if (f) failures.push(f);
      }
      if (failures.length) console.error(failures.join("\n\n"));
      expect(failures.length).toBe(0);
    });
  }
});

// A matmul too long to compute inline waits for its consumer's kernel, which may compute it as an
// epilogue; a consumer with a kernel of its own (a reduction, a scan) must get it computed first.
describe("kernels of their own over an unevaluated long matmul", () => {
  const M = 8, K = 64, N = 8;
  const a = Array.from({ length: M * K }, (_, i) => roundTo("float32", Math.sin(i * 0.37)));
  const b = Array.from({ length: K * N }, (_, i) => roundTo("float32", Math.cos(i * 0.11)));
  const y = Array.from({ length: M * N }, (_, i) => roundTo("float32", (i % 5) - 2));
  const product = Array.from({ length: M * N }, (_, o) => {
    let s = 0;
    for (let k = 0; k < K; k++) s += a[Math.floor(o / N) * K + k]! * b[k * N + (o % N)]!;
    return s;
  });
  const mm = () => sm.matmul(sm.array(a).reshape([M, K]), sm.array(b).reshape([K, N]));
  const close = (got: number[], want: number[]) => want.forEach((w, i) => expect(Math.abs(got[i]! - w)).toBeLessThan(1e-4 * (1 + Math.abs(w))));
  const modes = (f: () => number[], want: number[]) => {
    close(f(), want);
    close(sm.eager(f), want);
  };

  test("the issue's sum of a matmul", () => {
    modes(() => [mm().sum().item() as number], [product.reduce((s, x) => s + x, 0)]);
  });
  test("a mean squared error mean((x @ W - y)^2)", () => {
    const want = product.reduce((s, p, i) => s + (p - y[i]!) ** 2, 0) / (M * N);
    modes(() => [sm.mean(sm.square(sm.subtract(mm(), sm.array(y).reshape([M, N])))).item() as number], [want]);
  });
  test("a column sum, a cumsum and an argmax of a matmul", () => {
    const cols = Array.from({ length: N }, (_, j) => product.filter((_, o) => o % N === j).reduce((s, x) => s + x, 0));
    modes(() => Array.from(mm().sum(0).toArray() as number[]), cols);
    const cum = product.map((_, o) => product.filter((_, q) => q % N === o % N && q <= o).reduce((s, x) => s + x, 0));
    modes(() => Array.from(sm.cumsum(mm(), 0).toArray() as number[]), cum);
    const arg = Array.from({ length: M }, (_, i) => {
      const row = product.slice(i * N, i * N + N);
      return row.indexOf(Math.max(...row));
    });
    modes(() => Array.from(sm.argmax(mm(), 1).toArray() as number[]), arg);
  });
});
