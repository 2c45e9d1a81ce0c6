/**
 * Errors of the message layer: the one a handler throws to refuse a message,
 * and those a client throws.
 *
 * @module
 */

import { PklockError } from "../protocol/errors.ts";

/**
 * An error a handler throws to refuse a message; the peer receives
 * `{"id": N, "error": {"code": code, "message": message}}` and the connection
 * stays open.
 *
 * @example Refusing a request
 * ```ts
 * import { MessageError } from "./errors.ts";
 * function handler(): never {
 *   throw new MessageError("invalid_parameters", 'Missing "name"');
 * }
 * ```
 */
export class MessageError extends PklockError {
  /** Always `"MessageError"`. */
  override name = "MessageError";
  /** The stable code sent to the peer. */
  readonly code: string;

  /**
   * Creates a refusal to throw from a handler.
   *
   * @param code A stable, machine-readable code in `snake_case`, such as the lock
   *   server's `ErrorCode`s.
   * @param message A sentence for people.
   * @param options The underlying cause, if any.
   */
  constructor(
    code: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.code = code;
  }
}

/**
 * The server could not be reached, or the connection closed while a request
 * was under way.
 *
 * @example Telling a dead server apart
 * ```ts ignore
 * try {
 *   await MessageClient.connect({ port: 1 });
 * } catch (error) {
 *   if (error instanceof ConnectionError) console.log(error.message);
 * }
 * ```
 */
export class ConnectionError extends PklockError {
  /** Always `"ConnectionError"`. */
  override name = "ConnectionError";
}

/**
 * The server answered a request with an error reply.
 *
 * @example Reading the code
 * ```ts
 * import { RemoteError } from "./errors.ts";
 * const error = new RemoteError("unknown_command", 'Unknown command "x"');
 * console.assert(error.code === "unknown_command");
 * ```
 */
export class RemoteError extends PklockError {
  /** Always `"RemoteError"`. */
  override name = "RemoteError";
  /** The stable code from the error reply. */
  readonly code: string;

  /**
   * Creates the error from the fields of an error reply.

   *
   * @param code The `code` of the error reply.
   * @param message The `message` of the error reply.
   */
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/**
 * A request did not get its reply in time. The server may still act on it.
 *
 * @example Bounding a request
 * ```ts ignore
 * await client.rpc("slow", {}, { timeout: 1000 }); // may throw RequestTimeoutError
 * ```
 */
export class RequestTimeoutError extends PklockError {
  /** Always `"RequestTimeoutError"`. */
  override name = "RequestTimeoutError";
}

/**
 * The server sent a reply this client cannot make sense of.
 *
 * @example Checking for a protocol mismatch
 * ```ts
 * import { ProtocolError } from "./errors.ts";
 * const error = new ProtocolError('Unexpected lock status "maybe"');
 * console.assert(error.name === "ProtocolError");
 * ```
 */
export class ProtocolError extends PklockError {
  /** Always `"ProtocolError"`. */
  override name = "ProtocolError";
}
