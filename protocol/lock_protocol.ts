/**
 * The messages of the lock protocol and their validation, shared by the server
 * and the client. See docs/protocol.md for every message with examples. The
 * `status` report has a file of its own, re-exported here.
 *
 * @module
 */

import type { StatusEntry } from "./status_protocol.ts";

export {
  MAX_STATUS_LIMIT,
  MAX_STATUS_PATTERN_LENGTH,
  parseStatusParameters,
  type StatusEntry,
  type StatusLock,
  type StatusParameters,
  type StatusResult,
  type StatusTotals,
} from "./status_protocol.ts";

/** How a lock is held: alone (`exclusive`) or alongside others (`shared`). */
export type LockMode = "exclusive" | "shared";

/** The TCP port a pklock server listens on unless told otherwise. */
export const DEFAULT_PORT = 20934;

/** The default longest lock name, in UTF-16 code units. */
export const DEFAULT_MAX_LOCK_NAME_LENGTH = 256;

/** The longest `wait` a request may name, in milliseconds (about 24.8 days). */
export const MAX_WAIT_MS = 2 ** 31 - 1;

/** The largest `limit` a shared request may name. */
export const MAX_LOCK_LIMIT = 2 ** 31 - 1;

/** The `parameters` of a `lock` request. */
export interface LockParameters {
  /** The lock's name. */
  lockName: string;
  /**
   * `exclusive` or `shared`.
   *
   * @default {"exclusive", or "shared" with a limit}
   */
  mode?: LockMode;
  /**
   * The most shared holders at once (a semaphore of that many slots); every
   * shared request holding or waiting for the lock must name the same limit.
   * Only for shared requests. Absent means unbounded.
   */
  limit?: number;
  /**
   * How long the server keeps the request queued, in milliseconds; `0` means
   * "only if free now". Absent means wait for as long as it takes.
   */
  wait?: number;
  /**
   * Whether to send {@linkcode PositionEvent}s while the request waits.
   *
   * @default {false}
   */
  notify?: boolean;
  /**
   * Whether to send {@linkcode ContentionEvent}s while the lock is held.
   *
   * @default {false}
   */
  contention?: boolean;
}

/**
 * Sent, unsolicited, to a holder that asked with `contention: true`: when the
 * number of requests waiting for its lock changes.
 */
export interface ContentionEvent {
  /** Always `contention`. */
  event: "contention";
  /** The lock held. */
  lockName: string;
  /** How many requests wait for it now. */
  waiters: number;
}

/**
 * Sent, unsolicited, to a holder whose hold passed the server's hold-time
 * alarm threshold. Advice only: the lock stays held.
 */
export interface HoldAlarmEvent {
  /** Always `hold_alarm`. */
  event: "hold_alarm";
  /** The lock held. */
  lockName: string;
  /** The fencing token of the hold. */
  token: number;
  /** How long it has been held, in milliseconds. */
  heldFor: number;
  /** The threshold it passed, in milliseconds. */
  threshold: number;
}

/**
 * Sent, unsolicited, to a waiter that asked with `notify: true`: when it
 * starts waiting and whenever its place in the queue changes.
 */
export interface PositionEvent {
  /** Always `position`. */
  event: "position";
  /** The lock waited for. */
  lockName: string;
  /** The place in the queue: 1 is next in line. */
  position: number;
}

/**
 * Sent to a holder just before a forced release closes its connection, so it
 * knows why it lost the lock.
 */
export interface ForcedReleaseEvent {
  /** Always `forced_release`. */
  event: "forced_release";
  /** The lock taken from it. */
  lockName: string;
  /** The fencing token of the hold that ended. */
  token: number;
}

/**
 * Sent by a cluster node just before it closes a connection whose lock it can
 * no longer vouch for: the node lost its etcd lease (cut off from etcd), or
 * the request's key was deleted by someone else (a forced release on another
 * node, an operator).
 */
export interface LockLostEvent {
  /** Always `lock_lost`. */
  event: "lock_lost";
  /** The lock held or waited for. */
  lockName: string;
  /** The fencing token of the hold that ended; 0 for a waiting request. */
  token: number;
  /** Why. */
  message: string;
}

/** The `result` of a `forceRelease` request. */
export interface ForceReleaseResult {
  /** `ok` when holders were disconnected, `notFound` when nobody held it. */
  status: "ok" | "notFound";
  /** The holders whose connections were closed. */
  released?: StatusEntry[];
}

