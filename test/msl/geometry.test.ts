import { describe, test } from "bun:test";
import { dev, expectClose, kernelFile, read, runThreads, uniform } from "./helpers.ts";

const kernel = kernelFile("geometry.metal");
const NAMES = ["dot4", "dot2", "length3", "distance4", "cross.x", "cross.y", "cross.z", "normalize2.y"];

describe("geometry.metal", () => {
  test("vec_geometry: dot, length, distance, cross, normalize", () => {
    const n = 300;
    const a = uniform(4 * n, -4, 4, 23);
    const b = uniform(4 * n, -4, 4, 24);
    a.set([1, 0, 0, 9], 0);
    b.set([0, 1, 0, -9], 0); // cross of the x and y axes is the z axis
    const out = dev.buffer(new Float32Array(8 * n));
    runThreads(kernel("vec_geometry"), [dev.buffer(a), dev.buffer(b), out], [n, 1, 1], [64, 1, 1]);
    const want: number[] = [];
    for (let i = 0; i < n; i++) {
      const [a0, a1, a2, a3] = Array.from(a.subarray(4 * i, 4 * i + 4));
      const [b0, b1, b2, b3] = Array.from(b.subarray(4 * i, 4 * i + 4));
      want.push(
        a0! * b0! + a1! * b1! + a2! * b2! + a3! * b3!,
        a0! * b2! + a1! * b3!,
        Math.hypot(a0!, a1!, a2!),
        Math.hypot(a0! - b0!, a1! - b1!, a2! - b2!, a3! - b3!),
        a1! * b2! - a2! * b1!,
        a2! * b0! - a0! * b2!,
        a0! * b1! - a1! * b0!,
        b1! / Math.hypot(b0!, b1!),
      );
    }
    // Sums of products of values up to 4: a few ulp of 64, and relative error for the roots.
    expectClose("vec_geometry", read(out, Float32Array), want, {
      rtol: 1e-5,
      atol: 2e-5,
      label: (k) => `element ${Math.floor(k / 8)} ${NAMES[k % 8]}`,
    });
  });
});
