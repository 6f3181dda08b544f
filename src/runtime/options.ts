/**
 * The options string given to smelt_device_open, from openDevice's options and the environment.
 */
import { homedir } from "node:os";
import { join } from "node:path";
import { SmeltError } from "../errors.ts";
import { type BackendName, packageRoot, ZIG_REQUIRED, zigCommand } from "./native.ts";

export interface OpenDeviceOptions {
  /** Which backend to open; default: SMELT_BACKEND, else metal on Apple silicon, cuda on Linux
   * with an NVIDIA GPU, else host. */
  backend?: BackendName;
  /** host: worker threads (default SMELT_HOST_THREADS, else the number of cores). */
  threads?: number;
  /** host: bounds-checked buffer access; metal: validation; cuda: each kernel run alone, so a fault
   * names it (default SMELT_HOST_DEBUG / SMELT_METAL_DEBUG / SMELT_CUDA_DEBUG). */
  debug?: boolean;
  /** Directory of the compiled-kernel cache (host, cuda) and pipeline archives (metal); default SMELT_CACHE_DIR, else the user cache dir. */
  cacheDir?: string;
  /** host: C++ compiler command (default SMELT_CXX, else `zig cc`). */
  cxx?: string;
  /** metal: commit the encoder's work every N dispatches (default SMELT_COMMIT_EVERY). */
  commitEvery?: number;
  /** host: false hides buffer memory from the CPU, as on a discrete GPU, to test the copy paths
   * (default: SMELT_HOST_VISIBLE=0 hides it). */
  hostVisible?: boolean;
  /** host: every pipeline's maxThreadsPerThreadgroup, 1 to 1024 (default SMELT_HOST_MAX_THREADS,
   * else 1024). Metal lowers it for kernels that use many registers; tests lower it here. */
  maxThreads?: number;
}

function positiveInt(what: string, value: unknown): string {
  const n = typeof value === "string" ? Number(value) : value;
  if (typeof n !== "number" || !Number.isInteger(n) || n <= 0) {
    throw new SmeltError(`openDevice: ${what} must be a positive integer, got ${String(value)}`);
  }
  return String(n);
}

function plain(what: string, value: string): string {
  // The native parser splits on ';' and '=' only at the first one, so ';' cannot appear in a value.
  if (value.includes(";")) throw new SmeltError(`openDevice: ${what} may not contain ';': ${value}`);
  return value;
}

export function cacheDirectory(): string {
  if (process.env.SMELT_CACHE_DIR) return process.env.SMELT_CACHE_DIR;
  if (process.env.XDG_CACHE_HOME) return join(process.env.XDG_CACHE_HOME, "smelt");
  return join(homedir(), ".cache", "smelt");
}

export function deviceOptions(backend: BackendName, opts: OpenDeviceOptions): string {
  // host, cuda: compiled kernels; metal: binary archives of compiled pipelines.
  const pairs = [`cache=${plain("cacheDir", opts.cacheDir ?? cacheDirectory())}`];
  const env = process.env;
  if (backend === "host") {
    pairs.push(`include=${plain("include", join(packageRoot, "shim", "host", "msl"))}`);
    let cxx = opts.cxx ?? env.SMELT_CXX;
    if (!cxx) {
      const zig = zigCommand();
      if (!zig) throw new SmeltError(`${ZIG_REQUIRED} (the host backend compiles kernels with \`zig cc\`; or set SMELT_CXX)`);
      cxx = [...zig, "cc"].join(" ");
    }
    pairs.push(`cxx=${plain("cxx", cxx)}`);
    const debug = opts.debug ?? env.SMELT_HOST_DEBUG === "1";
    if (debug) pairs.push("debug=1");
    const threads = opts.threads ?? env.SMELT_HOST_THREADS;
    if (threads !== undefined && threads !== "") pairs.push(`threads=${positiveInt("threads", threads)}`);
    if ((opts.hostVisible ?? env.SMELT_HOST_VISIBLE !== "0") === false) pairs.push("host_visible=0");
    const maxThreads = opts.maxThreads ?? env.SMELT_HOST_MAX_THREADS;
    if (maxThreads !== undefined && maxThreads !== "") pairs.push(`max_threads=${positiveInt("maxThreads", maxThreads)}`);
  } else if (backend === "cuda") {
    // The CUDA prelude includes the host's backend-neutral metal_core.
    const include = [join(packageRoot, "shim", "cuda", "msl"), join(packageRoot, "shim", "host", "msl")].join(":");
    pairs.push(`include=${plain("include", include)}`);
    const debug = opts.debug ?? env.SMELT_CUDA_DEBUG === "1";
    if (debug) pairs.push("debug=1");
  } else {
    const commitEvery = opts.commitEvery ?? env.SMELT_COMMIT_EVERY;
    if (commitEvery !== undefined && commitEvery !== "") {
      pairs.push(`commit_every=${positiveInt("commitEvery", commitEvery)}`);
    }
    const debug = opts.debug ?? env.SMELT_METAL_DEBUG === "1";
    if (debug) pairs.push("debug=1");
  }
  return pairs.join(";");
}
