/**
 * The lock client's entry: {@linkcode connect} tries each server in turn,
 * each attempt (TCP, TLS, `hello`) bounded on the client's clock, and returns
 * a {@linkcode LockClient}.
 *
 * @module
 */

import { MessageClient } from "../message/client.ts";
import { ConnectionError, RemoteError } from "../message/errors.ts";
import type { HelloResult } from "../protocol/lock_protocol.ts";
import { PROTOCOL_VERSION } from "../protocol/version.ts";
import { LockClient } from "./lock_client.ts";
import { RequestRefusedError } from "./errors.ts";
import {
  checkTimeout,
  type ConnectOptions,
  MAX_REPLY_BYTES,
  type ServerAddress,
  serverAddresses,
} from "./options.ts";

export { LockClient };
export type { ConnectOptions };

/**
 * Connects to a pklock server: tries each of `servers` in turn (or the one
 * `hostname`/`port` names) and returns the first that answers `hello`.
 * Each attempt gets `timeout` ms on the client's clock for the TCP connect,
 * the TLS handshake and the `hello` reply; `signal` ends them all.
 *
 * @param options Where the servers are, and how to reach them.
 * @returns A connected client.
 * @throws {TypeError} When an option has the wrong type.
 * @throws {RangeError} When an address, port or timeout is invalid.
 * @throws {ConnectionError} When no server could be reached in time; its
 *   message names every server tried and why each failed.
 * @throws {RequestRefusedError} When a server refused the `hello` (e.g.
 *   `auth_failed`): the next is not tried, as they share the secret.
 *
 * @example Connecting to the first of two nodes that answers
 * ```ts ignore
 * import { connect } from "./client.ts";
 * await using client = await connect({
 *   servers: ["10.0.0.1:20934", "10.0.0.2:20934"],
 *   timeout: 2000,
 * });
 * console.log(`connected to ${client.address.hostname}`);
 * ```
 */
export async function connect(
  options: ConnectOptions = {},
): Promise<LockClient> {
  const addresses = serverAddresses(options);
  const timeout = checkTimeout(options.timeout);
  const { signal } = options;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError('"signal" must be an AbortSignal');
  }
  signal?.throwIfAborted();
  const failures: ConnectionError[] = [];
  for (const address of addresses) {
    try {
      return await attempt(address, timeout, options);
    } catch (error) {
      if (!(error instanceof ConnectionError)) throw error;
      failures.push(error);
    }
  }
  if (failures.length === 1) throw failures[0];
  throw new ConnectionError(
    `Cannot connect to any of ${failures.length} servers: ${
      failures.map((error) => error.message).join("; ")
    }`,
    { cause: new AggregateError(failures) },
  );
}

/** One server: connect and `hello` within `timeout`, or nothing left open. */
async function attempt(
  address: ServerAddress,
  timeout: number,
  options: ConnectOptions,
): Promise<LockClient> {
  const { hostname, port } = address;
  const where = hostname.includes(":")
    ? `[${hostname}]:${port}`
    : `${hostname}:${port}`;
  const expired = new AbortController();
  const timer = setTimeout(
    () =>
      expired.abort(
        new ConnectionError(
          `Cannot connect to ${where}: no answer within ${timeout} ms`,
        ),
      ),
    timeout,
  );
  const signals = [expired.signal];
  if (options.signal !== undefined) signals.push(options.signal);
  const signal = AbortSignal.any(signals);
  try {
    const messages = await MessageClient.connect({
      hostname,
      port,
      signal,
      maxFrameBytes: MAX_REPLY_BYTES,
      ...(options.tls ? { tls: options.tls } : {}),
    });
    try {
      const { secret, label } = options;
      const hello = await messages.rpc<HelloResult>(
        "hello",
        {
          protocol: PROTOCOL_VERSION,
          ...(secret === undefined ? {} : { secret }),
          ...(label === undefined ? {} : { client: label }),
        },
        { signal },
      );
      return new LockClient(messages, hello, { hostname, port }, timeout);
    } catch (error) {
      await messages.close();
      if (error instanceof RemoteError) {
        throw new RequestRefusedError(error.code, error.message);
      }
      if (error instanceof ConnectionError && !signal.aborted) {
        throw new ConnectionError(
          `Cannot connect to ${where}: ${error.message}`,
          { cause: error },
        );
      }
      throw error;
    }
  } catch (error) {
    // The user's abort wins over the deadline; either leaves nothing open.
    if (options.signal?.aborted) throw options.signal.reason;
    if (expired.signal.aborted) throw expired.signal.reason;
    throw error;
  } finally {
    clearTimeout(timer);
  }
}
