/**
 * `pklock run`: the flock(1) of the network. Takes a lock, runs a command while
 * holding it, releases it, and exits as the command did: with its exit code,
 * or killed by the same signal. The command never outlives the lock (see
 * command_process.ts for how, and what Linux leaves open).
 *
 * @module
 */

import type { LockClient } from "../client/client.ts";
import type { Lock } from "../client/lock.ts";
import { acquire, release } from "./acquire.ts";
import { CommandProcess, findTools, type Tools } from "./command_process.ts";
import {
  type ConnectionFlags,
  connectWith,
  reachedFlags,
} from "./connection_flags.ts";
import { withInheritedConnection } from "./inherited_connection.ts";
import { ExitCode } from "./exit_codes.ts";
import { type LockFlags, lockRequest } from "./lock_flags.ts";
import { StopSignals } from "./stop_signals.ts";
import { SystemdUnit } from "./systemd_unit.ts";

/** Options of {@linkcode run}. */
export interface RunOptions extends ConnectionFlags, LockFlags {
  /** A shell command to run instead of a command and its arguments (`-c`). */
  command?: string;
  /** Keep the lock's connection from the command (flock's `-o`). */
  close?: boolean;
  /** Seconds between SIGTERM and SIGKILL when the lock is lost. */
  killAfter: number;
  /** A signal sent to the command whenever more requests wait for the lock. */
  onContention?: Deno.Signal;
}

/**
 * The signals `run` catches for its whole life. Before the command starts,
 * the first one stops `run`; once it runs, they are passed on to it. On a
 * terminal, SIGHUP, SIGINT and SIGQUIT come from the terminal to the whole
 * foreground job, the command included, and are not passed on again.
 */
const CAUGHT: readonly Deno.Signal[] = [
  "SIGHUP",
  "SIGINT",
  "SIGQUIT",
  "SIGTERM",
  "SIGUSR2",
];
const FROM_TERMINAL: readonly Deno.Signal[] = ["SIGHUP", "SIGINT", "SIGQUIT"];

/** The exit code when the command cannot be started, as shells use it. */
const NOT_FOUND = 127;

/**
 * Runs a command while holding a lock.
 *
 * @param name The lock's name.
 * @param command The command and its arguments (empty with `-c`).
 * @param options Server address, lock and exit-code settings.
 * @returns The command's exit code, or one of pklock's own.
 */
export async function run(
  name: string,
  command: string[],
  options: RunOptions,
): Promise<number> {
  if ((command.length === 0) === (options.command === undefined)) {
    console.error(
      "pklock: run needs a command after the lock's name, or -c 'shell command' (not both)",
    );
    return ExitCode.Usage;
  }
  const argv = options.command === undefined
    ? command
    : [Deno.env.get("SHELL") || "/bin/sh", "-c", options.command];
  const tools = findTools();
  if (typeof tools === "string") {
    console.error(`pklock: ${tools}`);
    return ExitCode.Failure;
  }
  // Caught from the start: a signal must never kill run while it holds the
  // lock, or between starting the command and watching it.
  using stop = new StopSignals(CAUGHT);
  const code = await holdAndRun(name, argv, options, tools, stop);
  return stop.received === undefined ? code : await stop.dieOf(stop.received);
}

async function holdAndRun(
  name: string,
  argv: string[],
  given: RunOptions,
  tools: Tools,
  stop: StopSignals,
): Promise<number> {
  const client = await connectWith(given, "run", stop);
  if (typeof client === "number") return client;
  await using _client = client;
  // From here on, the server is the one of --host's list that answered.
  const options = reachedFlags(given, client);
  const contention = new ContentionSignal(options.onContention);
  const lock = await acquire(client, name, {
    flags: options,
    request: lockRequest(options),
    conflictExitCode: options.conflictExitCode,
    stop,
    onContention: contention.onContention,
  });
  if (typeof lock === "number") return lock;
  if (stop.code !== undefined) {
    await release(client, lock);
    return stop.code;
  }
  if (options.verbose) {
    console.error(
      `pklock: got lock "${name}" (token ${lock.token}); running "${argv[0]}"`,
    );
  }
  const ownGroup = !Deno.stdin.isTerminal();
  let child: CommandProcess;
  try {
    const start = () =>
      new CommandProcess(argv, {
        tools,
        ownGroup,
        env: commandEnv(name, lock, options),
      });
    // The command holds a copy of the lock's connection, as flock's command
    // holds the locked file: should run die, the lock outlives the command.
    child = options.close
      ? start()
      : withInheritedConnection(options.port, start);
  } catch (error) {
    console.error(
      `pklock: Cannot run "${argv[0]}": ${(error as Error).message}`,
    );
    await release(client, lock);
    return NOT_FOUND;
  }
  stop.redirect(passOn(child, ownGroup, options.verbose));
  contention.started(child);
  return await supervise(child, client, lock, argv[0]!, options, stop);
}

