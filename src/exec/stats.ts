/** sm.stats() and sm.resetStats(): what evaluation did, for tests and benchmarks. */
import { type EngineStats, stats as counters } from "./memory.ts";

export function stats(): EngineStats {
  return { ...counters };
}
/** Zeroes the event counters; current and peak bytes restart from what is allocated now. */
export function resetStats(): void {
  counters.kernelsDispatched = 0;
  counters.evaluations = 0;
  counters.commandBuffers = 0;
  counters.kernelCompiles = 0;
  counters.kernelDiskCacheHits = 0;
  counters.kernelCacheHits = 0;
  counters.fusedGroups = 0;
  counters.schedulesReplayed = 0;
  counters.peakBytes = counters.bytesAllocated;
}
