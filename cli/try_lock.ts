/**
 * `pklock try-lock`: the classic demo. Takes a lock, holds it, releases it,
 * lingers, exits; copies started together take turns in FIFO order.
 *
 * @module
 */

import { LockTimeoutError } from "../client/errors.ts";
import { ExitCode } from "./exit_codes.ts";
import {
  connectWith,
  reportFailure,
  type ConnectionFlags,
} from "./connection_flags.ts";
import { WaitProgress } from "./progress.ts";

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
  const client = await connectWith(options, "try-lock");
  if (typeof client === "number") return client;
  await using _client = client;
  const id = client.server.connectionId;
  console.log(
    `Connected to ${options.host}:${options.port} as connection ${id}`,
  );
  console.log(`Asking for lock "${name}"`);
  const progress = new WaitProgress(name);
  let lock;
  try {
    const onPosition = progress.onPosition;
    lock = await client.lock(name, {
      ...(options.wait === undefined
        ? {}
        : { wait: Math.round(options.wait * 1000) }),
      ...(onPosition ? { onPosition } : {}),
    });
  } catch (error) {
    progress.done();
    if (error instanceof LockTimeoutError) {
      console.log(`Did not get lock "${name}": ${error.message}`);
      return ExitCode.NotAcquired;
    }
    return reportFailure(error);
  }
  progress.done();
  console.log(
    `Got lock "${name}" (token ${lock.token}); holding it for ${options.hold} s`,
  );
  if (await sleep(options.hold * 1000, lock.lost)) {
    console.error(`pklock: ${(lock.lost.reason as Error).message}`);
    return ExitCode.Lost;
  }
  console.log(`Offering to unlock "${name}"`);
  await lock.release();
  console.log(`Released lock "${name}"`);
  if (options.linger > 0) {
    console.log(`Lingering for ${options.linger} s`);
    await sleep(options.linger * 1000, client.signal);
  }
  return ExitCode.Ok;
}

/** Waits `ms`; resolves `true` early if `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(false);
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(true);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
