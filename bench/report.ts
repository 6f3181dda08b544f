/**
 * bun run bench:report: turns bench/results/*.json into docs/benchmarks.md and
 * docs/benchmarks.svg (lazy against eager per workload, from the newest full run of the host backend; PyTorch beside
 * them when that run had --peer torch). Quick runs and --filter runs are left out.
 */
import { readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { GenerateBench } from "./generate.ts";
import type { Result } from "./measure.ts";

interface StepFigures {
  msPerStep: number;
  tokensPerSec: number;
  peakMemory: number;
  kernelsPerStep?: number;
  rssPeak?: number;
}

interface Run {
  file: string;
  quick: boolean;
  backend: string;
  device: string;
  machine: string;
  cpu: string;
  cores: number;
  memoryGiB: number;
  platform: string;
  bun: string;
  mitata: string;
  smeltCommit: string | null;
  smeltDirty: boolean;
  date: string;
  filter: string | null;
  workloads: Result[];
  loraTrain?: { model: string; batch: number; seqLen: number; rank: number; lazy: StepFigures; eager: StepFigures; torch?: { eager?: StepFigures; compile?: StepFigures; error?: string; torch?: string; peft?: string } } | null;
  generate?: GenerateBench | null;
}

const root = join(import.meta.dir, "..");
const dir = join(root, "bench", "results");
const all: Run[] = readdirSync(dir)
  .filter((f) => f.endsWith(".json"))
  .map((f) => ({ ...(JSON.parse(readFileSync(join(dir, f), "utf8")) as Omit<Run, "file">), file: f }))
  // A --filter run covers too few workloads to stand for the whole.
  .filter((r) => !r.quick && !r.filter)
  .sort((a, b) => a.date.localeCompare(b.date));
// The page and its chart are the host backend's CPU runs; the newest CUDA run gets a section.
const runs = all.filter((r) => r.backend === "host");
const gpu = all.filter((r) => r.backend === "cuda").at(-1);
if (runs.length === 0) {
  console.error("bench:report: no full host runs in bench/results (run `bun run bench` first)");
  process.exit(1);
}
const latest = runs.at(-1)!;
const ok = latest.workloads.filter((w) => !w.error && w.lazy && w.eager);

const f = (x: number | undefined, digits = 2): string => {
  if (x === undefined || !Number.isFinite(x)) return "–";
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  if (x >= 1) return x.toFixed(digits);
  return x.toPrecision(digits + 1);
};
const pct = (x: number | undefined) => (x === undefined ? "–" : `${(x * 100).toFixed(0)}%`);
const num = (v: unknown) => (typeof v === "number" ? v : undefined);

// ---------------------------------------------------------------- SVG

/** Chart labels are shorter than table titles: the LoRA weight shape follows from x. */
const shortTitle = (w: Result) => (w.spec.kind === "lora" ? `LoRA forward x[${w.spec.x.join(", ")}] r=${w.spec.rank}` : w.title);

const COLORS = { lazy: "#1f77b4", eager: "#ff7f0e", torch: "#7f7f7f" };

function chart(run: Run): string {
  const hasPeer = ok.some((w) => w.peer);
  const series = (w: Result) => {
    const bars: { label: keyof typeof COLORS; ms: number; text: string }[] = [
      { label: "lazy", ms: w.lazy!.medianMs, text: "smelt lazy" },
      { label: "eager", ms: w.eager!.medianMs, text: "smelt eager" },
    ];
    if (hasPeer && w.peer) {
      const best = Math.min(num(w.peer.eagerMs) ?? Infinity, num(w.peer.compiledMs) ?? Infinity);
      if (Number.isFinite(best)) bars.push({ label: "torch", ms: best, text: "PyTorch best" });
    }
    return bars;
  };
  const all = ok.flatMap((w) => series(w).map((b) => b.ms));
  const lo = 10 ** Math.floor(Math.log10(Math.min(...all)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...all) * 2)); // room for the last bar's label
  const left = 300, right = 175, top = 92, barH = 11, gap = 3, groupGap = 16, plotW = 560;
  const perGroup = (hasPeer ? 3 : 2) * (barH + gap) - gap;
  const height = top + ok.length * (perGroup + groupGap) + 50;
  const width = left + plotW + right;
  const x = (ms: number) => left + (plotW * Math.log10(ms / lo)) / Math.log10(hi / lo);
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="${left}" y="22" font-size="16" font-weight="bold">smelt: lazy (fused) vs eager (one kernel per op), time per run</text>`,
    `<text x="${left}" y="40" fill="#444">${esc(`${run.backend} backend, ${run.cpu} (${run.cores} cores), ${run.date.slice(0, 10)}; medians; log scale, shorter is better`)}</text>`,
  );
  // legend
  const legend = hasPeer ? (["lazy", "eager", "torch"] as const) : (["lazy", "eager"] as const);
  const names = { lazy: "smelt lazy", eager: "smelt eager", torch: "PyTorch, best of eager and torch.compile" };
  let lx = left;
  for (const k of legend) {
    out.push(`<rect x="${lx}" y="50" width="12" height="12" fill="${COLORS[k]}"/>`, `<text x="${lx + 17}" y="60">${names[k]}</text>`);
    lx += 30 + names[k].length * 6.3;
  }
  // grid: one line per decade, labelled in ms
  const plotBottom = height - 40;
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    const gx = x(d);
    const label = d >= 1000 ? `${d / 1000} s` : d >= 1 ? `${d} ms` : `${+(d * 1000).toPrecision(3)} µs`;
    out.push(
      `<line x1="${gx.toFixed(1)}" y1="${top - 8}" x2="${gx.toFixed(1)}" y2="${plotBottom}" stroke="#ddd"/>`,
      `<text x="${gx.toFixed(1)}" y="${plotBottom + 16}" text-anchor="middle" fill="#444">${label}</text>`,
    );
  }
  out.push(
    `<text x="${left + plotW / 2}" y="${plotBottom + 34}" text-anchor="middle" fill="#444">time per run (log scale)</text>`,
    `<text x="${left + plotW + 12}" y="${top - 12}" fill="#444">lazy vs eager</text>`,
  );
  let y = top;
  for (const w of ok) {
    const bars = series(w);
    out.push(`<text x="${left - 10}" y="${(y + perGroup / 2 + 4).toFixed(1)}" text-anchor="end">${esc(shortTitle(w))}</text>`);
    for (const b of bars) {
      const bw = Math.max(1, x(b.ms) - left);
      out.push(
        `<rect x="${left}" y="${y}" width="${bw.toFixed(1)}" height="${barH}" fill="${COLORS[b.label]}"><title>${esc(`${w.title}, ${b.text}: ${f(b.ms, 3)} ms`)}</title></rect>`,
        `<text x="${(left + bw + 4).toFixed(1)}" y="${y + barH - 2}" font-size="10" fill="#333">${f(b.ms)} ms</text>`,
      );
      y += barH + gap;
    }
    const s = w.derived!.speedup!;
    out.push(
      `<text x="${left + plotW + 12}" y="${(y - gap - perGroup / 2 + 4).toFixed(1)}" font-weight="bold" fill="${s >= 1.1 ? "#1a7f37" : s <= 0.9 ? "#b42318" : "#555"}">${s >= 1 ? `lazy ${f(s)}× faster` : `eager ${f(1 / s)}× faster`}</text>`,
    );
    y += groupGap - gap;
  }
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

