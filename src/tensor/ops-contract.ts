/**
 * Contractions written as index expressions (einsum) or axis lists (tensordot), lowered to
 * transposes, reshapes, sums and batched matmuls: no op of their own reaches the graph.
 */
import { SmeltError } from "../errors.ts";
import { matmul, multiply, reshape, sum, transpose } from "./ops.ts";
import { normalizeAxis } from "../graph/shape.ts";
import { composite, Tensor } from "./tensor.ts";

const product = (xs: readonly number[]) => xs.reduce((a, b) => a * b, 1);

function tensorArg(op: string, x: unknown, what: string): Tensor {
  if (x instanceof Tensor) return x;
  throw new SmeltError(`${op}: ${what} must be a Tensor, got ${x === null ? "null" : typeof x}`);
}

/**
 * Sum of products over the given axes of a and b (NumPy's tensordot): axes = n contracts the
 * last n axes of a with the first n of b; [axesA, axesB] pairs them explicitly. The result has
 * a's remaining axes, then b's.
 */
export function tensordot(a: Tensor, b: Tensor, axes: number | readonly [readonly number[], readonly number[]] = 2): Tensor {
  const op = "tensordot";
  const x = tensorArg(op, a, "a"), y = tensorArg(op, b, "b");
  let ax: number[], bx: number[];
  if (typeof axes === "number") {
    if (!Number.isInteger(axes) || axes < 0 || axes > x.ndim || axes > y.ndim)
      throw new SmeltError(`${op}: axes must be an integer from 0 to ${Math.min(x.ndim, y.ndim)}, got ${axes}`);
    ax = Array.from({ length: axes }, (_, i) => x.ndim - axes + i);
    bx = Array.from({ length: axes }, (_, i) => i);
  } else if (Array.isArray(axes) && axes.length === 2 && Array.isArray(axes[0]) && Array.isArray(axes[1])) {
    if (axes[0].length !== axes[1].length)
      throw new SmeltError(`${op}: the axis lists must have the same length, got ${axes[0].length} and ${axes[1].length}`);
    ax = axes[0].map((d) => normalizeAxis(op, d, x.ndim));
    bx = axes[1].map((d) => normalizeAxis(op, d, y.ndim));
  } else {
    throw new SmeltError(`${op}: axes must be an integer or a pair of axis lists, got ${JSON.stringify(axes)}`);
  }
  if (new Set(ax).size !== ax.length || new Set(bx).size !== bx.length) throw new SmeltError(`${op}: an axis is repeated in ${JSON.stringify(axes)}`);
  ax.forEach((d, i) => {
    if (x.shape[d] !== y.shape[bx[i]!])
      throw new SmeltError(`${op}: axis ${d} of a (size ${x.shape[d]}) does not match axis ${bx[i]} of b (size ${y.shape[bx[i]!]})`);
  });
  const freeA = x.shape.map((_, d) => d).filter((d) => !ax.includes(d));
  const freeB = y.shape.map((_, d) => d).filter((d) => !bx.includes(d));
  return composite(() => {
    const k = product(ax.map((d) => x.shape[d]!));
    const m = reshape(transpose(x, [...freeA, ...ax]), [product(freeA.map((d) => x.shape[d]!)), k]);
    const n = reshape(transpose(y, [...bx, ...freeB]), [k, product(freeB.map((d) => y.shape[d]!))]);
    return reshape(matmul(m, n), [...freeA.map((d) => x.shape[d]!), ...freeB.map((d) => y.shape[d]!)]);
  });
}

/** An operand during einsum: a tensor and the label of each of its axes. */
interface Term {
  t: Tensor;
  labels: string[];
}

/** Sums t over the labels that no later term and not the output need. */
function sumUnneeded(term: Term, needed: Set<string>): Term {
  const drop = term.labels.flatMap((l, d) => (needed.has(l) ? [] : [d]));
  if (drop.length === 0) return term;
  return { t: sum(term.t, drop), labels: term.labels.filter((l) => needed.has(l)) };
}

