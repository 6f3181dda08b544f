/**
 * The `lora-train` group of `bun run bench`: one full LoRA training step (forward, backward,
 * AdamW) of SmolLM2-135M (Q4_1 GGUF) with rank 8 on every linear layer, batch 4 x 128 tokens: ms
 * per step, tokens/s, kernels per step and peak memory, lazy and eager. `--peer torch` runs PEFT +
 * torch on the same file (dequantized to float32, the same threads) through bench/lora_train_peer.py,
 * eager and torch.compile. `bun run bench` runs it in a process of its own (loraTrainChild); it also
 * runs alone: `bun bench/lora-train.ts [--quick] [--peer torch] [--json] [--profile N]`, where
 * --profile N then prints the N costliest kernels of one more lazy step under sm.profile.
 * Each mode is measured after a warm-up step (which compiles the kernels), as the median of at
 * least `runs` steps that take MIN_MS together (at most MAX_RUNS steps; the peer times its steps
 * so too): a GPU's step of about a tenth of a second varied by 10-20% from run to run, more than
 * three of them could settle.
 * SMELT_LORA_MODEL=PATH times another model file or Hugging Face folder instead (for example one that
 * bench/smollm2_shaped.py writes where the GGUF cannot be fetched); on the CUDA backend the peer
 * runs on the GPU too.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, homedir } from "node:os";
import { basename, join } from "node:path";
import * as sm from "smelt";

export const MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf";

export interface StepFigures {
  msPerStep: number;
  /** Steps timed (the median's). */
  runs: number;
  tokensPerSec: number;
  /** bytes: sm.getPeakMemory() over the measured steps (smelt); torch: the process's peak RSS on the CPU, its CUDA allocator's peak on the GPU. */
  peakMemory: number;
}
export interface LoraTrainBench {
  model: string;
  batch: number;
  seqLen: number;
  rank: number;
  /** The fewest steps timed per mode (each mode's own count is its figures' runs). */
  runs: number;
  threads: number;
  trainable: number;
  lazy: SmeltFigures;
  eager: SmeltFigures;
  torch?: { eager: StepFigures; compile: StepFigures | { error: string }; torch: string; peft: string; threads: number; device: string } | { error: string };
}

/** rssPeak: bytes, the bench process's peak resident memory over the measured steps (Linux; absent elsewhere), its cached buffers and runtime included. */
export type SmeltFigures = StepFigures & { kernelsPerStep: number; rssPeak?: number };

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** Timed steps take at least this long together, unless --quick; at most MAX_RUNS of them. */
const MIN_MS = 2000;
const MAX_RUNS = 30;

/**
 * Resets the process's peak resident memory (Linux: writing 5 to /proc/self/clear_refs resets
 * VmHWM) and returns a reader of the peak since then, or null where that cannot be done.
 */
function rssPeakFromNow(): (() => number) | null {
  try {
    writeFileSync("/proc/self/clear_refs", "5");
    const read = () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"))![1]) * 1024;
    read();
    return read;
  } catch {
    return null;
  }
}

/** Token ids of a fixed pseudo-random batch (the same in the peer), shifted for next-token targets. */
export function batchIds(batch: number, seqLen: number, vocab: number): number[][] {
  let s = 12345;
  return Array.from({ length: batch }, () =>
    Array.from({ length: seqLen + 1 }, () => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      return s % vocab;
    }),
  );
}

