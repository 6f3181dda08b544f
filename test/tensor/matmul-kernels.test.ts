// The matmul kernels of metal/matmul.metal, each variant run on host (the simdgroup_matrix one
// under emulation), against a float64 reference and against each other, with fused epilogues.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";
import { summedProduct } from "../../src/exec/plan/matmul.ts";
import { execute, planOf, schedule } from "../../src/exec/realize.ts";
import type { Node } from "../../src/graph/node.ts";
import { withTargetEnv } from "../../src/runtime/target.ts";
import { erf } from "./helpers.ts";

setDefaultTimeout(120_000);

function data(n: number, seed: number, scale = 1): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return ((s / 2147483648) * 2 - 1) * scale;
  });
}

/** float64 reference of a (batched, broadcast) matmul over row-major arrays. */
function ref(a: Float32Array, as: number[], b: Float32Array, bs: number[]): { v: number[]; shape: number[] } {
  const M = as[as.length - 2]!, K = as[as.length - 1]!, N = bs[bs.length - 1]!;
  const ab = as.slice(0, -2), bb = bs.slice(0, -2);
  const nb = Math.max(ab.length, bb.length);
  const batch: number[] = [];
  for (let d = 0; d < nb; d++) {
    const x = ab[ab.length - nb + d] ?? 1, y = bb[bb.length - nb + d] ?? 1;
    batch.push(Math.max(x, y));
  }
  const total = batch.reduce((p, q) => p * q, 1);
  const v: number[] = [];
  for (let t = 0; t < total; t++) {
    let rest = t, aOff = 0, bOff = 0, aStride = M * K, bStride = K * N;
    for (let d = nb - 1; d >= 0; d--) {
      const id = rest % batch[d]!;
      rest = Math.floor(rest / batch[d]!);
      const ad = ab[ab.length - nb + d], bd = bb[bb.length - nb + d];
      if (ad !== undefined) {
        if (ad !== 1) aOff += id * aStride;
        aStride *= ad;
      }
      if (bd !== undefined) {
        if (bd !== 1) bOff += id * bStride;
        bStride *= bd;
      }
    }
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[aOff + i * K + k]! * b[bOff + k * N + j]!;
        v.push(s);
      }
  }
  return { v, shape: [...batch, M, N] };
}

function close(got: number[], want: number[], tol: number) {
  expect(got.length).toBe(want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / (1 + Math.abs(want[i]!)));
  if (!(worst <= tol)) throw new Error(`worst relative error ${worst} over tolerance ${tol}`);
}

function withVariant<T>(v: string, fn: () => T): T {
  return withTargetEnv(sm.device(), { SMELT_MATMUL: v }, fn);
}

const cases: [number[], number[]][] = [
  [[37, 45], [45, 29]],
  [[64, 40], [40, 64]],
  [[1, 100], [100, 33]],
  [[5, 70], [70, 3]],
  [[2, 1, 33, 40], [3, 40, 17]],
];

describe("every variant against float64", () => {
  for (const variant of ["panel", "narrow", "column", "dot", "simd", "block", "skinny"]) {
    for (const [as, bs] of cases) {
      test(`${variant}: [${as}] @ [${bs}]`, () => {
        const a = data(as.reduce((p, q) => p * q, 1), as.length * 7 + as[0]!);
        const b = data(bs.reduce((p, q) => p * q, 1), bs.length * 11 + bs[0]!);
        const { v, shape } = ref(a, as, b, bs);
        const got = withVariant(variant, () =>
          sm.tidy(() => {
            const out = sm.matmul(sm.array(a).reshape(as), sm.array(b).reshape(bs));
            expect(out.shape).toEqual(shape);
            return out.toArray() as number[];
          }),
        );
        close(got, v, 1e-5);
      });
    }
  }
});

describe("long K: dot splits it among a threadgroup's SIMD-groups, skinny loads four k ahead", () => {
  // K of several of dot's stretches (uneven, and 8 of them at most) and of 4 SIMD widths (skinny)
  // with remainders, more columns than one threadgroup of dot's; A and B contiguous and
  // transposed, as a low-rank factor's gradients read them.
  for (const variant of ["dot", "skinny"]) {
    for (const [M, K, N] of [[3, 301, 7], [70, 517, 8], [1, 1030, 16], [2, 40, 45], [1, 577, 70]] as const) {
      test(`${variant}: [${M}, ${K}] @ [${K}, ${N}], plain and transposed`, () => {
        const a = data(M * K, M + K), b = data(K * N, K + N);
        const want = ref(a, [M, K], b, [K, N]).v;
        for (const transposed of [false, true]) {
          const got = withVariant(variant, () =>
            sm.tidy(() => {
              const x = transposed ? sm.array(transpose(a, M, K)).reshape([K, M]).T : sm.array(a).reshape([M, K]);
              const y = transposed ? sm.array(transpose(b, K, N)).reshape([N, K]).T : sm.array(b).reshape([K, N]);
              return sm.matmul(x, y).toArray() as number[];
            }),
          );
          close(got, want, 1e-5);
        }
      });
    }
  }
});

