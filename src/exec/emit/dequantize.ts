/**
 * Kernels that read GGML quantized blocks (src/graph/quant.ts): dequantize, one thread per value,
 * and quantizedMatmul, x @ dequantize(W)^T with each weight dequantized as the dot product reads
 * it, so the float weight is never in memory. A value depends on a few bytes of its block (the
 * scales and its quant), which a thread reads from the uint8 input itself: no thread waits on
 * another and no threadgroup memory is needed. dequantize uses GGML's reference dequantization
 * with its float32 operations in the same order; quantizedMatmul factors a block's scales out of
 * its sum where the format allows, so its rounding differs from dequantize-then-matmul's.
 */
import type { Node } from "../../graph/node.ts";
import { attrsOf, type QuantFormat } from "../../graph/op.ts";
import { QUANT_BLOCKS } from "../../graph/quant.ts";
import { type PlainPlan, quantRowsPerThread } from "../plan/kernel.ts";
import { Builder, computeType, ELEMENT_POSITION, finish, type KernelCode, store } from "./builder.ts";

/** The byte at offset k (an int expression) of the block starting at byte `base`, as an int 0..255. */
function blockByte(b: Builder, blocks: Node, k: string | number): string {
  return `int(${b.emit(blocks, `(base + ${k})`)})`;
}

/** Declares the float16 at offset k of the block (a scale or minimum) as a float; its name. */
function blockHalf(b: Builder, blocks: Node, k: number): string {
  const v = b.fresh("d");
  b.line(`float ${v} = float(as_type<half>(ushort(${blockByte(b, blocks, k)} | (${blockByte(b, blocks, k + 1)} << 8))));`);
  return v;
}

/** Declares the scale of the block at byte `base` (and Q4_1's minimum, else ""), for laneStep; their names. */
function blockScales(b: Builder, blocks: Node, format: QuantFormat): [string, string] {
  return [blockHalf(b, blocks, 0), format === "Q4_1" ? blockHalf(b, blocks, 2) : ""];
}

/**
 * Reads values of the block starting at byte `base` (an int variable) of blocks. Called, it
 * emits the lines that load the block's scales; the function it returns emits the lines for value
 * j (an int variable) of the block and returns the value's float expression. A kernel that
 * reads a whole block loads its scales once, before its loop over the values.
 */
function blockReader(b: Builder, blocks: Node, format: QuantFormat): () => string {
  const byte = (k: string | number) => blockByte(b, blocks, k);
  const half = (k: number) => blockHalf(b, blocks, k);
  const signed = (v: string) => `(${v} - ((${v} & 128) << 1))`;
  switch (format) {
    case "Q8_0": {
      const d = half(0);
      return () => {
        b.line(`int q = ${byte("2 + j")};`);
        return `${d} * float(${signed("q")})`;
      };
    }
    case "Q4_0": {
      const d = half(0);
      return () => {
        b.line(`int q = ${byte("2 + (j & 15)")};`);
        return `${d} * float((j < 16 ? (q & 15) : (q >> 4)) - 8)`;
      };
    }
    case "Q4_1": {
      const d = half(0), m = half(2);
      return () => {
        b.line(`int q = ${byte("4 + (j & 15)")};`);
        return `${d} * float(j < 16 ? (q & 15) : (q >> 4)) + ${m}`;
      };
    }
    case "Q4_K": {
      const d = half(0), dmin = half(2);
      return () => {
        // Eight sub-blocks of 32 values; sub-block s has a 6-bit scale and min packed in bytes 4..15.
        b.line("int g = j / 64; int l = j % 64; int s = 2 * g + l / 32;");
        b.line(`int q = ${byte("16 + 32 * g + (l & 31)")};`);
        b.line("int nib = l < 32 ? (q & 15) : (q >> 4);");
        b.line(`int s0 = ${byte("4 + s")}; int s4 = ${byte("4 + s + 4")}; int sm4 = ${byte("4 + (s >= 4 ? s - 4 : 0)")};`);
        b.line("int sc = s < 4 ? (s0 & 63) : ((s4 & 15) | ((sm4 >> 6) << 4));");
        b.line("int mn = s < 4 ? (s4 & 63) : ((s4 >> 4) | ((s0 >> 6) << 4));");
        return `(${d} * float(sc)) * float(nib) - ${dmin} * float(mn)`;
      };
    }
    case "Q6_K": {
      const d = half(208);
      return () => {
        // Two halves of 128 values; quarter t of a half takes its low 4 bits from the low or high
        // nibbles of 32 bytes of ql, its top 2 bits from bits 2t..2t+1 of qh, its scale per 16 values.
        b.line("int h = j / 128; int r = j % 128; int t = r / 32; int l = r % 32;");
        b.line(`int ql = ${byte("64 * h + l + (t & 1) * 32")};`);
        b.line(`int qh = ${byte("128 + 32 * h + l")};`);
        b.line(`int sc = ${byte("192 + 8 * h + l / 16 + 2 * t")};`);
        b.line("int q = ((t < 2 ? (ql & 15) : (ql >> 4)) | (((qh >> (2 * t)) & 3) << 4)) - 32;");
        return `(${d} * float(${signed("sc")})) * float(q)`;
      };
    }
  }
}