/** Contracts two terms with one batched matmul: shared labels still needed are batch axes. */
function contractPair(a: Term, b: Term, needed: Set<string>): Term {
  const shared = a.labels.filter((l) => b.labels.includes(l));
  const batch = shared.filter((l) => needed.has(l));
  const summed = shared.filter((l) => !needed.has(l));
  const onlyA = a.labels.filter((l) => !shared.includes(l));
  const onlyB = b.labels.filter((l) => !shared.includes(l));
  const size = (t: Term, l: string) => t.t.shape[t.labels.indexOf(l)]!;
  const order = (t: Term, ls: string[]) => transpose(t.t, ls.map((l) => t.labels.indexOf(l)));
  const nb = batch.map((l) => size(a, l)), nm = onlyA.map((l) => size(a, l)), nn = onlyB.map((l) => size(b, l));
  const k = product(summed.map((l) => size(a, l)));
  const x = reshape(order(a, [...batch, ...onlyA, ...summed]), [product(nb), product(nm), k]);
  const y = reshape(order(b, [...batch, ...summed, ...onlyB]), [product(nb), k, product(nn)]);
  // Nothing summed: an outer product per batch, which a broadcast multiply does without a matmul.
  const z = k === 1 ? multiply(x, y) : matmul(x, y);
  return { t: reshape(z, [...nb, ...nm, ...nn]), labels: [...batch, ...onlyA, ...onlyB] };
}

/**
 * Einstein summation, e.g. einsum("bij,bjk->bik", a, b): matmuls, batch matmuls, outer products,
 * transposes, sums over axes and any chain of contractions of them, evaluated left to right with
 * batched matmuls. Without "->" the output is the labels used once, in alphabetical order. Not
 * supported (a SmeltError): "..." and a label repeated within one operand (diagonals, traces).
 */
export function einsum(subscripts: string, ...operands: Tensor[]): Tensor {
  const op = "einsum";
  if (typeof subscripts !== "string") throw new SmeltError(`${op}: subscripts must be a string, got ${typeof subscripts}`);
  const spec = subscripts.replace(/\s+/g, "");
  if (spec.includes(".")) throw new SmeltError(`${op}: "..." (broadcast axes) is not supported in ${JSON.stringify(subscripts)}`);
  const arrow = spec.split("->");
  if (arrow.length > 2) throw new SmeltError(`${op}: more than one "->" in ${JSON.stringify(subscripts)}`);
  const inputs = arrow[0]!.split(",");
  if (inputs.length !== operands.length)
    throw new SmeltError(`${op}: ${JSON.stringify(subscripts)} names ${inputs.length} operands, got ${operands.length}`);
  const sizes = new Map<string, number>();
  const count = new Map<string, number>();
  const terms: Term[] = inputs.map((s, i) => {
    const t = tensorArg(op, operands[i], `operand ${i}`);
    if (!/^[a-zA-Z]*$/.test(s)) throw new SmeltError(`${op}: subscripts may only be letters, got ${JSON.stringify(s)}`);
    const labels = [...s];
    if (labels.length !== t.ndim)
      throw new SmeltError(`${op}: operand ${i} has ${t.ndim} axes but ${JSON.stringify(s)} names ${labels.length}`);
    if (new Set(labels).size !== labels.length)
      throw new SmeltError(`${op}: a label repeated within one operand (${JSON.stringify(s)}, a diagonal or trace) is not supported`);
    labels.forEach((l, d) => {
      const known = sizes.get(l);
      if (known !== undefined && known !== t.shape[d])
        throw new SmeltError(`${op}: label ${l} has size ${known} in one operand and ${t.shape[d]} in operand ${i}`);
      sizes.set(l, t.shape[d]!);
      count.set(l, (count.get(l) ?? 0) + 1);
    });
    return { t, labels };
  });
  const out = arrow.length === 2 ? [...arrow[1]!] : [...count.keys()].filter((l) => count.get(l) === 1).sort();
  if (!out.every((l) => /[a-zA-Z]/.test(l))) throw new SmeltError(`${op}: subscripts may only be letters, got ${JSON.stringify(arrow[1])}`);
  if (new Set(out).size !== out.length) throw new SmeltError(`${op}: output label repeated in ${JSON.stringify(subscripts)}`);
  for (const l of out) if (!sizes.has(l)) throw new SmeltError(`${op}: output label ${l} is not in any operand`);
  return composite(() => {
    const neededAfter = (i: number) => new Set([...out, ...terms.slice(i + 1).flatMap((t) => t.labels)]);
    let acc = sumUnneeded(terms[0]!, neededAfter(0));
    for (let i = 1; i < terms.length; i++) {
      const needed = neededAfter(i);
      const next = sumUnneeded(terms[i]!, new Set([...needed, ...acc.labels]));
      acc = sumUnneeded(contractPair(acc, next, needed), needed);
    }
    acc = sumUnneeded(acc, new Set(out));
    return transpose(acc.t, out.map((l) => acc.labels.indexOf(l)));
  });
}
