// The SmeltError a call throws, for tests of error messages (fails the test if it throws nothing
// or something else).
import { expect } from "bun:test";
import { SmeltError } from "../src/errors.ts";

export function errorOf(fn: () => unknown): SmeltError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(SmeltError);
    return error as SmeltError;
  }
  throw new Error("expected a SmeltError, but the call succeeded");
}

export const errorMessage = (fn: () => unknown): string => errorOf(fn).message;