/**
 * A value per thread, or on a CPU a block per thread: its scales loaded once and its values
 * computed in a loop the compiler vectorizes, each as the one-value kernel computes it.
 */
export function dequantizeKernel({ out, dispatch, cpu }: PlainPlan): KernelCode {
  const format = attrsOf(out, "dequantize").format;
  const { elements, bytes } = QUANT_BLOCKS[format];
  const b = new Builder(out);
  b.line(cpu ? "int blk = int(gid);" : `int blk = int(gid) / ${elements}; int j = int(gid) - blk * ${elements};`);
  b.line(`int base = blk * ${bytes};`);
  const value = blockReader(b, out.inputs[0]!, format);
  const result = () => store(out, `${computeType(out.dtype)}(${value()})`);
  if (cpu) {
    b.line(`for (int j = 0; j < ${elements}; ++j) {`);
    b.scoped(() => b.line(`out0[blk * ${elements} + j] = ${result()};`));
    b.line("}");
  } else b.line(`out0[gid] = ${result()};`);
  return finish(b, out, ELEMENT_POSITION, dispatch);
}

/** Independent partial sums of a one-row product: as many as a vector register of floats holds. */
const LANES = 16;
/**
 * Up to this many rows per thread laneDot's straight-line code is the faster (2 rows cost about
 * what one does); from 5 the host's compiler stopped vectorizing it, and manyRowLanes' loops,
 * which it vectorizes at any row count, take over.
 */
const STRAIGHT_ROWS = 3;
/** The formats whose quants sit at fixed offsets, which laneDot reads. */
const LANE_FORMATS: ReadonlySet<QuantFormat> = new Set(["Q8_0", "Q4_0", "Q4_1"]);

/**
 * The lines of a loop body adding block (row n, block kb) times x's matching values into the
 * lane sums a{r}_0..a{r}_15 of each of R rows of x, for the formats whose quants sit at fixed
 * offsets: lane l takes values l and l + 16 (Q4_0 and Q4_1 keep them in one byte), scaled by
 * the block's scale (and, for Q4_1, its minimum times the two x values). The quants are decoded
 * once per block and serve every row. The lanes are independent, consecutive in x and in the
 * block's bytes, so the host's compiler turns each step into vector instructions over all of
 * them; they are added once, after the row. xAt(r, k): row r's value k of the block.
 */
function laneDot(b: Builder, blocks: Node, format: QuantFormat, R: number, xAt: (r: number, k: string) => string): void {
  const [d, m] = blockScales(b, blocks, format);
  for (let l = 0; l < LANES; l++) {
    b.line(`float ql${l}, qh${l};`);
    laneQuants(b, blocks, format, `${l}`, `ql${l}`, `qh${l}`);
    for (let r = 0; r < R; r++) {
      const lo = `lo${r}_${l}`, hi = `hi${r}_${l}`;
      b.line(`float ${lo} = float(${xAt(r, `${l}`)}); float ${hi} = float(${xAt(r, `${16 + l}`)});`);
      b.line(laneStep(format, `a${r}_${l}`, d, m, lo, hi, `ql${l}`, `qh${l}`));
    }
  }
}

/** Sets ql and qh to lane l's two quants (values l and l + 16 of the block) as floats; l an int expression. */
function laneQuants(b: Builder, blocks: Node, format: QuantFormat, l: string, ql: string, qh: string): void {
  if (format === "Q8_0") {
    const int8 = (k: string) => `float(as_type<char>(${b.emit(blocks, `(base + ${k})`)}))`;
    b.line(`${ql} = ${int8(`2 + ${l}`)}; ${qh} = ${int8(`18 + ${l}`)};`);
    return;
  }
  // Q4_0 and Q4_1 keep both in one byte; Q4_0's quants are offset by 8.
  const shift = format === "Q4_0" ? " - 8" : "";
  const q = b.fresh("q");
  b.line(`int ${q} = ${blockByte(b, blocks, `${format === "Q4_0" ? 2 : 4} + ${l}`)};`);
  b.line(`${ql} = float((${q} & 15)${shift}); ${qh} = float((${q} >> 4)${shift});`);
}

