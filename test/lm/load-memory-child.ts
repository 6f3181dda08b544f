// Run by load-memory.test.ts in a process of its own: loads a model and prints, as JSON, the
// growth of resident memory and the tensor memory in use, once the mapped file is collected (the
// mapping goes when the collector finalizes its buffer, which can take more than one cycle).
import * as sm from "../../src/index.ts";

sm.array([1]).eval(); // the device and runtime, which are not the model's
Bun.gc(true);
const before = process.memoryUsage().rss;
const loaded = await sm.lm.load(process.argv[2]!);
for (let i = 0; i < 10; i++) {
  await Bun.sleep(50);
  Bun.gc(true);
}
const rss = process.memoryUsage().rss - before;
console.log(JSON.stringify({ rss, active: sm.getActiveMemory(), layers: loaded.config.numLayers }));
