#!/usr/bin/env bun
/**
 * The `smelt` command. Each subcommand is a module loaded only when named, so a mistyped flag is
 * reported before the library (and its native backend) is loaded. A subcommand's module exports
 * `run(argv)`; a mistake in its use is a UsageError or a SmeltError, printed as one line with exit
 * code 2, while anything else is a bug and keeps its stack trace.
 */
import { SmeltError } from "../errors.ts";
import { UsageError } from "./usage.ts";

interface Command {
  run(argv: string[]): Promise<void>;
}

const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  generate: { summary: "generate text with a language model", load: () => import("./generate.ts") },
  lora: { summary: "fine-tune a language model with LoRA", load: () => import("./lora.ts") },
};

const USAGE = ["usage: smelt <command> [options]", "", "commands:", ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`), "", "`smelt <command> --help` describes a command's options."].join("\n");

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    console.log(USAGE);
    return name === undefined ? 2 : 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`smelt: unknown command '${name}'; the commands are ${Object.keys(COMMANDS).join(", ")}`);
    return 2;
  }
  try {
    await (await command.load()).run(rest);
    return 0;
  } catch (e) {
    if (e instanceof UsageError || e instanceof SmeltError) {
      console.error(`smelt ${name}: ${e.message}`);
      return 2;
    }
    throw e;
  }
}

process.exitCode = await main(process.argv.slice(2));
