/**
 * A server for persistent-socket applications: it accepts TCP connections,
 * applies an IP allow-list, frames JSON messages and dispatches each one by its
 * `command` key to a registered handler. The pklock lock server is one
 * application of it.
 *
 * @module
 */

import type { Message } from "../protocol/frame.ts";
import {
  Admission,
  connectionLimit,
  openFileLimit,
  type RejectReason,
} from "./admission.ts";
import { LOOPBACK } from "./allow_list.ts";
import { MessageError } from "./errors.ts";
import { delay } from "./io.ts";
import {
  type CloseInfo,
  Connection,
  type ConnectionEvents,
  type ConnectionLimits,
  type ConnectionOptions,
  DEFAULT_FRAME_TIMEOUT_MS,
} from "./connection.ts";
import { OutputBudget } from "./output_budget.ts";

export type { RejectReason };

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

const INTERNAL_ERROR = new MessageError(
  "internal_error",
  "Internal server error",
);

/** The event a {@linkcode MessageServer} sends to a silent peer. */
export const HEARTBEAT = { event: "heartbeat" } as const;

/** The farewell of a peer dropped for its silence past the heartbeat timeout. */
export const HEARTBEAT_TIMEOUT = { event: "heartbeat_timeout" } as const;

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

/**
 * Listens for connections and dispatches their messages to handlers.
 *
 * @example A counter service
 * ```ts ignore
 * import { MessageServer } from "./server.ts";
 * let count = 0;
 * await using server = new MessageServer({
 *   port: 0,
 *   handlers: { increment: () => ({ count: ++count }) },
 * });
 * console.log(`listening on port ${server.addr.port}`);
 * ```
 */
export class MessageServer implements AsyncDisposable {
  /** The bound address; read `addr.port` after listening on port 0. */
  readonly addr: Deno.NetAddr;
  /**
   * The connection limit applied: `maxConnections`, lowered to what the
   * open-file limit leaves after the server's own descriptors.
   */
  readonly maxConnections: number;
  readonly #listener: Deno.Listener;
  readonly #handlers: Map<string, Handler>;
  readonly #admission: Admission;
  readonly #options: MessageServerOptions;
  readonly #connectionOptions: ConnectionOptions;
  readonly #connections = new Set<Connection>();
  readonly #events: ConnectionEvents;
  readonly #accepting: Promise<void>;
  readonly #heartbeat: ReturnType<typeof setInterval> | undefined;

