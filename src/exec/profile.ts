/**
 * sm.profile(): device time per kernel, for finding the kernel that dominates a step. While it
 * runs, evaluation commits and waits for every kernel on its own, so each kernel's time is the
 * wall time from commit to completion (launch and wait included: on a GPU about ten
 * microseconds more than the kernel itself). Kernels are grouped by what they compute.
 */
import { SmeltError } from "../errors.ts";

export interface KernelTimes {
  /** What the kernels compute: kind, the node's op, its shape, and the ops fused into it. */
  label: string;
  kernels: number;
  ms: number;
}

export interface Profile {
  /** Wall time of the whole call, JavaScript included. */
  totalMs: number;
  /** Sum of the kernels' times. */
  kernelMs: number;
  kernels: number;
  /** By label, most time first. */
  byLabel: KernelTimes[];
}

let active: Map<string, { kernels: number; ms: number }> | null = null;

/** Whether evaluation should time each kernel (sm.profile is running). */
export const profiling = (): boolean => active !== null;

export function recordKernel(label: string, ms: number): void {
  const e = active!.get(label);
  if (e) {
    e.kernels++;
    e.ms += ms;
  } else active!.set(label, { kernels: 1, ms });
}

function report(started: number): Profile {
  const byLabel = [...active!].map(([label, e]) => ({ label, kernels: e.kernels, ms: e.ms })).sort((a, b) => b.ms - a.ms);
  return {
    totalMs: performance.now() - started,
    kernelMs: byLabel.reduce((a, e) => a + e.ms, 0),
    kernels: byLabel.reduce((a, e) => a + e.kernels, 0),
    byLabel,
  };
}

/**
 * Runs fn (its evaluations one kernel at a time) and returns its result with the kernels' times.
 * An async fn is awaited. Not reentrant: profiles do not nest.
 */
export function profile<T>(fn: () => T): T extends Promise<infer U> ? Promise<[U, Profile]> : [T, Profile];
export function profile<T>(fn: () => T): [T, Profile] | Promise<[unknown, Profile]> {
  if (typeof fn !== "function") throw new SmeltError("profile: expected a function to run");
  if (active) throw new SmeltError("profile: already profiling; profiles do not nest");
  active = new Map();
  const started = performance.now();
  let result: T;
  try {
    result = fn();
  } catch (e) {
    active = null;
    throw e;
  }
  if (result instanceof Promise) {
    return result.then(
      (v) => {
        const p = report(started);
        active = null;
        return [v, p] as [unknown, Profile];
      },
      (e) => {
        active = null;
        throw e;
      },
    );
  }
  const p = report(started);
  active = null;
  return [result, p];
}

/** The profile as a table: the labels taking most time first, at most `rows` of them. */
export function formatProfile(p: Profile, rows = 20): string {
  const lines = [`${p.kernels} kernels, ${p.kernelMs.toFixed(2)} ms in kernels of ${p.totalMs.toFixed(2)} ms`];
  for (const e of p.byLabel.slice(0, rows)) {
    const share = p.kernelMs > 0 ? (100 * e.ms) / p.kernelMs : 0;
    lines.push(`${e.ms.toFixed(3).padStart(10)} ms ${share.toFixed(1).padStart(5)}% ${String(e.kernels).padStart(6)}x  ${e.label}`);
  }
  if (p.byLabel.length > rows) lines.push(`(${p.byLabel.length - rows} more labels)`);
  return lines.join("\n");
}
