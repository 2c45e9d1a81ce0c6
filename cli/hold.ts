/**
 * `pklock hold`: takes a lock, prints its fencing token, and holds it until
 * standard input closes or a signal arrives, for scripts that lock a section
 * (flock's `exec 9>f; flock 9`, `etcdctl lock NAME` without a command).
 *
 * @module
 */

import { acquire, release } from "./acquire.ts";
import { type ConnectionFlags, connectWith } from "./connection_flags.ts";
import { ExitCode } from "./exit_codes.ts";
import { type LockFlags, lockRequest } from "./lock_flags.ts";
import { StopSignals } from "./stop_signals.ts";

/** Options of {@linkcode hold}. */
export interface HoldOptions extends ConnectionFlags, LockFlags {}

/**
 * Holds a lock until standard input closes, a signal arrives, or the lock is
 * lost.
 *
 * @param name The lock's name.
 * @param options Server address and lock settings.
 * @returns 0 once the server confirms the release; 6 when the lock was lost
 *   or its release not confirmed; the conflict code when not granted; else as
 *   a signal or the failure decides.
 */
export async function hold(
  name: string,
  options: HoldOptions,
): Promise<number> {
  using stop = new StopSignals();
  const code = await holdUntilDone(name, options, stop);
  // A lock that may have been lost outweighs the signal that ended the hold.
  return stop.received === undefined || code === ExitCode.Lost
    ? code
    : await stop.dieOf(stop.received);
}

async function holdUntilDone(
  name: string,
  options: HoldOptions,
  stop: StopSignals,
): Promise<number> {
  const client = await connectWith(options, "hold", stop);
  if (typeof client === "number") return client;
  await using _client = client;
  const lock = await acquire(client, name, {
    flags: options,
    request: lockRequest(options),
    conflictExitCode: options.conflictExitCode,
    stop,
  });
  if (typeof lock === "number") return lock;
  console.log(String(lock.token));
  if (options.verbose) {
    console.error(
      `pklock: holding lock "${name}" (token ${lock.token}) until standard input closes`,
    );
  }
  const ended = AbortSignal.any([lock.lost, stop.signal]);
  await stop.race(endOfInput(), ended).catch(() => {});
  if (lock.lost.aborted) {
    console.error(`pklock: ${(lock.lost.reason as Error).message}`);
    return ExitCode.Lost;
  }
  const doubt = await release(client, lock);
  if (doubt !== undefined) {
    console.error(
      `pklock: Lock "${name}" may have been lost while it was held: its release was not confirmed (${doubt})`,
    );
    return ExitCode.Lost;
  }
  if (options.verbose) console.error(`pklock: released lock "${name}"`);
  return stop.code ?? ExitCode.Ok;
}

/** Resolves once standard input reaches its end (or cannot be read). */
async function endOfInput(): Promise<void> {
  const buffer = new Uint8Array(4096);
  try {
    while (await Deno.stdin.read(buffer) !== null) {
      // What is written is of no interest: only its end.
    }
  } catch {
    // A closed or unreadable input ends the hold as its end does.
  }
}
