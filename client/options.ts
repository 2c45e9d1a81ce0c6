/**
 * The options of the lock client, and the checks that turn a wrong argument
 * into a `TypeError` or `RangeError` before anything is sent.
 *
 * @module
 */

import type { LockMode } from "../protocol/lock_protocol.ts";
import {
  checkLimit,
  DEFAULT_PORT,
  MAX_WAIT_MS,
} from "../protocol/lock_protocol.ts";

/** How long the client waits for a silent server by default, in milliseconds. */
export const DEFAULT_TIMEOUT_MS = 5000;

/**
 * The most the client waits for the reply to a `lock` past its `wait`
 * (the reply's travel), in milliseconds; `timeout` if smaller.
 */
export const LOCK_REPLY_GRACE_MS = 1000;

/**
 * The largest frame the client reads from its server (64 MiB, the top of the
 * server's own `maxFrameBytes` range), against the message layer's 64 KiB: a
 * `status` reply lists every lock, and a read-only call must never close the
 * connection, and so lose the locks it holds, because its reply was large.
 */
export const MAX_REPLY_BYTES = 64 * 1024 * 1024;

/** Options of {@linkcode connect}. */
export interface ConnectOptions {
  /**
   * The servers to try, in turn, until one answers: `"host"`, `"host:port"`
   * or `"[ipv6]:port"`, e.g. the pklock nodes of a cluster. An entry without
   * a port uses `port`. When absent, `hostname` and `port` name the one
   * server.
   */
  servers?: string[];
  /**
   * The server's address, when `servers` is absent.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /**
   * The server's port (and that of `servers` entries without one).
   *
   * @default {20934}
   */
  port?: number;
  /**
   * How long to wait for a silent server, in milliseconds: for each server
   * tried, the TCP connect, the TLS handshake and the `hello` reply together;
   * then for the reply to every request (a lock's reply: past its `wait`,
   * the smaller of this and 1000 ms).
   *
   * @default {5000}
   */
  timeout?: number;
  /**
   * Abandons connecting: the promise rejects with the signal's reason and
   * nothing is left open.
   */
  signal?: AbortSignal;
  /**
   * Connect over TLS: `true` trusts the system's root certificates; `caCerts`
   * adds PEM certificates to trust.
   */
  tls?: boolean | { caCerts?: string[] };
  /** The shared secret, for a server that requires authentication. */
  secret?: string;
  /**
   * A label for this client (host, process, job), shown in the server's
   * status, logs and audit log. At most 256 characters.
   */
  label?: string;
}

/** Options of {@linkcode LockClient.lock}. */
export interface LockOptions {
  /**
   * `exclusive` (one holder) or `shared` (any number of shared holders, or
   * up to `limit`).
   *
   * @default {"exclusive", or "shared" with a limit}
   */
  mode?: LockMode;
  /**
   * The most holders at once, a semaphore: "at most 3 report builders". The
   * request is shared, and every request holding or waiting for the lock
   * must name the same limit, else the server refuses with `limit_mismatch`.
   * Absent: exclusive, or unbounded with `mode: "shared"`.
   */
  limit?: number | undefined;
  /**
   * How long to wait for the lock, in milliseconds (an integer from 0 to
   * 2³¹−1); `0` takes it only if it is free now. Enforced by the server and
   * on the client's own clock: if the server has not answered by then (plus
   * the reply's travel, see `ConnectOptions.timeout`), the request is
   * withdrawn in the background and the promise rejects. Absent: wait for as
   * long as it takes.
   */
  wait?: number;
  /**
   * Stops waiting: the promise rejects with the signal's reason at once, and
   * the request is withdrawn in the background (a grant that arrives after is
   * released at once). Once a later `ping()` resolves, the withdrawal is done.
   */
  signal?: AbortSignal;
  /**
   * Called while the request waits: when it joins the queue, and whenever its
   * place changes (1 is next in line).
   */
  onPosition?: (position: number) => void;
  /**
   * Called while the lock is held, whenever the number of requests waiting
   * for it changes (including right after the grant, if some already wait):
   * a cue for a cooperative long holder to finish early. The lock handle
   * also dispatches these as `contention` events.
   */
  onContention?: (waiters: number) => void;
}

/** One server to try. */
export interface ServerAddress {
  /** Its host name or IP address (IPv6 without brackets). */
  hostname: string;
  /** Its port. */
  port: number;
}

