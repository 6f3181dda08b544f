/** sm.optim: optimizers, learning-rate schedules, gradient clipping and accumulation. */
export { Adafactor, Adam, AdamW, Lion, Optimizer, SGD } from "./optimizers.ts";
export { cosineDecay, exponentialDecay, joinSchedules, linearSchedule, type Schedule, stepDecay } from "./schedules.ts";
export { accumulate, clipGradNorm, clipGradValue, disposeTree } from "./trees.ts";
