/**
 * The one error type smelt throws for misuse and for failures reported by the native backend.
 * Messages name the call that failed and what was wrong with it, so no stack walk is needed.
 */
export class SmeltError extends Error {
  override readonly name = "SmeltError";
}