  /**
   * Starts listening at once.
   *
   * @param options Address, allow-list, limits, handlers and hooks.
   * @throws {Deno.errors.AddrInUse} When the port is taken.
   * @throws {TypeError} When an allow-list entry is invalid.
   */
  constructor(options: MessageServerOptions) {
    this.#options = options;
    this.#handlers = new Map(Object.entries(options.handlers));
    if (!this.#handlers.has("heartbeat")) {
      this.#handlers.set("heartbeat", () => undefined);
    }
    this.maxConnections = connectionLimit(
      options.maxConnections,
      openFileLimit(),
    );
    this.#admission = new Admission({
      allowed: options.allowed ?? LOOPBACK,
      maxConnections: this.maxConnections,
      maxConnectionsPerIp: options.maxConnectionsPerIp,
      tls: options.tls !== undefined,
      onReject: options.onReject,
    });
    this.#connectionOptions = {
      maxFrameBytes: options.maxFrameBytes,
      maxOutputBytes: options.maxOutputBytes,
      frameTimeout: options.frameTimeout ?? DEFAULT_FRAME_TIMEOUT_MS,
      budget: new OutputBudget(options.maxTotalOutputBytes),
    };
    this.#events = {
      onMessage: (message, connection) => this.#dispatch(message, connection),
      onClose: (connection, info) => this.#closed(connection, info),
      onErrorReply: options.onErrorReply,
      holdsState: options.holdsState,
    };
    const address = {
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? 0,
    };
    this.#listener = options.tls
      ? Deno.listenTls({ ...address, ...options.tls })
      : Deno.listen(address);
    this.addr = this.#listener.addr as Deno.NetAddr;
    this.#accepting = this.#accept();
    const heartbeat = options.heartbeat;
    if (heartbeat !== undefined) {
      this.#heartbeat = setInterval(
        () => this.#beat(heartbeat.interval, heartbeat.timeout),
        heartbeat.interval,
      );
    }
  }

  /** The connections currently open. */
  get connections(): ReadonlySet<Connection> {
    return this.#connections;
  }

  /**
   * Stops accepting, closes every connection (running each close hook) and
   * resolves once all are gone.
   *
   * @param options A farewell message for every connection.
   */
  async close(options: CloseOptions = {}): Promise<void> {
    clearInterval(this.#heartbeat);
    try {
      this.#listener.close();
    } catch {
      // Closed already.
    }
    await this.#accepting;
    const closing = [...this.#connections].map((connection) => {
      if (options.farewell) {
        connection.closeWith(options.farewell, { reason: "shutdown" });
      } else {
        connection.close("shutdown");
      }
      return connection.finished;
    });
    await Promise.all([...closing, this.#admission.refusing]);
  }

  /** Same as {@linkcode MessageServer.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #accept(): Promise<void> {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (error instanceof Deno.errors.BadResource) return;
        if (error instanceof Deno.errors.Interrupted) return;
        // Transient failures (EMFILE, ECONNABORTED): keep serving, without
        // spinning while the process is out of file descriptors.
        await delay(10);
        continue;
      }
      if (!this.#admission.admit(conn)) continue;
      if (!this.#options.tls) {
        try {
          (conn as Deno.TcpConn).setNoDelay(true);
          (conn as Deno.TcpConn).setKeepAlive(true);
        } catch {
          // The peer may already be gone; the reader will notice.
        }
      }
      const connection = new Connection(
        conn,
        this.#events,
        this.#connectionOptions,
      );
      this.#connections.add(connection);
      if (this.#options.tls) this.#timeHandshake(conn, connection);
      this.#options.onOpen?.(connection);
    }
  }

  /** Closes a TLS connection whose handshake does not finish in time. */
  #timeHandshake(conn: Deno.Conn, connection: Connection): void {
    const timer = setTimeout(
      () => connection.close("handshake_timeout"),
      this.#options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
    );
    // A failed handshake ends the connection's reads too: only the clock
    // needs stopping here.
    (conn as Deno.TlsConn).handshake().then(
      () => clearTimeout(timer),
      () => clearTimeout(timer),
    );
    connection.finished.then(() => clearTimeout(timer));
  }

  /** Pings silent peers and drops those silent past the timeout. */
  #beat(interval: number, timeout: number): void {
    const now = performance.now();
    for (const connection of this.#connections) {
      const silent = now - connection.lastRead;
      if (silent >= timeout) {
        // Said first, so a client that reads again learns why its locks went;
        // a peer whose socket takes no bytes is closed after the short grace.
        connection.closeWith(HEARTBEAT_TIMEOUT, {
          reason: "heartbeat_timeout",
        });
      } else if (silent >= interval) connection.notify(HEARTBEAT, HEARTBEAT);
    }
  }

  #closed(connection: Connection, info: CloseInfo): void {
    this.#connections.delete(connection);
    this.#admission.left(connection.remoteAddr);
    this.#options.onClose?.(connection, info);
  }

  #dispatch(message: Message, connection: Connection): void {
    if (this.#options.authorize?.(message, connection) === false) return;
    const command = message.command;
    const handler = typeof command === "string"
      ? this.#handlers.get(command)
      : undefined;
    if (handler === undefined) {
      const error = typeof command === "string"
        ? new MessageError("unknown_command", `Unknown command "${command}"`)
        : new MessageError(
          "invalid_parameters",
          'Message has no string "command" key',
        );
      return this.#fail(error, message, connection);
    }
    let result: unknown;
    try {
      result = handler(message, connection);
    } catch (error) {
      return this.#fail(error, message, connection);
    }
    if (result instanceof Promise) {
      result.then(
        (value) => this.#reply(value, message, connection),
        (error) => this.#fail(error, message, connection),
      );
    } else {
      this.#reply(result, message, connection);
    }
  }

  #reply(result: unknown, message: Message, connection: Connection): void {
    if (result === undefined || message.id === undefined) return;
    try {
      connection.reply(message.id, result);
    } catch (error) {
      // The result cannot be encoded (a BigInt, a cycle): a handler bug that
      // must not drop the connection, or the process when the handler was async.
      this.#fail(error, message, connection);
    }
  }

  #fail(error: unknown, message: Message, connection: Connection): void {
    if (error instanceof MessageError) {
      connection.replyError(message, error);
      return;
    }
    this.#options.onError?.(error, message, connection);
    connection.replyError(message, INTERNAL_ERROR);
  }
}
