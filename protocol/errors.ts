/**
 * Stable error codes carried in error replies and the error classes shared by
 * both ends of a connection.
 *
 * @module
 */

/**
 * Every `code` a pklock server may put in an error reply. Codes are part of the
 * protocol: they never change meaning once published.
 */
export type ErrorCode =
  | "frame_too_large"
  | "frame_timeout"
  | "invalid_utf8"
  | "invalid_json"
  | "not_an_object"
  | "unknown_command"
  | "invalid_parameters"
  | "name_too_long"
  | "limit_exceeded"
  | "tokens_unavailable"
  | "too_many_connections"
  | "auth_required"
  | "auth_failed"
  | "admin_disabled"
  | "already_held"
  | "already_waiting"
  | "limit_mismatch"
  | "deadlock"
  | "unavailable"
  | "internal_error";

/** Base class of every error pklock throws on purpose. */
export class PklockError extends Error {
  /** Always `"PklockError"`. */
  override name = "PklockError";
}

/**
 * A violation of the wire protocol: a frame that cannot be trusted. The stream
 * it came from is closed after the error is reported.
 *
 * @example Reporting a bad frame
 * ```ts
 * import { FrameError } from "./errors.ts";
 * const error = new FrameError("invalid_json", "Frame is not valid JSON");
 * console.assert(error.code === "invalid_json");
 * ```
 */
export class FrameError extends PklockError {
  /** Always `"FrameError"`. */
  override name = "FrameError";
  /** The stable code sent to the peer in the error reply. */
  readonly code: ErrorCode;

  /**
   * Creates a frame error with the code sent to the peer.

   *
   * @param code The stable code sent to the peer.
   * @param message A sentence for people.
   * @param options The underlying cause, if any.
   */
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}
