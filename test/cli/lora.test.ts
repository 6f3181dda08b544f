// smelt lora's handling of mistakes and of --config files, without a model: one line on stderr,
// exit code 2, before the library is loaded. (test/lora/smollm2.test.ts trains with it on a real model.)
import { afterAll, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = join(import.meta.dir, "../..");
const dir = mkdtempSync(join(tmpdir(), "smelt-lora-cli-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const smelt = (...args: string[]) => spawnSync(process.execPath, ["src/cli/main.ts", "lora", ...args], { cwd: root, encoding: "utf8" });

function fails(args: string[], message: string) {
  const r = smelt(...args);
  expect(r.stderr).toBe(`smelt lora: ${message}\n`);
  expect(r.status).toBe(2);
}

test("flags: required ones, unknown ones, bad numbers and choices", () => {
  fails(["--data", "d"], "--model PATH is required (a .gguf file or a model folder)");
  fails(["--model", "m.gguf"], "--data DIR is required (a folder with train.jsonl and valid.jsonl)");
  fails(["--bogus"], "Unknown option '--bogus' (smelt lora --help lists the options)");
  fails(["--model", "m", "--data", "d", "--iters", "3", "--epochs", "1"], "give --iters or --epochs, not both");
  fails(["--model", "m", "--data", "d", "--rank", "0"], "--rank must be an integer ≥ 1, got '0'");
  fails(["--model", "m", "--data", "d", "--optimizer", "lamb"], "--optimizer must be adamw, adam or sgd, got 'lamb'");
  fails(["--model", "m", "--data", "d", "--dropout", "1"], "--dropout must be below 1, got '1'");
  fails(["--model", "no/such.gguf", "--data", "d"], "no model at no/such.gguf");
});

test("--config: YAML and JSON settings with - or _ keys, checked as flags are; flags override", () => {
  const yaml = join(dir, "c.yaml");
  writeFileSync(yaml, "model: no/such.gguf\ndata: d\nbatch_size: 2\nlearning-rate: 1e-4\ntargets: [q_proj, v_proj]\nmask_prompt: true\n");
  fails(["--config", yaml], "no model at no/such.gguf");
  fails(["--config", yaml, "--model", "other.gguf"], "no model at other.gguf");
  writeFileSync(yaml, "model: m\ndata: d\nrank: 0\n");
  fails(["--config", yaml], "--rank must be an integer ≥ 1, got '0'");
  const json = join(dir, "c.json");
  writeFileSync(json, JSON.stringify({ model: "m", data: "d", lora_rank: 4 }));
  fails(["--config", json], `${json}: unknown setting 'lora_rank' (smelt lora --help lists them)`);
  writeFileSync(json, "{ nope");
  expect(smelt("--config", json).stderr).toStartWith(`smelt lora: ${json} is not valid JSON`);
  fails(["--config", join(dir, "none.yaml")], `no config file at ${join(dir, "none.yaml")}`);
});
