/**
 * Timing for `bun run bench`. Every timed call runs the workload's function from its first op to
 * the device finishing: the output is evaluated (eval waits for the device) before the clock
 * stops. Compiles happen in warm-up runs before any timed one; their count and the warm-up time
 * are reported on their own, and the timed region is checked to compile nothing.
 *
 * mitata times the calls and prints its table; the medians in the JSON and the summary are
 * computed here from mitata's samples (one call per sample, unless mitata batched calls that took
 * under 65 µs, in which case a sample is the mean of a batch; `ticks` records the calls).
 */
import * as sm from "smelt";
import { bench, group, summary } from "mitata";
import { execute, schedule } from "../src/exec/realize.ts";
import { build, type Case, type Spec, title } from "./workloads.ts";

export type Mode = "lazy" | "eager";

export interface Timing {
  /** Median of mitata's samples, in ms per call. */
  medianMs: number;
  p25Ms: number;
  p75Ms: number;
  samples: number;
  ticks: number;
}

export interface Result {
  id: string;
  title: string;
  spec: Spec;
  error?: string;
  lazy?: Timing;
  eager?: Timing;
  copy?: Timing;
  kernelsPerRun?: { lazy: number; eager: number };
  /** The first run of each mode, which compiles what it needs. */
  warmup?: { lazyMs: number; eagerMs: number; kernelCompiles: number; freshCompiles: number; diskCacheHits: number };
  /** Kernels compiled inside timed calls: must be 0. */
  compilesWhileTimed?: number;
  maxRelErr?: number;
  tolerance?: number;
  flops?: number;
  bytes?: number;
  /** overhead workload: graph build and scheduling alone, per node (median of runs). */
  graph?: { buildUsPerNode: number; scheduleUsPerNode: number; runs: number };
  derived?: Record<string, number>;
  peer?: Record<string, unknown>;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.round(q * (sorted.length - 1))]!;
}

/** One call of the workload in a mode: ops, evaluation, waiting for the device, freeing. */
export function callOf(c: Case, mode: Mode): () => void {
  const run = mode === "lazy" ? () => c.fn().eval() : () => sm.eager(() => c.fn()).eval();
  return () => sm.tidy(run).dispose();
}

/** Max over elements of |lazy - eager| / max(|eager|, 1); NaN where exactly one side is NaN. */
export function maxRelErr(lazy: ArrayLike<number>, eager: ArrayLike<number>): number {
  if (lazy.length !== eager.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < lazy.length; i++) {
    const l = lazy[i]!, e = eager[i]!;
    if (Number.isNaN(l) || Number.isNaN(e)) {
      if (Number.isNaN(l) !== Number.isNaN(e)) return NaN;
      continue;
    }
    if (l === e) continue;
    const err = Math.abs(l - e) / Math.max(Math.abs(e), 1);
    if (!(err <= worst)) worst = err;
  }
  return worst;
}

/** The elements as float32. (Not returned from sm.tidy: tidy walks returned objects' values, which for a large typed array takes minutes.) */
function asFloats(t: sm.Tensor): ArrayLike<number> {
  if (t.dtype === "float32") return t.raw();
  const f = t.astype("float32");
  const out = f.raw();
  f.dispose();
  return out;
}

/**
 * Builds the case, runs each mode once cold (compiles; timed as the warm-up), compares the two
 * outputs, and runs each mode once more to count its kernels.
 */
function prepare(spec: Spec, r: Result): Case {
  const c = build(spec);
  r.flops = c.flops;
  r.bytes = c.bytes;
  r.tolerance = c.tolerance;
  const dev = sm.device();
  const s0 = sm.stats().kernelCompiles;
  const d0 = dev.stats();
  let t0 = performance.now();
  const lazyOut = sm.tidy(() => c.fn().eval());
  const lazyMs = performance.now() - t0;
  t0 = performance.now();
  const eagerOut = sm.tidy(() => sm.eager(() => c.fn()).eval());
  const eagerMs = performance.now() - t0;
  const d1 = dev.stats();
  r.warmup = {
    lazyMs,
    eagerMs,
    kernelCompiles: sm.stats().kernelCompiles - s0,
    freshCompiles: d1.compiles - d0.compiles,
    diskCacheHits: d1.cacheHits - d0.cacheHits,
  };
  r.maxRelErr = maxRelErr(asFloats(lazyOut), asFloats(eagerOut));
  lazyOut.dispose();
  eagerOut.dispose();
  const kernels = (mode: Mode) => {
    const before = sm.stats().kernelsDispatched;
    callOf(c, mode)();
    return sm.stats().kernelsDispatched - before;
  };
  r.kernelsPerRun = { lazy: kernels("lazy"), eager: kernels("eager") };
  c.copy?.();
  if (spec.kind === "overhead") r.graph = graphCost(c, spec.nodes, 7);
  if (!(r.maxRelErr <= c.tolerance)) {
    c.dispose();
    throw new Error(`${spec.id}: lazy and eager outputs differ: max relative error ${r.maxRelErr} > tolerance ${c.tolerance}`);
  }
  return c;
}