/** The [cols, rows] row-major copy of a [rows, cols] matrix. */
function transpose(x: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = x[i * cols + j]!;
  return t;
}

describe("operands at any strides, read in place", () => {
  test("a.T @ b.T and a sliced operand, on every variant", () => {
    const a = data(40 * 37, 3), b = data(29 * 40, 4);
    const at: number[] = [], bt: number[] = [];
    for (let i = 0; i < 37; i++) for (let k = 0; k < 40; k++) at.push(a[k * 37 + i]!);
    for (let k = 0; k < 40; k++) for (let j = 0; j < 29; j++) bt.push(b[j * 40 + k]!);
    const { v } = ref(Float32Array.from(at), [37, 40], Float32Array.from(bt), [40, 29]);
    for (const variant of ["panel", "narrow", "column", "dot", "simd", "block", "skinny"]) {
      const got = withVariant(variant, () =>
        sm.tidy(() => sm.matmul(sm.array(a).reshape([40, 37]).T, sm.array(b).reshape([29, 40]).T).toArray() as number[]),
      );
      close(got, v, 1e-5);
    }
  });
});

describe("panel variant: B packed into 16-column panels first", () => {
  const run = (fn: () => sm.Tensor) => withVariant("panel", () => sm.tidy(() => fn().toArray() as number[]));

  test("several threadgroups of blocks, edges in both directions: [200, 300] @ [300, 261]", () => {
    const a = data(200 * 300, 31), b = data(300 * 261, 32, 0.1);
    const got = run(() => sm.matmul(sm.array(a).reshape([200, 300]), sm.array(b).reshape([300, 261])));
    close(got, ref(a, [200, 300], b, [300, 261]).v, 1e-5);
  });

  test("batches of A over one B fold into rows; a permuted A that cannot fold keeps its batches", () => {
    const a = data(4 * 25 * 30, 33), b = data(30 * 20, 34);
    const want = ref(a, [4, 25, 30], b, [30, 20]).v;
    close(run(() => sm.matmul(sm.array(a).reshape([4, 25, 30]), sm.array(b).reshape([30, 20]))), want, 1e-5);
    // the same A stored as [25, 4, 30]: batch stride 30, row stride 120
    const stored: number[] = [];
    for (let i = 0; i < 25; i++) for (let t = 0; t < 4; t++) for (let k = 0; k < 30; k++) stored.push(a[(t * 25 + i) * 30 + k]!);
    const permuted = () => sm.array(Float32Array.from(stored)).reshape([25, 4, 30]).transpose([1, 0, 2]);
    close(run(() => sm.matmul(permuted(), sm.array(b).reshape([30, 20]))), want, 1e-5);
  });

  test("half and bfloat16 operands are packed as float", () => {
    for (const dtype of ["float16", "bfloat16"] as const) {
      const a = data(40 * 50, 35), b = data(50 * 33, 36);
      const got = run(() => sm.matmul(sm.array(a).reshape([40, 50]).astype(dtype), sm.array(b).reshape([50, 33]).astype(dtype)).astype("float32"));
      const round = (x: Float32Array) => Float32Array.from(sm.tidy(() => sm.array(x).astype(dtype).astype("float32").toArray() as number[]));
      close(got, ref(round(a), [40, 50], round(b), [50, 33]).v, dtype === "float16" ? 2e-3 : 1.6e-2);
    }
  });

  test("K of 0 gives zeros; panels of a B computed in the same evaluation are freed after it", () => {
    expect(run(() => sm.matmul(sm.zeros([7, 0]), sm.zeros([0, 20])))).toEqual(new Array(140).fill(0));
    const a = sm.tidy(() => sm.array(data(64 * 64, 37)).reshape([64, 64]).eval());
    const before = sm.stats().bytesAllocated;
    const out = withVariant("panel", () => sm.tidy(() => sm.matmul(a, sm.array(data(64 * 64, 38)).reshape([64, 64]).add(1)).eval()));
    expect(sm.stats().bytesAllocated - before).toBe(64 * 64 * 4); // the output alone
    [a, out].forEach((t) => t.dispose());
  });

  test("panels of a B computed earlier are kept with it, reused, and freed with it", () => {
    // made in tidy: b is then the only handle on its storage
    const a = sm.tidy(() => sm.array(data(64 * 64, 39)).reshape([64, 64]).eval());
    const b = sm.tidy(() => sm.array(data(64 * 64, 40)).reshape([64, 64]).eval());
    const want = ref(Float32Array.from(a.toArray() as number[]), [64, 64], Float32Array.from(b.toArray() as number[]), [64, 64]).v;
    const before = sm.stats().bytesAllocated;
    const counts: number[] = [];
    for (let i = 0; i < 3; i++) {
      sm.resetStats();
      close(run(() => sm.matmul(a, b)), want, 1e-5);
      counts.push(sm.stats().kernelsDispatched);
    }
    expect(counts).toEqual([2, 1, 1]); // packed once
    expect(sm.stats().bytesAllocated - before).toBe(64 * 64 * 4); // b's panels: 4 panels of 64 rows
    // a view of the same storage at other strides is another layout, with panels of its own
    sm.resetStats();
    const bt = Float32Array.from(sm.tidy(() => b.T.toArray() as number[]));
    close(run(() => sm.matmul(a, b.T)), ref(Float32Array.from(a.toArray() as number[]), [64, 64], bt, [64, 64]).v, 1e-5);
    expect(sm.stats().kernelsDispatched).toBe(2);
    expect(sm.stats().bytesAllocated - before).toBe(2 * 64 * 64 * 4);
    b.dispose();
    expect(sm.stats().bytesAllocated - before).toBe(-64 * 64 * 4); // b and both its panels are gone
    a.dispose();
  });

  test("kept panels give way when the memory limit is reached", () => {
    const b = sm.tidy(() => sm.array(data(256 * 256, 41)).reshape([256, 256]).eval());
    const a = sm.tidy(() => sm.array(data(32 * 256, 42)).reshape([32, 256]).eval());
    run(() => sm.matmul(a, b)); // b's panels (256 KiB) are kept
    const used = sm.stats().bytesAllocated;
    sm.setMemoryLimit(used + 64 * 1024);
    try {
      // 128 KiB more than the limit allows unless the panels go
      const big = sm.zeros([32 * 1024]).eval();
      expect(sm.stats().bytesAllocated).toBeLessThan(used);
      big.dispose();
    } finally {
      sm.setMemoryLimit(Infinity);
      [a, b].forEach((t) => t.dispose());
    }
  });
});

