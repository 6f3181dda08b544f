import { describe, test } from "bun:test";
import { dev, expectEqual, kernelFile, read, runGroups, runThreads } from "./helpers.ts";

const kernels = { ids: kernelFile("thread_ids.metal"), dispatch: kernelFile("dispatch_attributes.metal") };
const kernel = (name: string) => (name === "ids_grid" ? kernels.dispatch : kernels.ids)(name);
type V3 = [number, number, number];

interface ThreadIds {
  tpig: V3;
  tpitg: V3;
  tgpig: V3;
  tptg: V3; // this threadgroup's own size: smaller at the far edges of a non-uniform grid
  tpg: V3;
  dtptg: V3;
  tgpg: V3;
  lane: number;
  sg: number;
  tiitg: number;
  sgptg: number;
}

/** What Metal reports to each thread of a grid of `grid` threads cut into `group`-sized threadgroups. */
function geometry(grid: V3, group: V3): ThreadIds[] {
  const groups = grid.map((g, d) => Math.ceil(g / group[d]!)) as V3;
  const out: ThreadIds[] = [];
  for (let z = 0; z < grid[2]; z++) {
    for (let y = 0; y < grid[1]; y++) {
      for (let x = 0; x < grid[0]; x++) {
        const p: V3 = [x, y, z];
        const tgpig = p.map((v, d) => Math.floor(v / group[d]!)) as V3;
        const tpitg = p.map((v, d) => v % group[d]!) as V3;
        const tptg = tgpig.map((g, d) => Math.min(group[d]!, grid[d]! - g * group[d]!)) as V3;
        const tiitg = tpitg[0] + tpitg[1] * tptg[0] + tpitg[2] * tptg[0] * tptg[1];
        out.push({
          tpig: p,
          tpitg,
          tgpig,
          tptg,
          tpg: grid,
          dtptg: group,
          tgpg: groups,
          lane: tiitg % 32,
          sg: Math.floor(tiitg / 32),
          tiitg,
          sgptg: Math.ceil((tptg[0] * tptg[1] * tptg[2]) / 32),
        });
      }
    }
  }
  return out;
}

const FIELDS_1D = ["tpig", "tpitg", "tgpig", "tptg", "tpg", "lane", "sg", "tiitg"];
const FIELDS_2D = [
  ...["tpig", "tpitg", "tgpig", "tptg", "tpg"].flatMap((f) => [`${f}.x`, `${f}.y`]),
  "lane",
  "sg",
  "tiitg",
];
const FIELDS_3D = [
  ...["tpig", "tpitg", "tgpig", "tptg", "tpg"].flatMap((f) => [`${f}.x`, `${f}.y`, `${f}.z`]),
  "lane",
  "sg",
  "tiitg",
];
const FIELDS_GRID = ["dtptg.x", "dtptg.y", "dtptg.z", "tgpg.x", "tgpg.y", "tgpg.z", "threads_per_simdgroup", "sgptg"];

function record(t: ThreadIds, dims: 1 | 2 | 3): number[] {
  const pick = (v: V3) => v.slice(0, dims);
  return [...[t.tpig, t.tpitg, t.tgpig, t.tptg, t.tpg].flatMap(pick), t.lane, t.sg, t.tiitg];
}

function check(name: string, fields: string[], grid: V3, group: V3, how: "threads" | "groups", want: number[]) {
  const words = fields.length;
  const count = grid[0] * grid[1] * grid[2];
  const out = dev.buffer(new Uint32Array(words * count).fill(0xffffffff));
  if (how === "threads") runThreads(kernel(name), [out], grid, group);
  else runGroups(kernel(name), [out], grid.map((g, d) => g / group[d]!) as V3, group);
  expectEqual(`${name} ${how} grid ${grid.join("x")} / ${group.join("x")}`, read(out, Uint32Array), want, {
    label: (k) => {
      const i = Math.floor(k / words);
      const x = i % grid[0];
      const y = Math.floor(i / grid[0]) % grid[1];
      const z = Math.floor(i / (grid[0] * grid[1]));
      return `thread (${x}, ${y}, ${z}) ${fields[k % words]}`;
    },
  });
}

describe("thread_ids.metal: every position attribute, uniform and non-uniform grids", () => {
  const cases: [V3, V3, "threads" | "groups"][] = [
    [[1000, 1, 1], [256, 1, 1], "threads"],
    [[300, 1, 1], [100, 1, 1], "groups"],
  ];
  for (const [grid, group, how] of cases) {
    test(`ids_1d (uint): ${grid[0]} threads, threadgroup ${group[0]}, dispatch ${how}`, () => {
      check("ids_1d", FIELDS_1D, grid, group, how, geometry(grid, group).flatMap((t) => record(t, 1)));
    });
  }

  const cases2: [V3, V3, "threads" | "groups"][] = [
    [[37, 19, 1], [8, 8, 1], "threads"],
    [[48, 8, 1], [16, 4, 1], "groups"],
  ];
  for (const [grid, group, how] of cases2) {
    test(`ids_2d (uint2): ${grid[0]}x${grid[1]}, threadgroup ${group[0]}x${group[1]}, dispatch ${how}`, () => {
      check("ids_2d", FIELDS_2D, grid, group, how, geometry(grid, group).flatMap((t) => record(t, 2)));
    });
  }

  const cases3: [V3, V3, "threads" | "groups"][] = [
    [[13, 7, 5], [8, 4, 2], "threads"],
    [[8, 8, 8], [4, 4, 4], "groups"],
  ];
  for (const [grid, group, how] of cases3) {
    test(`ids_3d (uint3): ${grid.join("x")}, threadgroup ${group.join("x")}, dispatch ${how}`, () => {
      check("ids_3d", FIELDS_3D, grid, group, how, geometry(grid, group).flatMap((t) => record(t, 3)));
    });
  }

  test("ids_grid: dispatch_threads_per_threadgroup, threadgroups_per_grid, threads_per_simdgroup, simdgroups_per_threadgroup", () => {
    const grid: V3 = [13, 7, 5];
    const group: V3 = [8, 4, 2];
    const want = geometry(grid, group).flatMap((t) => [...t.dtptg, ...t.tgpg, 32, t.sgptg]);
    check("ids_grid", FIELDS_GRID, grid, group, "threads", want);
  });
});
