/**
 * The engine's compiled kernels: one pipeline per kernel source, compiled on first use (on a
 * native thread for asyncEval), and the compile counters of sm.stats(), which tell compiles from
 * libraries the backend loaded from its on-disk cache.
 */
import type { Library, Pipeline } from "../runtime/resources.ts";
import { prelude } from "./emit/builder.ts";
import { memory, stats } from "./memory.ts";

const pipelines = new Map<string, Pipeline>();

/** Runs compile() and counts what the device did: real compiles, or loads from its disk cache. */
async function counted<T>(compile: () => Promise<T>): Promise<T> {
  const before = memory.device.stats();
  try {
    return await compile();
  } finally {
    const after = memory.device.stats();
    stats.kernelCompiles += after.compiles - before.compiles;
    stats.kernelDiskCacheHits += after.cacheHits - before.cacheHits;
  }
}

function countedSync<T>(compile: () => T): T {
  const before = memory.device.stats();
  try {
    return compile();
  } finally {
    const after = memory.device.stats();
    stats.kernelCompiles += after.compiles - before.compiles;
    stats.kernelDiskCacheHits += after.cacheHits - before.cacheHits;
  }
}

/** Compiles a whole MSL library (the engine's prelude first), counted in sm.stats(). */
export function compileLibrary(source: string): Library {
  return countedSync(() => memory.device.compile(`${prelude}\n${source}`));
}

/** The pipeline of kernel `k` in `source`, compiled once per source. */
export function pipelineFor(source: string): Pipeline {
  let p = pipelines.get(source);
  // A pipeline of a disposed shared device is compiled again on the one that replaced it.
  if (p && !p.disposed) {
    stats.kernelCacheHits++;
    return p;
  }
  p = compileLibrary(source).pipeline("k");
  pipelines.set(source, p);
  return p;
}

/** Libraries of metal/ (random.metal) by source, each compiled once, with their pipelines by function. */
const libraries = new Map<string, { library: Library; pipelines: Map<string, Pipeline> }>();

/** The pipeline of function `entry` of a hand-written library. */
export function libraryPipeline(source: string, entry: string): Pipeline {
  let lib = libraries.get(source);
  if (!lib || lib.library.disposed) {
    lib = { library: compileLibrary(source), pipelines: new Map() };
    libraries.set(source, lib);
  }
  let p = lib.pipelines.get(entry);
  if (!p) {
    p = lib.library.pipeline(entry);
    lib.pipelines.set(entry, p);
  }
  return p;
}

/** Compiles every source not compiled yet, all at once and off the JS thread. */
export async function compileMissing(sources: Iterable<string>): Promise<void> {
  const missing = [...new Set(sources)].filter((s) => !pipelines.get(s) || pipelines.get(s)!.disposed);
  if (missing.length === 0) return;
  const dev = memory.device;
  const libraries = await counted(() =>
    Promise.allSettled(missing.map((s) => dev.compileAsync(`${prelude}\n${s}`))),
  );
  libraries.forEach((r, i) => {
    // A failed compile is left for encoding to repeat and report at the kernel that needs it.
    if (r.status === "fulfilled") pipelines.set(missing[i]!, r.value.pipeline("k"));
  });
}
