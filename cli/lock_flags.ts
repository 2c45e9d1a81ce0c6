/**
 * The flags of the subcommands that take a lock (`run`, `hold`), in pklock's
 * spelling and in flock(1)'s, and where the command of `run` begins.
 *
 * @module
 */

import { type Command, InvalidArgumentError, Option } from "commander";
import { type LockMode, MAX_LOCK_LIMIT } from "../protocol/lock_protocol.ts";
import { parseDuration } from "./duration.ts";
import { ExitCode } from "./exit_codes.ts";

/** The lock flags as commander parses them. */
export interface LockFlags {
  /** Seconds to wait (pklock's spelling). */
  wait?: number;
  /** Seconds to wait (flock's `-w`). */
  timeout?: number;
  /** Only if free now (flock's `-n`). */
  nonblock?: boolean;
  /** Take the lock in shared mode. */
  shared?: boolean;
  /** Take the lock in exclusive mode (the default). */
  exclusive?: boolean;
  /** At most this many holders at once, a semaphore (implies `shared`). */
  limit?: number;
  /** The exit code when the lock is not granted in time. */
  conflictExitCode: number;
  /** Report conflicts and progress on stderr even with `-n` or `-w`. */
  verbose?: boolean;
}

/** What to ask the server for, from {@linkcode LockFlags}. */
export interface LockRequest {
  /** The lock's mode. */
  mode: LockMode;
  /** At most this many holders at once; absent: no limit. */
  limit?: number;
  /** Milliseconds to wait; absent waits as long as it takes. */
  wait?: number;
  /** Whether a conflict is reported on stderr (flock's spellings are silent). */
  reportConflict: boolean;
}

/**
 * Adds the lock flags: `--wait`, `--shared`, `--limit` and `-E` with flock's
 * spellings `-w`, `-n`, `-s`, `-x` (`-e`), plus `--verbose`.
 *
 * @param command `run` or `hold`.
 * @returns The same command.
 */
export function withLockFlags(command: Command): Command {
  return command
    .addOption(
      new Option(
        "--wait <duration>",
        "give up after this long (0: only if free now); 90, 90s, 1m, 2h",
      ).argParser(parseDuration).conflicts(["timeout", "nonblock"]),
    )
    .addOption(
      new Option(
        "-w, --timeout <duration>",
        "flock's --wait: give up after this long, silently unless --verbose",
      ).argParser(parseDuration).conflicts("nonblock"),
    )
    .addOption(
      new Option(
        "-n, --nonblock",
        "flock's: only if free now, silently unless --verbose",
      ),
    )
    .addOption(new Option("--nb").hideHelp().implies({ nonblock: true }))
    .addOption(
      new Option("-s, --shared", "take the lock in shared mode")
        .conflicts("exclusive"),
    )
    .addOption(
      new Option(
        "-x, --exclusive",
        "take the lock in exclusive mode (default)",
      ),
    )
    .addOption(new Option("-e").hideHelp().implies({ exclusive: true }))
    .addOption(
      new Option(
        "--limit <n>",
        "at most n holders at once, a semaphore (implies --shared)",
      ).argParser(parseLimit).conflicts("exclusive"),
    )
    .addOption(
      new Option(
        "-E, --conflict-exit-code <code>",
        "exit code when the lock is not granted in time",
      ).argParser(parseExitCode).default(ExitCode.NotAcquired),
    )
    .option("--verbose", "say on stderr when the lock is granted or refused");
}

/**
 * Turns parsed flags into a lock request.
 *
 * @param flags The parsed flags.
 * @returns The mode, the wait in milliseconds and whether to report conflicts.
 */
export function lockRequest(flags: LockFlags): LockRequest {
  const seconds = flags.nonblock ? 0 : flags.timeout ?? flags.wait;
  const flockSpelling = flags.nonblock === true || flags.timeout !== undefined;
  const request: LockRequest = {
    mode: flags.shared || flags.limit !== undefined ? "shared" : "exclusive",
    reportConflict: flags.verbose === true || !flockSpelling,
  };
  if (flags.limit !== undefined) request.limit = flags.limit;
  if (seconds !== undefined) request.wait = Math.round(seconds * 1000);
  return request;
}

/**
 * Parses an exit code for commander.
 *
 * @param text The flag's value.
 * @returns The code.
 * @throws {InvalidArgumentError} When it is not 0 to 255.
 */
export function parseExitCode(text: string): number {
  const code = Number(text);
  if (!/^\d+$/.test(text) || code > 255) {
    throw new InvalidArgumentError("expected an exit code from 0 to 255");
  }
  return code;
}

/**
 * Parses a semaphore's limit for commander.
 *
 * @param text The flag's value.
 * @returns The limit.
 * @throws {InvalidArgumentError} When it is not 1 to {@linkcode MAX_LOCK_LIMIT}.
 */
export function parseLimit(text: string): number {
  const limit = Number(text);
  if (!/^\d+$/.test(text) || limit < 1 || limit > MAX_LOCK_LIMIT) {
    throw new InvalidArgumentError(
      `expected a number of holders from 1 to ${MAX_LOCK_LIMIT}`,
    );
  }
  return limit;
}

/**
 * Marks where the command of `pklock run` begins, as flock(1) does: pklock's
 * options may stand before NAME or between NAME and the command, and the
 * first word after NAME that is not one of them (nor an option's value)
 * starts the command, as `--` does. Nothing from there on is pklock's: a `--`
 * is inserted there, so commander treats the rest as operands.
 *
 * @param command The subcommand, whose options are known.
 * @param args Its arguments.
 * @returns The arguments, with `--` before the command.
 */
export function markCommand(command: Command, args: string[]): string[] {
  const takesValue = (flag: string) => {
    const option = command.options.find((o) =>
      o.long === flag || o.short === flag
    );
    return option !== undefined && (option.required || option.optional);
  };
  let name = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") return args;
    if (arg.startsWith("--")) {
      if (!arg.includes("=") && takesValue(arg)) i++;
    } else if (arg.startsWith("-") && arg.length > 1) {
      // A cluster of short flags (-ns), where one taking a value ends it:
      // either with the rest of the word (-w5) or with the next word (-w 5).
      for (let j = 1; j < arg.length; j++) {
        if (takesValue(`-${arg[j]}`)) {
          if (j === arg.length - 1) i++;
          break;
        }
      }
    } else if (!name) {
      name = true;
    } else {
      return [...args.slice(0, i), "--", ...args.slice(i)];
    }
  }
  return args;
}