describe("a second product summed into the first runs as more rows of K (panel variant)", () => {
  const x = data(3 * 20 * 40, 41), W = data(40 * 35, 42, 0.2), xa = data(3 * 20 * 12, 43), B = data(12 * 35, 44, 0.2);
  const xw = ref(x, [60, 40], W, [40, 35]).v, xab = ref(xa, [60, 12], B, [12, 35]).v;
  const t = () => ({
    x: sm.array(x).reshape([3, 20, 40]), W: sm.array(W).reshape([40, 35]),
    xa: sm.array(xa).reshape([3, 20, 12]), B: sm.array(B).reshape([12, 35]),
    // B stored transposed, read through a view: its rows are not contiguous
    Bt: sm.array(Array.from({ length: 35 * 12 }, (_, i) => B[(i % 12) * 35 + Math.floor(i / 12)]!)).reshape([35, 12]),
  });
  // operands computed first, as x@A is before the product that reads it in a LoRA forward
  const operands = () => {
    const v = t();
    [v.x, v.W, v.xa, v.B, v.Bt].forEach((o) => o.eval());
    return v;
  };

  test("x@W + 1.5 * (xa@B), the scale on either side or none: float64 values, W's panels kept", () => {
    const forms: [string, (v: ReturnType<typeof t>) => sm.Tensor, number][] = [
      ["right", (v) => sm.matmul(v.x, v.W).add(sm.matmul(v.xa, v.B).mul(1.5)), 1.5],
      ["left", (v) => sm.matmul(v.x, v.W).add(sm.multiply(1.5, sm.matmul(v.xa, v.B))), 1.5],
      ["none", (v) => sm.matmul(v.xa, v.B).add(sm.matmul(v.x, v.W)), 1],
      ["B transposed", (v) => sm.matmul(v.x, v.W).add(sm.matmul(v.xa, v.Bt.T).mul(1.5)), 1.5],
    ];
    for (const [name, build, scale] of forms) {
      const got = withVariant("panel", () =>
        sm.tidy(() => {
          const v = operands();
          const out = build(v);
          const n = out.node("test");
          expect(summedProduct(n, n.inputs.find((i) => i.op === "matmul" && i.inputs[0]!.shape.at(-1) === 40)!), name).not.toBeNull();
          sm.resetStats();
          const r = out.toArray() as number[];
          // W's panels (kept for later evaluations), then the product (B*scale read in place)
          expect(sm.stats().kernelsDispatched).toBe(2);
          sm.resetStats();
          expect(build(v).toArray()).toEqual(r);
          expect(sm.stats().kernelsDispatched).toBe(1); // W's panels were kept
          return r;
        }),
      );
      close(got, xw.map((v, i) => v + scale * xab[i]!), 1e-5);
    }
  });

  test("with more epilogue after the sum (gelu, a bias): float64 values", () => {
    const bias = data(35, 45);
    const got = withVariant("panel", () =>
      sm.tidy(() => {
        const v = operands();
        return sm.gelu(sm.matmul(v.x, v.W).add(sm.matmul(v.xa, v.B).mul(0.5)).add(sm.array(bias))).toArray() as number[];
      }),
    );
    const gelu = (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2));
    close(got, xw.map((v, i) => gelu(v + 0.5 * xab[i]! + bias[i % 35]!)), 1e-5);
  });

  test("not taken where it would change the arithmetic: float16 products, a tensor scale", () => {
    sm.tidy(() => {
      const v = t();
      const h = sm.matmul(v.x.astype("float16").eval(), v.W.astype("float16").eval()).add(sm.matmul(v.xa.astype("float16").eval(), v.B.astype("float16").eval()));
      const hn = h.node("test");
      expect(summedProduct(hn, hn.inputs[0]!)).toBeNull();
      const s = sm.array([1.5]).eval();
      [v.x, v.W, v.xa, v.B, v.Bt].forEach((o) => o.eval());
      const f = sm.matmul(v.x, v.W).add(sm.matmul(v.xa, v.B).mul(s));
      const fn = f.node("test");
      expect(summedProduct(fn, fn.inputs[0]!)).toBeNull();
      close(withVariant("panel", () => f.toArray() as number[]), xw.map((w, i) => w + 1.5 * xab[i]!), 1e-5);
    });
  });
});

