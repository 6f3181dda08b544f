// Module trees: paths, freezing, update, load/save, and nn.valueAndGrad over trainable parameters.
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sm from "../../src/index.ts";

setDefaultTimeout(120_000);
const nn = sm.nn;
const dir = mkdtempSync(join(tmpdir(), "smelt-nn-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

class Block extends nn.Module {
  proj = new nn.Linear(4, 4);
  norm = new nn.RMSNorm(4);
  override forward(x: sm.Tensor) {
    return this.norm.forward(this.proj.forward(x));
  }
}
class Net extends nn.Module {
  embed = new nn.Embedding(10, 4);
  layers = [new Block(), new Block()];
  head = new nn.Linear(4, 3, { bias: false });
  scale = 2; // a plain field: not a parameter
  override forward(ids: sm.Tensor) {
    let h = this.embed.forward(ids);
    for (const l of this.layers) h = l.forward(h);
    return this.head.forward(h);
  }
}

const names = (m: sm.nn.Module, trainable = false) => m.namedParameters({ trainable }).map(([k]) => k);

test("fields are parameters and children, arrays of modules are lists with dotted paths", () => {
  const net = new Net();
  expect(names(net)).toEqual([
    "embed.weight", "layers.0.proj.weight", "layers.0.proj.bias", "layers.0.norm.weight",
    "layers.1.proj.weight", "layers.1.proj.bias", "layers.1.norm.weight", "head.weight",
  ]);
  expect(net.namedModules().map(([p]) => p)).toEqual(["", "embed", "layers.0", "layers.0.proj", "layers.0.norm", "layers.1", "layers.1.proj", "layers.1.norm", "head"]);
  const p = net.parameters() as any;
  expect(p.layers[1].proj.weight).toBe(net.layers[1]!.proj.weight);
  expect(Object.keys(p)).toEqual(["embed", "layers", "head"]);
  expect(net.head.weight.shape).toEqual([3, 4]);
});

test("freeze and unfreeze by key, dotted path or whole module", () => {
  const net = new Net();
  net.freeze({ keys: "bias" });
  expect(names(net, true)).not.toContain("layers.0.proj.bias");
  expect(names(net, true)).toContain("layers.0.proj.weight");
  net.unfreeze({ keys: "layers.1.proj.bias" });
  expect(names(net, true).filter((n) => n.endsWith("bias"))).toEqual(["layers.1.proj.bias"]);
  net.freeze();
  expect(names(net, true)).toEqual([]);
  expect(net.trainableParameters()).toEqual({ layers: [{}, {}] } as never);
  net.layers[0]!.unfreeze();
  expect(names(net, true)).toEqual(["layers.0.proj.weight", "layers.0.proj.bias", "layers.0.norm.weight"]);
  expect(() => net.freeze({ keys: "nope" })).toThrow(/freeze: no parameter named "nope"/);
});

test("update is strict about names and shapes unless told otherwise", () => {
  const net = new Net();
  const w = sm.ones([3, 4]);
  net.update({ head: { weight: w } });
  expect(net.head.weight).toBe(w);
  expect(() => net.update({ head: { weight: sm.ones([4, 3]) } })).toThrow(/update: head.weight has shape \[3,4\], got \[4,3\]/);
  expect(() => net.update({ head: { wieght: w } } as never)).toThrow(/has no parameter or module head.wieght/);
  net.update({ head: { wieght: w } } as never, { strict: false });
  net.update({ layers: [{}, { norm: { weight: sm.full([4], 3) } }] });
  expect(net.layers[1]!.norm.weight.toArray()).toEqual([3, 3, 3, 3]);
});

test("train/eval reach every module; applyToModules visits each with its path", () => {
  const net = new Net();
  expect(net.training).toBe(true);
  net.eval();
  expect(net.layers[1]!.norm.training).toBe(false);
  net.train();
  expect(net.layers[1]!.norm.training).toBe(true);
  const seen: string[] = [];
  net.applyToModules((p, m) => seen.push(`${p}:${m.constructor.name}`));
  expect(seen).toContain("layers.1.proj:Linear");
});

test("saveWeights then loadWeights round-trips; mismatches are listed", () => {
  const a = new Net();
  const b = new Net();
  const path = join(dir, "net.safetensors");
  a.saveWeights(path);
  const ids = sm.array([[1, 2, 3]], "int32");
  expect(b.forward(ids).toArray()).not.toEqual(a.forward(ids).toArray());
  b.loadWeights(path);
  expect(b.forward(ids).toArray()).toEqual(a.forward(ids).toArray());
  expect(sm.io.loadSafetensors(path).tensors["layers.1.proj.bias"]!.toArray()).toEqual(a.layers[1]!.proj.bias!.toArray());

  const entries: [string, sm.Tensor][] = [["head.weight", sm.zeros([3, 5])], ["extra.weight", sm.zeros([1])]];
  let msg = "";
  try {
    b.loadWeights(entries);
  } catch (e) {
    expect(e).toBeInstanceOf(sm.SmeltError);
    msg = (e as Error).message;
  }
  expect(msg).toContain("unexpected: extra.weight");
  expect(msg).toContain("missing: embed.weight, layers.0.proj.weight");
  expect(msg).toContain("head.weight has shape [3,5], the module's is [3,4]");
  // Non-strict: names may be missing or extra; shapes still must match.
  b.loadWeights([["head.weight", sm.zeros([3, 4])], ["extra.weight", sm.zeros([1])]], { strict: false });
  expect(b.head.weight.toArray().every((v) => v === 0)).toBe(true);
});

test("nn.valueAndGrad differentiates trainable parameters only, matching sm.grad", () => {
  const net = new Net();
  net.freeze({ keys: "embed.weight" });
  const ids = sm.array([[1, 2, 3, 4]], "int32");
  const y = sm.array([[0, 2, 1, 1]], "int32");
  const lossFn = (m: Net, x: sm.Tensor, t: sm.Tensor) => nn.losses.crossEntropy(m.forward(x), t, { reduction: "mean" });
  const [loss, grads] = nn.valueAndGrad(net, lossFn)(net, ids, y);
  expect(Object.keys(grads)).toEqual(["layers", "head"]);
  // The model keeps its own parameters after the call.
  expect(names(net)).toContain("embed.weight");
  expect((net.parameters() as any).head.weight).toBe(net.head.weight);
  // Same gradient through the plain transform, with the head weight as the argument.
  const g = sm.grad((w: sm.Tensor) => {
    const h0 = net.head.weight;
    net.head.weight = w;
    try {
      return lossFn(net, ids, y);
    } finally {
      net.head.weight = h0;
    }
  })(net.head.weight);
  const got = ((grads as any).head.weight as sm.Tensor).toArray();
  const want = (g as sm.Tensor).toArray();
  for (let i = 0; i < want.length; i++) expect(got[i]!).toBeCloseTo(want[i]!, 6);
  expect(Number.isFinite(loss instanceof sm.Tensor ? loss.item() : NaN)).toBe(true);
});

test("layers check their inputs where they are called", () => {
  expect(() => new nn.Linear(3, 0)).toThrow(/Linear: outDims must be a positive integer, got 0/);
  expect(() => new nn.Linear(3, 2).forward(sm.ones([2, 4]))).toThrow(/Linear: the input's last dimension must be 3/);
  expect(() => new nn.Dropout(1)).toThrow(/Dropout: p must be in \[0, 1\)/);
  expect(() => new nn.MultiHeadAttention(10, 3)).toThrow(/multiple of numHeads/);
});

test("frozen parameters cost no backward work", () => {
  class Deep extends nn.Module {
    a = new nn.Linear(32, 32, { key: sm.random.key(1) });
    b = new nn.Linear(32, 32, { key: sm.random.key(2) });
    override forward(x: sm.Tensor) {
      return this.b.forward(nn.relu(this.a.forward(x)));
    }
  }
  const x = sm.random.normal([8, 32], "float32", 0, 1, sm.random.key(3)).eval();
  const kernels = (m: Deep) => {
    const f = nn.valueAndGrad(m, (mm: Deep, xx: sm.Tensor) => mm.forward(xx).square().mean());
    sm.eval(f(m, x));
    const out = f(m, x);
    sm.resetStats();
    sm.eval(out);
    return sm.stats().kernelsDispatched;
  };
  const m = new Deep();
  sm.eval(m.parameters());
  const all = kernels(m);
  m.a.freeze();
  const frozenFirst = kernels(m);
  // The first layer's weight and bias gradients, and the backward through it, are gone.
  expect(frozenFirst).toBeLessThan(all);
  m.freeze();
  m.b.unfreeze({ keys: "bias" });
  const onlyBias = kernels(m);
  console.log(`backward+forward kernels: all trainable ${all}, first layer frozen ${frozenFirst}, only the last bias ${onlyBias}`);
  expect(onlyBias).toBeLessThan(frozenFirst);
});
