/**
 * The text of a tensor for console.log and toString, in NumPy's repr style:
 * `array([[1, 2],\n       [3, 4]], dtype=int32)`. Floats print as NumPy prints them (the
 * shortest digits that read back as the same value in the dtype, at most 8 after the point,
 * integral values as `1.`, scientific notation past 1e8, below 1e-4 or over a spread of 1e3,
 * decimal points aligned); bools as True/False, as NumPy and MLX print them. Over 1000 elements,
 * each axis longer than 6 shows its first and last 3 entries around `...` and the shape is added.
 * Unlike NumPy, long rows are not wrapped at 75 columns.
 */
import { type DType, isFloating } from "../graph/dtype.ts";

const SUMMARIZE_OVER = 1000;
const EDGE = 3;

/** The indices shown along an axis of length n (-1 stands for "..."). */
function shown(n: number, summarize: boolean): number[] {
  if (!summarize || n <= 2 * EDGE) return Array.from({ length: n }, (_, i) => i);
  return [...Array.from({ length: EDGE }, (_, i) => i), -1, ...Array.from({ length: EDGE }, (_, i) => n - EDGE + i)];
}

/** Shortest decimal digits (at most 9 significant) that round back to x through `round`. */
function shortest(x: number, round: (v: number) => number): string {
  for (let p = 1; p < 17; p++) {
    const s = x.toPrecision(p);
    if (round(Number(s)) === x) return s;
  }
  return String(x);
}

/** Formats the float values to be shown, as one column would be in NumPy. */
function floatStrings(xs: number[], round: (v: number) => number): string[] {
  const finite = xs.filter(Number.isFinite);
  const special = (x: number) => (Number.isNaN(x) ? "nan" : x > 0 ? "inf" : "-inf");
  const abs = finite.map(Math.abs).filter((a) => a > 0);
  const [lo, hi] = [Math.min(...abs), Math.max(...abs)];
  if (abs.length > 0 && (hi >= 1e8 || lo < 1e-4 || hi / lo > 1e3)) {
    // Mantissas share the longest fraction among them; exponents have a sign and two digits or more.
    const split = finite.map((x) => {
      const [m, e] = Number(shortest(x, round)).toExponential().split("e") as [string, string];
      return { m, e: Number(e) };
    });
    const frac = Math.max(0, ...split.map(({ m }) => (m.split(".")[1] ?? "").length));
    let k = 0;
    return xs.map((x) => {
      if (!Number.isFinite(x)) return special(x);
      const { m, e } = split[k++]!;
      const mant = frac === 0 ? `${m}.` : Number(m).toFixed(frac);
      return `${mant}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
    });
  }
  const parts = xs.map((x): [string, string] => {
    if (!Number.isFinite(x)) return [special(x), ""];
    let s = shortest(x, round);
    if (s.includes("e") || (s.split(".")[1] ?? "").length > 8) s = x.toFixed(8).replace(/0+$/, "");
    if (!s.includes(".")) s += ".";
    const [i, f] = s.split(".") as [string, string];
    return [`${i}.`, f];
  });
  const frac = Math.max(0, ...parts.map(([, f]) => f.length));
  return parts.map(([i, f]) => (i.endsWith(".") ? i + f.padEnd(frac) : i));
}

/** NumPy-style repr of a tensor whose element at a flat row-major index is at(i). */
export function formatTensor(shape: readonly number[], dtype: DType, at: (i: number) => number | boolean, round: (v: number) => number): string {
  const size = shape.reduce((a, b) => a * b, 1);
  if (size === 0) return shape.length === 1 ? `array([], dtype=${dtype})` : `array([], shape=(${shape.join(", ")}), dtype=${dtype})`;
  const summarize = size > SUMMARIZE_OVER;
  const strides = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));
  // Flat indices of the shown elements, in order, and their texts (formatted together so floats align).
  const flat: number[] = [];
  const walk = (d: number, base: number) => {
    if (d === shape.length) return void flat.push(base);
    for (const i of shown(shape[d]!, summarize)) if (i >= 0) walk(d + 1, base + i * strides[d]!);
  };
  walk(0, 0);
  const raw = flat.map(at);
  const texts = isFloating(dtype)
    ? floatStrings(raw as number[], round)
    : raw.map((v) => (typeof v === "boolean" ? (v ? "True" : "False") : String(v)));
  const width = Math.max(...texts.map((t) => t.length));
  let next = 0;
  const prefix = "array(";
  const build = (d: number): string => {
    if (d === shape.length) return texts[next++]!.padStart(width);
    const items = shown(shape[d]!, summarize).map((i) => (i < 0 ? "..." : build(d + 1)));
    const sep = d === shape.length - 1 ? ", " : "," + "\n".repeat(shape.length - 1 - d) + " ".repeat(prefix.length + d + 1);
    return `[${items.join(sep)}]`;
  };
  return `${prefix}${build(0)}, ${summarize ? `shape=(${shape.join(", ")}), ` : ""}dtype=${dtype})`;
}