/** The statement adding a lane's pair (x values lo, hi; quants ql, qh) into its sum a, with the block's scale d (and minimum m). */
function laneStep(format: QuantFormat, a: string, d: string, m: string, lo: string, hi: string, ql: string, qh: string): string {
  const dot = `fma(${lo}, ${ql}, ${hi} * ${qh})`;
  // Q4_1's value is d q + m: the pair adds d (x . q) + m (x's two values).
  return format === "Q4_1" ? `${a} = fma(${d}, ${dot}, fma(${m}, ${lo} + ${hi}, ${a}));` : `${a} = fma(${d}, ${dot}, ${a});`;
}

/**
 * The sum of the lanes, left to right. The host's compiler recognizes this chain as the
 * reduction of one vector and keeps the lanes' loop in full-width vector registers; summed as a
 * tree, it paired the lanes into short vectors with shuffles, and the whole row ran about 3.5x
 * slower. The chain runs once per row, so its length costs nothing.
 */
function laneSum(lane: (l: number) => string): string {
  return Array.from({ length: LANES }, (_, l) => lane(l)).join(" + ");
}

/**
 * laneDot's sums for R > 1 rows of x, written as loops over arrays (rows, then lanes) rather than
 * straight-line code: each block's quants are decoded into 32 floats once, then every row adds
 * its 32 values times them into its 16 lane sums. The host's compiler vectorizes the inner loop
 * over lanes whatever R is; unrolled, from 5 rows it gave up and each row cost about as much as
 * a one-row product. Leaves acc0..acc{R-1} set.
 */
function manyRowLanes(b: Builder, blocks: Node, format: QuantFormat, R: number, perRow: string, elements: number, bytes: number, xAt: (k: string) => string): void {
  b.line(`float a[${R}][${LANES}];`);
  b.line(`for (int r = 0; r < ${R}; ++r) for (int l = 0; l < ${LANES}; ++l) a[r][l] = 0.0f;`);
  b.line(`int xr[${R}] = {${Array.from({ length: R }, (_, r) => `x${r}`).join(", ")}};`);
  b.line(`for (int kb = 0; kb < ${perRow}; ++kb) {`);
  b.scoped(() => {
    b.line(`int base = (n * ${perRow} + kb) * ${bytes};`);
    const [d, m] = blockScales(b, blocks, format);
    b.line(`float ql[${LANES}]; float qh[${LANES}];`);
    b.line(`for (int l = 0; l < ${LANES}; ++l) {`);
    b.scoped(() => laneQuants(b, blocks, format, "l", "ql[l]", "qh[l]"));
    b.line("}");
    b.line(`for (int r = 0; r < ${R}; ++r) {`);
    b.scoped(() => {
      b.line(`int xo = xr[r] + kb * ${elements};`);
      b.line(`for (int l = 0; l < ${LANES}; ++l) {`);
      b.scoped(() => {
        b.line(`float lo = float(${xAt("(xo + l)")}); float hi = float(${xAt(`(xo + ${LANES} + l)`)});`);
        b.line(laneStep(format, "a[r][l]", d, m, "lo", "hi", "ql[l]", "qh[l]"));
      });
      b.line("}");
    });
    b.line("}");
  });
  b.line("}");
  for (let r = 0; r < R; r++) b.line(`acc${r} = ${laneSum((l) => `a[${r}][${l}]`)};`);
}

/**
 * The lane sums of one row of x (a decoding step), in loops over arrays as manyRowLanes: even
 * blocks into a[l], odd ones into c[l], so that a block's step need not wait for the one before
 * it; then c added into a and a's halves into each other, a few vector adds where a chain of
 * lanes is a shuffle and a scalar add each.
 */
