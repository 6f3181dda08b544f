/**
 * bun run bench [--quick] [--filter REGEX] [--json] [--backend host|metal|cuda] [--peer torch] [--out FILE]
 *
 * Lazy against eager execution of the same TypeScript function for each workload of
 * bench/workloads.ts, on the default backend (metal on a Mac, cuda with an NVIDIA GPU, else host). Prints mitata's
 * table and a summary of ratios, and writes bench/results/<backend>-<machine>-<date>-<time>.json
 * (a --quick run writes a file only when --out names one). `bun run bench:report` turns the
 * result files into docs/benchmarks.md and docs/benchmarks.svg.
 *
 * The `generate` group (bench/generate.ts: SmolLM2-135M prompt and decode tokens/s) runs after
 * the workloads when the filter matches "generate" or there is none; so does `lora-train`
 * (bench/lora-train.ts: one LoRA training step of SmolLM2-135M, lazy, eager and PEFT + torch).
 *
 * Exits nonzero when a workload throws or its lazy and eager outputs differ beyond tolerance.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { cpus, hostname, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { backendList, isBackendName } from "../src/runtime/native.ts";
import type { Result } from "./measure.ts";

const USAGE = "usage: bun run bench [--quick] [--filter REGEX] [--json] [--backend host|metal|cuda] [--peer torch] [--out FILE]";
let values: { quick?: boolean; json?: boolean; filter?: string; backend?: string; peer?: string; out?: string; help?: boolean };
try {
  ({ values } = parseArgs({
    options: {
      quick: { type: "boolean" },
      json: { type: "boolean" },
      filter: { type: "string" },
      backend: { type: "string" },
      peer: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  }));
} catch (e) {
  console.error(`bench: ${(e as Error).message}\n${USAGE}`);
  process.exit(2);
}
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}
if (values.backend !== undefined && !isBackendName(values.backend)) {
  console.error(`bench: --backend must be ${backendList()}, got ${values.backend}`);
  process.exit(2);
}
if (values.peer !== undefined && values.peer !== "torch") {
  console.error(`bench: --peer supports only torch, got ${values.peer}`);
  process.exit(2);
}
let filter: RegExp | null = null;
try {
  if (values.filter) filter = new RegExp(values.filter);
} catch (e) {
  console.error(`bench: --filter is not a regular expression: ${(e as Error).message}`);
  process.exit(2);
}
const quick = !!values.quick;
const jsonOnly = !!values.json;
const root = join(import.meta.dir, "..");
const log = (s: string) => (jsonOnly ? console.error(s) : console.log(s));

// The peer must be able to run before any time goes into smelt's workloads.
if (values.peer === "torch") {
  const probe = spawnSync("python3", ["-c", "import torch"], { encoding: "utf8" });
  if (probe.status !== 0) {
    console.error(
      "bench: --peer torch needs PyTorch for python3, which could not be imported:\n" +
        `  ${(probe.stderr || probe.error?.message || "").trim().split("\n").at(-1)}\n` +
        "Install it with `python3 -m pip install torch` (CPU-only wheel: add `--index-url https://download.pytorch.org/whl/cpu`), then run again.",
    );
    process.exit(2);
  }
}

// The backend is chosen when smelt is imported, so the environment is set first.
if (values.backend) process.env.SMELT_BACKEND = values.backend;
const sm = await import("smelt");
const { run } = await import("mitata");
const { specs, title } = await import("./workloads.ts");
const { register, collect } = await import("./measure.ts");

const chosen = specs(quick).filter((s) => !filter || filter.test(s.id));
const withGenerate = !filter || filter.test("generate");
const withLoraTrain = !filter || filter.test("lora-train");
if (chosen.length === 0 && !withGenerate && !withLoraTrain) {
  console.error(`bench: --filter ${values.filter} matches no workload; the workloads are: ${specs(quick).map((s) => s.id).join(", ")}, generate, lora-train`);
  process.exit(2);
}

const dev = sm.device();
const results: Result[] = chosen.map((spec) => ({ id: spec.id, title: title(spec), spec }));
results.forEach((r) => register(r.spec, r));
const started = new Date();
const out = chosen.length ? await run({ format: jsonOnly ? "quiet" : "mitata" }) : { benchmarks: [] };
const trials = new Map<string, { stats?: { samples: number[]; ticks: number }; error?: unknown }>();
for (const t of out.benchmarks) for (const r of t.runs) trials.set(r.name, r as never);
results.forEach((r) => collect(r, trials));

if (values.peer === "torch" && chosen.length) {
  // A GPU backend is measured against PyTorch on the GPU, the host backend against PyTorch on the CPU.
  const peerDevice = dev.backend === "cuda" ? "cuda" : "cpu";
  log(`\nPyTorch peer (bench/torch_peer.py): eager and torch.compile, the same workloads on ${peerDevice} ...`);
  const peer = spawnSync("python3", [join(import.meta.dir, "torch_peer.py")], {
    input: JSON.stringify({ quick, specs: chosen, device: peerDevice }),
    encoding: "utf8",
    stdio: ["pipe", "pipe", "inherit"],
    env: { ...process.env, OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? "PASSIVE" },
    maxBuffer: 64 << 20,
  });
  if (peer.status !== 0) {
    console.error(`bench: bench/torch_peer.py failed (exit ${peer.status})`);
    process.exit(1);
  }
  const p = JSON.parse(peer.stdout) as { torch: string; threads: number; ompWaitPolicy: string | null; device: string; results: Record<string, Record<string, unknown>> };
  for (const r of results) if (p.results[r.id]) r.peer = { torch: p.torch, threads: p.threads, ompWaitPolicy: p.ompWaitPolicy, device: p.device, ...p.results[r.id] };
}

const generate = withGenerate ? await (await import("./generate.ts")).generateGroup({ quick, peer: values.peer === "torch", log }) : null;
const loraTrain = withLoraTrain ? (await import("./lora-train.ts")).loraTrainChild({ quick, peer: values.peer === "torch" }) : null;

const git = (...args: string[]) => {
  try {
    return execFileSync("git", args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return null;
  }
};
// A tree copied to another machine (scripts/cuda-device.sh) names its commit in the environment.
const packed = process.env.SMELT_BENCH_COMMIT?.match(/^([0-9a-f]{40})(\+dirty)?$/);
const commit = packed ? packed[1]! : git("rev-parse", "HEAD");
const dirty = packed ? packed[2] !== undefined : commit !== null && git("status", "--porcelain", "--untracked-files=no") !== "";
const cpuModel = cpus()[0]?.model?.trim() || "unknown-cpu";
const machine = (dev.backend === "host" ? `${cpuModel}-${cpus().length}c` : dev.name || hostname())
  .toLowerCase()
  .replace(/\(r\)|\(tm\)|cpu|processor/g, "")
  .replace(/[^a-z0-9]+/g, "-")
  .replace(/^-|-$/g, "");
const pad = (n: number) => String(n).padStart(2, "0");
const stamp = `${started.getFullYear()}-${pad(started.getMonth() + 1)}-${pad(started.getDate())}-${pad(started.getHours())}${pad(started.getMinutes())}`;
const report = {
  schema: 1,
  quick,
  backend: dev.backend,
  device: dev.name,
  machine,
  cpu: cpuModel,
  cores: cpus().length,
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  platform: `${process.platform}-${process.arch}`,
  bun: Bun.version,
  mitata: "1.0.34",
  smeltCommit: commit,
  smeltDirty: dirty,
  date: started.toISOString(),
  filter: values.filter ?? null,
  timing:
    "median of mitata's samples (ms per call; first op to device finished, output evaluated and freed); " +
    "warm-up runs (with compiles) excluded and reported apart",
  workloads: results,
  generate,
  loraTrain,
};

// Two runs within one minute get two files: a result is never overwritten by the next run.
const resultFile = (): string => {
  const base = join(root, "bench", "results", `${dev.backend}-${machine}-${stamp}`);
  let name = `${base}.json`;
  for (let k = 2; existsSync(name); k++) name = `${base}-${k}.json`;
  return name;
};
const file = values.out ?? (quick ? null : resultFile());
if (file) {
  mkdirSync(join(file, ".."), { recursive: true });
  writeFileSync(`${file}.tmp`, JSON.stringify(report, null, 1) + "\n");
  renameSync(`${file}.tmp`, file);
}

if (jsonOnly) console.log(JSON.stringify(report, null, 1));
else printSummary(report, file);

const failures = results.filter((r) => r.error);
for (const r of failures) console.error(`bench: workload ${r.id} failed: ${r.error}`);
if (failures.length) process.exit(1);

function printSummary(rep: typeof report, path: string | null) {
  const f = (x: number | undefined, d = 2) => (x === undefined || !Number.isFinite(x) ? "-" : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(d));
  const rows: string[][] = [];
  const peer = rep.workloads.some((r) => r.peer);
  const head = ["workload", "lazy ms", "eager ms", "lazy/eager", "kernels", "metric", "compiles (warm-up ms)", "max rel err"];
  if (peer) head.push("torch eager ms", "torch.compile ms", "smelt best / torch best");
  for (const r of rep.workloads) {
    if (r.error || !r.lazy || !r.eager) {
      rows.push([r.title, "ERROR", r.error ?? "", ...Array(head.length - 3).fill("")]);
      continue;
    }
    const d = r.derived!;
    let metric = "";
    if (d.lazyGflops !== undefined) metric = `${f(d.lazyGflops, 1)} GFLOP/s (eager ${f(d.eagerGflops, 1)})`;
    if (d.lazyFractionOfCopy !== undefined)
      metric = `${f(d.lazyGBs, 1)} GB/s = ${(d.lazyFractionOfCopy * 100).toFixed(0)}% of copy ${f(d.copyGBs, 1)} GB/s (eager ${(d.eagerFractionOfCopy! * 100).toFixed(0)}%)`;
    else if (d.lazyGBs !== undefined) metric = `${f(d.lazyGBs, 1)} GB/s (eager ${f(d.eagerGBs, 1)})`;
    if (d.lazyUsPerNode !== undefined)
      metric = `${f(d.lazyUsPerNode)} / ${f(d.eagerUsPerNode)} µs/node lazy/eager; build+schedule ${f(d.buildScheduleUsPerNode)} µs/node`;
    const w = r.warmup!;
    const row = [
      r.title,
      `${f(r.lazy.medianMs, 3)} (n=${r.lazy.samples})`,
      `${f(r.eager.medianMs, 3)} (n=${r.eager.samples})`,
      `${f(d.speedup)}x`,
      `${r.kernelsPerRun!.lazy} / ${r.kernelsPerRun!.eager}`,
      metric,
      `${w.kernelCompiles} (${f(w.lazyMs + w.eagerMs, 1)})`,
      r.maxRelErr === 0 ? "0" : r.maxRelErr!.toExponential(1),
    ];
    if (peer) {
      const p = r.peer ?? {};
      const te = p.eagerMs as number | undefined;
      const tc = p.compiledMs as number | undefined;
      const tbest = Math.min(te ?? Infinity, tc ?? Infinity);
      const sbest = Math.min(r.lazy.medianMs, r.eager.medianMs);
      row.push(f(te, 3), tc !== undefined ? f(tc, 3) : p.compileError ? "failed" : "-", Number.isFinite(tbest) ? `${f(sbest / tbest)}` : "-");
    }
    rows.push(row);
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
  console.log(`\nsummary (${rep.backend}, ${rep.cpu}, ${rep.cores} cores, bun ${rep.bun}; medians, n = samples):`);
  console.log(line(head));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  rows.forEach((r) => console.log(line(r)));
  if (peer) console.log("smelt best / torch best: below 1 means smelt is faster.");
  if (path) console.log(`\nwrote ${path}`);
}
