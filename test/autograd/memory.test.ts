// Training loops hold device memory flat and process memory (RSS) bounded: the transforms,
// modules and optimizers keep no graph, tape or handle past the step that made it. Each loop runs
// in a child process (test/autograd/loops.ts), whose RSS is the loop's alone.
import { expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import type { LoopResult } from "./loops.ts";

function run(which: string): LoopResult & { before: number; after: number } {
  const r = spawnSync(process.execPath, [join(import.meta.dir, "loops.ts"), which], { encoding: "utf8", env: process.env });
  if (r.status !== 0) throw new Error(`loops.ts ${which} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!);
}

for (const mode of ["lazy", "eager"] as const) {
  test(`${mode}: 10,000 valueAndGrad steps on a small MLP keep bytesAllocated flat and RSS bounded`, () => {
    const { bytes, losses, rssGrowth, before, after } = run(mode);
    console.log(`${mode}: RSS grew ${rssGrowth.toFixed(1)} MiB over steps 500..10,000`);
    // Generous: the JS heap's size after a collection varies by tens of MiB between runs; a
    // leaked graph per step (a few KiB of nodes and handles) would pass 100 MiB by 10,000 steps.
    expect(rssGrowth).toBeLessThan(64);
    expect(new Set(bytes).size).toBe(1);
    expect(after).toBe(before);
    expect(losses[losses.length - 1]!).toBeLessThan(losses[0]! / 2); // it trains
  }, 300_000);
}

test("10,000 steps of the issue's training loop (nn.valueAndGrad, clipGradNorm, AdamW) keep bytesAllocated flat and RSS bounded", () => {
  const { bytes, losses, rssGrowth, before, after } = run("module");
  console.log(`nn + optim loop: RSS grew ${rssGrowth.toFixed(1)} MiB over steps 500..10,000`);
  expect(new Set(bytes).size).toBe(1);
  expect(rssGrowth).toBeLessThan(64);
  expect(losses.at(-1)!).toBeLessThan(losses[0]! / 4);
  expect(after).toBe(before);
}, 300_000);