// ---------------------------------------------------------------- Markdown

function metric(w: Result): string {
  const d = w.derived!;
  if (d.lazyUsPerNode !== undefined)
    return `${f(d.lazyUsPerNode)} µs/node lazy, ${f(d.eagerUsPerNode)} eager; graph build + schedule ${f(d.buildScheduleUsPerNode)} µs/node`;
  if (d.lazyFractionOfCopy !== undefined)
    return `${f(d.lazyGBs)} GB/s = **${pct(d.lazyFractionOfCopy)}** of copy (${f(d.copyGBs)} GB/s); eager ${pct(d.eagerFractionOfCopy)}`;
  if (d.lazyGflops !== undefined) return `${f(d.lazyGflops)} GFLOP/s (eager ${f(d.eagerGflops)})`;
  if (d.lazyGBs !== undefined) return `${f(d.lazyGBs)} GB/s (eager ${f(d.eagerGBs)})`;
  return "";
}

function summaryTable(run: Run): string[] {
  const rows = [
    "| workload | lazy ms (n) | eager ms (n) | lazy/eager speedup | kernels lazy / eager | metric | compiles (warm-up ms) |",
    "|---|---:|---:|---:|---:|---|---:|",
  ];
  for (const w of run.workloads) {
    if (w.error || !w.lazy || !w.eager) {
      rows.push(`| ${w.title} | error: ${w.error ?? "no timings"} | | | | | |`);
      continue;
    }
    const wu = w.warmup!;
    rows.push(
      `| ${w.title} | ${f(w.lazy.medianMs, 3)} (${w.lazy.samples}) | ${f(w.eager.medianMs, 3)} (${w.eager.samples}) | **${f(w.derived!.speedup)}×** | ${w.kernelsPerRun!.lazy} / ${w.kernelsPerRun!.eager} | ${metric(w)} | ${wu.kernelCompiles} (${f(wu.lazyMs + wu.eagerMs, 1)}) |`,
    );
  }
  return rows;
}

