// Run by load-memory.test.ts in a process of its own: loads a model and prints, as JSON, the
// growth of resident memory, the tensor memory in use and the buffer cache's, once the mapped
// file is collected (the mapping goes when the collector finalizes its buffer, which can take
// more than one cycle).
import * as sm from "../../src/index.ts";

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
