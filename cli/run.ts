/**
 * `pklock run`: the flock(1) of the network. Takes a lock, runs a command while
 * holding it, releases it, and exits with the command's exit code.
 *
 * @module
 */

import { LockTimeoutError } from "../client/errors.ts";
import type { Lock } from "../client/lock.ts";
import { ExitCode } from "./exit_codes.ts";
import {
  connectWith,
  reportFailure,
  type ServerFlags,
} from "./server_flags.ts";
import { WaitProgress } from "./progress.ts";

/** Options of {@linkcode run}. */
export interface RunOptions extends ServerFlags {
  /** Take the lock in shared mode. */
  shared?: boolean;
  /** At most this many holders at once (implies `shared`). */
  limit?: number;
  /** Seconds to wait for the lock; absent waits as long as it takes. */
  wait?: number;
  /** The exit code when the lock is not granted within `wait`. */
  conflictExitCode: number;
  /** Seconds between SIGTERM and SIGKILL when the lock is lost. */
  killAfter: number;
  /** A signal sent to the command whenever more requests wait for the lock. */
  onContention?: Deno.Signal;
}

/**
 * The signals `run` catches, with their numbers (for the 128 + n exit code
 * when one stops `run` before its command starts). SIGINT and SIGQUIT are
 * passed on to the command only when standard input is not a terminal: on a
 * terminal they come from the keyboard and reach the command, in the same
 * process group, directly.
 */
const CAUGHT: Readonly<Partial<Record<Deno.Signal, number>>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGUSR1: 10,
  SIGUSR2: 12,
  SIGTERM: 15,
};
const KEYBOARD: readonly Deno.Signal[] = ["SIGINT", "SIGQUIT"];

/** The exit code when the command cannot be started, as shells use it. */
const NOT_FOUND = 127;

/**
 * Runs a command while holding a lock.
 *
 * @param name The lock's name.
 * @param command The command and its arguments.
 * @param options Server address, mode, wait and exit-code settings.
 * @returns The command's exit code, or one of pklock's own.
 */
export async function run(
  name: string,
  command: string[],
  options: RunOptions,
): Promise<number> {
  // Caught from the start: a signal must never kill run while it holds the
  // lock, or between starting the command and watching it.
  using signals = new Signals();
  const client = await connectWith(options, "run");
  if (typeof client === "number") return client;
  await using _client = client;
  const progress = new WaitProgress(name);
  const contention = new ContentionSignal(options.onContention);
  let lock: Lock;
  try {
    const onPosition = progress.onPosition;
    lock = await client.lock(name, {
      mode: options.shared || options.limit !== undefined
        ? "shared"
        : "exclusive",
      limit: options.limit,
      signal: signals.beforeStart,
      ...(options.wait === undefined
        ? {}
        : { wait: Math.round(options.wait * 1000) }),
      ...(onPosition ? { onPosition } : {}),
      ...(contention.onContention
        ? { onContention: contention.onContention }
        : {}),
    });
  } catch (error) {
    progress.done();
    if (signals.stopped !== undefined) return signals.stopped;
    if (error instanceof LockTimeoutError) {
      console.error(`pklock: ${error.message}`);
      return options.conflictExitCode;
    }
    return reportFailure(error);
  }
  progress.done();
  if (signals.stopped !== undefined) {
    await lock.release();
    return signals.stopped;
  }

  const [program, ...args] = command;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program!, {
      args,
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
  } catch (error) {
    console.error(
      `pklock: Cannot run "${program}": ${(error as Error).message}`,
    );
    await lock.release();
    return NOT_FOUND;
  }
  signals.started(child);
  contention.started(child);
  return await supervise(child, lock, program!, options.killAfter);
}

/**
 * Catches the signals `run` handles, for its whole life. Before the command
 * starts, the first one stops `run` (withdrawing its request, or releasing
 * the lock); once it runs, they are passed on to it.
 */
class Signals implements Disposable {
  readonly #controller = new AbortController();
  readonly #listeners: [Deno.Signal, () => void][];
  readonly #fromKeyboard = Deno.stdin.isTerminal();
  #child: Deno.ChildProcess | undefined;
  #stopped: number | undefined;

  constructor() {
    this.#listeners = (Object.keys(CAUGHT) as Deno.Signal[]).map((signal) => {
      const listener = () => this.#caught(signal);
      Deno.addSignalListener(signal, listener);
      return [signal, listener];
    });
  }

  /** Aborted by a signal that arrives before the command starts. */
  get beforeStart(): AbortSignal {
    return this.#controller.signal;
  }

  /** The exit code (128 + signal number) when a signal stopped `run`. */
  get stopped(): number | undefined {
    return this.#stopped;
  }

  started(child: Deno.ChildProcess): void {
    this.#child = child;
  }

  [Symbol.dispose](): void {
    for (const [signal, listener] of this.#listeners) {
      Deno.removeSignalListener(signal, listener);
    }
  }

  #caught(signal: Deno.Signal): void {
    if (this.#child === undefined) {
      this.#stopped ??= 128 + CAUGHT[signal]!;
      this.#controller.abort(new Error(`Stopped by ${signal}`));
    } else if (!(this.#fromKeyboard && KEYBOARD.includes(signal))) {
      kill(this.#child, signal);
    }
  }
}

/**
 * Passes contention on to the command as a signal whenever more requests wait
 * than before; notices that come before the command starts are kept for it.
 */
class ContentionSignal {
  readonly #signal: Deno.Signal | undefined;
  #child: Deno.ChildProcess | undefined;
  #waiters = 0;

  constructor(signal: Deno.Signal | undefined) {
    this.#signal = signal;
  }

  get onContention(): ((waiters: number) => void) | undefined {
    if (this.#signal === undefined) return undefined;
    return (waiters) => {
      const more = waiters > this.#waiters;
      this.#waiters = waiters;
      if (more && this.#child) kill(this.#child, this.#signal!);
    };
  }

  started(child: Deno.ChildProcess): void {
    this.#child = child;
    if (this.#signal !== undefined && this.#waiters > 0) {
      kill(child, this.#signal);
    }
  }
}

/** Waits for the command, stopping it if the lock is lost. */
async function supervise(
  child: Deno.ChildProcess,
  lock: Lock,
  program: string,
  killAfter: number,
): Promise<number> {
  let killer: ReturnType<typeof setTimeout> | undefined;
  const onLost = () => {
    console.error(
      `pklock: ${
        (lock.lost.reason as Error).message
      }; stopping "${program}" (SIGTERM, SIGKILL after ${killAfter} s)`,
    );
    kill(child, "SIGTERM");
    killer = setTimeout(() => kill(child, "SIGKILL"), killAfter * 1000);
  };
  lock.lost.addEventListener("abort", onLost, { once: true });
  try {
    const status = await child.status;
    if (lock.lost.aborted) return ExitCode.Lost;
    await lock.release();
    return status.code;
  } finally {
    clearTimeout(killer);
    lock.lost.removeEventListener("abort", onLost);
  }
}

function kill(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // It has exited already.
  }
}
