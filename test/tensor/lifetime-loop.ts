// Run by lifetime.test.ts in a process of its own, so that the RSS it reads is this loop's alone
// and not the garbage of the tests before it: `bun lifetime-loop.ts dispose|using|tidy`. Prints
// { sizes, rssMB }: bytesAllocated after a first step and every 2,000 steps of 20,000 more, and the RSS growth from step
// 2,000 (kernels compiled, caches warm) to the end, both after a full collection.
import * as sm from "../../src/index.ts";

const how = process.argv[2] as "dispose" | "using" | "tidy";
const f32 = (shape: number[], seed: number) => {
  using key = sm.random.key(seed);
  return sm.random.normal(shape, "float32", 0, 1, key).eval();
};
const x = f32([8, 64], 11);
const W = f32([64, 64], 12);
// The loop of the issue: h = x@W; y = softmax(h); y.eval(), then freeing h and y one of three ways.
const step = () => {
  if (how === "dispose") {
    const h = sm.matmul(x, W);
    const y = sm.softmax(h);
    y.eval();
    y.dispose();
    h.dispose();
  } else if (how === "using") {
    using h = sm.matmul(x, W);
    using y = sm.softmax(h);
    y.eval();
  } else {
    sm.tidy(() => {
      sm.softmax(sm.matmul(x, W)).eval();
    });
  }
};
const rss = () => {
  Bun.gc(true);
  return process.memoryUsage().rss / 2 ** 20;
};
step();
const sizes = [sm.stats().bytesAllocated];
let rss0 = 0;
for (let i = 1; i <= 20_000; i++) {
  step();
  if (i % 2_000 === 0) sizes.push(sm.stats().bytesAllocated);
  if (i === 2_000) rss0 = rss();
}
const rssMB = rss() - rss0;
x.dispose();
W.dispose();
console.log(JSON.stringify({ sizes, rssMB }));
