/**
 * The `pklock` command: `pklock serve` runs the lock server; the other
 * subcommands are clients of one. Exit codes are listed in the README and in
 * cli/exit_codes.ts.
 *
 * @module
 */

import {
  Command,
  CommanderError,
  InvalidArgumentError,
  Option,
} from "commander";
import { DEFAULT_PORT } from "./client/client.ts";
import { ExitCode } from "./cli/exit_codes.ts";
import { serve } from "./cli/serve.ts";
import { tryLock } from "./cli/try_lock.ts";
import { VERSION } from "./protocol/version.ts";
import { LOG_LEVELS } from "./server/config.ts";

const encoder = new TextEncoder();

/**
 * Runs the command line.
 *
 * @param args The arguments after the program name.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  let code: number = ExitCode.Ok;
  const program = new Command("pklock")
    .description("A network lock server and its client: flock() across hosts.")
    .version(VERSION, "-V, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .exitOverride()
    .configureOutput({
      writeOut: (text) => void Deno.stdout.writeSync(encoder.encode(text)),
      writeErr: (text) => void Deno.stderr.writeSync(encoder.encode(text)),
    })
    .showHelpAfterError();

  program.command("serve")
    .description(
      "run the lock server (settings: embedded defaults, a file, flags)",
    )
    .option(
      "-c, --config <file>",
      "JSONC settings file (see settings.example.jsonc)",
    )
    .option("--host <address>", "address to listen on (default 127.0.0.1)")
    .option(
      "-p, --port <port>",
      `port to listen on, 0 for any (default ${DEFAULT_PORT})`,
      parsePort,
    )
    .option(
      "--state-file <file>",
      "where fencing tokens are reserved (default pklock.state.json)",
    )
    .addOption(
      new Option("--log-level <level>", "lowest level logged (default info)")
        .choices(LOG_LEVELS),
    )
    .action(async (options) => {
      code = await serve(options);
    });

  program.command("try-lock")
    .description("take a lock, hold it, release it, linger, exit")
    .argument("<name>", "the lock's name")
    .option("--hold <seconds>", "seconds to hold the lock", parseSeconds, 10)
    .option(
      "--linger <seconds>",
      "seconds to stay connected after releasing",
      parseSeconds,
      0,
    )
    .option(
      "--wait <seconds>",
      "give up after this many seconds (0: only if free now)",
      parseSeconds,
    )
    .option("--host <address>", "server address", "127.0.0.1")
    .option("-p, --port <port>", "server port", parsePort, DEFAULT_PORT)
    .action(async (name: string, options) => {
      code = await tryLock(name, options);
    });

  try {
    await program.parseAsync(args, { from: "user" });
  } catch (error) {
    if (!(error instanceof CommanderError)) throw error;
    return error.exitCode === 0 ? ExitCode.Ok : ExitCode.Usage;
  }
  return code;
}

function parsePort(text: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || port > 65535) {
    throw new InvalidArgumentError("expected a port number from 0 to 65535");
  }
  return port;
}

function parseSeconds(text: string): number {
  const seconds = Number(text);
  if (text.trim() === "" || !Number.isFinite(seconds) || seconds < 0) {
    throw new InvalidArgumentError("expected a number of seconds, 0 or more");
  }
  return seconds;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
