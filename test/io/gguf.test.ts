// sm.io.loadGGUF against files written and dequantized by the Python gguf package
// (scripts/gguf_reference.py), and against damaged files.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { errorMessage } from "../expect-error.ts";
import { modelPath, SMOLLM2_GGUF } from "../models.ts";

const FIXTURES = join(import.meta.dir, "../fixtures/gguf");
const TINY = join(FIXTURES, "tiny.gguf");
const expected = JSON.parse(readFileSync(join(FIXTURES, "tiny.json"), "utf8")).tensors as Record<
  string,
  { type: string; shape: number[]; values: number[] }
>;

function values(t: sm.Tensor | sm.QuantizedTensor): number[] {
  return t instanceof sm.QuantizedTensor ? t.dequantize().toArray() : t.astype("float32").toArray();
}

describe("loadGGUF on a file written by gguf.GGUFWriter", () => {
  const g = sm.io.loadGGUF(TINY);

  test("header and metadata of every value type", () => {
    expect(g.version).toBe(3);
    expect(g.alignment).toBe(32);
    expect(g.metadata).toEqual({
      "general.architecture": "tiny",
      "tiny.u8": 200, "tiny.i8": -100, "tiny.u16": 60000, "tiny.i16": -30000,
      "tiny.u32": 4000000000, "tiny.i32": -2000000000, "tiny.f32": 0.25, "tiny.bool": true,
      "tiny.str": "héllo ✓", "tiny.u64": 2n ** 53n + 2n, "tiny.i64": -5, "tiny.f64": 1 / 3,
      "tiny.ints": [1, -2, 3], "tiny.strs": ["a", "", "ü c"], "tiny.nested": [[1, 2], [3]],
    });
  });

  test("tensor infos: shapes are GGUF's ne reversed, offsets aligned", () => {
    expect(g.infos.map((i) => [i.name, i.type, i.shape])).toEqual(
      Object.entries(expected).map(([name, e]) => [name, e.type, e.shape]),
    );
    for (const i of g.infos) expect(i.offset % 32).toBe(0);
  });

  test("float tensors keep their dtype; quantized ones stay quantized", () => {
    expect((g.tensors.f32 as sm.Tensor).dtype).toBe("float32");
    expect((g.tensors.f16 as sm.Tensor).dtype).toBe("float16");
    expect((g.tensors.bf16 as sm.Tensor).dtype).toBe("bfloat16");
    for (const name of ["q8_0", "q4_0", "q4_1", "q4_k", "q6_k"]) {
      const q = g.tensors[name] as sm.QuantizedTensor;
      expect(q).toBeInstanceOf(sm.QuantizedTensor);
      expect(q.format).toBe(expected[name]!.type as sm.QuantFormat);
      expect([...q.shape]).toEqual(expected[name]!.shape);
      expect(q.blocks.dtype).toBe("uint8");
      expect(q.blocks.shape).toEqual([g.infos.find((i) => i.name === name)!.nbytes]);
    }
  });

  for (const [name, e] of Object.entries(expected)) {
    test(`${name} (${e.type}) values match gguf's dequantization`, () => {
      const t = g.tensors[name]!;
      const got = values(t);
      expect(got.length).toBe(e.values.length);
      // The same float32 operations in the same order as gguf's NumPy code: equal on host; Metal may fuse a multiply-add.
      let worst = 0;
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - e.values[i]!) / Math.max(1e-3, Math.abs(e.values[i]!)));
      expect(worst).toBeLessThanOrEqual(2 ** -22);
      if (t instanceof sm.QuantizedTensor) expect(t.dequantize().shape).toEqual(e.shape);
    });
  }
});

describe("QuantizedTensor.fromBytes", () => {
  test("checks the format, the block multiple and the byte count", () => {
    expect(errorMessage(() => sm.QuantizedTensor.fromBytes(new Uint8Array(34), [32], "Q5_0" as sm.QuantFormat))).toContain("unknown format");
    expect(errorMessage(() => sm.QuantizedTensor.fromBytes(new Uint8Array(34), [2, 16], "Q8_0"))).toContain("multiple of Q8_0's block of 32");
    expect(errorMessage(() => sm.QuantizedTensor.fromBytes(new Uint8Array(33), [32], "Q8_0"))).toContain("needs 34 bytes, got 33");
  });
  test("Q8_0 by hand: d = 0.5, quants -128, 127, 3", () => {
    const block = new Uint8Array(34);
    block.set([0x00, 0x38]); // float16 0.5
    block.set([0x80, 0x7f, 0x03], 2);
    expect(sm.QuantizedTensor.fromBytes(block, [32], "Q8_0").dequantize().toArray().slice(0, 4)).toEqual([-64, 63.5, 1.5, 0]);
  });
});

