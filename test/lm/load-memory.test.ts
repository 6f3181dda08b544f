// Memory after loading SmolLM2-135M Q4_1: its weights stay quantized and the buffer cache sizes
// large buffers closely, so tensor memory is within 1.15x the file. Resident memory also holds the
// tokenizer's tables (about 21 MB of JS objects for 49152 tokens and their merges) and the freed
// q/k blocks of the row reordering, kept in the buffer cache (about 9 MB): about 1.5x the file in all.
import { expect, test } from "bun:test";
import { statSync } from "node:fs";
import { join } from "node:path";
import { modelPath, SMOLLM2_GGUF } from "../models.ts";

const path = modelPath(SMOLLM2_GGUF);

test.skipIf(!path)("tensor memory after sm.lm.load is at most 1.15x the GGUF file, resident memory 1.6x", () => {
  const child = Bun.spawnSync([process.execPath, join(import.meta.dir, "load-memory-child.ts"), path!], { stderr: "inherit" });
  expect(child.exitCode).toBe(0);
  const { rss, active, layers } = JSON.parse(child.stdout.toString()) as { rss: number; active: number; layers: number };
  const file = statSync(path!).size;
  console.log(`SmolLM2 Q4_1 (${(file / 1e6).toFixed(1)} MB file): RSS +${(rss / 1e6).toFixed(1)} MB, tensor memory ${(active / 1e6).toFixed(1)} MB`);
  expect(layers).toBe(30);
  expect(active).toBeLessThan(1.15 * file);
  expect(rss).toBeLessThan(1.6 * file);
}, 120_000);
