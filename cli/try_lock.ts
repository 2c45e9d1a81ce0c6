/**
 * `pklock try-lock`: the classic demo. Takes a lock, holds it, releases it,
 * lingers, exits; copies started together take turns in FIFO order.
 *
 * @module
 */

import { LockTimeoutError } from "../client/errors.ts";
import { delay } from "../message/io.ts";
import { release } from "./acquire.ts";
import {
  type ConnectionFlags,
  connectWith,
  reportFailure,
} from "./connection_flags.ts";
import { ExitCode } from "./exit_codes.ts";
import { WaitProgress } from "./progress.ts";
import { StopSignals } from "./stop_signals.ts";

/** Options of {@linkcode tryLock}. */
export interface TryLockOptions extends ConnectionFlags {
  /** Seconds to hold the lock. */
  hold: number;
  /** Seconds to stay connected after releasing. */
  linger: number;
  /** Seconds to wait for the lock; absent waits as long as it takes. */
  wait?: number;
}

/**
 * Runs the demo.
 *
 * @param name The lock's name.
 * @param options Server address and timings.
 * @returns The exit code.
 */
export async function tryLock(
  name: string,
  options: TryLockOptions,
): Promise<number> {
  using stop = new StopSignals();
  const code = await demo(name, options, stop);
  return stop.received === undefined ? code : await stop.dieOf(stop.received);
}

async function demo(
  name: string,
  options: TryLockOptions,
  stop: StopSignals,
): Promise<number> {
  const client = await connectWith(options, "try-lock", stop);
  if (typeof client === "number") return client;
  await using _client = client;
  const id = client.server.connectionId;
  console.log(
    `Connected to ${options.host}:${options.port} as connection ${id}`,
  );
  console.log(`Asking for lock "${name}"`);
  const wait = options.wait === undefined
    ? undefined
    : Math.round(options.wait * 1000);
  const progress = new WaitProgress(name);
  let lock;
  try {
    const onPosition = progress.onPosition;
    lock = await client.lock(name, {
      signal: stop.signal,
      ...(wait === undefined ? {} : { wait }),
      ...(onPosition ? { onPosition } : {}),
    });
  } catch (error) {
    if (stop.code !== undefined) return stop.code;
    if (error instanceof LockTimeoutError) {
      console.log(`Did not get lock "${name}": ${error.message}`);
      return ExitCode.NotAcquired;
    }
    return reportFailure(error, options);
  } finally {
    progress.done();
  }
  console.log(
    `Got lock "${name}" (token ${lock.token}); holding it for ${options.hold} s`,
  );
  await delay(options.hold * 1000, AbortSignal.any([lock.lost, stop.signal]));
  if (lock.lost.aborted) {
    console.error(`pklock: ${(lock.lost.reason as Error).message}`);
    return ExitCode.Lost;
  }
  if (stop.code !== undefined) return stop.code;
  console.log(`Offering to unlock "${name}"`);
  const doubt = await release(client, lock);
  if (doubt !== undefined) {
    console.error(
      `pklock: Lock "${name}" may have been lost while it was held: its release was not confirmed (${doubt})`,
    );
    return ExitCode.Lost;
  }
  console.log(`Released lock "${name}"`);
  if (options.linger > 0) {
    console.log(`Lingering for ${options.linger} s`);
    await delay(
      options.linger * 1000,
      AbortSignal.any([client.signal, stop.signal]),
    );
  }
  return stop.code ?? ExitCode.Ok;
}