/** Graph building and scheduling alone (the kernels run outside the clock), in µs per node. */
function graphCost(c: Case, nodes: number, runs: number): Result["graph"] {
  const builds: number[] = [];
  const scheds: number[] = [];
  for (let i = 0; i < runs; i++) {
    sm.tidy(() => {
      const t0 = performance.now();
      const y = c.fn();
      const t1 = performance.now();
      const s = schedule([y.node("bench")]);
      const t2 = performance.now();
      execute(s);
      builds.push(((t1 - t0) * 1000) / nodes);
      scheds.push(((t2 - t1) * 1000) / nodes);
    });
  }
  return { buildUsPerNode: median(builds), scheduleUsPerNode: median(scheds), runs };
}

function timing(stats: { samples: number[]; ticks: number }): Timing {
  const ms = stats.samples.map((ns) => ns / 1e6).sort((a, b) => a - b);
  return { medianMs: median(ms), p25Ms: quantile(ms, 0.25), p75Ms: quantile(ms, 0.75), samples: ms.length, ticks: stats.ticks };
}

/** The name of a mitata benchmark: workload id and what it times. */
export const benchName = (id: string, what: Mode | "copy") => `${id} ${what === "copy" ? "copy (ceiling)" : what}`;

/**
 * Registers one workload with mitata: a group holding lazy and eager (with mitata's summary of
 * the two) and, for workloads with one, the copy ceiling. The case is built when mitata reaches
 * the lazy benchmark and freed after the last one, so only one workload's inputs live at a time.
 */
export function register(spec: Spec, r: Result): void {
  let c: Case | null = null;
  let compiles0 = 0;
  const fail = (e: unknown) => {
    r.error ??= e instanceof Error ? e.message : String(e);
    return e;
  };
  const finish = () => {
    r.compilesWhileTimed = sm.stats().kernelCompiles - compiles0;
    c?.dispose();
    c = null;
  };
  group(title(spec), () => {
    summary(() => {
      bench(benchName(spec.id, "lazy"), function* () {
        try {
          c = prepare(spec, r);
        } catch (e) {
          throw fail(e);
        }
        compiles0 = sm.stats().kernelCompiles;
        yield callOf(c, "lazy");
      });
      bench(benchName(spec.id, "eager"), function* () {
        if (!c) throw fail(new Error(`${spec.id}: not prepared`));
        yield callOf(c, "eager");
        if (spec.kind !== "chain") finish();
      });
    });
    if (spec.kind === "chain") {
      bench(benchName(spec.id, "copy"), function* () {
        if (!c?.copy) throw fail(new Error(`${spec.id}: not prepared`));
        yield c.copy;
        finish();
      });
    }
  });
}

/** Fills in a result's timings from mitata's trials, and the derived metrics. */
export function collect(r: Result, trials: Map<string, { stats?: { samples: number[]; ticks: number }; error?: unknown }>): void {
  for (const what of ["lazy", "eager", "copy"] as const) {
    const t = trials.get(benchName(r.id, what));
    if (!t) continue;
    if (t.error) {
      const msg = t.error instanceof Error ? t.error.message : (t.error as { message?: string })?.message ?? String(t.error);
      r.error ??= `${what}: ${msg}`;
    } else if (t.stats) r[what] = timing(t.stats);
  }
  if (!r.lazy || !r.eager) {
    r.error ??= "no timings";
    return;
  }
  const d: Record<string, number> = { speedup: r.eager.medianMs / r.lazy.medianMs };
  if (r.flops) {
    d.lazyGflops = r.flops / r.lazy.medianMs / 1e6;
    d.eagerGflops = r.flops / r.eager.medianMs / 1e6;
  }
  if (r.bytes) {
    d.lazyGBs = r.bytes / r.lazy.medianMs / 1e6;
    d.eagerGBs = r.bytes / r.eager.medianMs / 1e6;
    if (r.copy) {
      d.copyGBs = r.bytes / r.copy.medianMs / 1e6;
      d.lazyFractionOfCopy = d.lazyGBs / d.copyGBs;
      d.eagerFractionOfCopy = d.eagerGBs / d.copyGBs;
    }
  }
  if (r.spec.kind === "overhead") {
    d.lazyUsPerNode = (r.lazy.medianMs * 1000) / r.spec.nodes;
    d.eagerUsPerNode = (r.eager.medianMs * 1000) / r.spec.nodes;
    if (r.graph) d.buildScheduleUsPerNode = r.graph.buildUsPerNode + r.graph.scheduleUsPerNode;
  }
  r.derived = d;
}
