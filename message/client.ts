/**
 * The client half of the message layer: one persistent connection, requests
 * matched to replies by id, and unsolicited messages delivered as events.
 *
 * @module
 */

import type { Message } from "../protocol/frame.ts";
import { Connection } from "./connection.ts";
import type { CloseInfo, ConnectionLimits } from "./connection_types.ts";
import { ConnectionError, RemoteError, RequestTimeoutError } from "./errors.ts";

/** Options of {@linkcode MessageClient.connect}. */
export interface MessageClientOptions extends ConnectionLimits {
  /**
   * The server's address.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /** The server's port. */
  port: number;
  /**
   * Connect over TLS: `true` trusts the system's root certificates; `caCerts`
   * adds PEM certificates to trust (a private CA, a self-signed server).
   */
  tls?: boolean | { caCerts?: string[] };
  /** Abandons connecting. */
  signal?: AbortSignal;
}

/** Options of {@linkcode MessageClient.rpc}. */
export interface RpcOptions {
  /** Stops waiting for the reply; the server may still act on the request. */
  signal?: AbortSignal;
  /** Stops waiting after this many milliseconds. */
  timeout?: number;
}

/** The answer to a server's heartbeat: any message would do; this one is cheap. */
const HEARTBEAT_REPLY = { command: "heartbeat" } as const;

interface Pending {
  resolve(result: unknown): void;
  reject(error: unknown): void;
}

/**
 * A connection to a {@linkcode MessageServer}-style server.
 *
 * Replies (`{"id": N, "result": ...}` or `{"id": N, "error": {...}}`) settle the
 * request with that id, whatever order they come in. Every other message is
 * dispatched as a `MessageEvent` of type `"message"`.
 *
 * @example Calling a command
 * ```ts ignore
 * import { MessageClient } from "./client.ts";
 * await using client = await MessageClient.connect({ port: 20934 });
 * client.addEventListener("message", (event) => console.log(event.data));
 * const result = await client.rpc("hello", { protocol: 1 });
 * ```
 */
export class MessageClient extends EventTarget implements AsyncDisposable {
  readonly #connection: Connection;
  readonly #pending = new Map<number, Pending>();
  readonly #closed = Promise.withResolvers<CloseInfo>();
  readonly #controller = new AbortController();
  #nextId = 1;