export async function loraTrainGroup(opts: { quick: boolean; peer: boolean; profile?: number; log: (s: string) => void }): Promise<LoraTrainBench | null> {
  const { quick, peer, log } = opts;
  const dir = process.env.SMELT_MODELS_DIR ?? join(homedir(), ".cache", "smelt", "models");
  const file = process.env.SMELT_LORA_MODEL || join(dir, MODEL);
  const name = basename(file);
  if (!existsSync(file)) {
    log(`\nlora-train: skipped, ${file} does not exist (scripts/fetch-model.sh fetches ${MODEL})`);
    return null;
  }
  const batch = quick ? 1 : 4;
  const seqLen = quick ? 16 : 128;
  const runs = quick ? 1 : 3;
  const rank = 8;
  const threads = Number(process.env.SMELT_HOST_THREADS) || cpus().length;
  log(`\nlora-train: ${name}, batch ${batch} x ${seqLen}, rank ${rank} all-linear, one step (forward, backward, AdamW), each mode the median of at least ${runs} step(s)${quick ? "" : ` filling ${MIN_MS / 1000} s`} ...`);

  const { model, config } = await sm.lm.load(file);
  sm.random.seed(0);
  const trainable = sm.lora.apply(model, { rank, alpha: 16, targets: "all-linear" });
  const ids = batchIds(batch, seqLen, config.vocabSize);
  // The peer runs before smelt's steps: started after them, from this process, its step took
  // about 17% longer (2,537 against 2,166 ms, and 2,161 to 2,296 for peers run back to back
  // from a process that ran nothing else), though this process used no CPU meanwhile.
  let torch: LoraTrainBench["torch"];
  if (peer) {
    const device = sm.device().backend === "cuda" ? "cuda" : "cpu";
    log(`lora-train: PEFT + torch on the same model, ${device} (bench/lora_train_peer.py) ...`);
    const p = spawnSync("python3", [join(import.meta.dir, "lora_train_peer.py")], {
      input: JSON.stringify({ file, ids, rank, runs, minMs: quick ? 0 : MIN_MS, maxRuns: MAX_RUNS, threads, compile: !quick, device }),
      encoding: "utf8",
      // OpenMP's default wait policy (unless the environment sets one), as a PyTorch user runs
      // it: here PASSIVE made a PEFT eager step 16 to 22% slower (2,561 and 2,712 against 2,217
      // and 2,209 ms), ACTIVE 12%.
      stdio: ["pipe", "pipe", "inherit"],
    });
    torch = p.status === 0 ? JSON.parse(p.stdout) : { error: `bench/lora_train_peer.py exited with ${p.status}` };
  }
  const x = sm.array(ids.map((r) => r.slice(0, seqLen)), "int32");
  const y = sm.array(ids.map((r) => r.slice(1)), "int32");
  const w = sm.full([batch, seqLen], 1, "float32");
  const n = batch * seqLen;
  const lossAndGrad = sm.nn.valueAndGrad(model, (m: typeof model) => sm.lora.maskedLoss(m.forward(x), y, w, n));
  const opt = new sm.optim.AdamW({ learningRate: 1e-4 });
  const step = () => {
    const [loss, grads] = lossAndGrad(model);
    opt.update(model, grads);
    sm.eval(loss as sm.Tensor, model.trainableParameters(), opt.state);
    (loss as sm.Tensor).dispose();
    sm.optim.disposeTree(grads);
  };

  const measure = (mode: "lazy" | "eager"): SmeltFigures => {
    sm.setDefaultMode(mode);
    try {
      step();
      const ms: number[] = [];
      let kernels = 0;
      sm.resetPeakMemory();
      const rss = rssPeakFromNow();
      const minMs = quick ? 0 : MIN_MS;
      while (ms.length < MAX_RUNS && (ms.length < runs || ms.reduce((a, b) => a + b, 0) < minMs)) {
        const k0 = sm.stats().kernelsDispatched;
        const t0 = performance.now();
        step();
        ms.push(performance.now() - t0);
        kernels = sm.stats().kernelsDispatched - k0;
      }
      const msPerStep = median(ms);
      const figures: SmeltFigures = { msPerStep, runs: ms.length, tokensPerSec: (n * 1000) / msPerStep, peakMemory: sm.getPeakMemory(), kernelsPerStep: kernels };
      if (rss) figures.rssPeak = rss();
      return figures;
    } finally {
      sm.setDefaultMode("lazy");
    }
  };
  const result: LoraTrainBench = { model: name, batch, seqLen, rank, runs, threads, trainable, lazy: measure("lazy"), eager: measure("eager") };

  if (torch) result.torch = torch;
  printLoraTrain(result, log);
  if (opts.profile) {
    // Each kernel committed and waited for alone: its time is its own, the step's total is not.
    const [, prof] = sm.profile(() => step());
    log(`\nlora-train: one lazy step under sm.profile, the ${opts.profile} costliest kernels:\n${sm.formatProfile(prof, opts.profile)}`);
  }
  return result;
}

