/**
 * Gradient checking: the gradient smelt computes (float32) against central finite differences
 * of a float64 reference of the same function, computed in JS. Each check differentiates
 * sum(f(x) * w) for fixed random w, so every element of the Jacobian is exercised.
 */
import { expect } from "bun:test";
import * as sm from "../../src/index.ts";
import { type Ref, randn, ravel, sizeOf, uniform, unravel } from "../tensor/helpers.ts";

export interface Input {
  shape: number[];
  lo?: number;
  hi?: number;
  /** Fixed values instead of random ones. */
  values?: number[];
}

export interface CheckOptions {
  atol?: number;
  rtol?: number;
  /** Finite-difference step (float64). */
  h?: number;
  mode?: "lazy" | "eager";
  seed?: number;
}

/** The inputs of a check: float32-representable values, as Refs and tensors. */
export function makeInputs(inputs: Input[], seed: number): Ref[] {
  return inputs.map((inp, k) => {
    const n = sizeOf(inp.shape);
    const vals = inp.values ?? uniform(n, inp.lo ?? -2, inp.hi ?? 2, seed * 31 + k);
    return { shape: [...inp.shape], data: vals.map(Math.fround) };
  });
}

export function gradCheck(
  f: (...xs: sm.Tensor[]) => sm.Tensor,
  reference: (...xs: Ref[]) => Ref,
  inputs: Input[],
  opts: CheckOptions = {},
): void {
  const { atol = 2e-3, rtol = 2e-3, h = 1e-6, mode = "lazy", seed = 7 } = opts;
  const xs = makeInputs(inputs, seed);
  const out = reference(...xs);
  const w = randn(out.data.length, seed + 100).map(Math.fround);
  const loss = (rs: Ref[]) => {
    const o = reference(...rs);
    let s = 0;
    for (let i = 0; i < o.data.length; i++) s += o.data[i]! * w[i]!;
    return s;
  };
  const argnums = xs.map((_, i) => i);
  const run = () => {
    const ts = xs.map((r) => sm.array(r.data, "float32").reshape(r.shape));
    const wt = sm.array(w, "float32").reshape(out.shape);
    const gs = sm.grad((...a: sm.Tensor[]) => sm.sum(sm.multiply(f(...a), wt)), argnums)(...ts) as sm.Tensor[];
    return gs.map((g) => ({ shape: g.shape, data: g.toArray() as number[] }));
  };
  const got = mode === "eager" ? sm.eager(run) : run();
  xs.forEach((x, k) => {
    expect(got[k]!.shape).toEqual(x.shape);
    for (let i = 0; i < x.data.length; i++) {
      const plus = xs.map((r, j) => (j === k ? { shape: r.shape, data: r.data.map((v, m) => (m === i ? v + h : v)) } : r));
      const minus = xs.map((r, j) => (j === k ? { shape: r.shape, data: r.data.map((v, m) => (m === i ? v - h : v)) } : r));
      const fd = (loss(plus) - loss(minus)) / (2 * h);
      const g = got[k]!.data[i]!;
      if (!(Math.abs(g - fd) <= atol + rtol * Math.abs(fd)))
        throw new Error(`input ${k} element ${i} (of [${x.shape}]): gradient ${g}, finite differences ${fd}`);
    }
  });
}

/** out[idx] = x[src(idx)], or fill where src gives null: the reference of any rearranging op. */
export function gatherRef(x: Ref, shape: number[], src: (idx: number[]) => number[] | null, fill = 0): Ref {
  const data = Array.from({ length: sizeOf(shape) }, (_, i) => {
    const s = src(unravel(i, shape));
    return s ? x.data[ravel(s, x.shape)]! : fill;
  });
  return { shape, data };
}