describe("a bfloat16 product stored without an epilogue", () => {
  // The store converts the float accumulator by name: MSL 3.1 refuses an implicit float to bfloat.
  for (const variant of ["panel", "narrow", "column", "dot", "simd", "block", "skinny"]) {
    test(`${variant}: [33, 40] @ [40, 21] in bfloat16 matches float64 within bfloat rounding`, () => {
      const a = data(33 * 40, 41), b = data(40 * 21, 42);
      const round = (x: Float32Array) => Float32Array.from(sm.tidy(() => sm.array(x).astype("bfloat16").astype("float32").toArray() as number[]));
      const got = withVariant(variant, () =>
        sm.tidy(() => {
          const c = sm.matmul(sm.array(a).reshape([33, 40]).astype("bfloat16").eval(), sm.array(b).reshape([40, 21]).astype("bfloat16").eval());
          expect(c.dtype).toBe("bfloat16");
          return c.toArray() as number[];
        }),
      );
      close(got, ref(round(a), [33, 40], round(b), [40, 21]).v, 1.6e-2);
    });
  }
});

describe("the emulated simdgroup_matrix kernel and the host kernel agree on the same inputs", () => {
  for (const dtype of ["float32", "float16", "bfloat16"] as const) {
    test(`${dtype}: [3, 50, 70] @ [70, 41] with a bias, gelu and residual epilogue`, () => {
      // operands computed up front, so the kernel count is the matmul's alone
      const a = sm.array(data(3 * 50 * 70, 5)).reshape([3, 50, 70]).astype(dtype).eval();
      const w = sm.array(data(70 * 41, 6, 0.2)).reshape([70, 41]).astype(dtype).eval();
      const bias = sm.array(data(41, 7)).astype(dtype).eval();
      const res = sm.array(data(3 * 50 * 41, 8)).reshape([3, 50, 41]).astype(dtype).eval();
      const run = (v: string) =>
        withVariant(v, () => {
          sm.resetStats();
          const out = sm.tidy(() => sm.gelu(sm.matmul(a, w).add(bias)).add(res).toArray() as number[]);
          // the epilogue ran inside the matmul kernel (the panel variant first copies B into panels)
          expect(sm.stats().kernelsDispatched).toBe(v === "panel" ? 2 : 1);
          return out;
        });
      const simd = run("simd"), column = run("column"), panel = run("panel");
      close(panel, column, dtype === "float32" ? 1e-5 : dtype === "float16" ? 2e-3 : 1.6e-2);
      close(simd, column, dtype === "float32" ? 1e-5 : dtype === "float16" ? 2e-3 : 1.6e-2);
    });
  }
});

describe("LoRA forward: x@W + s*(x@A)@B", () => {
  test("the seed configuration runs as 2 matmul kernels and matches float64", () => {
    const xs = data(4 * 16 * 512, 21), Ws = data(512 * 512, 22, 0.05), As = data(512 * 8, 23, 0.05), Bs = data(8 * 512, 24, 0.05);
    const x = sm.array(xs).reshape([4, 16, 512]), W = sm.array(Ws).reshape([512, 512]);
    const A = sm.array(As).reshape([512, 8]), B = sm.array(Bs).reshape([8, 512]);
    const scale = 16 / 8;
    sm.resetStats();
    const got = sm.tidy(() => sm.matmul(x, W).add(sm.matmul(sm.matmul(x, A), B).mul(scale)).toArray() as number[]);
    // x@A, then x@W with (x@A)@B and the sum in its epilogue; on host W's panels are filled
    // first (A and B, 8 columns and rows, are read in place)
    expect(sm.stats().kernelsDispatched).toBe(sm.device().backend === "host" ? 3 : 2);
    const xw = ref(xs, [64, 512], Ws, [512, 512]).v;
    const xa = ref(xs, [64, 512], As, [512, 8]).v;
    const xab = ref(Float32Array.from(xa), [64, 8], Bs, [8, 512]).v;
    close(got, xw.map((v, i) => v + scale * xab[i]!), 1e-5);
  });
});

