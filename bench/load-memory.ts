// bun bench/load-memory.ts MODEL: loads a model in a process of its own and prints, as JSON, the
// growth of resident memory, the tensor memory in use and the buffer cache's, once the mapped
// file is collected (the mapping goes when the collector finalizes its buffer, which can take
// more than one cycle). A process of its own, because memory an earlier workload freed and the
// allocator kept would be reused by the load and hide what it adds (bench/generate.ts and
// test/lm/load-memory.test.ts run it).
import * as sm from "../src/index.ts";

// The device and runtime, which are not the model's.
const warm = sm.array([1]);
warm.eval();
warm.dispose();
sm.clearCache();
Bun.gc(true);
const before = process.memoryUsage().rss;
const loaded = await sm.lm.load(process.argv[2]!);
for (let i = 0; i < 10; i++) {
  await Bun.sleep(50);
  Bun.gc(true);
}
const rss = process.memoryUsage().rss - before;
console.log(JSON.stringify({ rss, active: sm.getActiveMemory(), cached: sm.getCacheMemory(), layers: loaded.config.numLayers }));
