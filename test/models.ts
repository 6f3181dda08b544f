// Where tests find the models scripts/fetch-model.sh puts in the cache, and how they skip (saying
// why, once per model) when a model is missing.
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export const SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf";

export function modelsDir(): string {
  return process.env.SMELT_MODELS_DIR ?? join(homedir(), ".cache", "smelt", "models");
}

const told = new Set<string>();

/** The model's path, or null after printing how to fetch it: pass `!path` to test.skipIf. */
export function modelPath(name: string): string | null {
  const path = join(modelsDir(), name);
  if (existsSync(path)) return path;
  if (!told.has(name)) {
    told.add(name);
    console.warn(`skipping tests that need ${name}: not in ${modelsDir()} (run scripts/fetch-model.sh${name.endsWith(".gguf") ? "" : ", then scripts/tokenizer_reference.py"})`);
  }
  return null;
}
