// Metal lowers a pipeline's maxTotalThreadsPerThreadgroup below 1024 for kernels that use many
// registers, and refuses a dispatch over it. The host's max_threads option reports a lower limit
// for every pipeline and enforces it, so the engine's answer (fewer threads per row, the dot
// matmul instead of the 128-thread simdgroup one) runs here.
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import * as sm from "../../src/index.ts";

setDefaultTimeout(120_000);

describe("the host reports and enforces max_threads", () => {
  test("pipelines report the limit; a dispatch over it is refused, one at it runs", () => {
    const dev = sm.openDevice({ backend: "host", maxThreads: 64 });
    try {
      const pipe = dev
        .compile("#include <metal_stdlib>\nusing namespace metal;\nkernel void k(device uint* out [[buffer(0)]], uint i [[thread_position_in_grid]]) { out[i] = i; }\n")
        .pipeline("k");
      expect(pipe.maxThreadsPerThreadgroup).toBe(64);
      const out = dev.buffer(new Uint32Array(128));
      const run = (group: number) => {
        const cmd = dev.commandBuffer();
        cmd.dispatchThreads(pipe, { args: [out], grid: [128, 1, 1], threadgroup: [group, 1, 1] });
        cmd.commit();
        cmd.wait();
      };
      expect(() => run(128)).toThrow(/64/);
      run(64);
      expect(Array.from(out.read(Uint32Array)).slice(120)).toEqual([120, 121, 122, 123, 124, 125, 126, 127]);
    } finally {
      dev.dispose();
    }
    expect(() => sm.openDevice({ backend: "host", maxThreads: 0 })).toThrow(/maxThreads/);
  });
});

/** Runs script in a child process whose shared device has max_threads=limit; returns its JSON output. */
function child(env: Record<string, string>, body: string): Record<string, number[]> {
  const script = `
    import * as sm from ${JSON.stringify(`${import.meta.dir}/../../src/index.ts`)};
    const data = (n, seed) => { let s = seed; return Float32Array.from({ length: n }, () => { s = (s * 1103515245 + 12345) % 2147483648; return (s / 2147483648) * 2 - 1; }); };
    const out = {};
    ${body}
    console.log(JSON.stringify(out));`;
  const run = Bun.spawnSync([process.execPath, "-e", script], { env: { ...process.env, ...env } });
  const text = run.stdout.toString();
  if (run.exitCode !== 0) throw new Error(`child failed: ${run.stderr.toString()}`);
  return JSON.parse(text.trim().split("\n").pop()!);
}

function data(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return (s / 2147483648) * 2 - 1;
  });
}

function close(got: number[], want: number[], tol: number) {
  expect(got.length).toBe(want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / (1 + Math.abs(want[i]!)));
  if (!(worst <= tol)) throw new Error(`worst relative error ${worst} over tolerance ${tol}`);
}

/** Softmax of each row of x, and each row's sum of x - max, in float64. */
function rowsReference(x: Float32Array, rows: number, n: number): { softmax: number[]; sum: number[] } {
  const softmax: number[] = [], sum: number[] = [];
  for (let r = 0; r < rows; r++) {
    const row = Array.from(x.subarray(r * n, (r + 1) * n));
    const m = Math.max(...row);
    const e = row.map((v) => Math.exp(v - m));
    const z = e.reduce((a, b) => a + b, 0);
    softmax.push(...e.map((v) => v / z));
    sum.push(row.reduce((a, v) => a + (v - m), 0));
  }
  return { softmax, sum };
}

describe("kernels fit a pipeline limit below what the plan asked", () => {
  test("row kernels planned with 256 threads per row run with 64 (softmax, and a row sum)", () => {
    // SMELT_ROW_THREADS=256 gives row kernels GPU-shaped threadgroups on the host
    const rows = 6, n = 700;
    const got = child(
      { SMELT_HOST_MAX_THREADS: "64", SMELT_ROW_THREADS: "256" },
      `const x = sm.array(data(${rows * n}, 3)).reshape([${rows}, ${n}]);
       out.softmax = sm.softmax(x, -1).toArray().flat();
       out.sum = x.sub(x.max(-1, true)).sum(-1).toArray();`,
    );
    const want = rowsReference(data(rows * n, 3), rows, n);
    close(got.softmax!, want.softmax, 1e-5);
    close(got.sum!, want.sum, 1e-4);
  });

  test("row kernels whose threads keep register steps (256 planned) loop over the row under a limit of 64", () => {
    // With steps, a row needs its whole threadgroup; the engine then plans the loop instead.
    const rows = 3, n = 700;
    const got = child(
      { SMELT_HOST_MAX_THREADS: "64", SMELT_ROW_THREADS: "256", SMELT_ROW_STEPS: "16" },
      `const x = sm.array(data(${rows * n}, 4)).reshape([${rows}, ${n}]);
       out.softmax = sm.softmax(x, -1).toArray().flat();`,
    );
    close(got.softmax!, rowsReference(data(rows * n, 4), rows, n).softmax, 1e-5);
  });

  test("the simdgroup matmul (128 threads) gives way to the dot kernel under a limit of 64", () => {
    // K long enough that the dot kernel would split it 8 ways; 64 threads make it 2.
    const M = 40, K = 500, N = 36;
    const got = child(
      { SMELT_HOST_MAX_THREADS: "64", SMELT_MATMUL: "simd" },
      `out.c = sm.matmul(sm.array(data(${M * K}, 5)).reshape([${M}, ${K}]), sm.array(data(${K * N}, 6)).reshape([${K}, ${N}])).toArray().flat();`,
    );
    const a = data(M * K, 5), b = data(K * N, 6);
    const want: number[] = [];
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[i * K + k]! * b[k * N + j]!;
        want.push(s);
      }
    close(got.c!, want, 1e-5);
  });

  test("elementwise kernels (256-thread groups) run under a limit of 48", () => {
    const got = child({ SMELT_HOST_MAX_THREADS: "48" }, `out.y = sm.array(data(1000, 7)).mul(3).add(1).toArray();`);
    close(got.y!, Array.from(data(1000, 7), (v) => v * 3 + 1), 1e-6);
  });
});