/**
 * The `result` of a `lock` request: `ok` when granted (with its fencing
 * `token`), `busy` when `wait` was 0 and the lock was taken, `timeout` when
 * `wait` passed, `cancelled` when the request was withdrawn by `release` or
 * `unlock`, `invalid` when the parameters were wrong.
 */
export interface LockResult {
  /** The outcome. */
  status: "ok" | "busy" | "timeout" | "cancelled" | "invalid";
  /** The fencing token of the grant, with `ok`. */
  token?: number;
}

/** The `result` of a `release` request. */
export interface ReleaseResult {
  /** `ok` when a hold was released or a wait withdrawn, else `notFound`. */
  status: "ok" | "notFound";
}

/** The `result` of a `hello` request. */
export interface HelloResult {
  /** Always `ok`. */
  status: "ok";
  /** Always `pklock`. */
  server: string;
  /** The server's version. */
  version: string;
  /** The protocol version the server speaks. */
  protocol: number;
  /** The server's id for this connection, as shown in logs. */
  connectionId: number;
}

/** Why the parameters of a request were refused, with its stable code. */
export interface ParameterError {
  /** `name_too_long` for a lock name over the limit, else `invalid_parameters`. */
  code: "invalid_parameters" | "name_too_long";
  /** A sentence for people. */
  message: string;
}

/**
 * Checks a lock name.
 *
 * @param value The `lockName` received.
 * @param maxLength The longest name allowed.
 * @returns `null` when valid, else why not.
 */
export function checkLockName(
  value: unknown,
  maxLength: number,
): ParameterError | null {
  if (typeof value !== "string" || value.length === 0) {
    return invalid('"lockName" must be a non-empty string');
  }
  if (value.length > maxLength) {
    return {
      code: "name_too_long",
      message: `"lockName" is longer than the limit of ${maxLength} characters`,
    };
  }
  return null;
}

/**
 * Checks the `limit` of a `lock` request.
 *
 * @param limit The `limit` given, if any.
 * @param mode The `mode` given, if any.
 * @returns `null` when valid or absent, else why not.
 */
export function checkLimit(
  limit: unknown,
  mode: unknown,
): ParameterError | null {
  if (limit === undefined) return null;
  if (
    typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 ||
    limit > MAX_LOCK_LIMIT
  ) {
    return invalid(`"limit" must be an integer from 1 to ${MAX_LOCK_LIMIT}`);
  }
  if (mode === "exclusive") {
    return invalid(
      '"limit" is for shared requests: an exclusive one holds alone',
    );
  }
  return null;
}

/**
 * Checks the `parameters` of a `lock` request.
 *
 * @param value The `parameters` received.
 * @param maxNameLength The longest lock name allowed.
 * @returns The parameters, or why they are invalid.
 */
export function parseLockParameters(
  value: unknown,
  maxNameLength: number,
): LockParameters | ParameterError {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return invalid('"parameters" must be an object with a "lockName"');
  }
  const { lockName, mode, limit, wait, notify, contention } = value as Record<
    string,
    unknown
  >;
  const nameError = checkLockName(lockName, maxNameLength);
  if (nameError !== null) return nameError;
  if (mode !== undefined && mode !== "exclusive" && mode !== "shared") {
    return invalid('"mode" must be "exclusive" or "shared"');
  }
  const limitError = checkLimit(limit, mode);
  if (limitError !== null) return limitError;
  if (
    wait !== undefined &&
    (typeof wait !== "number" || !Number.isInteger(wait) || wait < 0 ||
      wait > MAX_WAIT_MS)
  ) {
    return invalid(
      `"wait" must be an integer from 0 to ${MAX_WAIT_MS} (milliseconds)`,
    );
  }
  if (notify !== undefined && typeof notify !== "boolean") {
    return invalid('"notify" must be true or false');
  }
  if (contention !== undefined && typeof contention !== "boolean") {
    return invalid('"contention" must be true or false');
  }
  const parameters: LockParameters = { lockName: lockName as string };
  if (notify === true) parameters.notify = true;
  if (contention === true) parameters.contention = true;
  if (mode !== undefined) parameters.mode = mode;
  if (limit !== undefined) {
    parameters.mode = "shared";
    parameters.limit = limit as number;
  }
  if (wait !== undefined) parameters.wait = wait;
  return parameters;
}

function invalid(message: string): ParameterError {
  return { code: "invalid_parameters", message };
}