  private constructor(conn: Deno.Conn, limits: ConnectionLimits) {
    super();
    this.#connection = new Connection(conn, {
      onMessage: (message) => this.#receive(message),
      onClose: (_connection, info) => this.#onClose(info),
    }, limits);
  }

  /**
   * Opens a connection.
   *
   * @param options Where to connect, and limits.
   * @returns A connected client.
   * @throws {ConnectionError} When the server cannot be reached.
   */
  static async connect(options: MessageClientOptions): Promise<MessageClient> {
    const hostname = options.hostname ?? "127.0.0.1";
    const { tls } = options;
    let conn: Deno.Conn;
    try {
      conn = await Deno.connect({
        hostname,
        port: options.port,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      try {
        (conn as Deno.TcpConn).setNoDelay(true);
      } catch {
        // The server is already gone; the reader will notice.
      }
      // Deno.connectTls takes no signal: a plain connect, then startTls,
      // whose handshake a close interrupts.
      if (tls) conn = await handshake(conn as Deno.TcpConn, hostname, options);
    } catch (cause) {
      if (options.signal?.aborted) throw options.signal.reason;
      throw new ConnectionError(
        `Cannot connect to ${hostname}:${options.port}: ${
          (cause as Error).message
        }`,
        { cause },
      );
    }
    const limits: ConnectionLimits = {};
    if (options.maxFrameBytes !== undefined) {
      limits.maxFrameBytes = options.maxFrameBytes;
    }
    if (options.maxOutputBytes !== undefined) {
      limits.maxOutputBytes = options.maxOutputBytes;
    }
    return new MessageClient(conn, limits);
  }

  /** Aborted, with a {@linkcode ConnectionError}, when the connection closes. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Resolves with the reason once the connection has closed. */
  get closed(): Promise<CloseInfo> {
    return this.#closed.promise;
  }

  /**
   * Sends one message and expects no reply.
   *
   * @param message A JSON-encodable object.
   * @throws {ConnectionError} When the connection is closed.
   */
  send(message: object): void {
    if (!this.#connection.send(message)) throw this.#lostError();
  }

  /**
   * Sends `{"command", "parameters", "id"}` and waits for the reply with that
   * id.
   *
   * @param command The command name.
   * @param parameters The command's parameters, if any.
   * @param options A signal or timeout to stop waiting.
   * @returns The reply's `result`.
   * @throws {RemoteError} When the reply is an error reply.
   * @throws {ConnectionError} When the connection closes first.
   * @throws {RequestTimeoutError} When `timeout` passes first.
   */
  rpc<T = unknown>(
    command: string,
    parameters?: Record<string, unknown>,
    options: RpcOptions = {},
  ): Promise<T> {
    const { signal, timeout } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = this.#nextId++;
    const message = parameters === undefined
      ? { command, id }
      : { command, parameters, id };
    if (!this.#connection.send(message)) {
      return Promise.reject(this.#lostError());
    }
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    if (signal === undefined && timeout === undefined) {
      this.#pending.set(id, { resolve: resolve as Pending["resolve"], reject });
      return promise;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stop = (error: unknown) => {
      if (this.#pending.delete(id)) done(), reject(error);
    };
    const onAbort = () => stop(signal!.reason);
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    if (timeout !== undefined) {
      timer = setTimeout(
        () =>
          stop(
            new RequestTimeoutError(
              `Request "${command}" got no reply within ${timeout} ms`,
            ),
          ),
        timeout,
      );
    }
    this.#pending.set(id, {
      resolve: (result) => (done(), resolve(result as T)),
      reject: (error) => (done(), reject(error)),
    });
    return promise;
  }

  /**
   * Closes the connection; requests under way fail with a
   * {@linkcode ConnectionError}.
   */
  async close(): Promise<void> {
    this.#connection.close();
    await this.#connection.finished;
  }

  /** Same as {@linkcode MessageClient.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #receive(message: Message): void {
    if (message.event === "heartbeat") {
      this.#connection.send(HEARTBEAT_REPLY);
      return;
    }
    const id = message.id;
    if (typeof id === "number" && ("result" in message || "error" in message)) {
      const pending = this.#pending.get(id);
      if (pending !== undefined) {
        this.#pending.delete(id);
        const error = message.error;
        if (error === undefined) return pending.resolve(message.result);
        const { code, message: text } = (error ?? {}) as Record<
          string,
          unknown
        >;
        return pending.reject(
          new RemoteError(String(code ?? "unknown"), String(text ?? "")),
        );
      }
      // A late reply to a request given up on (timeout or signal) answers
      // nothing and is not an event either.
      if (Number.isInteger(id) && id > 0 && id < this.#nextId) return;
    }
    this.dispatchEvent(new MessageEvent("message", { data: message }));
  }

  #lostError(): ConnectionError {
    return new ConnectionError("Connection closed");
  }

  #onClose(info: CloseInfo): void {
    const error = new ConnectionError(`Connection closed: ${info.reason}`, {
      cause: info.error,
    });
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
    this.#controller.abort(error);
    this.#closed.resolve(info);
  }
}

/**
 * Starts TLS on a connected socket and completes the handshake; the signal
 * interrupts it by closing the socket. On failure the socket is closed.
 */
async function handshake(
  tcp: Deno.TcpConn,
  hostname: string,
  { tls, signal }: MessageClientOptions,
): Promise<Deno.TlsConn> {
  const caCerts = typeof tls === "object" ? tls.caCerts : undefined;
  let conn: Deno.TlsConn;
  try {
    conn = await Deno.startTls(tcp, {
      hostname,
      ...(caCerts ? { caCerts } : {}),
    });
  } catch (error) {
    closeQuietly(tcp);
    throw error;
  }
  const abort = () => closeQuietly(conn);
  signal?.addEventListener("abort", abort, { once: true });
  try {
    signal?.throwIfAborted();
    await conn.handshake();
    return conn;
  } catch (error) {
    closeQuietly(conn);
    throw error;
  } finally {
    signal?.removeEventListener("abort", abort);
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Closed already.
  }
}
