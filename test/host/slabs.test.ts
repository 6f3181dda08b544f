// The small-buffer slabs of the Metal backend (shim/common/slab.c): the allocator is portable C,
// so it is built here with a small harness (test/host/slab-harness.c) and driven through bun:ffi.
// What only a Mac runs is the Metal side: wrapping each slab's pages in one MTLBuffer and binding
// slots at their offsets (docs/metal.md).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { dlopen, FFIType, ptr, suffix, toArrayBuffer, type Pointer } from "bun:ffi";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { zigCommand } from "../../src/runtime/native.ts";

const root = join(import.meta.dir, "..", "..");
const MIN_SLOT = 256;
const MAX_SLOT = 8192;

function build() {
  const zig = zigCommand();
  if (!zig) throw new Error("zig is needed to build the slab harness");
  const dir = mkdtempSync(join(tmpdir(), "smelt-slab-"));
  const lib = join(dir, `libslab.${suffix}`);
  const cmd = [...zig, "cc", "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-shared", "-fPIC",
    "-I", join(root, "shim", "common"), join(root, "shim", "common", "slab.c"),
    join(root, "test", "host", "slab-harness.c"), "-o", lib];
  const run = Bun.spawnSync({ cmd, stdout: "pipe", stderr: "pipe" });
  if (run.exitCode !== 0) throw new Error(`building the slab harness failed:\n${run.stderr.toString()}`);
  const { u64, i32, ptr: p } = FFIType;
  const none = FFIType.void;
  const opened = dlopen(lib, {
    harness_pool_new: { args: [u64], returns: p },
    harness_pool_free: { args: [p], returns: none },
    harness_slot_bytes: { args: [u64], returns: u64 },
    harness_alloc: { args: [p, u64, p], returns: i32 },
    harness_free: { args: [p, p], returns: none },
    harness_live: { args: [p, p], returns: i32 },
    harness_stats: { args: [p, p], returns: none },
    harness_made: { args: [], returns: u64 },
    harness_released: { args: [], returns: u64 },
    harness_refuse_next: { args: [], returns: none },
  });
  return { dir, symbols: opened.symbols, close: () => opened.close() };
}

// Only the harness needs Zig; a machine without it (the GPU machine runs the suite with a library
// built elsewhere) skips these tests and says so.
const haveZig = zigCommand() !== null;
if (!haveZig) console.log("slabs.test.ts: SKIPPED: no Zig to build the slab harness (shim/common/slab.c)");

let h: ReturnType<typeof build>;
beforeAll(() => {
  if (haveZig) h = build();
});
afterAll(() => {
  h?.close();
  if (h) rmSync(h.dir, { recursive: true, force: true });
});

const n = (v: number | bigint) => Number(v);

/** One smelt_slot as JS sees it; `raw` is the struct itself, passed back to free and live. */
type Slot = { raw: BigUint64Array; slab: number; owner: number; memory: number; offset: number; bytes: number };

function alloc(pool: Pointer, length: number): Slot | null {
  const raw = new BigUint64Array(5);
  if (h.symbols.harness_alloc(pool, length, ptr(raw)) !== 0) return null;
  const [slab, owner, memory, offset, bytes] = Array.from(raw, Number);
  return { raw, slab: slab!, owner: owner!, memory: memory!, offset: offset!, bytes: bytes! };
}
const free = (pool: Pointer, s: Slot) => h.symbols.harness_free(pool, ptr(s.raw));
const live = (pool: Pointer, s: Slot) => h.symbols.harness_live(pool, ptr(s.raw)) === 1;
const bytesOf = (s: Slot) => new Uint8Array(toArrayBuffer(s.memory as Pointer, 0, s.bytes));
function stats(pool: Pointer) {
  const out = new BigUint64Array(4);
  h.symbols.harness_stats(pool, ptr(out));
  const [slabs, slabBytes, slots, slotBytes] = Array.from(out, Number);
  return { slabs: slabs!, slabBytes: slabBytes!, slots: slots!, slotBytes: slotBytes! };
}
function newPool(slabBytes: number): Pointer {
  const pool = h.symbols.harness_pool_new(slabBytes);
  if (typeof pool !== "number") throw new Error(`no pool of ${slabBytes}-byte slabs`);
  return pool;
}

