/**
 * Errors the lock client throws, beside the message layer's
 * `ConnectionError`, `ProtocolError` and `RequestTimeoutError`.
 *
 * @module
 */

import { RemoteError } from "../message/errors.ts";
import { type ErrorCode, PklockError } from "../protocol/errors.ts";

/**
 * A lock was not granted within the `wait` the request named (or, with
 * `wait: 0`, it was taken). Nothing of the request is left: the server ended
 * the wait, or the client withdrew it and a grant that comes late is released
 * at once. When the server did not answer at all, its `cause` is a
 * `RequestTimeoutError`.
 *
 * @example Bounding a wait
 * ```ts ignore
 * try {
 *   await client.lock("jobs", { wait: 5000 });
 * } catch (error) {
 *   if (error instanceof LockTimeoutError) console.log("still busy");
 * }
 * ```
 */
export class LockTimeoutError extends PklockError {
  /** Always `"LockTimeoutError"`. */
  override name = "LockTimeoutError";
}

/**
 * Why a held lock was lost, as {@linkcode LockLostError.reason} says:
 *
 * - `shutdown`: the server said it is shutting down;
 * - `forced_release`: an operator forced the release of a lock this
 *   connection held (`pklock release --force`), which closes the connection;
 * - `refused`: the server refused this connection and closed it (a wrong
 *   secret, e.g. a `forceRelease` with the wrong admin secret);
 * - `heartbeat_timeout`: the server heard nothing from this client for its
 *   heartbeat `timeout` (the event loop was blocked, the process stopped) and
 *   dropped it;
 * - `peer_closed`: the server closed the connection without saying why (it
 *   died, or this client did not read its farewell);
 * - `io_error`: reading or writing failed (connection reset, ...);
 * - `protocol_error`: the server sent a frame this client could not read;
 * - `output_overflow`: the server read nothing while 4 MiB waited for it;
 * - `closed`: this program closed the client while holding the lock.
 */
export type LostReason =
  | "shutdown"
  | "forced_release"
  | "heartbeat_timeout"
  | "refused"
  | "peer_closed"
  | "io_error"
  | "protocol_error"
  | "output_overflow"
  | "closed";

/**
 * The reason a lock's `lost` signal carries: the connection that held it
 * closed, so the server has released it and another client may hold it now.
 *
 * @example Reacting to a lost lock
 * ```ts ignore
 * lock.lost.addEventListener("abort", () => {
 *   const error = lock.lost.reason as LockLostError;
 *   if (error.reason === "shutdown") console.error("the server restarts");
 * });
 * ```
 */
export class LockLostError extends PklockError {
  /** Always `"LockLostError"`. */
  override name = "LockLostError";
  /** Why the connection closed. */
  readonly reason: LostReason;

  /**
   * Creates the error.
   *
   * @param message A sentence for people.
   * @param reason Why the connection closed.
   * @param options The underlying cause, if any.
   */
  constructor(message: string, reason: LostReason, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

/**
 * The server refused a request with an error reply. Its `code` is one of the
 * protocol's stable {@linkcode ErrorCode}s. A `RemoteError`, so code that
 * checks for that still works.
 *
 * @example Telling a deadlock apart
 * ```ts ignore
 * try {
 *   await client.lock("b");
 * } catch (error) {
 *   if (error instanceof RequestRefusedError && error.code === "deadlock") {
 *     await release("a");
 *   }
 * }
 * ```
 */
export class RequestRefusedError extends RemoteError {
  /** Always `"RequestRefusedError"`. */
  override name = "RequestRefusedError";
  /** The stable code from the error reply. */
  declare readonly code: ErrorCode;
}