function peerTable(run: Run): string[] {
  const withPeer = run.workloads.filter((w) => w.peer && w.lazy && w.eager);
  if (withPeer.length === 0) return [];
  const p0 = withPeer[0]!.peer!;
  const rows = [
    `PyTorch ${p0.torch} on the same CPU (${p0.threads} threads, OMP_WAIT_POLICY=${p0.ompWaitPolicy ?? "default"}), same shapes and dtypes, run by \`bench/torch_peer.py\` in the same invocation. ` +
      "\"smelt best / torch best\" below 1 means smelt is faster; above 1, PyTorch is.",
    "",
    "| workload | smelt lazy ms | smelt eager ms | torch eager ms | torch.compile ms (first call s) | smelt best / torch best |",
    "|---|---:|---:|---:|---:|---:|",
  ];
  for (const w of withPeer) {
    const p = w.peer!;
    const te = num(p.eagerMs), tc = num(p.compiledMs);
    const best = Math.min(te ?? Infinity, tc ?? Infinity);
    const ours = Math.min(w.lazy!.medianMs, w.eager!.medianMs);
    const ratio = ours / best;
    const compiled = tc !== undefined ? `${f(tc, 3)} (${f(num(p.compileS), 1)})` : p.compileError ? `failed: ${String(p.compileError).slice(0, 80)}` : "–";
    rows.push(
      `| ${w.title} | ${f(w.lazy!.medianMs, 3)} | ${f(w.eager!.medianMs, 3)} | ${f(te, 3)} | ${compiled} | ${ratio > 1 ? `**${f(ratio)}** (torch wins)` : f(ratio)} |`,
    );
  }
  return rows;
}

