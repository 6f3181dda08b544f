/**
 * The JSON fixtures scripts/torch_reference.py writes (inputs and PyTorch's output per case), and
 * one describe block per file that checks every case's op is known before running the cases.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as sm from "../../src/index.ts";
import { type DType, roundTo } from "./helpers.ts";

export interface Encoded {
  shape: number[];
  dtype: DType;
  data: (number | string)[];
}
export type Params = Record<string, unknown>;
export interface Case {
  name: string;
  op: string;
  params: Params;
  inputs: Encoded[];
  output: Encoded;
}

export const decode = (v: number | string) => (v === "nan" ? NaN : v === "inf" ? Infinity : v === "-inf" ? -Infinity : (v as number));
export const values = (e: Encoded) => e.data.map((v) => roundTo(e.dtype, decode(v)));
export const tensor = (e: Encoded) => sm.array(values(e), e.dtype).reshape(e.shape);

const DIR = join(import.meta.dir, "../fixtures/torch");

/** A describe block per fixture file: a coverage check, then `run(case)` as one test per case. */
export function describeFixtures(files: readonly string[], known: Record<string, unknown>, run: (c: Case) => void): void {
  for (const file of files) {
    const body = JSON.parse(readFileSync(join(DIR, `${file}.json`), "utf8")) as { torch: string; cases: Case[] };
    describe(`PyTorch ${body.torch}: ${file}`, () => {
      test("fixtures are present and cover their ops", () => {
        expect(body.cases.length).toBeGreaterThan(3);
        for (const c of body.cases) expect(known[c.op]).toBeDefined();
      });
      for (const c of body.cases) test(c.name, () => run(c));
    });
  }
}
