/**
 * The emitter of this target: a plan (plan/kernel.ts) to its kernel's MSL and bindings. Another
 * target translating MSL differently replaces this folder, not the planners.
 */
import type { Plan } from "../plan/kernel.ts";
import type { KernelCode } from "./builder.ts";
import { emitMatmul } from "./matmul.ts";
import { emitPlain } from "./plain.ts";
import { emitRows } from "./rows.ts";

export function emitKernel(plan: Plan): KernelCode {
  switch (plan.kind) {
    case "rows": return emitRows(plan);
    case "matmul": return emitMatmul(plan);
    default: return emitPlain(plan);
  }
}
