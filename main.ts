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
import { ExitCode } from "./cli/exit_codes.ts";
import { ADMIN_SECRET_VARIABLE, release } from "./cli/release.ts";
import { run } from "./cli/run.ts";
import { serve } from "./cli/serve.ts";
import { parseLimit, status } from "./cli/status.ts";
import { parsePort, withServerFlags } from "./cli/server_flags.ts";
import { tryLock } from "./cli/try_lock.ts";
import { VERSION } from "./protocol/version.ts";
import { DEFAULT_PORT, MAX_WAIT_MS } from "./protocol/lock_protocol.ts";
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

  withServerFlags(program.command("try-lock"))
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
    .action(async (name: string, options) => {
      code = await tryLock(name, options);
    });

  withServerFlags(program.command("run"))
    .description("run a command while holding a lock, like flock(1)")
    .usage("[options] <name> -- <command> [args...]")
    .argument("<name>", "the lock's name")
    .argument("<command...>", "the command to run, after --")
    .option("--shared", "take the lock in shared mode")
    .option(
      "--wait <seconds>",
      "give up after this many seconds (0: only if free now)",
      parseSeconds,
    )
    .option(
      "-E, --conflict-exit-code <code>",
      `exit code when the lock is not granted within --wait`,
      parseExitCode,
      ExitCode.NotAcquired,
    )
    .option(
      "--kill-after <seconds>",
      "grace between SIGTERM and SIGKILL when the lock is lost",
      parseSeconds,
      10,
    )
    .option(
      "--on-contention <signal>",
      "send this signal to the command whenever more requests wait for the lock",
      parseSignal,
    )
    .addHelpText(
      "after",
      `
Exit codes: the command's own; ${ExitCode.NotAcquired} (or -E) when the lock is not granted in time;
${ExitCode.Lost} when the lock is lost while the command runs (it is stopped with SIGTERM,
then SIGKILL); ${ExitCode.Connection} when the server cannot be reached; 127 when the command
cannot be started. SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 (and SIGINT, SIGQUIT when not
on a terminal) are passed on to the command.`,
    )
    .action(async (name: string, command: string[], options) => {
      code = await run(name, command, options);
    });

  withServerFlags(program.command("release"))
    .description(
      "force a lock free by disconnecting its holder (operators' last resort)",
    )
    .argument("<name>", "the lock's name")
    .option(
      "--force",
      "required: the holder is disconnected, its job may still run",
    )
    .option(
      "--admin-secret-file <file>",
      `file holding the server's admin secret (or set ${ADMIN_SECRET_VARIABLE})`,
    )
    .action(async (name: string, options) => {
      code = await release(name, options);
    });

  withServerFlags(program.command("status"))
    .description("show the locks with their holders and waiters")
    .argument("[pattern]", "only locks whose name matches (* and ?)")
    .option("--limit <locks>", "list at most this many locks", parseLimit)
    .option("--json", "print the server's reply as JSON")
    .action(async (pattern: string | undefined, options) => {
      code = await status(pattern, options);
    });

  try {
    await program.parseAsync(args, { from: "user" });
  } catch (error) {
    if (!(error instanceof CommanderError)) throw error;
    return error.exitCode === 0 ? ExitCode.Ok : ExitCode.Usage;
  }
  return code;
}

function parseExitCode(text: string): number {
  const code = Number(text);
  if (!/^\d+$/.test(text) || code > 255) {
    throw new InvalidArgumentError("expected an exit code from 0 to 255");
  }
  return code;
}

const SIGNAL_NAMES: readonly Deno.Signal[] = [
  "SIGHUP",
  "SIGINT",
  "SIGQUIT",
  "SIGTERM",
  "SIGUSR1",
  "SIGUSR2",
  "SIGWINCH",
  "SIGCONT",
];

function parseSignal(text: string): Deno.Signal {
  const upper = text.toUpperCase();
  const name = upper.startsWith("SIG") ? upper : `SIG${upper}`;
  if (!SIGNAL_NAMES.includes(name as Deno.Signal)) {
    throw new InvalidArgumentError(
      `expected one of ${SIGNAL_NAMES.join(", ")}`,
    );
  }
  return name as Deno.Signal;
}

function parseSeconds(text: string): number {
  const seconds = Number(text);
  if (text.trim() === "" || !Number.isFinite(seconds) || seconds < 0) {
    throw new InvalidArgumentError("expected a number of seconds, 0 or more");
  }
  // Timers cannot wait longer: a longer delay would fire at once.
  if (seconds * 1000 > MAX_WAIT_MS) {
    throw new InvalidArgumentError(
      `expected at most ${MAX_WAIT_MS / 1000} seconds (about 24.8 days)`,
    );
  }
  return seconds;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
