/** Learning-rate schedules: functions from the update's index (0 for the first) to a rate. */
import { SmeltError } from "../errors.ts";

export type Schedule = (step: number) => number;

function count(op: string, what: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) throw new SmeltError(`${op}: ${what} must be a positive integer, got ${v}`);
  return v;
}

/** From init to end in `steps` steps, then end. */
export function linearSchedule(init: number, end: number, steps: number): Schedule {
  count("linearSchedule", "steps", steps);
  return (step) => (step >= steps ? end : init + ((end - init) * step) / steps);
}
/** Half a cosine from init to end over decaySteps, then end. */
export function cosineDecay(init: number, decaySteps: number, end = 0): Schedule {
  count("cosineDecay", "decaySteps", decaySteps);
  return (step) => end + (init - end) * 0.5 * (1 + Math.cos((Math.PI * Math.min(step, decaySteps)) / decaySteps));
}
export function exponentialDecay(init: number, decayRate: number): Schedule {
  return (step) => init * decayRate ** step;
}
/** init · rate^floor(step / stepSize). */
export function stepDecay(init: number, decayRate: number, stepSize: number): Schedule {
  count("stepDecay", "stepSize", stepSize);
  return (step) => init * decayRate ** Math.floor(step / stepSize);
}
/**
 * schedules[i] runs from boundaries[i-1] on, counting its steps from there:
 * `joinSchedules([linearSchedule(0, 1e-3, 100), cosineDecay(1e-3, 900)], [100])` is a warmup then a decay.
 */
export function joinSchedules(schedules: Schedule[], boundaries: number[]): Schedule {
  if (schedules.length === 0 || boundaries.length !== schedules.length - 1)
    throw new SmeltError(`joinSchedules: ${schedules.length} schedules need ${Math.max(0, schedules.length - 1)} boundaries, got ${boundaries.length}`);
  for (let i = 1; i < boundaries.length; i++)
    if (!(boundaries[i]! > boundaries[i - 1]!)) throw new SmeltError(`joinSchedules: boundaries must increase, got [${boundaries}]`);
  return (step) => {
    let i = 0;
    while (i < boundaries.length && step >= boundaries[i]!) i++;
    return schedules[i]!(i === 0 ? step : step - boundaries[i - 1]!);
  };
}
