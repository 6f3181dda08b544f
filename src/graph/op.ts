/**
 * The op vocabulary: every op a graph node can have, its attributes, and what the builders
 * (ops.ts), the code generator and the scheduler need to know about it, in one table. Adding an
 * op is a type error until it has an entry here, an MSL expression or kernel, and (later) a
 * gradient rule, each in a table keyed by the same union.
 */

export type UnaryOp =
  | "negative" | "abs" | "sign" | "square" | "sqrt" | "rsqrt" | "exp" | "expm1" | "log" | "log1p" | "log2" | "log10"
  | "sin" | "cos" | "tan" | "tanh" | "sigmoid" | "erf" | "erfinv" | "floor" | "ceil" | "round" | "relu"
  | "gelu" | "geluApprox" | "silu" | "softplus" | "logicalNot" | "isnan" | "isinf" | "nanToNum";
export type BinaryOp =
  | "add" | "subtract" | "multiply" | "divide" | "floorDivide" | "remainder" | "power" | "maximum" | "minimum"
  | "equal" | "notEqual" | "less" | "lessEqual" | "greater" | "greaterEqual" | "logicalAnd" | "logicalOr";
export type ElementwiseOp = UnaryOp | BinaryOp | "where";
/** Nodes without inputs whose elements are a function of their index. */
export type GeneratorOp = "scalar" | "arange" | "eye";
/** Views that reorder, repeat or pick elements: an index map of strides and an offset over the base. */
export type StridedViewOp = "broadcast" | "permute" | "slice";
/** Views that keep the row-major order of the elements and only change the shape. */
export type ReshapeOp = "reshape" | "squeeze" | "expandDims";
export type ViewOp = StridedViewOp | ReshapeOp;
/** Inline ops that read other elements of their inputs than their own. */
export type GatherOp = "concat" | "pad" | "take" | "takeAlong";
/** Ops that always get a kernel of their own (random's is a kernel of metal/random.metal). */
export type KernelOp = "reduce" | "scan" | "putAlong" | "scatterAdd" | "random" | "argsort" | "dequantize" | "quantizedMatmul" | "writeSlice";
export type Op = ElementwiseOp | GeneratorOp | ViewOp | GatherOp | KernelOp | "cast" | "matmul" | "data";

/** GGML's block-quantized weight formats that smelt reads (src/graph/quant.ts has their layouts). */
export type QuantFormat = "Q8_0" | "Q4_0" | "Q4_1" | "Q4_K" | "Q6_K";

export type ReduceKind = "sum" | "prod" | "max" | "min" | "argmax" | "argmin" | "all" | "any";

/** Where a strided view's element i lies in its base's row-major (contiguous) layout. */
export interface ViewMap {
  strides: number[];
  offset: number;
}
type None = Record<string, never>;

/** The attributes of each op; ops not named here have none. */
interface OpAttrTable {
  scalar: { value: number };
  /** Its arguments are the shapes: the base's and its own. */
  broadcast: ViewMap;
  /** axes[i]: the base axis that becomes axis i. */
  permute: ViewMap & { axes: number[] };
  /** Any basic index (ranges with steps, integers, new axes) comes down to its map. */
  slice: ViewMap;
  /** The base axes of size 1 that are dropped. */
  squeeze: { axes: number[] };
  /** The axes of size 1 that are inserted, as positions in the result. */
  expandDims: { axes: number[] };
  arange: { start: number; step: number };
  eye: { k: number };
  nanToNum: { scalars: number[] };
  reduce: { kind: ReduceKind; axes: number[] };
  scan: { kind: "sum" | "prod"; axis: number };
  concat: { axis: number };
  pad: { before: number[]; value: number };
  take: { axis: number };
  takeAlong: { axis: number };
  putAlong: { axis: number };
  /** Inputs: indices and values of one shape; the result has the indexed axis's full length. */
  scatterAdd: { axis: number };
  argsort: { axis: number };
  dequantize: { format: QuantFormat };
  /** x @ dequantize(W)^T: inputs x and W's blocks. */
  quantizedMatmul: { format: QuantFormat };
  /**
   * Inputs dst (computed, contiguous) and src: dst with src written at [start, start + src's
   * length) of axis, in dst's own memory (src/tensor/write.ts).
   */
  writeSlice: { axis: number; start: number };
  /**
   * A stream kernel of metal/random.metal, its argument struct as uint32 words, and the key's
   * words when it is known on the host (the global key); else the key is the node's input.
   */
  random: { kernel: string; params: number[]; key: number[] | null };
}
export type AttrsOf<O extends Op> = O extends keyof OpAttrTable ? OpAttrTable[O] : None;
export type Attrs = AttrsOf<Op>;

export type OpKind = "elementwise" | "cast" | "generator" | "view" | "reshape" | "gather" | "matmul" | "kernel" | "data";