function doc(run: Run): string {
  const commit = run.smeltCommit ? `${run.smeltCommit.slice(0, 10)}${run.smeltDirty ? " (with uncommitted changes)" : ""}` : "unknown";
  const lines = [
    "# Benchmarks",
    "",
    "Made by `bun run bench:report` from `bench/results/" + run.file + "`, written by `bun run bench" + (run.workloads.some((w) => w.peer) ? " --peer torch" : "") + "`.",
    "Do not edit by hand: run the benchmark and the report again. The CUDA backend's newest run on an NVIDIA GPU has [a section of its own](#on-an-nvidia-gpu-cuda-backend); docs/cuda.md says what else ran there.",
    "",
    `Machine: ${run.cpu}, ${run.cores} cores, ${run.memoryGiB} GiB, ${run.platform}; backend **${run.backend}** (${run.device}); Bun ${run.bun}; mitata ${run.mitata}; smelt ${commit}; ${run.date}.`,
    "",
    "![lazy against eager per workload](benchmarks.svg)",
    "",
    "## What is measured",
    "",
    "Each workload is one TypeScript function of smelt ops (bench/workloads.ts), run two ways: **lazy** (the default: ops build a graph, `eval` fuses it) and **eager** (`sm.eager(fn)`: every op is evaluated as its own kernel as it is created). A timed call runs the function from its first op until the device has finished the output (`eval` waits for the device), then frees it. Before any timed call, each mode runs once cold (this compiles its kernels: the compile count and the time of these warm-up runs are the last column) and once more to count its kernels; the number of compiles during timed calls is checked below the table. Timing is mitata's (`bench/measure.ts`); the medians and sample counts `n` are computed from mitata's samples (one call per sample; mitata drops the two fastest and two slowest when it has more than 12).",
    "",
    "- **LoRA forward**: `x @ W + (alpha / rank) * (x @ A) @ B`, float32, alpha 16.",
    "- **RMS norm** `x * rsqrt(mean(x², -1) + 1e-5) * w` and **softmax** `exp(x - max) / sum(exp(x - max))`, written from primitives. GB/s counts reading x once and writing the output once.",
    "- **8-op chain**: `x * (1 + tanh(0.79788456 * (x + 0.044715 * x³)))` as eight elementwise ops. Bytes moved = 4 read + 4 written per element; the ceiling is a float4 copy kernel over the same bytes, compiled with `sm.device().compile` and dispatched through the raw API, timed the same way in the same run.",
    "- **matmul** n×n by n×n, float32 and float16; GFLOP/s = 2n³ / time. Lazy and eager are the same single kernel here, so their ratio is only noise.",
    "- **1,000 tiny ops**: a chain of 1,000 multiplies and adds of [16] float32 tensors, so per-node cost is all there is. Lazy: graph building, scheduling and the fused kernels (the planner caps a fused kernel's size, hence several kernels). \"graph build + schedule\" times those two steps alone (median of 7, kernels run outside the clock).",
    "- **Training** (bench/workloads-train.ts): RMS norm and softmax backward (`vjp` with a fixed cotangent: dx, and dw for the norm), cross-entropy forward + backward (`valueAndGrad` of the mean loss over the logits), the LoRA layer's forward + backward (`vjp` over x, A and B; W frozen), an MLP training step (`valueAndGrad`, then `sm.optim.AdamW`) and one AdamW update of 100 tensors; all outputs of a call are evaluated together. The peer runs `torch.autograd.grad` on the same functions, `torch.compile` of the forward (backward through AOTAutograd), and `torch.optim.AdamW(foreach=True)` (its step compiled for the AdamW workload).",
    "",
    "## Results",
    "",
    ...summaryTable(run),
    "",
    compileCheck(run),
    "",
    "The kernel counts are per run; eager launches one kernel per op. Compiles happen once per kernel structure and are cached on disk by the host backend, so the warm-up column depends on what earlier runs left in the cache.",
    "",
  ];
  const peer = peerTable(run);
  if (peer.length) lines.push("## Beside PyTorch", "", ...peer, "", ...peerNotes(run), "");
  else lines.push("## Beside PyTorch", "", "This run had no PyTorch peer (`bun run bench --peer torch` adds it).", "");
  lines.push(...modelSection(run));
  if (gpu) lines.push(...gpuSection(gpu));
  lines.push(
    "## Caveats",
    "",
    `- The host backend runs the Metal kernels on the CPU: these are CPU numbers, not GPU numbers. No Metal run is recorded here.`,
    "- The machine is a small shared virtual machine, so absolute times are noisy (look at the spread in mitata's table, p75/p99). Lazy and eager of one workload are timed back to back in the same run, which keeps their ratio more stable than either time.",
    "- Small workloads are dominated by fixed costs per evaluation (scheduling, encoding, waking the worker threads), which is exactly what fusion saves; large ones by memory bandwidth or arithmetic.",
    "",
    "## Reproduce",
    "",
    "```sh",
    "bash scripts/setup.sh            # once, on a fresh clone",
    "bun run bench                    # all workloads: mitata's table, a summary, bench/results/<backend>-<machine>-<date>.json",
    "bun run bench --peer torch       # the same with PyTorch beside it (python3 -m pip install torch)",
    "bun run bench --quick            # small sizes, a smoke test (CI); writes no file unless --out FILE",
    "bun run bench --filter 'matmul'  # workloads whose id matches a regular expression",
    "bun run bench --json             # the JSON only, on stdout",
    "bun run bench --backend host     # or metal; default: metal on a Mac, host elsewhere",
    "bun run bench:report             # this page and its chart from the newest full result file",
    "```",
    "",
  );
  return lines.join("\n");
}

const gb = (bytes: number) => `${f(bytes / 1e9, 2)} GB`;

