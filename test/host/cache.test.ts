// The host backend's on-disk kernel cache (shim/host/compiler.cpp) recovers from damaged entries:
// a module whose bytes no longer match the checksum written beside it is compiled again and
// replaced, never loaded. Each step runs in a child process (children/compile-run.ts), since a
// process that has loaded a module keeps using it.
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

setDefaultTimeout(120_000);

const cacheDir = mkdtempSync(join(tmpdir(), "smelt-cache-damage-"));
afterAll(() => rmSync(cacheDir, { recursive: true, force: true }));
// A kernel no earlier run compiled.
const nonce = `${process.pid}_${Date.now()}_${Math.floor(Math.random() * 1e9)}`;
const child = new URL("./children/compile-run.ts", import.meta.url).pathname;
const expected = [1, 8, 15, 22, 29];

interface Outcome {
  compiles: number;
  cacheHits: number;
  result: number[];
}

function run(): Outcome {
  const p = Bun.spawnSync([process.execPath, child, cacheDir, nonce], { stdout: "pipe", stderr: "pipe" });
  const err = p.stderr.toString();
  if (p.exitCode !== 0) throw new Error(`child exited ${p.exitCode} (signal ${p.signalCode}): ${err}`);
  return JSON.parse(p.stdout.toString()) as Outcome;
}

function modules(): string[] {
  return readdirSync(cacheDir).filter((f) => f.endsWith(".so") && !f.startsWith("tmp-"));
}

describe("host kernel cache", () => {
  test("a first run compiles and a second loads, with one module and its checksum on disk", () => {
    expect(run()).toEqual({ compiles: 1, cacheHits: 0, result: expected });
    expect(run()).toEqual({ compiles: 0, cacheHits: 1, result: expected });
    const [so] = modules();
    expect(modules().length).toBe(1);
    expect(readdirSync(cacheDir)).toContain(so!.replace(/\.so$/, ".sum"));
  });

  test("a truncated module is compiled again, replaced, and then loads from the cache", () => {
    const path = join(cacheDir, modules()[0]!);
    const size = statSync(path).size;
    writeFileSync(path, readFileSync(path).subarray(0, size >> 1));
    expect(run()).toEqual({ compiles: 1, cacheHits: 0, result: expected });
    expect(statSync(path).size).toBe(size);
    expect(run()).toEqual({ compiles: 0, cacheHits: 1, result: expected });
  });

  test("a module with scrambled bytes is compiled again, without loading it", () => {
    const path = join(cacheDir, modules()[0]!);
    const bytes = readFileSync(path);
    // A damaged stretch in the middle of the file, as a bad sector would leave, with headers intact.
    let s = 12345;
    for (let i = bytes.length >> 2; i < (3 * bytes.length) >> 2; i++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      bytes[i] = s >>> 24;
    }
    writeFileSync(path, bytes);
    expect(run()).toEqual({ compiles: 1, cacheHits: 0, result: expected });
    expect(run()).toEqual({ compiles: 0, cacheHits: 1, result: expected });
  });

  test("a module without its checksum is compiled again", () => {
    rmSync(join(cacheDir, modules()[0]!.replace(/\.so$/, ".sum")));
    expect(run()).toEqual({ compiles: 1, cacheHits: 0, result: expected });
    expect(run()).toEqual({ compiles: 0, cacheHits: 1, result: expected });
  });

  test("temporary files of a compile killed long ago are removed; recent ones, maybe in use, stay", () => {
    const old = join(cacheDir, "tmp-0123456789abcdef-99999-0.so");
    const fresh = join(cacheDir, "tmp-0123456789abcdef-99999-1.cpp");
    writeFileSync(old, "half a module");
    writeFileSync(fresh, "a compile in progress");
    const hourAgo = Date.now() / 1000 - 3600;
    utimesSync(old, hourAgo, hourAgo);
    expect(run().result).toEqual(expected);
    const left = readdirSync(cacheDir);
    expect(left).not.toContain("tmp-0123456789abcdef-99999-0.so");
    expect(left).toContain("tmp-0123456789abcdef-99999-1.cpp");
  });

  test("two processes compiling the same new kernel at once both succeed", async () => {
    const fresh = mkdtempSync(join(tmpdir(), "smelt-cache-race-"));
    try {
      const spawn = () =>
        Bun.spawn([process.execPath, child, fresh, `${nonce}_race`], { stdout: "pipe", stderr: "pipe" });
      const procs = [spawn(), spawn()];
      const outs = await Promise.all(
        procs.map(async (p) => ({ code: await p.exited, out: await new Response(p.stdout).text(), err: await new Response(p.stderr).text() })),
      );
      for (const o of outs) {
        expect(o.err).toBe("");
        expect(o.code).toBe(0);
        expect((JSON.parse(o.out) as Outcome).result).toEqual(expected);
      }
      expect(readdirSync(fresh).filter((f) => f.startsWith("tmp-"))).toEqual([]);
    } finally {
      rmSync(fresh, { recursive: true, force: true });
    }
  });
});
