// The smelt CLI's handling of mistakes, without a model: one line on stderr, exit code 2, no stack
// trace, and before the library is loaded. (test/lm/generate-model.test.ts runs it on a real model.)
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = join(import.meta.dir, "../..");
const smelt = (...args: string[]) => spawnSync(process.execPath, ["src/cli/main.ts", ...args], { cwd: root, encoding: "utf8" });

function fails(args: string[], message: string) {
  const r = smelt(...args);
  expect(r.stderr).toBe(`${message}\n`);
  expect(r.stdout).toBe("");
  expect(r.status).toBe(2);
}

describe("smelt generate: mistakes", () => {
  test("an unknown flag", () => fails(["generate", "--bogus"], "smelt generate: Unknown option '--bogus' (smelt generate --help lists the options)"));
  test("a flag without its value", () =>
    fails(["generate", "--model", "m.gguf", "--prompt", "hi", "--max-tokens"], "smelt generate: Option '--max-tokens <value>' argument missing (smelt generate --help lists the options)"));
  test("missing --model and --prompt", () => {
    fails(["generate", "--prompt", "hi"], "smelt generate: --model PATH is required (a .gguf file or a model folder)");
    fails(["generate", "--model", "m.gguf"], "smelt generate: --prompt TEXT is required");
  });
  test("numbers out of range", () => {
    fails(["generate", "--model", "m.gguf", "--prompt", "hi", "--max-tokens", "0"], "smelt generate: --max-tokens must be an integer ≥ 1, got '0'");
    fails(["generate", "--model", "m.gguf", "--prompt", "hi", "--temp=-1"], "smelt generate: --temp must be a number ≥ 0, got '-1'");
    fails(["generate", "--model", "m.gguf", "--prompt", "hi", "--top-p", "2"], "smelt generate: --top-p must be a number from 5e-324 to 1, got '2'");
    fails(["generate", "--model", "m.gguf", "--prompt", "hi", "--seed", "x"], "smelt generate: --seed must be an integer, got 'x'");
  });
  test("a model that is not there", () => fails(["generate", "--model", "no/such/model.gguf", "--prompt", "hi"], "smelt generate: no model at no/such/model.gguf"));
  test("a file that is not a model", () => {
    const file = join(mkdtempSync(join(tmpdir(), "smelt-cli-")), "fake.gguf");
    writeFileSync(file, "JUNKJUNKJUNKJUNKJUNKJUNK");
    fails(["generate", "--model", file, "--prompt", "hi"], `smelt generate: loadGGUF: ${file}: not a GGUF file (magic 4b4e554a, expected 46554747 for "GGUF")`);
  });
  test("an unknown command, and no command", () => {
    fails(["frobnicate"], "smelt: unknown command 'frobnicate'; the commands are generate, lora");
    const r = smelt();
    expect(r.status).toBe(2);
    expect(r.stdout).toContain("usage: smelt <command>");
  });
  test("--help is not a mistake", () => {
    const r = smelt("generate", "--help");
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("--max-tokens N");
  });
});

test("package.json names the CLI as the smelt binary, runnable by its #! line", () => {
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { bin?: Record<string, string> };
  expect(pkg.bin).toEqual({ smelt: "src/cli/main.ts" });
  const main = join(root, "src/cli/main.ts");
  expect(readFileSync(main, "utf8").startsWith("#!/usr/bin/env bun\n")).toBe(true);
  expect(statSync(main).mode & 0o111).not.toBe(0);
});
