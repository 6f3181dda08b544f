/**
 * Finds, builds when stale, and loads a backend's shared library, and declares the C ABI of
 * shim/include/smelt.h to bun:ffi.
 */
import { dlopen, FFIType, type Library as FFILibrary, type Pointer } from "bun:ffi";
import { existsSync, readdirSync, statSync, utimesSync } from "node:fs";
import { join, resolve } from "node:path";
import { SmeltError } from "../errors.ts";

/** Every backend, once: whether its devices are CPUs (until smelt_device_limits reports it). */
/**
 * What the scheduler needs to know of each backend: whether it runs on a CPU, and whether its
 * SIMD-group matrices of float are hardware that keeps float's precision (Apple's GPUs), so that
 * the matmul tiles built on them pay (on CUDA they are emulated with shuffles).
 */
export const BACKENDS = {
  metal: { cpu: false, floatMatrix: true },
  cuda: { cpu: false, floatMatrix: false },
  host: { cpu: true, floatMatrix: false },
} as const;
export type BackendName = keyof typeof BACKENDS;
export const isBackendName = (v: unknown): v is BackendName => typeof v === "string" && Object.hasOwn(BACKENDS, v);
/** The backends as an error message lists them: "metal", "cuda" or "host". */
export const backendList = (): string => {
  const names = Object.keys(BACKENDS).map((b) => `"${b}"`);
  return `${names.slice(0, -1).join(", ")} or ${names.at(-1)}`;
};

/** The ABI version this TypeScript was written against (SMELT_ABI_VERSION). */
export const ABI_VERSION = 2;

export const packageRoot = resolve(import.meta.dir, "..", "..");

const { ptr, u32, i32, u64, u64_fast, cstring } = FFIType;

const symbols = {
  smelt_abi_version: { args: [], returns: u32 },
  smelt_backend_name: { args: [], returns: cstring },
  smelt_device_open: { args: [ptr, ptr, u64], returns: ptr },
  smelt_device_close: { args: [ptr], returns: FFIType.void },
  smelt_device_name: { args: [ptr, ptr, u64], returns: i32 },
  smelt_device_limits: { args: [ptr, ptr], returns: i32 },
  smelt_device_stats_get: { args: [ptr, ptr], returns: i32 },
  smelt_device_completion_counter: { args: [ptr], returns: ptr },
  smelt_buffer_new: { args: [ptr, u64, ptr, u64], returns: ptr },
  smelt_buffer_contents: { args: [ptr], returns: ptr },
  smelt_buffer_length: { args: [ptr], returns: u64_fast },
  smelt_buffer_free: { args: [ptr], returns: FFIType.void },
  smelt_buffer_write: { args: [ptr, u64, ptr, u64, ptr, u64], returns: i32 },
  smelt_buffer_read: { args: [ptr, u64, ptr, u64, ptr, u64], returns: i32 },
  smelt_buffer_wrap: { args: [ptr, ptr, u64, ptr, u64], returns: ptr },
  smelt_library_new: { args: [ptr, ptr, u64, ptr, ptr, u64], returns: ptr },
  smelt_library_free: { args: [ptr], returns: FFIType.void },
  smelt_library_new_async: { args: [ptr, ptr, u64, ptr, ptr, u64], returns: ptr },
  smelt_compile_done: { args: [ptr], returns: i32 },
  smelt_compile_finish: { args: [ptr, ptr, u64], returns: ptr },
  smelt_pipeline_new: { args: [ptr, ptr, ptr, u64], returns: ptr },
  smelt_pipeline_info_get: { args: [ptr, ptr], returns: i32 },
  smelt_pipeline_free: { args: [ptr], returns: FFIType.void },
  smelt_cmd_new: { args: [ptr, ptr, u64], returns: ptr },
  smelt_cmd_encode: { args: [ptr, ptr, u64, ptr, u64], returns: i32 },
  smelt_cmd_commit: { args: [ptr, ptr, u64], returns: u64_fast },
  smelt_cmd_status: { args: [ptr, ptr, u64], returns: i32 },
  smelt_cmd_wait: { args: [ptr, u64, ptr, u64], returns: i32 },
  smelt_cmd_abandon: { args: [ptr, ptr, u64], returns: i32 },
  smelt_cmd_free: { args: [ptr], returns: FFIType.void },
} as const;

