/**
 * Errors the lock client throws, beside the message layer's
 * `ConnectionError`, `RemoteError` and `ProtocolError`.
 *
 * @module
 */

import { PklockError } from "../protocol/errors.ts";

/**
 * A lock was not granted within the `wait` the request named. The server has
 * withdrawn the request: no grant can follow.
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
 * The reason a lock's `lost` signal carries: the connection that held it
 * closed, so the server has released it.
 *
 * @example Reacting to a lost lock
 * ```ts ignore
 * lock.lost.addEventListener("abort", () => console.error(lock.lost.reason));
 * ```
 */
export class LockLostError extends PklockError {
  /** Always `"LockLostError"`. */
  override name = "LockLostError";
}
