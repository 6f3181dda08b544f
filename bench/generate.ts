/**
 * The `generate` group of `bun run bench`: SmolLM2-135M (Q4_1 GGUF) prompt processing over 512
 * tokens and decoding of 128 tokens, in tokens per second, and peak memory; `--peer torch` runs
 * transformers on the same file (dequantized to float32, CPU, the same thread count) through
 * bench/generate_peer.py, and llama.cpp (the file as it is) through bench/generate_llamacpp.py
 * where llama-cpp-python is installed. Also runs alone: `bun bench/generate.ts [--quick] [--peer torch]`.
 *
 * Prompt processing: sm.lm.generate of one token after the whole prompt, timed to that token
 * (its promptTps). Decoding: the steps after the first token of a generation that ignores the
 * end-of-sequence token, so every run makes the same number of steps (its generationTps). Each
 * is measured after a warm-up run of the same shape (which compiles the kernels), and reported
 * as the median of the runs.
 */
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { cpus, homedir } from "node:os";
import { join } from "node:path";
import * as sm from "smelt";

export const MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf";

export interface GenerateFigures {
  promptTps: number;
  decodeTps: number;
  /** bytes, sm.getPeakMemory() over the measured runs (smelt) or the process's peak RSS (torch). */
  peakMemory: number;
}