/**
 * The servers `options` names, in the order to try them.
 *
 * @param options The options of `connect()`.
 * @returns At least one address.
 * @throws {TypeError} When `servers` is not an array of strings, or is given
 *   with `hostname`.
 * @throws {RangeError} When an entry or `port` is not a valid address.
 */
export function serverAddresses(options: ConnectOptions): ServerAddress[] {
  const { servers, hostname } = options;
  const port = options.port ?? DEFAULT_PORT;
  checkPort(port, "port");
  if (servers === undefined) {
    return [{ hostname: hostname ?? "127.0.0.1", port }];
  }
  if (hostname !== undefined) {
    throw new TypeError('Give either "servers" or "hostname", not both');
  }
  if (!Array.isArray(servers) || servers.length === 0) {
    throw new TypeError('"servers" must be a non-empty array of strings');
  }
  return servers.map((entry) => parseServer(entry, port));
}

function parseServer(entry: unknown, defaultPort: number): ServerAddress {
  if (typeof entry !== "string") {
    throw new TypeError('"servers" must be a non-empty array of strings');
  }
  const match = /^(?:\[([^\]]+)\]|([^:\[\]]+))(?::(\d+))?$/.exec(entry);
  if (match === null) {
    throw new RangeError(
      `Invalid server "${entry}": expected "host", "host:port" or "[ipv6]:port"`,
    );
  }
  const port = match[3] === undefined ? defaultPort : Number(match[3]);
  checkPort(port, `port of "${entry}"`);
  return { hostname: match[1] ?? match[2]!, port };
}

function checkPort(port: unknown, what: string): void {
  if (
    !Number.isInteger(port) || (port as number) < 1 || (port as number) > 65535
  ) {
    throw new RangeError(
      `Invalid ${what}: expected an integer from 1 to 65535`,
    );
  }
}

/**
 * Checks `timeout`.
 *
 * @param timeout The option's value.
 * @returns The timeout in milliseconds.
 * @throws {RangeError} When it is not a positive number of milliseconds.
 */
export function checkTimeout(timeout: unknown): number {
  if (timeout === undefined) return DEFAULT_TIMEOUT_MS;
  if (
    typeof timeout !== "number" || !Number.isInteger(timeout) ||
    timeout < 1 || timeout > MAX_WAIT_MS
  ) {
    throw new RangeError(
      `Invalid timeout ${
        String(timeout)
      }: expected an integer from 1 to ${MAX_WAIT_MS} (milliseconds)`,
    );
  }
  return timeout;
}

/**
 * Checks the arguments of `lock()`, so that a wrong one fails here rather
 * than in a round trip to the server.
 *
 * @param name The lock's name.
 * @param options The lock options.
 * @throws {TypeError} When an argument has the wrong type.
 * @throws {RangeError} When a name is empty, `mode` or `wait` is out of
 *   range, or `limit` is not an integer from 1 to 2³¹ − 1 or comes with
 *   `mode: "exclusive"`.
 */
export function checkLockArguments(name: unknown, options: LockOptions): void {
  if (typeof name !== "string") {
    throw new TypeError(`Lock name must be a string, not ${typeof name}`);
  }
  if (name.length === 0) throw new RangeError("Lock name must not be empty");
  if (typeof options !== "object" || options === null) {
    throw new TypeError("Lock options must be an object");
  }
  const { mode, limit, wait, signal, onPosition, onContention } = options;
  if (mode !== undefined && mode !== "exclusive" && mode !== "shared") {
    throw new RangeError(
      `Invalid mode ${JSON.stringify(mode)}: expected "exclusive" or "shared"`,
    );
  }
  const limitError = checkLimit(limit, mode);
  if (limitError !== null) throw new RangeError(limitError.message);
  if (wait !== undefined) {
    if (typeof wait !== "number") {
      throw new TypeError(`"wait" must be a number, not ${typeof wait}`);
    }
    if (!Number.isInteger(wait) || wait < 0 || wait > MAX_WAIT_MS) {
      throw new RangeError(
        `Invalid wait ${wait}: expected an integer from 0 to ${MAX_WAIT_MS} (milliseconds)`,
      );
    }
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError('"signal" must be an AbortSignal');
  }
  for (
    const [key, value] of [["onPosition", onPosition], [
      "onContention",
      onContention,
    ]]
  ) {
    if (value !== undefined && typeof value !== "function") {
      throw new TypeError(`"${key}" must be a function`);
    }
  }
}
