/** Command-line parsing shared by the subcommands: flags by node:util's parseArgs, checked numbers. */
import { parseArgs, type ParseArgsConfig } from "node:util";

/** A mistake in how a command was called: printed as one line, exit code 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/** The flags of argv, or a UsageError naming the unknown or malformed one and where help is. */
export function parseFlags<O extends Options>(command: string, argv: string[], options: O) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    // parseArgs goes on to explain '--' after its first sentence; one line is enough here.
    const first = (e as Error).message.split("\n")[0]!.replace(/\. .*$/, "").replace(/\.$/, "");
    throw new UsageError(`${first} (smelt ${command} --help lists the options)`);
  }
}

/** A flag's number, checked: an integer when asked, within [min, max]. */
export function numberFlag(flag: string, text: string | undefined, { integer = false, min = -Infinity, max = Infinity } = {}): number | undefined {
  if (text === undefined) return undefined;
  const v = Number(text);
  const ok = text.trim() !== "" && Number.isFinite(v) && (!integer || Number.isSafeInteger(v)) && v >= min && v <= max;
  if (!ok) {
    const range = min === -Infinity && max === Infinity ? "" : max === Infinity ? ` ≥ ${min}` : ` from ${min} to ${max}`;
    throw new UsageError(`--${flag} must be ${integer ? "an integer" : "a number"}${range}, got '${text}'`);
  }
  return v;
}