describe("a view of a matmul's epilogue (attention heads of a LoRA projection)", () => {
  test("the matmul kernel computes the sum and its consumers read it split into heads: no copy kernel", () => {
    const [Bt, T, H, D, r] = [2, 24, 3, 40, 8];
    const xs = data(Bt * T * 64, 31), Ws = data(64 * H * D, 32, 0.05), As = data(64 * r, 33, 0.05), Bs = data(r * H * D, 34, 0.05);
    const x = sm.array(xs).reshape([Bt, T, 64]), W = sm.array(Ws).reshape([64, H * D]);
    const A = sm.array(As).reshape([64, r]), B = sm.array(Bs).reshape([r, H * D]);
    const u = sm.matmul(x, A).eval();
    sm.resetStats();
    const got = sm.tidy(() => {
      const q = sm.matmul(x, W).add(sm.matmul(u, B).mul(2)).reshape([Bt, T, H, D]).transpose([0, 2, 1, 3]);
      // read at two elements each (as rotary embeddings read the heads): q must be in memory
      const partner = q.reshape([Bt, H, T, 2, D / 2]).slice("...", { step: -1 }, {}).reshape([Bt, H, T, D]);
      return q.mul(3).add(partner).toArray() as number[];
    });
    // the sum in the product's epilogue (after W's panels on host), then the consumer reading it as heads
    expect(sm.stats().kernelsDispatched).toBe(sm.device().backend === "host" ? 3 : 2);
    const xw = ref(xs, [Bt * T, 64], Ws, [64, H * D]).v;
    const ub = ref(Float32Array.from(ref(xs, [Bt * T, 64], As, [64, r]).v), [Bt * T, r], Bs, [r, H * D]).v;
    const sum = xw.map((v, i) => v + 2 * ub[i]!);
    const want: number[] = [];
    for (let b = 0; b < Bt; b++)
      for (let h = 0; h < H; h++)
        for (let t = 0; t < T; t++)
          for (let d = 0; d < D; d++) {
            const at = (dd: number) => sum[(b * T + t) * H * D + h * D + dd]!;
            want.push(3 * at(d) + at(d < D / 2 ? d + D / 2 : d - D / 2));
          }
    close(got, want, 1e-5);
    u.dispose();
  });
});

describe("narrow variant: B of 16 columns or fewer read in place by the panel kernel's blocks", () => {
  const nodeOf = (t: sm.Tensor) => (t as unknown as { node(why: string): Node }).node("eval");
  test("8 columns or fewer: contiguous, transposed and fewer than 8, 9 to 16 in the panel kernel's blocks", () => {
    const [M, K] = [23, 50];
    const xs = data(M * K, 41);
    for (const [N, transposed] of [[8, false], [8, true], [5, false], [5, true], [12, false]] as const) {
      const bs = data(K * N, 42 + N);
      const src: string[] = [];
      const got = withVariant("narrow", () =>
        sm.tidy(() => {
          const b = transposed ? sm.array(bs).reshape([N, K]).T : sm.array(bs).reshape([K, N]);
          const y = sm.matmul(sm.array(xs).reshape([M, K]), b);
          const s = schedule([nodeOf(y)]);
          src.push(...s.order.map((n) => planOf(s, n).source));
          execute(s);
          return y.toArray() as number[];
        }),
      );
      if (sm.device().backend === "host") expect(src.join("\n")).toContain(N <= 8 ? "smelt_mm_narrow8(a, bm" : "smelt_mm_narrow(a, bm");
      const bk = new Float32Array(K * N);
      for (let k = 0; k < K; k++) for (let j = 0; j < N; j++) bk[k * N + j] = transposed ? bs[j * K + k]! : bs[k * N + j]!;
      close(got, ref(xs, [M, K], bk, [K, N]).v, 1e-5);
    }
  });
  test("a low-rank factor and its gradient take it on host (x @ A, x^T @ g), values against float64", () => {
    const [M, K, R] = [70, 96, 8];
    const xs = data(M * K, 31), as = data(K * R, 32, 0.1), gs = data(M * R, 33);
    const run = () => {
      const x = sm.array(xs).reshape([M, K]);
      return [sm.matmul(x, sm.array(as).reshape([K, R])), sm.matmul(x.T, sm.array(gs).reshape([M, R]))];
    };
    const [y, d] = sm.tidy(() => {
      const outs = run();
      const s = schedule(outs.map(nodeOf));
      const srcs = s.order.map((n) => planOf(s, n).source);
      execute(s);
      if (sm.device().backend === "host") for (const src of srcs) expect(src).toContain("smelt_mm_narrow8(a, bm");
      return outs.map((t) => t.toArray() as number[]);
    });
    close(y!, ref(xs, [M, K], as, [K, R]).v, 1e-5);
    const xt = new Float32Array(K * M);
    for (let i = 0; i < M; i++) for (let k = 0; k < K; k++) xt[k * M + i] = xs[i * K + k]!;
    close(d!, ref(xt, [K, M], gs, [M, R]).v, 1e-5);
  });
  test("few rows by a wide B computed in the evaluation (a factor's gradient (xA)ᵀ @ dy) read in place; a weight keeps its panels", () => {
    // enough work for the panel kernel (more than the target's smallWork multiply-adds)
    const [R, K, N] = [8, 96, 70];
    const as = data(K * R, 51), gs = data(K * N, 52);
    const run = (weight: boolean) =>
      sm.tidy(() => {
        const g = sm.array(gs).reshape([K, N]);
        if (weight) g.eval();
        // computed in the evaluation unless it is a weight
        const b = weight ? g : g.mul(2);
        const y = sm.matmul(sm.array(as).reshape([K, R]).T, b);
        const s = schedule([nodeOf(y)]);
        const srcs = s.order.map((n) => planOf(s, n).source).join("\n");
        sm.resetStats();
        execute(s);
        return { v: y.toArray() as number[], srcs, kernels: sm.stats().kernelsDispatched };
      });
    const at = new Float32Array(R * K);
    for (let k = 0; k < K; k++) for (let r = 0; r < R; r++) at[r * K + k] = as[k * R + r]!;
    const computed = run(false), weight = run(true);
    close(computed.v, ref(at, [R, K], gs.map((v) => 2 * v), [K, N]).v, 1e-5);
    close(weight.v, ref(at, [R, K], gs, [K, N]).v, 1e-5);
    if (sm.device().backend === "host") {
      expect(computed.srcs.includes("smelt_mm_narrow(a, bm"), "in place").toBe(true);
      expect(computed.kernels).toBe(2); // 2 g, and the product: no kernel packs 2 g into panels
      expect(weight.srcs.includes("smelt_mm_panel(a"), "weight's panels").toBe(true);
    }
  });
});