function printLoraTrain(r: LoraTrainBench, log: (s: string) => void): void {
  const gb = (b: number) => `${(b / 1e9).toFixed(3)} GB`;
  const line = (name: string, f: StepFigures, extra = "") =>
    log(`  ${name.padEnd(14)} ${f.msPerStep.toFixed(0)} ms/step  ${f.tokensPerSec.toFixed(1)} tok/s  peak ${gb(f.peakMemory)}  median of ${f.runs}${extra}`);
  log(`lora-train (${r.model}, batch ${r.batch} x ${r.seqLen}, rank ${r.rank}, ${r.trainable} trainable, ${r.threads} threads):`);
  const rss = (f: SmeltFigures) => (f.rssPeak === undefined ? "" : ` (process peak RSS ${gb(f.rssPeak)})`);
  line("smelt lazy", r.lazy, `${rss(r.lazy)}  ${r.lazy.kernelsPerStep} kernels/step`);
  line("smelt eager", r.eager, `${rss(r.eager)}  ${r.eager.kernelsPerStep} kernels/step`);
  log(`  lazy / eager: ${(r.lazy.tokensPerSec / r.eager.tokensPerSec).toFixed(2)}x tokens/s`);
  const t = r.torch;
  if (t && "error" in t) log(`  PEFT + torch   ${t.error}`);
  else if (t) {
    line("torch eager", t.eager, ` (torch ${t.torch}, peft ${t.peft}, float32, ${t.device === "cuda" ? "CUDA allocator peak" : "peak RSS"})`);
    if ("error" in t.compile) log(`  torch.compile  ${t.compile.error}`);
    else line("torch.compile", t.compile);
    log(`  smelt lazy / torch eager: ${(r.lazy.tokensPerSec / t.eager.tokensPerSec).toFixed(2)}x tokens/s`);
  }
}

/**
 * The group in a process of its own (`bun run bench` runs it so), so that its peak resident memory
 * is its own and not the earlier groups': with --json the log goes to stderr and the results, or
 * null when the model is missing, to stdout as one line of JSON.
 */
export function loraTrainChild(opts: { quick: boolean; peer: boolean }): LoraTrainBench | null {
  const args = [join(import.meta.dir, "lora-train.ts"), "--json", ...(opts.quick ? ["--quick"] : []), ...(opts.peer ? ["--peer", "torch"] : [])];
  const child = spawnSync(process.execPath, args, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 16 << 20 });
  if (child.status !== 0) throw new Error(`bench/lora-train.ts exited with ${child.status}`);
  return JSON.parse(child.stdout.trim().split("\n").at(-1)!) as LoraTrainBench | null;
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const at = args.indexOf("--profile");
  const profile = at >= 0 ? Number(args[at + 1]) : 0;
  if (at >= 0) args.splice(at, 2);
  const bad = args.find((a) => a !== "--quick" && a !== "--peer" && a !== "torch" && a !== "--json");
  if (bad !== undefined || (args.includes("--peer") && !args.includes("torch")) || !(Number.isInteger(profile) && profile >= 0)) {
    console.error("usage: bun bench/lora-train.ts [--quick] [--peer torch] [--json] [--profile N]");
    process.exit(2);
  }
  const json = args.includes("--json");
  const result = await loraTrainGroup({ quick: args.includes("--quick"), peer: args.includes("--peer"), profile, log: json ? console.error : console.log });
  if (json) console.log(JSON.stringify(result));
}