export type NativeSymbols = FFILibrary<typeof symbols>["symbols"];

export const SMELT_OK = 0;
export const SMELT_CMD_COMPLETED = 2;
export const SMELT_CMD_TIMEOUT = 3;

// One error buffer serves every call: calls are synchronous on the JS thread, and the text is
// decoded before the next call can overwrite it.
const ERR_BYTES = 64 * 1024;
export const errBuf = new Uint8Array(ERR_BYTES);
export const errLen = ERR_BYTES;

export function clearErr(): void {
  errBuf[0] = 0;
}

/** Decodes the NUL-terminated text a failed call left in errBuf. */
export function errText(): string {
  let end = errBuf.indexOf(0);
  if (end < 0) end = errBuf.length;
  const text = new TextDecoder().decode(errBuf.subarray(0, end)).trim();
  return text.length > 0 ? text : "the backend reported a failure without a message";
}

/** A returned handle; Bun hands pointers back as numbers, the typings also allow bigint. */
export function handleOf(value: Pointer | bigint | null): Pointer | null {
  return value as Pointer | null;
}

/** NUL-terminated UTF-8, for const char* arguments. */
export function cstr(text: string): Uint8Array {
  return new TextEncoder().encode(text + "\0");
}

export const ZIG_REQUIRED =
  "Zig 0.15.2 is required to build smelt's native library: `pip install ziglang==0.15.2` " +
  "(or download it from ziglang.org), then import smelt again";

let zigMemo: string[] | null | undefined;

/** The command words that run Zig: $SMELT_ZIG, else zig on PATH, else `python3 -m ziglang`. */
export function zigCommand(): string[] | null {
  if (zigMemo !== undefined) return zigMemo;
  zigMemo = findZig();
  return zigMemo;
}

function findZig(): string[] | null {
  const fromEnv = process.env.SMELT_ZIG;
  if (fromEnv) return [fromEnv];
  const onPath = Bun.which("zig");
  if (onPath) return [onPath];
  const python = Bun.which("python3");
  if (python) {
    const probe = Bun.spawnSync({ cmd: [python, "-m", "ziglang", "version"], stdout: "pipe", stderr: "pipe" });
    if (probe.exitCode === 0) return [python, "-m", "ziglang"];
  }
  return null;
}

export function libraryPath(backend: BackendName): string {
  const ext = process.platform === "darwin" ? "dylib" : process.platform === "win32" ? "dll" : "so";
  const file = backend === "metal" ? "libsmelt_metal.dylib" : `libsmelt_${backend}.${ext}`;
  return join(packageRoot, "zig-out", "lib", file);
}

/** Newest modification time among the inputs of the native build. */
function newestSourceMtime(): number {
  let newest = 0;
  const consider = (path: string) => {
    const mtime = statSync(path).mtimeMs;
    if (mtime > newest) newest = mtime;
  };
  for (const file of ["build.zig", "build.zig.zon"]) {
    const path = join(packageRoot, file);
    if (existsSync(path)) consider(path);
  }
  const shim = join(packageRoot, "shim");
  if (existsSync(shim)) {
    // Directory mtimes count too: a deleted source file changes only its directory.
    consider(shim);
    for (const entry of readdirSync(shim, { recursive: true, encoding: "utf8" })) consider(join(shim, entry));
  }
  return newest;
}

function isStale(lib: string): boolean {
  if (!existsSync(lib)) return true;
  return statSync(lib).mtimeMs < newestSourceMtime();
}

