/**
 * A server for persistent-socket applications: it accepts TCP connections,
 * applies an IP allow-list, frames JSON messages and dispatches each one by its
 * `command` key to a registered handler. The pklock lock server is one
 * application of it.
 *
 * @module
 */

import { encodeFrame, type Message } from "../protocol/frame.ts";
import { AllowList, LOOPBACK } from "./allow_list.ts";
import { MessageError } from "./errors.ts";
import { delay } from "./io.ts";
import {
  type CloseInfo,
  Connection,
  type ConnectionEvents,
  type ConnectionLimits,
} from "./connection.ts";

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

/**
 * Why a peer was turned away at once: outside the allow-list, or beyond a
 * connection limit.
 */
export type RejectReason =
  | "not_allowed"
  | "too_many_connections"
  | "too_many_connections_per_ip";

const INTERNAL_ERROR = new MessageError(
  "internal_error",
  "Internal server error",
);

/** The event a {@linkcode MessageServer} sends to a silent peer. */
export const HEARTBEAT = { event: "heartbeat" } as const;

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
   * The most connections open at once; a peer beyond it gets a
   * `too_many_connections` error and is disconnected.
   *
   * @default {Infinity}
   */
  maxConnections?: number | undefined;
  /**
   * The most connections open at once from one IP address; a peer beyond it
   * gets a `too_many_connections` error and is disconnected.
   *
   * @default {Infinity}
   */
  maxConnectionsPerIp?: number | undefined;
  /**
   * Application heartbeats, off by default. Every `interval` ms, a peer silent
   * for that long is sent `{"event":"heartbeat"}` (a {@linkcode MessageClient}
   * answers `{"command":"heartbeat"}` by itself); a peer silent for `timeout`
   * ms is disconnected with reason `heartbeat_timeout`.
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
  readonly #listener: Deno.Listener;
  readonly #handlers: Map<string, Handler>;
  readonly #allowList: AllowList;
  readonly #options: MessageServerOptions;
  readonly #connections = new Set<Connection>();
  readonly #events: ConnectionEvents;
  readonly #accepting: Promise<void>;
  readonly #perIp = new Map<string, number>();
  readonly #rejecting = new Set<Promise<void>>();
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
    this.#allowList = new AllowList(options.allowed ?? LOOPBACK);
    this.#events = {
      onMessage: (message, connection) => this.#dispatch(message, connection),
      onClose: (connection, info) => this.#closed(connection, info),
      onErrorReply: options.onErrorReply,
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
    await Promise.all([...closing, ...this.#rejecting]);
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
      const remote = conn.remoteAddr as Deno.NetAddr;
      const ip = remote.hostname;
      if (!this.#allowList.allows(ip)) {
        conn.close();
        this.#options.onReject?.(remote, "not_allowed");
        continue;
      }
      const fromIp = this.#perIp.get(ip) ?? 0;
      const { maxConnections = Infinity, maxConnectionsPerIp = Infinity } =
        this.#options;
      if (this.#connections.size >= maxConnections) {
        this.#reject(conn, "too_many_connections", maxConnections, "");
        continue;
      }
      if (fromIp >= maxConnectionsPerIp) {
        this.#reject(
          conn,
          "too_many_connections_per_ip",
          maxConnectionsPerIp,
          ` from ${ip}`,
        );
        continue;
      }
      if (!this.#options.tls) {
        try {
          (conn as Deno.TcpConn).setNoDelay(true);
          (conn as Deno.TcpConn).setKeepAlive(true);
        } catch {
          // The peer may already be gone; the reader will notice.
        }
      }
      this.#perIp.set(ip, fromIp + 1);
      const connection = new Connection(conn, this.#events, this.#options);
      this.#connections.add(connection);
      this.#options.onOpen?.(connection);
    }
  }

  /** Tells a peer beyond a connection limit why, then disconnects it. */
  #reject(
    conn: Deno.Conn,
    reason: "too_many_connections" | "too_many_connections_per_ip",
    limit: number,
    where: string,
  ): void {
    const frame = encodeFrame({
      error: {
        code: "too_many_connections",
        message: `Too many connections${where}: the limit is ${limit}`,
      },
    });
    // Under TLS the write would wait for a handshake a silent peer never
    // does, and the socket would stay open until it did: close at once.
    if (this.#options.tls) {
      conn.close();
      this.#options.onReject?.(conn.remoteAddr as Deno.NetAddr, reason);
      return;
    }
    const rejecting: Promise<void> = conn.write(frame).then(
      () => {},
      () => {},
    ).finally(() => {
      conn.close();
      this.#rejecting.delete(rejecting);
    });
    this.#rejecting.add(rejecting);
    this.#options.onReject?.(conn.remoteAddr as Deno.NetAddr, reason);
  }

  /** Pings silent peers and drops those silent past the timeout. */
  #beat(interval: number, timeout: number): void {
    const now = performance.now();
    for (const connection of this.#connections) {
      const silent = now - connection.lastRead;
      if (silent >= timeout) connection.close("heartbeat_timeout");
      else if (silent >= interval) connection.send(HEARTBEAT);
    }
  }

  #closed(connection: Connection, info: CloseInfo): void {
    this.#connections.delete(connection);
    const ip = connection.remoteAddr.hostname;
    const fromIp = this.#perIp.get(ip)! - 1;
    if (fromIp === 0) this.#perIp.delete(ip);
    else this.#perIp.set(ip, fromIp);
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