describe.skipIf(!haveZig)("small-buffer slabs (shim/common/slab.c)", () => {
  test("size classes are powers of two from 256 to 8192 bytes; larger requests get no slot", () => {
    const cases: [number, number][] = [[0, 256], [1, 256], [256, 256], [257, 512], [1000, 1024], [2048, 2048],
      [4097, 8192], [8192, 8192], [8193, 0], [1 << 20, 0]];
    for (const [length, bytes] of cases) expect([length, n(h.symbols.harness_slot_bytes(length))]).toEqual([length, bytes]);
    const pool = newPool(16384);
    expect(alloc(pool, MAX_SLOT + 1)).toBeNull();
    expect(stats(pool).slabs).toBe(0);
    h.symbols.harness_pool_free(pool);
  });

  test("a pool needs slabs that are a whole number of the largest slot, at most 4 GiB", () => {
    for (const bad of [0, 1000, MAX_SLOT + 256, 2 ** 32 + MAX_SLOT]) expect(h.symbols.harness_pool_new(bad)).toBeNull();
    const ok = h.symbols.harness_pool_new(3 * MAX_SLOT);
    expect(ok).not.toBeNull();
    h.symbols.harness_pool_free(ok!);
  });

  test("a freed slot handed out again reads zero, though its last user wrote every byte", () => {
    const pool = newPool(16384);
    const keep = alloc(pool, 300)!; // keeps the slab alive, so the freed slot is reused, not released
    const a = alloc(pool, 400)!;
    expect(a.slab).toBe(keep.slab);
    bytesOf(a).fill(0xa5);
    free(pool, a);
    const b = alloc(pool, 512)!;
    expect([b.slab, b.offset]).toEqual([a.slab, a.offset]);
    expect(bytesOf(b).every((v) => v === 0)).toBe(true);
    free(pool, b);
    free(pool, keep);
    h.symbols.harness_pool_free(pool);
  });

  test("a slab is released when its last slot is freed, and one with room is used before a new one is made", () => {
    const slabBytes = 16384;
    const perSlab = slabBytes / MAX_SLOT;
    const pool = newPool(slabBytes);
    const made0 = n(h.symbols.harness_made());
    const released0 = n(h.symbols.harness_released());
    const slots = Array.from({ length: 3 * perSlab }, () => alloc(pool, MAX_SLOT)!);
    const slabOf = (i: number) => slots[i * perSlab]!.slab;
    expect(new Set(slots.map((s) => s.slab)).size).toBe(3);
    expect(n(h.symbols.harness_made()) - made0).toBe(3);
    // a slot back in the last slab filled, then in the first: each is refilled, no fourth slab made
    const refill = (i: number) => {
      free(pool, slots[i * perSlab]!);
      const s = alloc(pool, MAX_SLOT)!;
      expect(s.slab).toBe(slabOf(i));
      expect(n(h.symbols.harness_made()) - made0).toBe(3);
      return s;
    };
    refill(2);
    const first = refill(0);
    // two slots back at once: the slab filled first moves out of the way of the other
    free(pool, slots[perSlab]!);
    free(pool, slots[2 * perSlab + 1]!);
    const both = [alloc(pool, MAX_SLOT)!, alloc(pool, MAX_SLOT)!];
    expect(new Set(both.map((s) => s.slab))).toEqual(new Set([slabOf(1), slabOf(2)]));
    expect(n(h.symbols.harness_made()) - made0).toBe(3);
    for (const s of [...slots.slice(1, perSlab), first]) free(pool, s);
    expect(n(h.symbols.harness_released()) - released0).toBe(1);
    expect(stats(pool)).toEqual({ slabs: 2, slabBytes: 2 * slabBytes, slots: 2 * perSlab, slotBytes: 2 * slabBytes });
    h.symbols.harness_pool_free(pool); // the rest, still handed out, go with the pool
    expect(n(h.symbols.harness_released()) - released0).toBe(3);
  });

  test("a double free is ignored, and only slots handed out count as live", () => {
    const pool = newPool(16384);
    const keep = alloc(pool, 8)!;
    const a = alloc(pool, 8)!;
    expect([live(pool, keep), live(pool, a)]).toEqual([true, true]);
    free(pool, a);
    expect(live(pool, a)).toBe(false);
    free(pool, a);
    expect(stats(pool).slots).toBe(1);
    // a slot whose numbers do not match its slab's is not live
    const shifted = { ...keep, raw: keep.raw.slice() };
    shifted.raw[3] = BigInt(keep.offset + 16);
    expect(live(pool, shifted)).toBe(false);
    expect(live(pool, { ...keep, raw: new BigUint64Array(5) })).toBe(false);
    free(pool, keep);
    // its slab is gone: the stale slot is not live (the pointer is only compared)
    expect(live(pool, keep)).toBe(false);
    h.symbols.harness_pool_free(pool);
  });

  test("when no slab memory can be made the request fails and nothing changes", () => {
    const pool = newPool(16384);
    const before = stats(pool);
    h.symbols.harness_refuse_next();
    expect(alloc(pool, 100)).toBeNull();
    expect(stats(pool)).toEqual(before);
    const s = alloc(pool, 100)!;
    expect(s).not.toBeNull();
    free(pool, s);
    h.symbols.harness_pool_free(pool);
  });

  test("random allocations and frees keep slots apart, aligned, zeroed and counted", () => {
    type Op = { alloc: number } | { free: number };
    const op = fc.oneof(
      { weight: 3, arbitrary: fc.integer({ min: 0, max: MAX_SLOT + 600 }).map((alloc): Op => ({ alloc })) },
      { weight: 2, arbitrary: fc.nat().map((free): Op => ({ free })) },
    );
    fc.assert(
      fc.property(fc.constantFrom(16384, 32768), fc.array(op, { maxLength: 300 }), (slabBytes, ops) => {
        const pool = newPool(slabBytes);
        const made0 = n(h.symbols.harness_made());
        const released0 = n(h.symbols.harness_released());
        const held: Slot[] = [];
        const base = new Map<number, { memory: number; owner: number }>();
        for (const o of ops) {
          if ("alloc" in o) {
            const s = alloc(pool, o.alloc);
            if (o.alloc > MAX_SLOT) {
              expect(s).toBeNull();
              continue;
            }
            expect(s).not.toBeNull();
            const slot = s!;
            expect(slot.bytes).toBe(Math.max(MIN_SLOT, 2 ** Math.ceil(Math.log2(Math.max(o.alloc, 1)))));
            expect(slot.offset % slot.bytes).toBe(0);
            expect(slot.offset + slot.bytes).toBeLessThanOrEqual(slabBytes);
            // every slot of a slab sits at its offset from the same memory, with the same owner
            const mine = { memory: slot.memory - slot.offset, owner: slot.owner };
            expect(base.get(slot.slab) ?? mine).toEqual(mine);
            base.set(slot.slab, mine);
            for (const other of held) {
              const apart = slot.memory + slot.bytes <= other.memory || other.memory + other.bytes <= slot.memory;
              expect(apart).toBe(true);
            }
            const bytes = bytesOf(slot);
            expect(bytes.every((v) => v === 0)).toBe(true);
            bytes.fill(0xa5); // as its user would
            held.push(slot);
          } else if (held.length > 0) {
            const [slot] = held.splice(o.free % held.length, 1);
            expect(live(pool, slot!)).toBe(true);
            free(pool, slot!);
            expect(live(pool, slot!)).toBe(false);
            // a released slab's slots may be made again at the same address by a new slab
            if (!held.some((s) => s.slab === slot!.slab)) base.delete(slot!.slab);
          }
          const slabs = new Set(held.map((s) => s.slab)).size;
          expect(stats(pool)).toEqual({
            slabs,
            slabBytes: slabs * slabBytes,
            slots: held.length,
            slotBytes: held.reduce((sum, s) => sum + s.bytes, 0),
          });
          expect(n(h.symbols.harness_made()) - made0 - (n(h.symbols.harness_released()) - released0)).toBe(slabs);
        }
        h.symbols.harness_pool_free(pool);
        expect(n(h.symbols.harness_made()) - made0).toBe(n(h.symbols.harness_released()) - released0);
      }),
      { seed: 20261206, numRuns: 60 },
    );
  });
});