describe("lanes and run variants: few rows of C on a CPU (attention while decoding)", () => {
  const nodeOf = (t: sm.Tensor) => (t as unknown as { node(why: string): Node }).node("eval");
  /** The product's values and the matmul calls of its kernels' sources, on the column layout. */
  const product = (fn: () => sm.Tensor) => {
    const src: string[] = [];
    const got = withVariant("column", () =>
      sm.tidy(() => {
        const y = fn();
        const s = schedule([nodeOf(y)]);
        src.push(...s.order.map((n) => planOf(s, n).source));
        execute(s);
        return y.toArray() as number[];
      }),
    );
    return { got, calls: src.join("\n").match(/smelt_mm_\w+\(a, bm/g) ?? [] };
  };
  const transpose = (x: Float32Array, rows: number, cols: number, batches = 1) => {
    const t = new Float32Array(x.length);
    for (let b = 0; b < batches; b++) for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[b * rows * cols + c * rows + r] = x[b * rows * cols + r * cols + c]!;
    return t;
  };

  test("lanes: q @ kᵀ over batches, K with and without a tail of 16, 1 to 8 rows, a scale in the epilogue", () => {
    for (const [M, K, N] of [[1, 64, 50], [3, 40, 17], [8, 33, 5], [1, 100, 2]] as const) {
      const q = data(6 * M * K, 70 + K), k = data(6 * N * K, 71 + N);
      const { got, calls } = product(() => sm.matmul(sm.array(q).reshape([2, 3, M, K]), sm.array(k).reshape([2, 3, N, K]).swapaxes(-1, -2)).mul(0.125));
      expect(calls).toEqual(["smelt_mm_lanes(a, bm"]);
      close(got, ref(q, [6, M, K], transpose(k, N, K, 6), [6, K, N]).v.map((v) => v * 0.125), 1e-5);
    }
  });

  test("run: weights @ v over batches, N with and without a tail of 16, K odd and even, a bias in the epilogue", () => {
    for (const [M, K, N] of [[1, 64, 64], [2, 37, 33], [5, 35, 16], [8, 250, 20]] as const) {
      const p = data(6 * M * K, 80 + K), v = data(6 * K * N, 81 + N), bias = data(N, 82);
      const { got, calls } = product(() => sm.matmul(sm.array(p).reshape([2, 3, M, K]), sm.array(v).reshape([2, 3, K, N])).add(sm.array(bias)));
      expect(calls).toEqual(["smelt_mm_run(a, bm"]);
      close(got, ref(p, [6, M, K], v, [6, K, N]).v.map((x, i) => x + bias[i % N]!), 1e-5);
    }
  });

  test("half operands; a B broadcast over batches; column where neither layout fits or rows are many", () => {
    for (const dtype of ["float16", "bfloat16"] as const) {
      const q = data(2 * 40, 90), k = data(33 * 40, 91);
      const round = (x: Float32Array) => Float32Array.from(sm.tidy(() => sm.array(x).astype(dtype).astype("float32").toArray() as number[]));
      const { got, calls } = product(() => sm.matmul(sm.array(q).reshape([2, 40]).astype(dtype), sm.array(k).reshape([33, 40]).astype(dtype).T).astype("float32"));
      expect(calls).toEqual(["smelt_mm_lanes(a, bm"]);
      close(got, ref(round(q), [2, 40], transpose(round(k), 33, 40), [40, 33]).v, dtype === "float16" ? 2e-3 : 1.6e-2);
    }
    const a = data(4 * 3 * 40, 92), b = data(40 * 24, 93);
    const broadcast = product(() => sm.matmul(sm.array(a).reshape([4, 3, 40]), sm.array(b).reshape([40, 24])));
    expect(broadcast.calls.length).toBe(1);
    close(broadcast.got, ref(a, [12, 40], b, [40, 24]).v, 1e-5);
    // A transposed and B of 3 columns: neither both operands along k, nor 16 columns of B's rows
    const at = data(40 * 3, 94), b3 = data(40 * 3, 96);
    const narrow = product(() => sm.matmul(sm.array(at).reshape([40, 3]).T, sm.array(b3).reshape([40, 3])));
    expect(narrow.calls).toEqual(["smelt_mm_column(a, bm"]);
    close(narrow.got, ref(transpose(at, 40, 3), [3, 40], b3, [40, 3]).v, 1e-5);
    const a9 = data(9 * 40, 95);
    const many = product(() => sm.matmul(sm.array(a9).reshape([9, 40]), sm.array(b).reshape([40, 24])));
    expect(many.calls).toEqual(["smelt_mm_column(a, bm"]);
    close(many.got, ref(a9, [9, 40], b, [40, 24]).v, 1e-5);
  });
});

describe("skinny variant: a SIMD-group per row of C for B of 16 columns or fewer (GPUs)", () => {
  const nodeOf = (t: sm.Tensor) => (t as unknown as { node(why: string): Node }).node("eval");
  test("contiguous, transposed and batched B of 1 to 16 columns, an epilogue, rows not a multiple of a threadgroup's", () => {
    const [M, K] = [70, 96];
    const xs = data(2 * M * K, 51);
    for (const [N, transposed] of [[8, false], [8, true], [1, false], [5, true], [12, false], [16, true]] as const) {
      const bs = data(K * N, 52 + N), bias = data(N, 60 + N);
      const src: string[] = [];
      const got = withVariant("skinny", () =>
        sm.tidy(() => {
          const b = transposed ? sm.array(bs).reshape([N, K]).T : sm.array(bs).reshape([K, N]);
          const y = sm.matmul(sm.array(xs).reshape([2, M, K]), b).add(sm.array(bias));
          const s = schedule([nodeOf(y)]);
          src.push(...s.order.map((n) => planOf(s, n).source));
          execute(s);
          return y.toArray() as number[];
        }),
      );
      expect(src.join("\n")).toContain("smelt_mm_skinny(a, bm");
      const bk = new Float32Array(K * N);
      for (let k = 0; k < K; k++) for (let j = 0; j < N; j++) bk[k * N + j] = transposed ? bs[j * K + k]! : bs[k * N + j]!;
      close(got, ref(xs, [2 * M, K], bk, [K, N]).v.map((v, i) => v + bias[i % N]!), 1e-5);
    }
  });
  test("a GPU target takes it for B of 16 columns or fewer and more than 16 rows; a CPU target never", () => {
    const x = sm.zeros([64, 96]).eval(), x16 = sm.zeros([16, 96]).eval(), a = sm.zeros([96, 8]).eval(), w = sm.zeros([96, 17]).eval();
    const variants = (t: sm.Tensor[]) => {
      const s = schedule(t.map(nodeOf));
      return s.order.map((n) => planOf(s, n).source.includes("smelt_mm_skinny(a, bm"));
    };
    const gpu = sm.device().backend !== "host";
    expect(variants([sm.matmul(x, a)])).toEqual([gpu]);
    expect(variants([sm.matmul(x, w)]).some((v) => v)).toBe(false);
    expect(variants([sm.matmul(x16, a)])).toEqual([false]);
    for (const t of [x, x16, a, w]) t.dispose();
  });
});

describe("block variant: a block of C per thread in registers (GPUs without float matrix hardware)", () => {
  const nodeOf = (t: sm.Tensor) => (t as unknown as { node(why: string): Node }).node("eval");
  test("tiles of 128 with 8 x 8 per thread: edges in both directions, K not a multiple of the slice, both operand layouts", () => {
    const [batch, M, K, N] = [64, 130, 45, 129];
    const xs = data(batch * M * K, 71), ws = data(K * N, 72), wt = new Float32Array(K * N), xt = new Float32Array(batch * M * K);
    for (let k = 0; k < K; k++) for (let j = 0; j < N; j++) wt[j * K + k] = ws[k * N + j]!;
    for (let t = 0; t < batch; t++) for (let i = 0; i < M; i++) for (let k = 0; k < K; k++) xt[(t * K + k) * M + i] = xs[(t * M + i) * K + k]!;
    for (const transposed of [false, true]) {
      const src: string[] = [];
      const got = withVariant("block", () =>
        sm.tidy(() => {
          const w = transposed ? sm.array(wt).reshape([N, K]).T : sm.array(ws).reshape([K, N]);
          // in the second round A too is read at its strides, its unit stride along rows
          const a = transposed ? sm.array(xt).reshape([batch, K, M]).transpose([0, 2, 1]) : sm.array(xs).reshape([batch, M, K]);
          const y = sm.matmul(a, w).mul(2);
          const s = schedule([nodeOf(y)]);
          src.push(...s.order.map((n) => planOf(s, n).source));
          execute(s);
          return y.toArray() as number[];
        }),
      );
      expect(src.join("\n")).toMatch(/smelt_mm_block<8, false, false>\(a, bm/);
      close(got, ref(xs, [batch * M, K], ws, [K, N]).v.map((v) => 2 * v), 1e-5);
    }
  });
  test("4-vector loads inside aligned operands: each unit stride of A and B, edges, a short last slice, offsets, half", () => {
    // M and N: two whole tiles of 128 and an edge; K: 6 whole slices of 8 and 4 more (scalar loads).
    const [M, K, N] = [260, 52, 136];
    const xs = data((M + 1) * K, 81), ws = data(K * N + 1, 82);
    const want = ref(xs.subarray(0, M * K), [M, K], ws.subarray(0, K * N), [K, N]).v;
    // the operands rounded to half, as the half form reads them
    const halves = (v: Float32Array) => Float32Array.from(new Float16Array(v));
    const cut = (v: Float32Array, cols: number, rows: number, keep: number) =>
      Float32Array.from({ length: rows * keep }, (_, e) => v[Math.floor(e / keep) * cols + (e % keep)]!);
    const wantCut = ref(cut(xs, K, M, 50), [M, 50], cut(ws, N, 50, 134), [50, 134]).v;
    const wantHalf = ref(halves(xs.subarray(0, M * K)), [M, K], halves(ws.subarray(0, K * N)), [K, N]).v;
    const wantShifted = ref(xs.subarray(1, M * K + 1), [M, K], ws.subarray(1, K * N + 1), [K, N]).v;
    const transpose = (v: Float32Array, rows: number, cols: number) => {
      const t = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = v[r * cols + c]!;
      return t;
    };
    const xt = transpose(xs.subarray(0, M * K), M, K), wt = transpose(ws.subarray(0, K * N), K, N);
    // the block size and whether A and B move in 4-vectors
    const kernelOf = (code: { source: string }) => {
      const m = /smelt_mm_block<(\d), (\w+), (\w+)>/.exec(code.source);
      return m ? `TM ${m[1]}, vectors ${m[2]}, ${m[3]}` : "not the block kernel";
    };
    const forms: { name: string; a: () => sm.Tensor; b: () => sm.Tensor; vectors: string; want: number[]; half?: boolean; cut?: boolean }[] = [
      { name: "A rows along k, B rows along n", a: () => sm.array(xs.subarray(0, M * K)).reshape([M, K]), b: () => sm.array(ws.subarray(0, K * N)).reshape([K, N]), vectors: "true, true", want },
      { name: "A and B transposed", a: () => sm.array(xt).reshape([K, M]).T, b: () => sm.array(wt).reshape([N, K]).T, vectors: "true, true", want },
      { name: "offsets of one element", a: () => sm.array(xs).slice(`1:${M * K + 1}`).reshape([M, K]), b: () => sm.array(ws).slice(`1:${K * N + 1}`).reshape([K, N]), vectors: "false, false", want: wantShifted },
      // K 50 of A's 52 columns and N 134 of B's 136: vectors straddling the ends, read one by one
      { name: "views ending inside a vector", a: () => sm.array(xs.subarray(0, M * K)).reshape([M, K]).slice(":, :50"), b: () => sm.array(ws.subarray(0, K * N)).reshape([K, N]).slice(":50, :134"), vectors: "true, true", want: wantCut, cut: true },
      { name: "half operands", a: () => sm.array(xs.subarray(0, M * K)).reshape([M, K]).astype("float16"), b: () => sm.array(wt).reshape([N, K]).astype("float16").T, vectors: "true, true", want: wantHalf, half: true },
    ];
    // alone, 6 tiles of 64 (4 x 4 per thread); A broadcast over 16 batches, 96 tiles of 128 (8 x 8)
    for (const batch of [1, 16])
      for (const f of forms) {
        const seen: string[] = [];
        const got = withVariant("block", () =>
          sm.tidy(() => {
            const a = f.a().eval(), b = f.b().eval();
            const y = sm.matmul(batch === 1 ? a : a.broadcastTo([batch, ...a.shape]), b);
            const s = schedule([nodeOf(y)]);
            for (const n of s.order) if (s.matmuls.has(n)) seen.push(kernelOf(planOf(s, n)));
            execute(s);
            return y.astype("float32").toArray() as number[];
          }),
        );
        expect({ form: f.name, seen }).toEqual({ form: f.name, seen: [`TM ${batch === 1 ? 4 : 8}, vectors ${f.vectors}`] });
        // a half C is rounded to half: 2^-11 relative
        close(got, Array.from({ length: batch }, () => f.want).flat(), f.half ? 1e-3 : 1e-5);
      }
  });
  test("a CUDA-like target takes it for large products, 4 x 4 per thread where tiles of 128 would be few", () => {
    const x = sm.zeros([64, 96]).eval(), w = sm.zeros([96, 40]).eval();
    const s = withVariant("block", () => schedule([nodeOf(sm.matmul(x, w))]));
    expect(s.order.map((n) => planOf(s, n).source).join("\n")).toMatch(/smelt_mm_block<4, \w+, \w+>\(a, bm/);
    for (const t of [x, w]) t.dispose();
  });
});