/**
 * How `run` passes a signal on to its command: not one the terminal sent to
 * the whole foreground job, nor one systemd sent to every process of the
 * unit (its default `KillMode=control-group`); in the order they came.
 */
function passOn(
  child: CommandProcess,
  ownGroup: boolean,
  verbose: boolean | undefined,
): (signal: Deno.Signal) => void {
  const unit = SystemdUnit.find();
  let passed = Promise.resolve();
  return (signal) => {
    if (!ownGroup && FROM_TERMINAL.includes(signal)) return;
    if (!unit) return child.kill(signal);
    passed = passed.then(async () => {
      if (!await unit.signalledEveryProcess(signal)) return child.kill(signal);
      if (verbose) {
        console.error(
          `pklock: systemd sent ${signal} to every process of ${unit.name} (KillMode=control-group); not passed on again`,
        );
      }
    });
  };
}

/**
 * What the command learns of its lock: the lock, its fencing token and mode,
 * and how to reach the server (so that a `pklock` it runs reaches the same).
 */
function commandEnv(
  name: string,
  lock: Lock,
  options: RunOptions,
): Record<string, string> {
  const env: Record<string, string> = {
    PKLOCK_LOCK: name,
    PKLOCK_TOKEN: String(lock.token),
    PKLOCK_MODE: lock.mode,
    PKLOCK_HOST: options.host,
    PKLOCK_PORT: String(options.port),
  };
  if (options.tls) env.PKLOCK_TLS = "1";
  if (options.caFile !== undefined) env.PKLOCK_CA_FILE = options.caFile;
  return env;
}

/**
 * Passes contention on to the command as a signal whenever more requests wait
 * than before; notices that come before the command starts are kept for it.
 */
class ContentionSignal {
  readonly #signal: Deno.Signal | undefined;
  #child: CommandProcess | undefined;
  #waiters = 0;

  constructor(signal: Deno.Signal | undefined) {
    this.#signal = signal;
  }

  get onContention(): ((waiters: number) => void) | undefined {
    if (this.#signal === undefined) return undefined;
    return (waiters) => {
      const more = waiters > this.#waiters;
      this.#waiters = waiters;
      if (more && this.#child) this.#child.kill(this.#signal!);
    };
  }

  started(child: CommandProcess): void {
    this.#child = child;
    if (this.#signal !== undefined && this.#waiters > 0) {
      child.kill(this.#signal);
    }
  }
}

/**
 * Waits for the command, stopping its process group if the lock is lost. Once
 * it has exited, `run` exits as it did only if the server confirms that the
 * lock was held until then; when the command dies of a signal, `run` is to
 * die of it too: the signal is recorded in `stop` as if `run` had received it.
 * Any doubt (the connection closed, the release unanswered) gives exit 6: the
 * loss of a stalled `run` is noticed only now.
 */
async function supervise(
  child: CommandProcess,
  client: LockClient,
  lock: Lock,
  program: string,
  options: RunOptions,
  stop: StopSignals,
): Promise<number> {
  const { killAfter } = options;
  let killer: ReturnType<typeof setTimeout> | undefined;
  const onLost = () => {
    const whom = child.ownGroup ? "its process group" : `"${program}"`;
    console.error(
      `pklock: ${
        (lock.lost.reason as Error).message
      }; stopping ${whom} (SIGTERM, SIGKILL after ${killAfter} s)`,
    );
    child.kill("SIGTERM");
    killer = setTimeout(() => child.kill("SIGKILL"), killAfter * 1000);
  };
  lock.lost.addEventListener("abort", onLost, { once: true });
  try {
    const status = await child.status;
    // A loss the release finds is said once, below, not as onLost says it.
    lock.lost.removeEventListener("abort", onLost);
    if (!lock.lost.aborted) {
      const loss = await release(client, lock, `while "${program}" ran`);
      if (loss === undefined) {
        if (status.signal !== null) stop.died(status.signal);
        return status.code;
      }
      console.error(`pklock: ${loss}`);
    }
    // Whatever the group's leader did, the rest of its group goes with the
    // lock: nothing the command started may run on without it.
    // (Only a group can be signalled safely once its leader is reaped.)
    if (child.ownGroup) child.kill("SIGKILL");
    return ExitCode.Lost;
  } finally {
    clearTimeout(killer);
    lock.lost.removeEventListener("abort", onLost);
  }
}
