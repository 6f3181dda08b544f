/**
 * smelt: tensors for Bun on Apple Metal, with a CPU backend that runs the same kernels.
 * This module is the public surface; everything it does not export is internal.
 */
import { prepareDefaultBackend } from "./runtime/device.ts";

export { SmeltError } from "./errors.ts";
export {
  CommandBuffer,
  type CommandBufferState,
  type DispatchArg,
  type DispatchThreadgroupsOptions,
  type DispatchThreadsOptions,
  type Dims,
} from "./runtime/command.ts";
export {
  type BufferSource,
  type CompileOptions,
  Device,
  type DeviceLimits,
  type DeviceStats,
  device,
  openDevice,
} from "./runtime/device.ts";
export type { BackendName } from "./runtime/native.ts";
export type { OpenDeviceOptions } from "./runtime/options.ts";
export { DeviceBuffer, Library, Pipeline, type TypedArrayConstructor } from "./runtime/resources.ts";

// The tensor engine.
export type { DType } from "./graph/dtype.ts";
export { Tensor, eager, setDefaultMode, getDefaultMode, tidy, asyncEval, evalTensors as eval } from "./tensor/tensor.ts";
export * from "./tensor/ops.ts";
export * from "./tensor/ops-structure.ts";
export * from "./tensor/ops-sort.ts";
export * from "./tensor/ops-extra.ts";
export * from "./tensor/ops-contract.ts";
export * from "./tensor/ops-conv.ts";
// MLX's name for variance; `var` is a reserved word, so it can only be an export name.
export { variance as var } from "./tensor/ops.ts";
export * as random from "./tensor/random.ts";
export {
  clearCache,
  getActiveMemory,
  getCacheMemory,
  getPeakMemory,
  resetPeakMemory,
  setCacheLimit,
  setMemoryLimit,
} from "./exec/memory.ts";
export { stats, resetStats } from "./exec/stats.ts";
export { formatProfile, profile } from "./exec/profile.ts";
export type { KernelTimes, Profile } from "./exec/profile.ts";
export * as fast from "./tensor/fast.ts";
export * as io from "./io/index.ts";
export * as nn from "./nn/index.ts";
export * as optim from "./optim/index.ts";
export { checkpoint, grad, jvp, stopGradient, valueAndGrad, vjp } from "./autograd/transforms.ts";
export { QuantizedTensor, quantizedMatmul } from "./tensor/quantized.ts";
export type { QuantFormat } from "./graph/op.ts";
export * as lm from "./lm/index.ts";
export * as lora from "./lora/index.ts";
import "./tensor/methods.ts";

// Building the native library at import keeps its one-time cost (minutes on a cold Zig cache) out
// of the first call that needs a device, and makes a missing Zig fail here, at the import.
prepareDefaultBackend();
