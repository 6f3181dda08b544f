/**
 * argsort along one axis: one thread per line along the axis heap-sorts the positions 0..n-1 in
 * the output, comparing the input's elements at them. Positions break ties, so the order is
 * stable (equal elements keep their order) although heapsort is not, and NaN sorts last, as in
 * NumPy. Heapsort needs no scratch memory beyond the output line and takes O(n log n) steps, which
 * keeps a vocabulary-sized line (top-k sampling) cheap for its one thread.
 */
import type { Node } from "../../graph/node.ts";
import { attrsOf } from "../../graph/op.ts";
import { contiguousStrides } from "../../graph/shape.ts";
import { isFloating } from "../../graph/dtype.ts";
import type { PlainPlan } from "../plan/kernel.ts";
import { Builder, computeType, ELEMENT_POSITION, finish, type KernelCode } from "./builder.ts";

/** C++ for "the element (x, at position i) sorts after (y, at position j)". */
function after(float: boolean, x: string, i: string, y: string, j: string): string {
  const plain = `(${x} > ${y} || (${x} == ${y} && ${i} > ${j}))`;
  if (!float) return plain;
  return `(isnan(${x}) ? (!isnan(${y}) || ${i} > ${j}) : (!isnan(${y}) && ${plain}))`;
}

export function argsortKernel({ out, dispatch }: PlainPlan): KernelCode {
  const input = out.inputs[0]!;
  const axis = attrsOf(out, "argsort").axis;
  const b = new Builder(out);
  const strides = contiguousStrides(out.shape);
  const others = out.shape.map((_, d) => d).filter((d) => d !== axis);
  const ids = b.unflatten(others.map((d) => out.shape[d]!), "int(gid)");
  b.line(`int base = ${["0", ...ids.map((v, i) => `${v} * ${b.int(strides[others[i]!]!)}`)].join(" + ")};`);
  b.line(`int st = ${b.int(strides[axis]!)};`);
  b.line(`int n = ${b.int(out.shape[axis]!)};`);
  b.line("for (int t = 0; t < n; ++t) out0[base + t * st] = uint(t);");
  // Two phases in one loop, so the sift-down (and its loads of the input) is emitted once: first
  // heapify from the last parent down to the root, then move the largest out to the end n-1 times.
  b.line("int parents = n / 2;");
  b.line("for (int step = 0; step < parents + n - 1; ++step) {");
  b.scoped(() => {
    b.line("int root = 0; int end = n;");
    b.line("if (step < parents) { root = parents - 1 - step; }");
    b.line("else { end = n - 1 - (step - parents); uint top = out0[base]; out0[base] = out0[base + end * st]; out0[base + end * st] = top; }");
    b.line("while (2 * root + 1 < end) {");
    b.scoped(() => {
      b.line("int child = 2 * root + 1;");
      b.line("uint ci = out0[base + child * st];");
      b.line("if (child + 1 < end) {");
      b.scoped(() => {
        b.line("uint di = out0[base + (child + 1) * st];");
        const [c, d] = loadPair(b, input, "ci", "di");
        b.line(`if (${after(c.float, d.v, "di", c.v, "ci")}) { child = child + 1; ci = di; }`);
      });
      b.line("}");
      b.line("uint ri = out0[base + root * st];");
      const [c, r] = loadPair(b, input, "ci", "ri");
      b.line(`if (!${after(c.float, c.v, "ci", r.v, "ri")}) break;`);
      b.line("out0[base + root * st] = ci; out0[base + child * st] = ri;");
      b.line("root = child;");
    });
    b.line("}");
  });
  b.line("}");
  return finish(b, out, ELEMENT_POSITION, dispatch);
}

/** The input's elements at line positions i and j, as values that compare the way they sort. */
function loadPair(b: Builder, input: Node, i: string, j: string): [Key, Key] {
  const float = isFloating(input.dtype);
  const load = (p: string): Key => {
    const at = b.fresh("at");
    b.line(`int ${at} = base + int(${p}) * st;`);
    const x = b.emit(input, at);
    const v = b.fresh("key");
    b.line(`${float ? "float" : input.dtype === "bool" ? "int" : computeType(input.dtype)} ${v} = ${float ? `float(${x})` : x};`);
    return { v, float };
  };
  return [load(i), load(j)];
}
interface Key {
  v: string;
  float: boolean;
}
