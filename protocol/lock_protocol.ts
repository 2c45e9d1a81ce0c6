/**
 * The messages of the lock protocol and their validation, shared by the server
 * and the client. See docs/protocol.md for every message with examples.
 *
 * @module
 */

/** How a lock is held: alone (`exclusive`) or alongside others (`shared`). */
export type LockMode = "exclusive" | "shared";

/** The default longest lock name, in UTF-16 code units. */
export const DEFAULT_MAX_LOCK_NAME_LENGTH = 256;

/** The longest `wait` a request may name, in milliseconds (about 24.8 days). */
export const MAX_WAIT_MS = 2 ** 31 - 1;

/** The `parameters` of a `lock` request. */
export interface LockParameters {
  /** The lock's name. */
  lockName: string;
  /**
   * `exclusive` or `shared`.
   *
   * @default {"exclusive"}
   */
  mode?: LockMode;
  /**
   * How long the server keeps the request queued, in milliseconds; `0` means
   * "only if free now". Absent means wait for as long as it takes.
   */
  wait?: number;
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
): string | null {
  if (typeof value !== "string" || value.length === 0) {
    return '"lockName" must be a non-empty string';
  }
  if (value.length > maxLength) {
    return `"lockName" is longer than ${maxLength} characters`;
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
): LockParameters | string {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return '"parameters" must be an object with a "lockName"';
  }
  const { lockName, mode, wait } = value as Record<string, unknown>;
  const nameError = checkLockName(lockName, maxNameLength);
  if (nameError !== null) return nameError;
  if (mode !== undefined && mode !== "exclusive" && mode !== "shared") {
    return '"mode" must be "exclusive" or "shared"';
  }
  if (
    wait !== undefined &&
    (typeof wait !== "number" || !Number.isInteger(wait) || wait < 0 ||
      wait > MAX_WAIT_MS)
  ) {
    return `"wait" must be an integer from 0 to ${MAX_WAIT_MS} (milliseconds)`;
  }
  const parameters: LockParameters = { lockName: lockName as string };
  if (mode !== undefined) parameters.mode = mode;
  if (wait !== undefined) parameters.wait = wait;
  return parameters;
}
