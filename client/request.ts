/**
 * The `lock` request as the client builds it and reads its reply: pure
 * functions, apart from the connection.
 *
 * @module
 */

import { ProtocolError } from "../message/errors.ts";
import type { LockParameters, LockResult } from "../protocol/lock_protocol.ts";
import { LockTimeoutError } from "./errors.ts";
import type { LockOptions } from "./options.ts";

/**
 * The parameters of a `lock` request: only what differs from the defaults,
 * so a plain request is the legacy one.
 *
 * @param name The lock's name.
 * @param wait What is left of the wait, in milliseconds, if bounded.
 * @param options The caller's options.
 * @returns The request's `parameters`.
 */
export function lockParameters(
  name: string,
  wait: number | undefined,
  options: LockOptions,
): LockParameters {
  const parameters: LockParameters = { lockName: name };
  if (options.mode !== undefined && options.mode !== "exclusive") {
    parameters.mode = options.mode;
  }
  if (wait !== undefined) parameters.wait = wait;
  if (options.onPosition !== undefined) parameters.notify = true;
  if (options.onContention !== undefined) parameters.contention = true;
  return parameters;
}

/**
 * Reads the reply to a `lock` request.
 *
 * @param name The lock's name.
 * @param wait The caller's `wait`, for the message.
 * @param result The reply's `result`.
 * @returns The fencing token of the grant.
 * @throws {LockTimeoutError} On `busy` and `timeout`.
 * @throws {ProtocolError} On any other status.
 */
export function grantedToken(
  name: string,
  wait: number | undefined,
  result: LockResult,
): number {
  switch (result.status) {
    case "ok":
      return result.token ?? 0;
    case "busy":
      throw new LockTimeoutError(
        `Cannot acquire lock "${name}": it is held by another client`,
      );
    case "timeout":
      throw new LockTimeoutError(
        `Cannot acquire lock "${name}": timed out after ${wait} ms`,
      );
    default:
      throw new ProtocolError(
        `Unexpected reply to lock "${name}": status "${result.status}"`,
      );
  }
}
