/**
 * Streaming throughput of the float4 kernel out = a * s + b (test/kernels/elementwise.metal) over
 * 64 MiB of float32 output, next to a memcpy of the same 64 MiB in the same run.
 *
 *   bun bench/host-throughput.ts [--runs N] [--mib M]
 *
 * The kernel reads two arrays and writes one, so it moves 3 * M MiB per run; memcpy (Bun's
 * TypedArray.set, a memmove) reads and writes M MiB, so it moves 2 * M MiB. A kernel timing
 * covers commit() through wait() (the dispatch is encoded before the clock starts), so the
 * device's work is inside it. Reported: the median of N runs after two warm-up runs.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import * as sm from "../src/index.ts";

const { values } = parseArgs({
  options: { runs: { type: "string", default: "10" }, mib: { type: "string", default: "64" } },
});
const runs = Number(values.runs);
const mib = Number(values.mib);
if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(mib) || mib < 1) {
  throw new Error(`--runs and --mib must be positive integers, got ${values.runs} and ${values.mib}`);
}

const bytes = mib * 1024 * 1024;
const floats = bytes / 4;
const WARMUP = 2;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Milliseconds of `timed` per run; `prepare` runs before each one, outside the clock. */
function timeRuns<T>(prepare: () => T, timed: (x: T) => void): number[] {
  const ms: number[] = [];
  for (let i = 0; i < WARMUP + runs; i++) {
    const x = prepare();
    const t0 = Bun.nanoseconds();
    timed(x);
    if (i >= WARMUP) ms.push((Bun.nanoseconds() - t0) / 1e6);
  }
  return ms;
}

const dev = sm.device();
const source = readFileSync(new URL("../test/kernels/elementwise.metal", import.meta.url), "utf8");
const pipe = dev.compile(source).pipeline("axpb_f4");

const a = dev.buffer(bytes);
const b = dev.buffer(bytes);
const out = dev.buffer(bytes);
const av = a.view(Float32Array);
const bv = b.view(Float32Array);
for (let i = 0; i < floats; i++) {
  av[i] = (i % 1024) * 0.5;
  bv[i] = 1 - (i % 7);
}
const s = new Float32Array([1.5]);
const threads = floats / 4;

const kernelMs = timeRuns(
  () => {
    const cmd = dev.commandBuffer();
    cmd.dispatchThreads(pipe, { args: [a, b, out, s], grid: [threads, 1, 1], threadgroup: [256, 1, 1] });
    return cmd;
  },
  (cmd) => {
    cmd.commit();
    cmd.wait();
  },
);

// The result must be right, or the timing means nothing.
const ov = out.view(Float32Array);
for (const i of [0, 1, 12345, floats - 1]) {
  const want = Math.fround(av[i]! * 1.5 + bv[i]!);
  if (Math.abs(ov[i]! - want) > 1e-6 * Math.abs(want)) throw new Error(`out[${i}] = ${ov[i]}, expected ${want}`);
}

const src = new Uint8Array(bytes);
const dst = new Uint8Array(bytes);
for (let i = 0; i < bytes; i += 4096) src[i] = i & 255;
const copyMs = timeRuns(
  () => undefined,
  () => dst.set(src),
);
if (dst[4096] !== src[4096]) throw new Error("memcpy did not copy");

const kernelMedian = median(kernelMs);
const copyMedian = median(copyMs);
const kernelGBs = (3 * bytes) / (kernelMedian / 1e3) / 1e9;
const copyGBs = (2 * bytes) / (copyMedian / 1e3) / 1e9;

const row = (name: string, ms: number, gbs: number, moved: string) =>
  `  ${name.padEnd(26)}${ms.toFixed(2).padStart(8)} ms ${gbs.toFixed(2).padStart(8)} GB/s   ${moved}`;
console.log(`smelt host throughput: ${dev.backend} (${dev.name}), ${mib} MiB of float32 output, median of ${runs} runs`);
console.log(row("axpb_f4  out = a * s + b", kernelMedian, kernelGBs, `read 2 x ${mib} MiB, write ${mib} MiB`));
console.log(row("memcpy   dst.set(src)", copyMedian, copyGBs, `read ${mib} MiB, write ${mib} MiB`));
console.log(`  kernel / memcpy bandwidth: ${(kernelGBs / copyGBs).toFixed(2)}`);
