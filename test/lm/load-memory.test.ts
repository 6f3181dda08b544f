// Memory after loading SmolLM2-135M Q4_1: its weights stay quantized and the buffer cache sizes
// large buffers closely, so tensor memory is within 1.15x the file; buffers freed while loading
// (the q/k blocks before their rows are reordered, the projections before they are joined) are
// not kept for reuse. Resident memory also holds the tokenizer's tables (a map of 49152 tokens,
// the merge ranks in typed arrays) and the JS heap the parse leaves behind.
import { expect, test } from "bun:test";
import { statSync } from "node:fs";
import { join } from "node:path";
import { modelPath, SMOLLM2_GGUF } from "../models.ts";

const path = modelPath(SMOLLM2_GGUF);

test.skipIf(!path)("tensor memory after sm.lm.load is at most 1.15x the GGUF file, nothing cached, resident memory 1.3x", () => {
  const child = Bun.spawnSync([process.execPath, join(import.meta.dir, "../../bench/load-memory.ts"), path!], { stderr: "inherit" });
  expect(child.exitCode).toBe(0);
  const { rss, active, cached, layers } = JSON.parse(child.stdout.toString()) as { rss: number; active: number; cached: number; layers: number };
  const file = statSync(path!).size;
  console.log(`SmolLM2 Q4_1 (${(file / 1e6).toFixed(1)} MB file): RSS +${(rss / 1e6).toFixed(1)} MB (${(rss / file).toFixed(2)}x), tensor memory ${(active / 1e6).toFixed(1)} MB`);
  expect(layers).toBe(30);
  expect(active).toBeLessThan(1.15 * file);
  expect(cached).toBe(0);
  expect(rss).toBeLessThan(1.3 * file);
}, 120_000);