export interface OpInfo {
  kind: OpKind;
  /** Inputs the node has; -1: any number (concat; random, whose key may be an input). */
  arity: number;
  /** Computed inline, inside the kernel of a consumer, unless computed already (matmul: when short). */
  inline: boolean;
  /** Integer and bool inputs are cast to float32 first (transcendental functions). */
  floatOnly?: boolean;
  /** The result is bool whatever the inputs are (comparisons, predicates). */
  predicate?: boolean;
  /** Undefined for bool input (negation and friends): the builder refuses it. */
  noBool?: boolean;
  /** Its kernel loads its inputs from memory: they are computed before it, not fused into it. */
  readsComputedInputs?: boolean;
  /**
   * Attributes whose values are kernel arguments, not structure: a kernel reads them from its
   * parameters, so a new value (a learning rate each step) reuses the kernel and its plan.
   */
  scalars?: readonly string[];
}

const unary = (extra: Partial<OpInfo> = {}): OpInfo => ({ kind: "elementwise", arity: 1, inline: true, ...extra });
const binary = (extra: Partial<OpInfo> = {}): OpInfo => ({ kind: "elementwise", arity: 2, inline: true, ...extra });
const float1 = unary({ floatOnly: true });
const compare = binary({ predicate: true });

export const OPS: Readonly<Record<Op, Readonly<OpInfo>>> = {
  negative: unary({ noBool: true }), abs: unary({ noBool: true }), sign: unary({ noBool: true }), square: unary({ noBool: true }),
  sqrt: float1, rsqrt: float1, exp: float1, expm1: float1, log: float1, log1p: float1, log2: float1, log10: float1,
  sin: float1, cos: float1, tan: float1, tanh: float1, sigmoid: float1, erf: float1, erfinv: float1,
  floor: unary(), ceil: unary(), round: unary(), relu: unary(),
  gelu: float1, geluApprox: float1, silu: float1, softplus: float1,
  logicalNot: unary({ predicate: true }), isnan: unary({ predicate: true }), isinf: unary({ predicate: true }),
  nanToNum: unary({ scalars: ["scalars"] }),

  add: binary(), subtract: binary(), multiply: binary(), divide: binary(), floorDivide: binary(), remainder: binary(),
  power: binary(), maximum: binary(), minimum: binary(),
  equal: compare, notEqual: compare, less: compare, lessEqual: compare, greater: compare, greaterEqual: compare,
  logicalAnd: compare, logicalOr: compare,
  where: { kind: "elementwise", arity: 3, inline: true },

  cast: { kind: "cast", arity: 1, inline: true },
  scalar: { kind: "generator", arity: 0, inline: true, scalars: ["value"] },
  arange: { kind: "generator", arity: 0, inline: true, scalars: ["start", "step"] },
  eye: { kind: "generator", arity: 0, inline: true, scalars: ["k"] },

  broadcast: { kind: "view", arity: 1, inline: true },
  permute: { kind: "view", arity: 1, inline: true },
  slice: { kind: "view", arity: 1, inline: true },
  reshape: { kind: "reshape", arity: 1, inline: true },
  squeeze: { kind: "reshape", arity: 1, inline: true },
  expandDims: { kind: "reshape", arity: 1, inline: true },

  concat: { kind: "gather", arity: -1, inline: true },
  pad: { kind: "gather", arity: 1, inline: true, scalars: ["value"] },
  take: { kind: "gather", arity: 2, inline: true },
  takeAlong: { kind: "gather", arity: 2, inline: true },

  matmul: { kind: "matmul", arity: 2, inline: true, readsComputedInputs: true },
  reduce: { kind: "kernel", arity: 1, inline: false },
  scan: { kind: "kernel", arity: 1, inline: false },
  putAlong: { kind: "kernel", arity: 3, inline: false, readsComputedInputs: true },
  scatterAdd: { kind: "kernel", arity: 2, inline: false, readsComputedInputs: true },
  argsort: { kind: "kernel", arity: 1, inline: false },
  dequantize: { kind: "kernel", arity: 1, inline: false, readsComputedInputs: true },
  quantizedMatmul: { kind: "kernel", arity: 2, inline: false, readsComputedInputs: true },
  writeSlice: { kind: "kernel", arity: 2, inline: false, scalars: ["start"] },

  random: { kind: "kernel", arity: -1, inline: false, readsComputedInputs: true },

  data: { kind: "data", arity: 0, inline: false },
};

/** The index map of a strided view (broadcast, permute, slice). */
export function viewMapOf(n: { readonly op: Op; readonly attrs: Attrs }): ViewMap {
  if (OPS[n.op].kind !== "view") throw new Error(`viewMapOf: a ${n.op} node is not a strided view`);
  return n.attrs as ViewMap;
}

/** n's attributes as op's, for a node known to be one (throws otherwise: a scheduler bug, not user input). */
export function attrsOf<O extends Op>(n: { readonly op: Op; readonly attrs: Attrs }, op: O): AttrsOf<O> {
  if (n.op !== op) throw new Error(`attrsOf: a ${n.op} node read as ${op}`);
  return n.attrs as AttrsOf<O>;
}