export interface GenerateBench {
  model: string;
  fileBytes: number;
  promptTokens: number;
  decodeTokens: number;
  runs: number;
  threads: number;
  /** rssAfterLoad: bytes of resident memory that sm.lm.load added. */
  smelt: GenerateFigures & { loadMs: number; rssAfterLoad: number };
  torch?: (GenerateFigures & { torch: string; transformers: string; threads: number }) | { error: string };
  /** llama.cpp on the same file, quantized as it is (bench/generate_llamacpp.py), or why it did not run. */
  llamaCpp?: (GenerateFigures & { llamaCpp: string; threads: number }) | { error: string };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** A long prompt's ids: English text, repeated, cut to n tokens. */
function promptIds(tokenizer: sm.lm.Tokenizer, n: number): number[] {
  const text =
    "The history of computing is a story of machines that grew smaller, faster and cheaper, of programs " +
    "that grew larger, and of people who learned to say precisely what they meant. Early calculators " +
    "added columns of numbers; later machines stored their own instructions, and the idea that a program " +
    "is data changed everything that followed. ";
  const ids: number[] = [];
  while (ids.length < n) ids.push(...tokenizer.encode(text, { addSpecialTokens: false }));
  return ids.slice(0, n);
}

/** Runs the group; returns null (after saying why) when the model is not in the cache. */
export async function generateGroup(opts: { quick: boolean; peer: boolean; log: (s: string) => void }): Promise<GenerateBench | null> {
  const { quick, peer, log } = opts;
  const dir = process.env.SMELT_MODELS_DIR ?? join(homedir(), ".cache", "smelt", "models");
  const file = join(dir, MODEL);
  if (!existsSync(file)) {
    log(`\ngenerate: skipped, ${MODEL} is not in ${dir} (scripts/fetch-model.sh fetches it)`);
    return null;
  }
  const promptTokens = quick ? 16 : 512;
  const decodeTokens = quick ? 4 : 128;
  const runs = quick ? 1 : 3;
  const threads = Number(process.env.SMELT_HOST_THREADS) || cpus().length;
  log(`\ngenerate: ${MODEL}, prompt ${promptTokens} tokens, decode ${decodeTokens} tokens, ${runs} run(s) each ...`);

  // Resident memory that loading adds, in a process of its own (bench/load-memory.ts, which
  // test/lm/load-memory.test.ts runs too): in this one, buffers the earlier workloads freed and
  // the allocator kept would take the load's copies and hide them.
  const child = Bun.spawnSync([process.execPath, join(import.meta.dir, "load-memory.ts"), file], { stderr: "inherit" });
  if (child.exitCode !== 0) throw new Error(`generate: bench/load-memory.ts exited with ${child.exitCode}`);
  const rssAfterLoad = (JSON.parse(child.stdout.toString()) as { rss: number }).rss;
  const t0 = performance.now();
  const { model, tokenizer } = await sm.lm.load(file);
  const loadMs = performance.now() - t0;
  // Generation that never stops early: the same steps in every run (and in the peer's).
  const endless: sm.lm.TextTokenizer = { encode: (t, o) => tokenizer.encode(t, o), decode: (ids, o) => tokenizer.decode(ids, o), eosTokenIds: [] };
  const prompt = promptIds(tokenizer, promptTokens);
  const decodePrompt = prompt.slice(0, 8);

  // The peers run before smelt's measurements: a PyTorch peer started after a smelt workload
  // from this process ran about 17% slower (bench/lora-train.ts).
  let torch: GenerateBench["torch"];
  let llamaCpp: GenerateBench["llamaCpp"];
  if (peer) {
    log("generate: transformers on the same GGUF (bench/generate_peer.py) ...");
    const job = JSON.stringify({ file, prompt, decodePrompt, decodeTokens, runs, threads });
    const p = spawnSync("python3", [join(import.meta.dir, "generate_peer.py")], {
      input: job,
      encoding: "utf8",
      // OpenMP's default wait policy (unless the environment sets one), as a transformers user
      // runs it: with PASSIVE decoding was about 4% slower here.
      stdio: ["pipe", "pipe", "inherit"],
    });
    torch = p.status === 0 ? JSON.parse(p.stdout) : { error: `bench/generate_peer.py exited with ${p.status}` };
    // llama.cpp where llama-cpp-python is installed (it builds llama.cpp from source; not a requirement).
    if (spawnSync("python3", ["-c", "import llama_cpp"], { stdio: "ignore" }).status !== 0) {
      llamaCpp = { error: "llama-cpp-python is not installed (pip install llama-cpp-python)" };
      log(`generate: llama.cpp skipped, ${llamaCpp.error}`);
    } else {
      log("generate: llama.cpp on the same GGUF (bench/generate_llamacpp.py) ...");
      const q = spawnSync("python3", [join(import.meta.dir, "generate_llamacpp.py")], { input: job, encoding: "utf8", stdio: ["pipe", "pipe", "inherit"] });
      llamaCpp = q.status === 0 ? JSON.parse(q.stdout) : { error: `bench/generate_llamacpp.py exited with ${q.status}` };
    }
  }

  let peak = 0;
  const measure = async (ids: number[], maxTokens: number, pick: (r: sm.lm.GenerateResult) => number) => {
    await sm.lm.generate(model, endless, ids, { maxTokens });
    const xs: number[] = [];
    for (let i = 0; i < runs; i++) {
      sm.resetPeakMemory();
      const r = await sm.lm.generate(model, endless, ids, { maxTokens });
      peak = Math.max(peak, r.peakMemory);
      xs.push(pick(r));
    }
    return median(xs);
  };
  const promptTps = await measure(prompt, 1, (r) => r.promptTps);
  const decodeTps = await measure(decodePrompt, decodeTokens + 1, (r) => r.generationTps);
  const result: GenerateBench = {
    model: MODEL,
    fileBytes: statSync(file).size,
    promptTokens,
    decodeTokens,
    runs,
    threads,
    smelt: { promptTps, decodeTps, peakMemory: peak, loadMs, rssAfterLoad },
  };

  if (torch) result.torch = torch;
  if (llamaCpp) result.llamaCpp = llamaCpp;
  printGenerate(result, log);
  return result;
}

function printGenerate(r: GenerateBench, log: (s: string) => void): void {
  const gb = (b: number) => `${(b / 1e9).toFixed(3)} GB`;
  const s = r.smelt;
  log(`generate (${r.model}, ${r.threads} threads, median of ${r.runs}):`);
  log(`  smelt        prompt ${s.promptTps.toFixed(1)} tok/s (${r.promptTokens} tokens)  decode ${s.decodeTps.toFixed(2)} tok/s (${r.decodeTokens} tokens)  peak ${gb(s.peakMemory)}`);
  log(`               load ${(s.loadMs / 1000).toFixed(2)} s, RSS added by the load ${gb(s.rssAfterLoad)} = ${(s.rssAfterLoad / r.fileBytes).toFixed(2)}x the file`);
  const t = r.torch;
  if (t && "error" in t) log(`  transformers ${t.error}`);
  else if (t) {
    log(`  transformers prompt ${t.promptTps.toFixed(1)} tok/s  decode ${t.decodeTps.toFixed(2)} tok/s  peak RSS ${gb(t.peakMemory)} (torch ${t.torch}, float32)`);
    log(`  smelt / transformers: prompt ${(s.promptTps / t.promptTps).toFixed(2)}x, decode ${(s.decodeTps / t.decodeTps).toFixed(2)}x`);
  }
  const c = r.llamaCpp;
  if (c && "error" in c) log(`  llama.cpp    ${c.error}`);
  else if (c) {
    log(`  llama.cpp    prompt ${c.promptTps.toFixed(1)} tok/s  decode ${c.decodeTps.toFixed(2)} tok/s  peak RSS ${gb(c.peakMemory)} (llama-cpp-python ${c.llamaCpp}, the file's Q4_1)`);
    log(`  smelt / llama.cpp: prompt ${(s.promptTps / c.promptTps).toFixed(2)}x, decode ${(s.decodeTps / c.decodeTps).toFixed(2)}x`);
  }
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const bad = args.find((a) => a !== "--quick" && a !== "--peer" && a !== "torch");
  if (bad !== undefined || (args.includes("--peer") && !args.includes("torch"))) {
    console.error("usage: bun bench/generate.ts [--quick] [--peer torch]");
    process.exit(2);
  }
  await generateGroup({ quick: args.includes("--quick"), peer: args.includes("--peer"), log: console.log });
}
