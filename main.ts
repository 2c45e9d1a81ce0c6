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
import { parsePort, withConnectionFlags } from "./cli/connection_flags.ts";
import { parseDuration } from "./cli/duration.ts";
import { ExitCode } from "./cli/exit_codes.ts";
import { HOLD_HELP, RUN_HELP } from "./cli/help.ts";
import { hold } from "./cli/hold.ts";
import {
  ignoreInspectorSignal,
  inspectorWarning,
} from "./cli/inspector_signal.ts";
import { markCommand, withLockFlags } from "./cli/lock_flags.ts";
import { ADMIN_SECRET_VARIABLE, release } from "./cli/release.ts";
import { run } from "./cli/run.ts";
import { serve } from "./cli/serve.ts";
import { parseLimit, status } from "./cli/status.ts";
import { tryLock } from "./cli/try_lock.ts";
import { VERSION } from "./protocol/version.ts";
import { DEFAULT_PORT } from "./protocol/lock_protocol.ts";
import { LOG_LEVELS } from "./server/config.ts";

const encoder = new TextEncoder();

/**
 * Runs the command line.
 *
 * @param args The arguments after the program name.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  const inspector = ignoreInspectorSignal();
  if (inspector !== null) console.error(inspectorWarning(inspector));
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
    .option(
      "--etcd <urls>",
      "serve as a cluster node on these etcd members (URL[,URL...]; no state file)",
      (urls: string) => urls.split(",").filter((url) => url !== ""),
    )
    .action(async (options) => {
      code = await serve(options);
    });

  withConnectionFlags(program.command("try-lock"))
    .description("take a lock, hold it, release it, linger, exit")
    .argument("<name>", "the lock's name")
    .option("--hold <duration>", "how long to hold the lock", parseDuration, 10)
    .option(
      "--linger <duration>",
      "how long to stay connected after releasing",
      parseDuration,
      0,
    )
    .option(
      "--wait <duration>",
      "give up after this long (0: only if free now)",
      parseDuration,
    )
    .action(async (name: string, options) => {
      code = await tryLock(name, options);
    });

  const runCommand = withLockFlags(withConnectionFlags(program.command("run")))
    .description("run a command while holding a lock, like flock(1)")
    .usage("[options] <name> [options] [--] <command> [args...]")
    .argument("<name>", "the lock's name")
    .argument("[command...]", "the command to run and its arguments")
    .option(
      "-c, --command <shell-command>",
      "run this with $SHELL -c instead (flock's -c)",
    )
    .option(
      "-o, --close",
      "keep the lock's connection from the command (flock's -o): if run dies, the lock is free before the command is gone",
    )
    .option(
      "--kill-after <duration>",
      "grace between SIGTERM and SIGKILL when the lock is lost",
      parseDuration,
      10,
    )
    .option(
      "--on-contention <signal>",
      "send this signal to the command whenever more requests wait for the lock",
      parseSignal,
    )
    .addHelpText("after", RUN_HELP)
    .action(async (name: string, command: string[], options) => {
      code = await run(name, command, options);
    });

  withLockFlags(withConnectionFlags(program.command("hold")))
    .description(
      "take a lock, print its fencing token, hold it until stdin closes",
    )
    .argument("<name>", "the lock's name")
    .addHelpText("after", HOLD_HELP)
    .action(async (name: string, options) => {
      code = await hold(name, options);
    });

  withConnectionFlags(program.command("release"))
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

  withConnectionFlags(program.command("status"))
    .description("show the locks with their holders and waiters")
    .argument("[pattern]", "only locks whose name matches (* and ?)")
    .option("--limit <locks>", "list at most this many locks", parseLimit)
    .option("--json", "print the server's reply as JSON")
    .action(async (pattern: string | undefined, options) => {
      code = await status(pattern, options);
    });

  if (args[0] === "run") {
    args = ["run", ...markCommand(runCommand, args.slice(1))];
  }
  try {
    await program.parseAsync(args, { from: "user" });
  } catch (error) {
    if (!(error instanceof CommanderError)) throw error;
    return error.exitCode === 0 ? ExitCode.Ok : ExitCode.Usage;
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

if (import.meta.main) Deno.exit(await main(Deno.args));
