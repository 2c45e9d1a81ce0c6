/**
 * The types and defaults of a {@linkcode Connection}: its limits, its events,
 * how it ends, and what its error replies are made of.
 *
 * @module
 */

import type { Message } from "../protocol/frame.ts";
import type { OutputBudget } from "./output_budget.ts";
import type { Connection } from "./connection.ts";

/** The default cap on bytes queued for a peer that does not read (4 MiB). */
export const DEFAULT_MAX_OUTPUT_BYTES = 4 * 1024 * 1024;

/** The default time a peer has to finish a frame it started (30 s). */
export const DEFAULT_FRAME_TIMEOUT_MS = 30_000;

/** Why a connection closed. */
export type CloseReason =
  /** The peer closed its end. */
  | "peer_closed"
  /** This side called `close()`. */
  | "closed"
  /** The peer broke the framing; an error reply was sent where possible. */
  | "protocol_error"
  /** The peer did not read its replies and the output cap was reached. */
  | "output_overflow"
  /** A TLS peer did not finish its handshake in time. */
  | "handshake_timeout"
  /** Reading or writing failed (reset by peer, broken pipe, ...). */
  | "io_error"
  /** The server refused the peer: failed authentication, or a limit. */
  | "refused"
  /** An operator took the peer's locks away (the lock server's forced release). */
  | "forced_release"
  /** The peer stayed silent past the heartbeat limit. */
  | "heartbeat_timeout"
  /** The server is shutting down. */
  | "shutdown";

/** How a connection ended, as passed to close hooks and `closed` promises. */
export interface CloseInfo {
  /** Why it closed. */
  reason: CloseReason;
  /** The error behind `protocol_error` and `io_error`. */
  error?: unknown;
}

/** Limits of one connection. */
export interface ConnectionLimits {
  /**
   * The largest incoming payload, in bytes.
   *
   * @default {65536}
   */
  maxFrameBytes?: number | undefined;
  /**
   * The most bytes queued for the peer before the connection is dropped (or,
   * when it holds state, no longer read until they are written). Coalesced
   * notices do not count.
   *
   * @default {4194304}
   */
  maxOutputBytes?: number | undefined;
  /**
   * How long a peer may take to finish a frame it started, in milliseconds;
   * past it, a connection that holds no state gets `frame_timeout` and is
   * closed. A `MessageServer` applies the default; a connection made
   * without it (a client's) never times frames.
   *
   * @default {30000}
   */
  frameTimeout?: number | undefined;
}

/** Options of a {@linkcode Connection}: its limits, and what it shares. */
export interface ConnectionOptions extends ConnectionLimits {
  /** The server-wide budget the connection's queued output counts toward. */
  budget?: OutputBudget | undefined;
}

/** What a connection tells its owner. */
export interface ConnectionEvents {
  /** Called for every message read, in order. */
  onMessage(message: Message, connection: Connection): void;
  /** Called exactly once, when the connection has closed. */
  onClose(connection: Connection, info: CloseInfo): void;
  /** Called with the code of every error reply sent with `replyError`. */
  onErrorReply?: ((code: string, connection: Connection) => void) | undefined;
  /**
   * Whether closing the connection would take something from its peer (the
   * lock server: it holds or waits for a lock). Such a connection is never
   * closed for being slow: past its output cap it is no longer read until its
   * output drains, and an unfinished frame is left to wait.
   */
  holdsState?: ((connection: Connection) => boolean) | undefined;
}

/** An error that knows the stable code it is answered with. */
export interface CodedError {
  /** The stable, machine-readable code. */
  readonly code: string;
  /** A sentence for people. */
  readonly message: string;
}

/** Options of {@linkcode Connection.replyError}. */
export interface ReplyErrorOptions {
  /**
   * Close the connection once the reply is written, with this info.
   *
   * @default {Stay open}
   */
  close?: CloseInfo | undefined;
  /**
   * A `result` sent beside the error: only for replies an older protocol
   * defined that way (the lock server's legacy invalid `lock`).
   */
  result?: unknown;
}

/**
 * The error reply to a message: `{"id": id, "error": {code, message}}`, or
 * `{"command": command, "error": ...}` for a message without an id (or
 * `{"error": ...}` when there is no message, as for a bad frame).
 *
 * @param message What is answered, or `null` when it could not be read.
 * @param error The code and the sentence.
 * @param result A legacy `result` beside the error, if any.
 * @returns The reply, ready to send.
 */
export function errorReply(
  message: Message | null,
  error: CodedError,
  result: unknown,
): Record<string, unknown> {
  const reply: Record<string, unknown> = message === null
    ? {}
    : message.id === undefined
    ? { command: message.command }
    : { id: message.id };
  if (result !== undefined) reply.result = result;
  reply.error = { code: error.code, message: error.message };
  return reply;
}