function build(backend: BackendName, lib: string): void {
  const zig = zigCommand();
  if (!zig) throw new SmeltError(ZIG_REQUIRED);
  const args = backend === "metal" ? ["build", "metal"] : ["build"];
  process.stderr.write(`smelt: building the native ${backend} library, once per checkout: \`${[...zig, ...args].join(" ")}\` in ${packageRoot} ...\n`);
  const started = new Date();
  const result = Bun.spawnSync({ cmd: [...zig, ...args], cwd: packageRoot, stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0 || !existsSync(lib)) {
    const output = (result.stderr.toString() + result.stdout.toString()).trim();
    throw new SmeltError(
      `${ZIG_REQUIRED}\n\`${[...zig, ...args].join(" ")}\` failed (exit code ${result.exitCode})` +
        (output ? `:\n${output}` : ""),
    );
  }
  // Zig leaves an unchanged artifact untouched; stamping it with the build's start time keeps the
  // staleness check from rebuilding on every import, yet still sees files edited during the build.
  utimesSync(lib, started, started);
  process.stderr.write(`smelt: built ${lib} in ${((Date.now() - started.getTime()) / 1000).toFixed(1)} s\n`);
}

export interface Native {
  readonly backend: BackendName;
  readonly path: string;
  readonly symbols: NativeSymbols;
}

const loaded = new Map<BackendName, Native>();

/** Loads a backend's library once per process, building it first when missing or stale. */
export function loadNative(backend: BackendName): Native {
  const known = loaded.get(backend);
  if (known) return known;
  if (backend === "metal" && process.platform !== "darwin") {
    throw new SmeltError(`the metal backend needs macOS (this is ${process.platform}); use SMELT_BACKEND=host`);
  }
  if (backend === "cuda" && process.platform !== "linux") {
    throw new SmeltError(`the cuda backend needs Linux with an NVIDIA driver (this is ${process.platform}); use SMELT_BACKEND=host`);
  }
  // SMELT_LIBRARY names a prebuilt backend library (another checkout's, a packaged one): used as is.
  const prebuilt = process.env.SMELT_LIBRARY;
  const path = prebuilt || libraryPath(backend);
  // SMELT_PREBUILT=1: zig-out/lib was built elsewhere and carried here (a machine without Zig).
  if (!prebuilt && process.env.SMELT_PREBUILT !== "1" && isStale(path)) build(backend, path);
  let lib: FFILibrary<typeof symbols>;
  try {
    lib = dlopen(path, symbols);
  } catch (cause) {
    throw new SmeltError(`could not load ${path}: ${(cause as Error).message}`, { cause });
  }
  const version = lib.symbols.smelt_abi_version();
  if (version !== ABI_VERSION) {
    lib.close();
    throw new SmeltError(
      `${path} implements smelt ABI version ${version}, but this TypeScript expects version ${ABI_VERSION}; ` +
        "rebuild it with `zig build` from the same checkout",
    );
  }
  const name = String(lib.symbols.smelt_backend_name());
  if (name !== backend) {
    lib.close();
    throw new SmeltError(`${path} reports backend "${name}", expected "${backend}"`);
  }
  const native: Native = { backend, path, symbols: lib.symbols };
  loaded.set(backend, native);
  return native;
}

/** SMELT_BACKEND when set; anything other than a backend's name is an error. */
export function requestedBackend(): BackendName | undefined {
  const value = process.env.SMELT_BACKEND;
  if (value === undefined || value === "") return undefined;
  if (isBackendName(value)) return value;
  throw new SmeltError(`SMELT_BACKEND must be ${backendList()}, got "${value}"`);
}

/** Metal where Apple's GPUs live, CUDA on Linux with an NVIDIA GPU, host everywhere else. */
export function platformBackend(): BackendName {
  if (process.platform === "darwin" && process.arch === "arm64") return "metal";
  return process.platform === "linux" && cudaDeviceCount() > 0 ? "cuda" : "host";
}

let cudaDevices: number | undefined;

/** CUDA devices the driver reports (0 without libcuda.so.1 or a working driver); asked once. */
export function cudaDeviceCount(): number {
  if (cudaDevices !== undefined) return cudaDevices;
  cudaDevices = 0;
  try {
    const lib = dlopen("libcuda.so.1", {
      cuInit: { args: [u32], returns: i32 },
      cuDeviceGetCount: { args: [ptr], returns: i32 },
    });
    const count = new Int32Array(1);
    if (lib.symbols.cuInit(0) === 0 && lib.symbols.cuDeviceGetCount(count) === 0) cudaDevices = count[0] ?? 0;
    lib.close();
  } catch {
    // no driver: the host backend it is
  }
  return cudaDevices;
}
