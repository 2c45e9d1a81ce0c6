/**
 * Taking a lock for `run` and `hold`: the wait shown on a terminal, `--wait`
 * kept on this process's clock, a signal ending the wait, and each failure
 * said once with its exit code.
 *
 * @module
 */

import type { LockClient } from "../client/client.ts";
import { LockTimeoutError } from "../client/errors.ts";
import type { Lock } from "../client/lock.ts";
import { type ConnectionFlags, reportFailure } from "./connection_flags.ts";
import type { LockRequest } from "./lock_flags.ts";
import { WaitProgress } from "./progress.ts";
import type { StopSignals } from "./stop_signals.ts";

/** What {@linkcode acquire} needs besides the lock's name. */
export interface AcquireOptions {
  /** How the server was reached, for error hints. */
  flags: ConnectionFlags;
  /** Mode, wait and whether to report a conflict. */
  request: LockRequest;
  /** The exit code when the lock is not granted in time. */
  conflictExitCode: number;
  /** Ends the wait. */
  stop: StopSignals;
  /** Called while the lock is held whenever the number of waiters changes. */
  onContention?: ((waiters: number) => void) | undefined;
}

/**
 * Asks for a lock and waits for it. The server ends a bounded wait; should it
 * not answer (stopped, overloaded), the client gives up on its own clock at
 * most 1 s after the wait's end; a stop signal ends the wait at once.
 *
 * @param client The connection.
 * @param name The lock's name.
 * @param options Mode, wait, signals and error reporting.
 * @returns The held lock, or the exit code to return.
 */
export async function acquire(
  client: LockClient,
  name: string,
  options: AcquireOptions,
): Promise<Lock | number> {
  const { flags, request, stop } = options;
  const progress = new WaitProgress(name);
  const { onPosition } = progress;
  const { onContention } = options;
  try {
    return await client.lock(name, {
      mode: request.mode,
      limit: request.limit,
      signal: stop.signal,
      ...(request.wait === undefined ? {} : { wait: request.wait }),
      ...(onPosition === undefined ? {} : { onPosition }),
      ...(onContention === undefined ? {} : { onContention }),
    });
  } catch (error) {
    if (stop.code !== undefined) return stop.code;
    if (error instanceof LockTimeoutError) {
      if (request.reportConflict) console.error(`pklock: ${error.message}`);
      return options.conflictExitCode;
    }
    return reportFailure(error, flags);
  } finally {
    progress.done();
  }
}

/**
 * Releases a lock and says whether the server confirmed that this connection
 * held it until then. `Lock.release()` takes a closed connection for a
 * release, as it is one; but the server may have dropped the hold before
 * (forced release, heartbeat drop, restart), and then another client may
 * have held the lock meanwhile. A server that does not confirm within
 * `--connect-timeout` is not waited for: closing the connection, next,
 * releases it as surely, and whether it was held is not known.
 *
 * @param client The lock's connection.
 * @param lock The held lock.
 * @returns `undefined` once the server has answered the release, else why
 *   it could not be confirmed.
 */
export async function release(
  client: LockClient,
  lock: Lock,
): Promise<string | undefined> {
  if (lock.lost.aborted) return (lock.lost.reason as Error).message;
  try {
    await lock.release();
    // Replies come in request order, and a connection once closed stays
    // closed: a ping answered now proves the release itself was answered.
    await client.ping();
    return undefined;
  } catch (error) {
    const why = client.signal.aborted ? client.signal.reason : error;
    return (why as Error).message;
  }
}
