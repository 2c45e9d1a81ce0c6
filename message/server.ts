/**
 * A server for persistent-socket applications: it accepts TCP connections,
 * applies an IP allow-list, frames JSON messages and dispatches each one by its
 * `command` key to a registered handler. The pklock lock server is one
 * application of it.
 *
 * @module
 */

import type { Message } from "../protocol/frame.ts";
import { Admission, connectionLimit, openFileLimit } from "./admission.ts";
import { LOOPBACK } from "./allow_list.ts";
import { MessageError } from "./errors.ts";
import { delay } from "./io.ts";
import { Connection } from "./connection.ts";
import {
  type CloseInfo,
  type ConnectionEvents,
  type ConnectionOptions,
  DEFAULT_FRAME_TIMEOUT_MS,
} from "./connection_types.ts";
import { OutputBudget } from "./output_budget.ts";
import {
  type CloseOptions,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  type Handler,
  type MessageServerOptions,
} from "./server_options.ts";

const INTERNAL_ERROR = new MessageError(
  "internal_error",
  "Internal server error",
);

/** The event a {@linkcode MessageServer} sends to a silent peer. */
export const HEARTBEAT = { event: "heartbeat" } as const;

/** The farewell of a peer dropped for its silence past the heartbeat timeout. */
export const HEARTBEAT_TIMEOUT = { event: "heartbeat_timeout" } as const;

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
