/**
 * The messages of the lock protocol and their validation, shared by the server
 * and the client. See docs/protocol.md for every message with examples.
 *
 * @module
 */

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

/** A holder or waiter, as `status` reports it. */
export interface StatusEntry {
  /** The server's id of the connection that asked. */
  connectionId: number;
  /** The peer's address and port. */
  peer: string;
  /** The mode asked for. */
  mode: LockMode;
  /** When the lock was granted (holders) or asked for (waiters), ISO 8601. */
  since: string;
  /**
   * Seconds since then, by the server's clock (millisecond precision): how
   * long it has held, or waited.
   */
  elapsed: number;
  /** The fencing token of the grant (holders only). */
  token?: number;
  /** The label the client gave in `hello`, if any. */
  label?: string;
  /** In a cluster: the node the client is connected to. */
  node?: string;
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

/** One lock, as `status` reports it. */
export interface StatusLock {
  /** The lock's name. */
  name: string;
  /** The holders' mode. */
  mode: LockMode;
  /** The most shared holders at once, when its shared requests set one. */
  limit?: number;
  /** Current holders, in grant order. */
  holders: StatusEntry[];
  /** Waiters, first in line first. */
  waiters: StatusEntry[];
  /**
   * `true` when the page ended inside this lock: the next page starts with
   * the same lock and the rest of its holders and waiters.
   */
  more?: true;
}

/** The most locks a `status` request may ask to list. */
export const MAX_STATUS_LIMIT = 1_000_000_000;

/** The longest `pattern` of a `status` request, in characters. */
export const MAX_STATUS_PATTERN_LENGTH = 1024;

/** The `parameters` of a `status` request; every one is optional. */
export interface StatusParameters {
  /**
   * List only the locks whose name matches this pattern: `*` matches any run
   * of characters, `?` any one, everything else itself.
   *
   * @default {Every lock}
   */
  pattern?: string;
  /**
   * List at most this many locks; the totals still count every match.
   *
   * @default {No limit}
   */
  limit?: number;
  /**
   * Continue the report: the `next` of the page before. The pattern and the
   * limit are those of the request that started the report.
   */
  cursor?: string;
}

/** What the last page of a report counts: every matching lock. */
export interface StatusTotals {
  /** Locks that match the pattern, listed or not. */
  locks: number;
  /** Their holders. */
  holders: number;
  /** Their waiters. */
  waiters: number;
}

/** The `result` of a `status` request: one page of the report. */
export interface StatusResult {
  /** Always `ok`. */
  status: "ok";
  /** The server itself. */
  server: {
    /** The server's version. */
    version: string;
    /** The protocol version it speaks. */
    protocol: number;
    /** When it started, ISO 8601. */
    startedAt: string;
    /** Seconds since it started. */
    uptime: number;
  };
  /** Connection counts. */
  connections: {
    /** Open now. */
    current: number;
    /** Accepted since start-up. */
    total: number;
  };
  /**
   * Locks held or waited for, on this page: in the server's order (the
   * longest held or waited for first), the client library sorts them by name.
   */
  locks: StatusLock[];
  /** Present when more pages follow: send it as `cursor` for the next one. */
  next?: string;
  /** On the last page (no `next`): what the whole report counted. */
  totals?: StatusTotals;
  /** In a cluster: the node that answered, and every live node. */
  cluster?: { node: string; nodes: string[] };
}

/**
 * Checks the `parameters` of a `status` request.
 *
 * @param value The `parameters` received (absent is fine).
 * @returns The parameters, or why they are invalid.
 */
export function parseStatusParameters(
  value: unknown,
): StatusParameters | ParameterError {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return invalid('"parameters" must be an object');
  }
  const { pattern, limit, cursor } = value as Record<string, unknown>;
  const parameters: StatusParameters = {};
  if (cursor !== undefined) {
    if (typeof cursor !== "string") {
      return invalid('"cursor" must be the "next" of the page before');
    }
    parameters.cursor = cursor;
  }
  if (pattern !== undefined) {
    if (
      typeof pattern !== "string" || pattern.length === 0 ||
      pattern.length > MAX_STATUS_PATTERN_LENGTH
    ) {
      return invalid(
        `"pattern" must be a string of 1 to ${MAX_STATUS_PATTERN_LENGTH} characters`,
      );
    }
    parameters.pattern = pattern;
  }
  if (limit !== undefined) {
    if (
      typeof limit !== "number" || !Number.isInteger(limit) || limit < 0 ||
      limit > MAX_STATUS_LIMIT
    ) {
      return invalid(
        `"limit" must be an integer from 0 to ${MAX_STATUS_LIMIT}`,
      );
    }
    parameters.limit = limit;
  }
  return parameters;
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
