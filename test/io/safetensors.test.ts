// safetensors: both directions against files of the Python package (scripts/safetensors_reference.py).
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sm from "../../src/index.ts";

setDefaultTimeout(120_000);
const dir = mkdtempSync(join(tmpdir(), "smelt-st-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const fixture = join(import.meta.dir, "../fixtures/safetensors/python.safetensors");
const expected = JSON.parse(readFileSync(join(import.meta.dir, "../fixtures/safetensors/python.json"), "utf8")) as Record<string, { dtype: string; shape: number[]; values: number[] }>;
const asNumbers = (t: sm.Tensor) => t.toArray<number | boolean>().map(Number);

test("loads every dtype of a file the Python package wrote, with its metadata", () => {
  const { tensors, metadata } = sm.io.loadSafetensors(fixture);
  expect(metadata).toEqual({ format: "pt", note: "smelt fixture" });
  expect(Object.keys(tensors).sort()).toEqual(Object.keys(expected).sort());
  for (const [name, want] of Object.entries(expected)) {
    const t = tensors[name]!;
    expect(t.dtype as string).toBe(want.dtype);
    expect(t.shape).toEqual(want.shape);
    expect(asNumbers(t)).toEqual(want.values);
  }
});

test("saving what was loaded gives the Python package's bytes exactly", () => {
  const { tensors, metadata } = sm.io.loadSafetensors(fixture);
  const out = join(dir, "again.safetensors");
  sm.io.saveSafetensors(out, tensors, metadata);
  expect(Buffer.compare(readFileSync(out), readFileSync(fixture))).toBe(0);
  expect(readdirSync(dir).filter((f) => f.includes(".tmp-"))).toEqual([]);
});

// The reading side needs Python's safetensors package at test time; the writing side is checked
// against committed files, so only this direction depends on it.
const python = Bun.spawnSync(["python3", "-c", "import safetensors, numpy"]).exitCode === 0;
if (!python) console.warn("skipped: 'the Python package reads what smelt writes' needs python3 with safetensors and numpy (pip install safetensors numpy)");

test.skipIf(!python)("the Python package reads what smelt writes", () => {
  const out = join(dir, "smelt.safetensors");
  const tensors = {
    w: sm.array([[1.5, -2], [3, 0.25]]),
    h: sm.array([0.5, -1, 65504], "float16"),
    b: sm.array([1, -0.5], "bfloat16"),
    i: sm.array([-3, 7], "int32"),
    m: sm.array([false, true]),
    // a view: saved as its elements, not its storage
    t: sm.array([[1, 2, 3], [4, 5, 6]]).T,
  };
  sm.io.saveSafetensors(out, tensors, { kind: "test" });
  const r = Bun.spawnSync(["python3", "scripts/safetensors_reference.py", "check", out], { cwd: join(import.meta.dir, "../..") });
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  const got = JSON.parse(r.stdout.toString());
  expect(got.metadata).toEqual({ kind: "test" });
  for (const [k, t] of Object.entries(tensors)) {
    expect(got.tensors[k].shape).toEqual(t.shape);
    expect(got.tensors[k].values).toEqual(asNumbers(t));
  }
});

function corrupt(name: string, bytes: Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, bytes);
  return p;
}
function withHeader(header: unknown, data: Uint8Array, claimed?: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(claimed ?? json.byteLength), true);
  out.set(json, 8);
  out.set(data, 8 + json.byteLength);
  return out;
}

test("a truncated or corrupt file is a SmeltError naming the file and the problem", () => {
  const good = readFileSync(fixture);
  const cases: [string, Uint8Array, RegExp][] = [
    ["short.st", good.subarray(0, 5), /fewer than the 8/],
    ["cut.st", good.subarray(0, good.byteLength - 3), /truncated/],
    ["huge.st", withHeader({}, new Uint8Array(0), 2 ** 40), /more than the 100000000 allowed/],
    ["claims.st", withHeader({}, new Uint8Array(0), 5000), /claims 5000 bytes but the file has only/],
    ["json.st", withHeader("x", new Uint8Array(0), undefined).map((b, i) => (i === 9 ? 0x7b : b)), /not valid UTF-8 JSON|not a JSON object/],
    ["dtype.st", withHeader({ a: { dtype: "F64", shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8)), /dtype "F64", which smelt does not have/],
    ["size.st", withHeader({ a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)), /needs 12 bytes/],
    // A header claiming a tensor of 2^40 bytes must fail on the file's size, not by allocating it.
    ["big.st", withHeader({ a: { dtype: "U8", shape: [2 ** 40], data_offsets: [0, 2 ** 40] } }, new Uint8Array(4)), /file holds only 4/],
    ["gap.st", withHeader({ a: { dtype: "U8", shape: [2], data_offsets: [2, 4] } }, new Uint8Array(4)), /expected 0/],
    ["bool.st", withHeader({ a: { dtype: "BOOL", shape: [2], data_offsets: [0, 2] } }, new Uint8Array([1, 7])), /bool bytes must be 0 or 1/],
  ];
  for (const [name, bytes, re] of cases) {
    const p = corrupt(name, bytes);
    let err: unknown;
    try {
      sm.io.loadSafetensors(p);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(sm.SmeltError);
    expect((err as Error).message).toContain(p);
    expect((err as Error).message).toMatch(re);
  }
  expect(() => sm.io.loadSafetensors(join(dir, "missing.st"))).toThrow(/cannot open/);
});

test("saving refuses what is not a tensor or not string metadata", () => {
  expect(() => sm.io.saveSafetensors(join(dir, "x.st"), { a: [1, 2] as never })).toThrow(/"a" is not a tensor/);
  expect(() => sm.io.saveSafetensors(join(dir, "x.st"), { a: sm.zeros([1]) }, { n: 1 as never })).toThrow(/must be a string/);
});
