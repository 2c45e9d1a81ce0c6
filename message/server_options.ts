/**
 * The options of a {@linkcode MessageServer}: the settings an application
 * passes through, the handlers and hooks, and those of its close.
 *
 * @module
 */

import type { Message } from "../protocol/frame.ts";
import type { RejectReason } from "./admission.ts";
import type { Connection } from "./connection.ts";
import type { CloseInfo, ConnectionLimits } from "./connection_types.ts";

/** The default time a TLS peer has to finish its handshake (10 s). */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * Handles one message. The message has been checked to be an object whose
 * `command` names this handler.
 *
 * Returning a value other than `undefined` answers an RPC (a message with an
 * `id`) with `{"id": id, "result": value}`. Returning `undefined` sends nothing:
 * the handler may answer later with {@linkcode Connection.send}. Throwing a
 * {@linkcode MessageError} sends an error reply.
 */
export type Handler = (
  message: Message,
  connection: Connection,
) => unknown;

/** Options of {@linkcode MessageServer.close}. */
export interface CloseOptions {
  /**
   * A last message for every connection, written before it is closed (each
   * connection gets at most a second to take it).
   */
  farewell?: object;
}

/**
 * What a {@linkcode MessageServer} listens on and how much it accepts: the
 * settings an application built on it (the lock server) passes through as they
 * are.
 */
export interface MessageServerSettings extends ConnectionLimits {
  /**
   * The address to listen on.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string | undefined;
  /**
   * The port to listen on; 0 picks a free one (read it from `addr`).
   *
   * @default {0}
   */
  port?: number | undefined;
  /**
   * Peers allowed to connect: addresses or CIDR ranges. Any other peer is
   * disconnected at once and never reaches a handler.
   *
   * @default {["127.0.0.1", "::1"]}
   */
  allowed?: readonly string[] | undefined;
  /**
   * Serve TLS instead of plain TCP, with this PEM certificate chain and key.
   */
  tls?: { cert: string; key: string } | undefined;
  /**
   * With `tls`, how long a peer may take to finish its handshake, in
   * milliseconds; past it the connection closes with `handshake_timeout`.
   *
   * @default {10000}
   */
  handshakeTimeout?: number | undefined;
  /**
   * The most connections open at once; a peer beyond it gets a
   * `too_many_connections` error and is disconnected. Never more than the
   * open-file limit leaves after 64 descriptors kept for the server itself
   * (see `maxConnections` on the server for the limit applied).
   *
   * @default {The open-file limit minus 64}
   */
  maxConnections?: number | undefined;
  /**
   * The most connections open at once from one IP address; a peer beyond it
   * gets a `too_many_connections` error and is disconnected.
   *
   * @default {1000, for addresses other than loopback}
   */
  maxConnectionsPerIp?: number | undefined;
  /**
   * The most bytes queued for every peer together (coalesced notices not
   * counted). While more are queued, each connection may queue at most 64 KiB:
   * past that, one that holds state is no longer read until its output
   * drains, and one that holds none is closed with `output_overflow`.
   *
   * @default {67108864}
   */
  maxTotalOutputBytes?: number | undefined;
  /**
   * Application heartbeats, off by default. Every `interval` ms, a peer silent
   * for that long is sent `{"event":"heartbeat"}` (a {@linkcode MessageClient}
   * answers `{"command":"heartbeat"}` by itself); a peer silent for `timeout`
   * ms is sent `{"event":"heartbeat_timeout"}` and disconnected with reason
   * `heartbeat_timeout`.
   */
  heartbeat?: { interval: number; timeout: number } | undefined;
}

/** Options of {@linkcode MessageServer}: its settings, handlers and hooks. */
export interface MessageServerOptions extends MessageServerSettings {
  /** The handler of each command. */
  handlers: Readonly<Record<string, Handler>>;
  /** Called when a connection is accepted, before its first message. */
  onOpen?: ((connection: Connection) => void) | undefined;
  /** Called exactly once per accepted connection, after it closed. */
  onClose?: ((connection: Connection, info: CloseInfo) => void) | undefined;
  /** Called when a peer is turned away before it could send anything. */
  onReject?:
    | ((remoteAddr: Deno.NetAddr, reason: RejectReason) => void)
    | undefined;
  /**
   * Runs before every message is dispatched, unknown commands included;
   * returning `false` drops the message (the hook has answered or closed the
   * connection). The lock server refuses unauthenticated connections here.
   */
  authorize?:
    | ((message: Message, connection: Connection) => boolean)
    | undefined;
  /**
   * Whether closing a connection would take something from its peer (the
   * lock server: it holds or waits for a lock). Such a connection is never
   * closed for being slow; see {@linkcode ConnectionEvents.holdsState}.
   */
  holdsState?: ((connection: Connection) => boolean) | undefined;
  /**
   * Called with the code of every error reply a connection sends (every
   * {@linkcode Connection.replyError}: handler errors, frame errors, the
   * application's own), for metrics.
   */
  onErrorReply?: ((code: string, connection: Connection) => void) | undefined;
  /** Called when a handler throws something other than a MessageError. */
  onError?:
    | ((error: unknown, message: Message, connection: Connection) => void)
    | undefined;
}
