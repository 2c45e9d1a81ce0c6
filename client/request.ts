/**
 * One `lock` request as the client tracks it: its parameters, the reading of
 * its reply, and the events the server sends about it. No I/O.
 *
 * @module
 */

import { ProtocolError } from "../message/errors.ts";
import type {
  ContentionEvent,
  HoldAlarmEvent,
  LockMode,
  LockParameters,
  LockResult,
  PositionEvent,
} from "../protocol/lock_protocol.ts";
import { LockTimeoutError } from "./errors.ts";
import type { Lock } from "./lock.ts";
import type { LockOptions } from "./options.ts";

/**
 * The one request for a name a client has on the server: waiting, or holding
 * once `lock` is set. Requests for the same name take turns.
 */
export interface Active {
  /** The caller's options. */
  options: LockOptions;
  /** The held lock, once granted. */
  lock?: Lock;
  /** Aborts the lock's `lost` signal. */
  lost?: AbortController;
  /** Lets the next request for the name go; called once nothing is left. */
  endTurn(): void;
}

/** The unsolicited messages the server sends about one lock. */
export type LockEvent = PositionEvent | ContentionEvent | HoldAlarmEvent;

/**
 * Hands an event about a lock to the request it concerns: its callbacks, and
 * the lock handle's events.
 *
 * @param active The request.
 * @param event The server's event.
 */
export function deliver(active: Active, event: LockEvent): void {
  switch (event.event) {
    case "position":
      active.options.onPosition?.(event.position);
      break;
    case "contention":
      active.options.onContention?.(event.waiters);
      active.lock?.dispatchEvent(
        new CustomEvent("contention", { detail: event }),
      );
      break;
    case "hold_alarm":
      active.lock?.dispatchEvent(new CustomEvent("alarm", { detail: event }));
      break;
  }
}

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
  const mode = modeOf(options);
  if (mode !== "exclusive") parameters.mode = mode;
  if (options.limit !== undefined) parameters.limit = options.limit;
  if (wait !== undefined) parameters.wait = wait;
  if (options.onPosition !== undefined) parameters.notify = true;
  if (options.onContention !== undefined) parameters.contention = true;
  return parameters;
}

/**
 * The mode a request asks for: as given, else shared with a limit and
 * exclusive without.
 *
 * @param options The lock options.
 * @returns The mode.
 */
export function modeOf(options: LockOptions): LockMode {
  return options.mode ?? (options.limit === undefined ? "exclusive" : "shared");
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