function oneRowLanes(b: Builder, blocks: Node, format: QuantFormat, perRow: string, elements: number, bytes: number, xAt: (k: string) => string): void {
  b.line(`float a[${LANES}], c[${LANES}];`);
  b.line(`for (int l = 0; l < ${LANES}; ++l) a[l] = c[l] = 0.0f;`);
  const block = (kb: string, sums: string) => {
    b.line("{");
    b.scoped(() => {
      b.line(`int base = (n * ${perRow} + ${kb}) * ${bytes};`);
      const [d, m] = blockScales(b, blocks, format);
      b.line(`int xo = x0 + ${kb} * ${elements};`);
      b.line(`for (int l = 0; l < ${LANES}; ++l) {`);
      b.scoped(() => {
        b.line("float ql, qh;");
        laneQuants(b, blocks, format, "l", "ql", "qh");
        b.line(`float lo = float(${xAt("(xo + l)")}); float hi = float(${xAt(`(xo + ${LANES} + l)`)});`);
        b.line(laneStep(format, `${sums}[l]`, d, m, "lo", "hi", "ql", "qh"));
      });
      b.line("}");
    });
    b.line("}");
  };
  b.line("int kb = 0;");
  b.line(`for (; kb + 1 < ${perRow}; kb += 2) {`);
  b.scoped(() => {
    block("kb", "a");
    block("(kb + 1)", "c");
  });
  b.line("}");
  b.line(`if (kb < ${perRow}) {`);
  b.scoped(() => block("kb", "a"));
  b.line("}");
  b.line(`for (int l = 0; l < ${LANES}; ++l) a[l] += c[l];`);
  // Halves added into halves: a few vector adds, where a left-to-right chain is a shuffle and a scalar add per lane.
  for (let h = LANES / 2; h >= 1; h /= 2) b.line(`for (int l = 0; l < ${h}; ++l) a[l] += a[l + ${h}];`);
  b.line("acc0 = a[0];");
}

/**
 * One thread per weight row n and R rows of x (R = quantRowsPerThread: 1 when decoding, up to 8),
 * the dot products in float32, a block at a time. The formats at fixed offsets sum in lanes that
 * last the row (laneDot; on a GPU with one row only: plan.cpu), the others a value at a
 * time; either way each weight is dequantized once and multiplied into the R rows' sums, so the
 * dequantization is shared by R rows and no float copy of W is made.
 */
export function quantizedMatmulKernel({ out, dispatch, cpu }: PlainPlan): KernelCode {
  const [x, blocks] = out.inputs as [Node, Node];
  const format = attrsOf(out, "quantizedMatmul").format;
  const { elements, bytes } = QUANT_BLOCKS[format];
  const R = quantRowsPerThread(out);
  const b = new Builder(out);
  const n0 = out.shape[out.shape.length - 1]!;
  const N = b.int(n0);
  const M = b.int(out.size / n0);
  const depth = x.shape[x.shape.length - 1]!;
  const K = b.int(depth);
  const perRow = b.int(depth / elements);
  const rs = Array.from({ length: R }, (_, r) => r);
  b.line(`int n = int(gid) % ${N}; int m0 = int(gid) / ${N} * ${R};`);
  // Rows past the last are read as the last (always in bounds) and not stored.
  for (const r of rs) b.line(`int x${r} = min(m0 + ${r}, ${M} - 1) * ${K}; float acc${r} = 0.0f;`);
  const lanes = LANE_FORMATS.has(format) && (R === 1 || cpu);
  if (lanes && R > STRAIGHT_ROWS) {
    manyRowLanes(b, blocks, format, R, perRow, elements, bytes, (k) => b.emit(x, k));
  } else if (lanes && R === 1) {
    oneRowLanes(b, blocks, format, perRow, elements, bytes, (k) => b.emit(x, k));
  } else {
    if (lanes) for (const r of rs) b.line(Array.from({ length: LANES }, (_, l) => `float a${r}_${l} = 0.0f;`).join(" "));
    b.line(`for (int kb = 0; kb < ${perRow}; ++kb) {`);
    b.scoped(() => {
      b.line(`int base = (n * ${perRow} + kb) * ${bytes};`);
      if (lanes) return laneDot(b, blocks, format, R, (r, k) => b.emit(x, `(x${r} + kb * ${elements} + ${k})`));
      b.line(`int xo = x0 + kb * ${elements};`);
      const value = blockReader(b, blocks, format);
      b.line(`for (int j = 0; j < ${elements}; ++j) {`);
      b.scoped(() => {
        if (R === 1) return b.line(`acc0 = fma(float(${b.emit(x, "(xo + j)")}), ${value()}, acc0);`);
        b.line(`float w = ${value()};`);
        for (const r of rs) b.line(`acc${r} = fma(float(${b.emit(x, `(x${r} + kb * ${elements} + j)`)}), w, acc${r});`);
      });
      b.line("}");
    });
    b.line("}");
    if (lanes) for (const r of rs) b.line(`acc${r} = ${laneSum((l) => `a${r}_${l}`)};`);
  }
  for (const r of rs) {
    const at = `(m0 + ${r}) * ${N} + n`;
    const st = `out0[${at}] = ${store(out, `${computeType(out.dtype)}(acc${r})`)};`;
    b.line(r === 0 ? st : `if (m0 + ${r} < ${M}) ${st}`);
  }
  return finish(b, out, ELEMENT_POSITION, dispatch);
}
