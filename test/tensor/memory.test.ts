import { expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import type { Node } from "../../src/graph/node.ts";

setDefaultTimeout(120_000);

test("dispose frees the storage of a computed tensor back to the cache", () => {
  const before = sm.stats().bytesAllocated;
  const t = sm.ones([1000]).eval();
  expect(sm.stats().bytesAllocated).toBeGreaterThan(before);
  t.dispose();
  expect(sm.stats().bytesAllocated).toBe(before);
  expect(t.disposed).toBe(true);
  expect(() => t.toArray()).toThrow(sm.SmeltError);
  expect(() => t.toArray()).toThrow(/disposed/);
});

test("`using` disposes at the end of the block", () => {
  const before = sm.stats().bytesAllocated;
  {
    using t = sm.full([256], 2).eval();
    using s = t.sum();
    expect(s.item()).toBe(512);
  }
  expect(sm.stats().bytesAllocated).toBe(before);
});

test("tidy disposes what it created, keeps what it returns (nested in objects too)", () => {
  const before = sm.stats().bytesAllocated;
  const kept = sm.tidy(() => {
    const a = sm.arange(100).astype("float32").eval();
    const b = a.mul(2).eval();
    return { c: b.add(1).eval(), list: [a.sum()] };
  });
  expect(kept.c.disposed).toBe(false);
  expect(kept.list[0]!.item()).toBe(4950);
  expect((kept.c.toArray() as number[])[99]).toBe(199);
  kept.c.dispose();
  kept.list[0]!.dispose();
  expect(sm.stats().bytesAllocated).toBe(before);
});

test("handles dropped without dispose are freed once collected: returned by tidy, left by a tidy that threw, or made outside", async () => {
  // The nodes of the dropped handles, which give up their memory when the finalizer frees them.
  const nodes: Node[] = [];
  const drop = () => {
    nodes.push(sm.tidy(() => sm.ones([4096]).eval()).node("test"));
    expect(() => sm.tidy(() => {
      nodes.push(sm.ones([4096]).eval().node("test"));
      throw new Error("inside tidy");
    })).toThrow("inside tidy");
    nodes.push(sm.ones([4096]).eval().node("test"));
  };
  drop();
  expect(nodes.every((n) => n.data !== null)).toBe(true);
  for (let i = 0; i < 100 && nodes.some((n) => n.data !== null); i++) {
    Bun.gc(true);
    await Bun.sleep(5);
  }
  expect(nodes.map((n) => n.data)).toEqual([null, null, null]);
});

test("intermediates of a fused kernel get no memory", () => {
  const x = sm.ones([4096]).eval();
  sm.resetStats();
  const before = sm.stats().bytesAllocated;
  const y = x.mul(2).add(1).exp().log().sub(1).eval();
  // one output buffer of 4096 float32 (16 KiB bucket), nothing for the four intermediates
  expect(sm.stats().bytesAllocated - before).toBe(16384);
  expect(sm.stats().kernelsDispatched).toBe(1);
  expect((y.toArray() as number[])[0]).toBeCloseTo(2, 5);
  x.dispose();
  y.dispose();
});

test("a chain of kernels evaluated at once holds a few buffers, not one per kernel", () => {
  // 16 products, each a kernel of its own (a contraction of 128), each read only by the next. tidy
  // disposes the handles of the intermediates (a handle merely dropped holds its node until the
  // garbage collector finds it, and a held tensor keeps its memory).
  const [B, W, L] = [64, 128, 16];
  const x = sm.random.normal([B, W], "float32", 0, 1, sm.random.key(1)).eval();
  const ws = Array.from({ length: L }, (_, i) => sm.random.normal([W, W], "float32", 0, 1 / Math.sqrt(W), sm.random.key(2 + i)).eval());
  const chain = () => sm.tidy(() => ws.reduce((h, w) => sm.tanh(sm.matmul(h, w)), x));
  // Once first: the weights' packed operands are made and kept then, and the kernels compiled.
  chain().eval().dispose();
  const base = sm.getActiveMemory();
  sm.resetStats();
  sm.resetPeakMemory();
  const y = chain().eval();
  expect(sm.stats().kernelsDispatched).toBe(L);
  const act = B * W * 4;
  // Each product's output takes over the memory of the one before the last, which nothing reads
  // any more: three buffers at most, where keeping every one until the end took sixteen.
  expect(sm.getPeakMemory() - base).toBeLessThanOrEqual(3 * act);
  expect(sm.getActiveMemory() - base).toBe(act);
  // The values, against float64 on a few rows.
  const xv = x.toArray() as number[], yv = y.toArray() as number[];
  const wv = ws.map((w) => w.toArray() as number[]);
  for (const r of [0, 17, B - 1]) {
    let h = xv.slice(r * W, r * W + W);
    for (const w of wv) h = Array.from({ length: W }, (_, j) => Math.tanh(h.reduce((s, v, k) => s + v * w[k * W + j]!, 0)));
    h.forEach((v, j) => expect(Math.abs(yv[r * W + j]! - v)).toBeLessThan(1e-4));
  }
  for (const t of [x, y, ...ws]) t.dispose();
});

test("a training-style loop of 10,000 steps does not grow tensor memory", () => {
  let w = sm.zeros([64, 32]).eval();
  const target = sm.full([64, 32], 3).eval();
  const sizes: number[] = [];
  for (let step = 0; step < 10_000; step++) {
    const next = sm.tidy(() => w.sub(w.sub(target).mul(0.02)).eval());
    w.dispose();
    w = next;
    if (step % 1000 === 999) sizes.push(sm.stats().bytesAllocated);
  }
  expect(new Set(sizes).size).toBe(1);
  expect(w.slice("0, 0").item() as number).toBeCloseTo(3, 4);
  w.dispose();
  target.dispose();
});

test("setMemoryLimit refuses an allocation past the limit with a clear error, and the engine keeps working", () => {
  const used = sm.stats().bytesAllocated;
  sm.setMemoryLimit(used + (1 << 20));
  try {
    const big = sm.ones([1 << 20]); // 4 MiB
    expect(() => big.eval()).toThrow(sm.SmeltError);
    expect(() => big.eval()).toThrow(/limit/);
    const small = sm.ones([16]).add(1).eval();
    const total = small.sum();
    expect(total.item()).toBe(32);
    small.dispose();
    total.dispose();
  } finally {
    sm.setMemoryLimit(Infinity);
  }
  expect(() => sm.setMemoryLimit(-1)).toThrow(/setMemoryLimit/);
});

test("asyncEval and data() resolve once the device is done", async () => {
  const a = sm.arange(10).astype("float32").mul(3);
  const b = a.add(1);
  await sm.asyncEval(a, [b]);
  expect(await b.data()).toEqual([1, 4, 7, 10, 13, 16, 19, 22, 25, 28]);
});

test("reading a tensor before its asyncEval resolved waits for the kernels that write it", async () => {
  // A slow kernel (a long reduction of generated values): the read comes while it still runs.
  const rows = 64, cols = 1 << 20;
  const slow = sm.sum(sm.sin(sm.reshape(sm.arange(rows * cols), [rows, cols]).astype("float32")), 1);
  const done = sm.asyncEval(slow);
  const early = slow.toArray();
  const viaData = await slow.data();
  await done;
  const late = slow.toArray();
  expect(early).toEqual(late);
  expect(viaData).toEqual(late);
  expect(late.some((v) => v !== 0)).toBe(true);
  slow.dispose();
});

test("reading a tensor does not wait for a later evaluation that only reads it", async () => {
  // Generation reads each step's token while the next step, built on that token, runs.
  const x = sm.arange(4).astype("float32").mul(2);
  x.eval();
  const dev = sm.device();
  const before = dev.completedCount();
  // Slow on its device (hundreds of milliseconds on a CPU's cores, tens on a GPU), and reading x.
  let slow: sm.Tensor;
  if (dev.backend === "host") {
    const rows = 64, cols = 1 << 21;
    slow = sm.sum(sm.sin(sm.reshape(sm.arange(rows * cols), [rows, cols]).astype("float32").mul(x.max())), 1);
  } else {
    const w = sm.eye(2048);
    slow = sm.full([2048, 2048], 1e-3).mul(x.max());
    for (let i = 0; i < 100; i++) slow = sm.matmul(slow, w);
  }
  const done = sm.asyncEval(slow);
  expect(x.toArray()).toEqual([0, 2, 4, 6]);
  // Had the read waited for the slow evaluation, its first command buffer would be complete.
  expect(dev.completedCount()).toBe(before);
  await done;
  expect(dev.completedCount()).toBeGreaterThan(before);
  for (const t of [x, slow]) t.dispose();
});

test("ops on a tensor whose asyncEval is still pending evaluate after it, lazily and inline", async () => {
  const rows = 64, cols = 1 << 18;
  const make = () => sm.sum(sm.sin(sm.reshape(sm.arange(rows * cols), [rows, cols]).astype("float32")), 1);
  const want = (sm.eager(make).toArray() as number[]).map((v) => Math.fround(Math.fround(v * 2) + 1));
  const slow = make();
  const done = sm.asyncEval(slow);
  // A row kernel over the pending result (its reduction inlined into the consumer's kernel) and a
  // plain elementwise one, while the first evaluation may still run.
  const total = slow.mul(2).add(1).sum();
  const next = slow.mul(2).add(1);
  const pendingToo = sm.asyncEval(next);
  expect(total.item()).toBeCloseTo(want.reduce((a, v) => a + v, 0), 0);
  await Promise.all([done, pendingToo]);
  expect(next.toArray()).toEqual(want);
  for (const t of [slow, total, next]) t.dispose();
});

test("a failed evaluation leaves no tensor claiming data it does not have", () => {
  const x = sm.arange(1 << 16).astype("float32");
  const y = x.mul(2); // scheduled first, then the reduction's allocation fails
  const big = sm.ones([1 << 22]).add(y.sum());
  sm.setMemoryLimit(sm.stats().bytesAllocated + (1 << 19));
  try {
    expect(() => sm.eval(y, big)).toThrow(/limit/);
  } finally {
    sm.setMemoryLimit(Infinity);
  }
  expect((y.toArray() as number[])[3]).toBe(6);
});

test("tidy passes typed arrays through untouched, beside the tensors it keeps", () => {
  const out = sm.tidy(() => {
    const t = sm.arange(4).astype("float32").eval();
    return { values: t.raw(), kept: t, buffer: new ArrayBuffer(8) };
  });
  expect(Array.from(out.values)).toEqual([0, 1, 2, 3]);
  expect(out.kept.disposed).toBe(false);
  out.kept.dispose();
});