/** The run's language-model workloads (bench/generate.ts, bench/lora-train.ts), when it has them. */
function modelSection(run: Run): string[] {
  const g = run.generate, l = run.loraTrain;
  if (!g && !l) return [];
  const lines = ["## SmolLM2-135M: generation and LoRA training", ""];
  if (g) {
    const t = g.torch && "promptTps" in g.torch ? g.torch : undefined;
    lines.push(
      `Generation (\`bench/generate.ts\`, ${g.model}, ${g.threads} threads, median of ${g.runs}): prompt processing over ${g.promptTokens} tokens (to the first token; both sides compute the last position's logits only) and decoding of ${g.decodeTokens} tokens, in tokens per second.`,
      "",
      "| | prompt tokens/s | decode tokens/s | peak memory |",
      "|---|---:|---:|---:|",
      `| smelt lazy | ${f(g.smelt.promptTps, 3)} | ${f(g.smelt.decodeTps, 3)} | ${gb(g.smelt.peakMemory)} (tensor memory) |`,
    );
    if (t) lines.push(`| transformers ${t.transformers} (torch ${t.torch}, float32) | ${f(t.promptTps, 3)} | ${f(t.decodeTps, 3)} | ${gb(t.peakMemory)} (peak RSS) |`);
    const c = g.llamaCpp && "promptTps" in g.llamaCpp ? g.llamaCpp : undefined;
    if (c) lines.push(`| llama.cpp (llama-cpp-python ${c.llamaCpp}, the file's weights as they are) | ${f(c.promptTps, 3)} | ${f(c.decodeTps, 3)} | ${gb(c.peakMemory)} (peak RSS) |`);
    let versus = t
      ? `smelt / transformers: prompt ${f(g.smelt.promptTps / t.promptTps)}x, decode ${f(g.smelt.decodeTps / t.decodeTps)}x. `
      : g.torch && "error" in g.torch
        ? `No transformers peer (${g.torch.error}). `
        : "";
    if (c) versus += `smelt / llama.cpp: prompt ${f(g.smelt.promptTps / c.promptTps)}x, decode ${f(g.smelt.decodeTps / c.decodeTps)}x. `;
    else if (g.llamaCpp && "error" in g.llamaCpp) versus += `No llama.cpp peer (${g.llamaCpp.error}). `;
    const mb = (bytes: number) => `${f(bytes / 1e6, 3)} MB`;
    lines.push("", `${versus}Loading took ${f(g.smelt.loadMs / 1000)} s; the resident memory it added (model and tokenizer, measured in a process of its own by bench/load-memory.ts) was ${mb(g.smelt.rssAfterLoad)}, ${f(g.smelt.rssAfterLoad / g.fileBytes)}x the ${mb(g.fileBytes)} file.`, "");
  }
  if (l) {
    const smeltPeak = (x: StepFigures) => `(tensor memory${x.rssPeak === undefined ? "" : `; process peak RSS ${gb(x.rssPeak)}`})`;
    const row = (name: string, x: StepFigures | undefined, peak: string) =>
      x ? `| ${name} | ${f(x.msPerStep, 3)} | ${f(x.tokensPerSec, 3)} | ${x.kernelsPerStep ?? "–"} | ${gb(x.peakMemory)} ${peak} |` : `| ${name} | – | – | – | – |`;
    lines.push(
      `LoRA training step (\`bench/lora-train.ts\`, ${l.model}, batch ${l.batch} x ${l.seqLen}, rank ${l.rank} on every linear layer, forward, backward and AdamW, float32): median of the runs.`,
      "",
      "| | ms per step | tokens/s | kernels per step | peak memory |",
      "|---|---:|---:|---:|---:|",
      row("smelt lazy", l.lazy, smeltPeak(l.lazy)),
      row("smelt eager", l.eager, smeltPeak(l.eager)),
    );
    if (l.torch?.eager) {
      const who = `PyTorch ${l.torch.torch ?? ""} + PEFT ${l.torch.peft ?? ""}`;
      lines.push(row(`${who} eager`, l.torch.eager, "(peak RSS)"), row(`${who} torch.compile`, l.torch.compile, "(peak RSS)"));
    }
    lines.push("", `smelt lazy / eager: ${f(l.lazy.tokensPerSec / l.eager.tokensPerSec)}x tokens/s` + (l.torch?.eager ? `; smelt lazy / PyTorch eager: ${f(l.lazy.tokensPerSec / l.torch.eager.tokensPerSec)}x.` : "."), "");
  }
  return lines;
}