describe("loadGGUF on damaged files", () => {
  const good = new Uint8Array(readFileSync(TINY));
  const dir = mkdtempSync(join(tmpdir(), "smelt-gguf-"));
  let n = 0;
  const load = (bytes: Uint8Array) => {
    const path = join(dir, `bad${n++}.gguf`);
    writeFileSync(path, bytes);
    const message = errorMessage(() => sm.io.loadGGUF(path));
    expect(message).toContain(path);
    return message;
  };
  const patched = (at: number, write: (v: DataView) => void) => {
    const b = good.slice();
    write(new DataView(b.buffer, at));
    return b;
  };
  /** Where the tensor infos start: just after the last metadata value (the nested array's last int32 3). */
  const infoOf = (name: string) => {
    const key = new TextEncoder().encode(name);
    for (let i = 0; i < good.length; i++) {
      if (good[i - 8] === key.length && key.every((c, k) => good[i + k] === c) && good[i + key.length] !== 0x2e) return i + key.length;
    }
    throw new Error(`no tensor info for ${name}`);
  };

  test("every truncation is an error naming the file", () => {
    // Up to the end of the last tensor's data; the alignment padding after it may go.
    const last = sm.io.loadGGUF(TINY).infos.at(-1)!;
    for (const cut of [0, 3, 7, 15, 23, 40, 200, 500, 880, 890, 1000, last.offset + last.nbytes - 1]) {
      const message = load(good.subarray(0, cut));
      expect(message).toMatch(/truncated or corrupt|bytes left can hold/);
    }
  });
  test("not a GGUF file, or an unknown version", () => {
    expect(load(new TextEncoder().encode("PK\x03\x04 not a model file at all"))).toContain("not a GGUF file");
    expect(load(patched(4, (v) => v.setUint32(0, 7, true)))).toContain("GGUF version 7 is not supported");
  });
  test("counts and lengths past the file's size allocate nothing", () => {
    expect(load(patched(8, (v) => v.setBigUint64(0, 2n ** 62n, true)))).toContain("tensor count at byte 8 is 4611686018427387904, more than");
    expect(load(patched(16, (v) => v.setBigUint64(0, 2n ** 40n, true)))).toContain("metadata count");
    expect(load(patched(24, (v) => v.setBigUint64(0, 2n ** 50n, true)))).toContain("length of key 0");
    // The element count of tiny.ints: after its key, value type (9) and element type (5).
    const ints = infoOf("tiny.ints") + 8;
    expect(load(patched(ints, (v) => v.setBigUint64(0, 2n ** 61n, true)))).toContain("element count of tiny.ints");
  });
  test("a tensor of an unknown or unsupported type names the tensor", () => {
    const type = infoOf("q8_0") + 4 + 2 * 8;
    expect(load(patched(type, (v) => v.setUint32(0, 77, true)))).toContain("tensor q8_0 has unknown type 77");
    expect(load(patched(type, (v) => v.setUint32(0, 6, true)))).toContain("tensor q8_0 has type Q5_0, which smelt does not read");
  });
  test("a tensor that runs past the end of the file, or has a huge dimension", () => {
    const info = infoOf("q6_k");
    expect(load(patched(info + 4 + 2 * 8 + 4, (v) => v.setBigUint64(0, 4096n, true)))).toContain("tensor q6_k (Q6_K, 1260 bytes at byte");
    expect(load(patched(info + 4 + 8, (v) => v.setBigUint64(0, 2n ** 60n, true)))).toContain("tensor q6_k has dimension 1152921504606846976");
    const last = sm.io.loadGGUF(TINY).infos.at(-1)!;
    expect(load(good.subarray(0, last.offset + 1))).toContain("runs past the end of the file");
  });
  test("a missing file", () => {
    expect(errorMessage(() => sm.io.loadGGUF(join(dir, "absent.gguf")))).toContain("cannot open");
    rmSync(dir, { recursive: true });
  });
});

const model = modelPath(SMOLLM2_GGUF);
describe.skipIf(!model)(`loadGGUF on ${SMOLLM2_GGUF}`, () => {
  test("metadata, and real tensors against gguf's dequantization", () => {
    const g = sm.io.loadGGUF(model!);
    expect(g.metadata["general.architecture"]).toBe("llama");
    expect(g.metadata["llama.block_count"]).toBe(30);
    expect((g.metadata["tokenizer.ggml.tokens"] as string[]).length).toBe(49152);
    expect(g.infos.length).toBe(272);
    const checks = JSON.parse(readFileSync(join(FIXTURES, "smollm2.json"), "utf8")) as Record<
      string,
      { type: string; shape: number[]; sum: number; sumsq: number; at: number[]; values: number[] }
    >;
    for (const [name, c] of Object.entries(checks)) {
      const t = g.tensors[name]!;
      expect(t instanceof sm.QuantizedTensor ? t.format : "F32").toBe(c.type as sm.QuantFormat);
      expect([...t.shape]).toEqual(c.shape);
      const v = values(t);
      let sum = 0, sumsq = 0;
      for (const x of v) { sum += x; sumsq += x * x; }
      expect(Math.abs(sum - c.sum)).toBeLessThan(1e-6 * c.sumsq + 1e-9);
      expect(Math.abs(sumsq - c.sumsq)).toBeLessThan(1e-6 * c.sumsq);
      expect(c.at.map((i) => v[i]!)).toEqual(c.values);
    }
    for (const t of Object.values(g.tensors)) t.dispose();
  }, 120_000);
});