function gpuSection(run: Run): string[] {
  const commit = run.smeltCommit ? `${run.smeltCommit.slice(0, 10)}${run.smeltDirty ? " (with uncommitted changes)" : ""}` : "unknown";
  const lines = [
    "## On an NVIDIA GPU (CUDA backend)",
    "",
    `From \`bench/results/${run.file}\` (\`bun run bench --backend cuda${run.workloads.some((w) => w.peer) ? " --peer torch" : ""}\`): **${run.device}**; host ${run.cpu}, ${run.cores} cores; Bun ${run.bun}; smelt ${commit}; ${run.date}. The same workloads as above, at the same sizes; PyTorch on the same GPU. A timed call waits for the GPU to finish, on both sides.`,
    "",
    ...summaryTable(run),
    "",
    compileCheck(run),
    "",
  ];
  const peer = peerTable(run);
  const p0 = run.workloads.find((w) => w.peer)?.peer;
  if (peer.length && p0) lines.push(`PyTorch ${p0.torch} on the same GPU, eager and \`torch.compile\`; \"smelt best / torch best\" below 1 means smelt is faster.`, "", ...peer.slice(2), "");
  const l = run.loraTrain;
  if (l) {
    const tps = (x: StepFigures | undefined) => (x ? `${f(x.msPerStep, 3)} ms (${f(x.tokensPerSec, 3)} tokens/s)` : "–");
    lines.push(
      `LoRA training step (\`bench/lora-train.ts\`, model \`${l.model}\`, batch ${l.batch} x ${l.seqLen}, rank ${l.rank} on every linear layer, AdamW, float32): smelt lazy ${tps(l.lazy)}, ${l.lazy.kernelsPerStep ?? "?"} kernels; smelt eager ${tps(l.eager)}; ` +
        (l.torch?.eager ? `PyTorch ${l.torch.torch ?? ""} + PEFT ${l.torch.peft ?? ""} eager ${tps(l.torch.eager)}, torch.compile ${tps(l.torch.compile)}.` : `no PyTorch peer${l.torch?.error ? ` (${l.torch.error})` : ""}.`),
      "",
    );
  }
  return lines;
}

function compileCheck(run: Run): string {
  const bad = run.workloads.filter((w) => (w.compilesWhileTimed ?? 0) > 0);
  if (bad.length === 0) return "Kernels compiled during timed calls: none, in every workload.";
  return `Kernels compiled during timed calls (these timings include compiles): ${bad.map((w) => `${w.title} (${w.compilesWhileTimed})`).join("; ")}.`;
}

function peerNotes(run: Run): string[] {
  const wins = run.workloads.filter((w) => {
    if (!w.peer || !w.lazy || !w.eager) return false;
    const best = Math.min(num(w.peer.eagerMs) ?? Infinity, num(w.peer.compiledMs) ?? Infinity);
    return Math.min(w.lazy.medianMs, w.eager.medianMs) > best;
  });
  const failed = run.workloads.filter((w) => w.peer?.compileError);
  const notes = [
    `- PyTorch is faster on ${wins.length} of ${run.workloads.filter((w) => w.peer).length} workloads${wins.length ? `: ${wins.map((w) => w.title).join("; ")}` : ""}.`,
    "- PyTorch times a Python call that returns the output; on the CPU nothing is left running when it returns. Each number is the median of at least 12 calls and 0.6 s (at least 3 calls for calls over a second), after two warm-up calls. torch.compile's first call (compiling, then one run: \"first call s\") is excluded, as smelt's warm-up is; Inductor caches compiled graphs on disk, so that time depends on earlier runs.",
    "- PyTorch's float16 matmul can be far slower on a CPU than its float32 one (compare the matmul rows); where it is, it dominates the time a `--peer torch` run takes.",
    "- `OMP_WAIT_POLICY=PASSIVE` is set for the micro workloads' PyTorch peer (unless the environment sets it): with OpenMP's default spin-waiting on these shared cores, sub-millisecond ops showed medians of 8 to 64 ms while threads waited for descheduled peers. The generate and lora-train peers (transformers, PEFT) keep OpenMP's default, which is faster for them: PASSIVE made a PEFT eager LoRA step 16 to 22% slower, and figures before 2026-12-07 16:00 were taken with it.",
    "- Until 2026-12-07 17:30 the lora-train and generate groups started their peers after smelt's own runs, which made a PEFT peer's step about 17% slower: results files up to then (the 16:44 one included) overstate smelt's lead over PEFT; with the peer first, lazy was 1.17x and 1.22x PEFT eager (docs/lora.md). The groups now run their peers first.",
  ];
  if (failed.length) notes.push(`- torch.compile failed on: ${failed.map((w) => `${w.title} (${w.peer!.compileError})`).join("; ")}.`);
  return notes;
}

const write = (path: string, text: string) => {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
};
write(join(root, "docs", "benchmarks.svg"), chart(latest));
write(join(root, "docs", "benchmarks.md"), doc(latest));
console.log(`bench:report: docs/benchmarks.md and docs/benchmarks.svg from bench/results/${latest.file} (${ok.length} workloads)`);
