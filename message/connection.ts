/**
 * One framed, persistent connection: a reader task that cuts the stream into
 * messages and one writer that sends every frame queued in the same tick in a
 * single write. Both ends of the message layer use it.
 *
 * @module
 */

import { FrameError } from "../protocol/errors.ts";
import {
  decodeMessage,
  DEFAULT_MAX_FRAME_BYTES,
  FrameDecoder,
  FrameEncoder,
  type Message,
} from "../protocol/frame.ts";
import { writeAll } from "./io.ts";

/** The default cap on bytes queued for a peer that does not read (4 MiB). */
export const DEFAULT_MAX_OUTPUT_BYTES = 4 * 1024 * 1024;

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
   * The most bytes queued for the peer before the connection is dropped.
   *
   * @default {4194304}
   */
  maxOutputBytes?: number | undefined;
}

/** What a connection tells its owner. */
export interface ConnectionEvents {
  /** Called for every message read, in order. */
  onMessage(message: Message, connection: Connection): void;
  /** Called exactly once, when the connection has closed. */
  onClose(connection: Connection, info: CloseInfo): void;
  /** Called with the code of every error reply sent with `replyError`. */
  onErrorReply?: ((code: string, connection: Connection) => void) | undefined;
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
 * Each connection's pending read pins its buffer: small keeps idle connections
 * cheap, and lock messages are tens of bytes. A read that fills it means more
 * is waiting: the connection reads into a large buffer until reads are small
 * again.
 */
const SMALL_READ_BYTES = 128;
const LARGE_READ_BYTES = 16_384;
const WRITTEN: Promise<void> = Promise.resolve();
/** How long a connection closed for a protocol error may take to flush. */
const CLOSE_FLUSH_MS = 1000;

let lastId = 0;
/**
 * A framed connection carrying JSON messages.
 *
 * @example Sending a message
 * ```ts ignore
 * connection.send({ event: "hello" });
 * ```
 */
export class Connection {
  /** A number unique among the connections of this process. */
  readonly id: number = ++lastId;
  /** The peer's address. */
  readonly remoteAddr: Deno.NetAddr;
  readonly #conn: Deno.Conn;
  readonly #events: ConnectionEvents;
  readonly #decoder: FrameDecoder;
  readonly #output = new FrameEncoder();
  readonly #maxOutputBytes: number;
  #writing = false;
  /** Whether this connection is in the list the next flush writes. */
  #queued = false;
  #state: "open" | "closing" | "closed" = "open";
  #info: CloseInfo | null = null;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #reading: Promise<void>;
  #writer: Promise<void> = WRITTEN;

  /** Connections with frames queued in this tick, in the order they queued. */
  static readonly #unflushed: Connection[] = [];
  static #flushQueued = false;

  /** Starts the writes of every connection that queued frames this tick. */
  static #flushAll(): void {
    Connection.#flushQueued = false;
    const batch = Connection.#unflushed;
    for (let i = 0; i < batch.length; i++) {
      const connection = batch[i]!;
      connection.#writer = connection.#write();
    }
    batch.length = 0;
  }

  /**
   * Wraps a socket and starts reading from it.
   *
   * @param conn The socket; the connection owns and closes it.
   * @param events Where messages and the close go.
   * @param limits Frame and output limits.
   */
  constructor(
    conn: Deno.Conn,
    events: ConnectionEvents,
    limits: ConnectionLimits = {},
  ) {
    this.#conn = conn;
    this.remoteAddr = conn.remoteAddr as Deno.NetAddr;
    this.#events = events;
    this.#maxOutputBytes = limits.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
    this.#decoder = new FrameDecoder(
      (payload) => {
        if (this.#state === "open") {
          this.#events.onMessage(decodeMessage(payload), this);
        }
      },
      { maxFrameBytes: limits.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES },
    );
    this.#reading = this.#read();
  }

  /**
   * When bytes last arrived from the peer, as `performance.now()`: heartbeats
   * use it to tell a silent peer from a talking one.
   */
  lastRead: number = performance.now();

  /** Whether messages can still be sent. */
  get open(): boolean {
    return this.#state === "open";
  }

  /**
   * Resolves once the connection has closed and its reader and writer tasks
   * have ended.
   */
  get finished(): Promise<void> {
    return Promise.all([this.#reading, this.#writer]).then(() => {});
  }

  /** Bytes queued for the peer and not yet written. */
  get pendingBytes(): number {
    return this.#output.length + this.#output.taken;
  }

  /**
   * Queues one message for the peer; frames queued in the same tick leave in
   * one write.
   *
   * @param message A JSON-encodable object.
   * @returns `false` when the connection is closing and nothing was queued.
   */
  send(message: object): boolean {
    if (this.#state !== "open") return false;
    this.#output.append(message);
    if (this.pendingBytes > this.#maxOutputBytes) {
      this.#finish({ reason: "output_overflow" });
      return false;
    }
    if (!this.#writing && !this.#queued) {
      this.#queued = true;
      Connection.#unflushed.push(this);
      if (!Connection.#flushQueued) {
        Connection.#flushQueued = true;
        queueMicrotask(Connection.#flushAll);
      }
    }
    return true;
  }

  /**
   * Answers an RPC: queues `{"id": id, "result": result}`.
   *
   * @param id The request's id.
   * @param result The JSON-encodable result.
   * @returns `false` when the connection is closing and nothing was queued.
   */
  reply(id: unknown, result: unknown): boolean {
    return this.send({ id, result });
  }

  /**
   * Answers a message with an error: `{"id": id, "error": {code, message}}`,
   * or `{"command": command, "error": ...}` for a message without an id (or
   * `{"error": ...}` when there is no message, as for a bad frame). Every error
   * reply of the layer and its applications goes through here, so
   * `onErrorReply` sees each one.
   *
   * @param message What is answered, or `null` when it could not be read.
   * @param error The code and the sentence, such as a `MessageError` or a
   *   `FrameError`.
   * @param options Whether to close the connection after it; a legacy result.
   */
  replyError(
    message: Message | null,
    error: CodedError,
    options: ReplyErrorOptions = {},
  ): void {
    const body = { code: error.code, message: error.message };
    const reply: Record<string, unknown> = message === null
      ? {}
      : message.id === undefined
      ? { command: message.command }
      : { id: message.id };
    if (options.result !== undefined) reply.result = options.result;
    reply.error = body;
    this.#events.onErrorReply?.(error.code, this);
    if (options.close === undefined) this.send(reply);
    else this.closeWith(reply, options.close);
  }

  /**
   * Closes the connection at once; queued output is dropped.
   *
   * @param reason Why, as the close hooks will see it.
   */
  close(reason: CloseReason = "closed"): void {
    this.#finish({ reason });
  }

  /**
   * Sends a last message, then closes once it is written (or after a short
   * grace period if the peer does not read).
   *
   * @param message The farewell, typically an error reply.
   * @param info Why the connection closes.
   */
  closeWith(message: object, info: CloseInfo): void {
    if (this.#state !== "open") return;
    this.send(message);
    if (this.#state !== "open") return;
    this.#state = "closing";
    this.#info = info;
    this.#closeTimer = setTimeout(() => this.#finish(info), CLOSE_FLUSH_MS);
  }

  async #read(): Promise<void> {
    const small = new Uint8Array(SMALL_READ_BYTES);
    let buffer = small;
    try {
      while (this.#state === "open") {
        const n = await this.#conn.read(buffer);
        this.lastRead = performance.now();
        if (n === null) return this.#finish({ reason: "peer_closed" });
        if (this.#state !== "open") return;
        this.#decoder.push(buffer.subarray(0, n));
        if (n === small.length && buffer === small) {
          buffer = new Uint8Array(LARGE_READ_BYTES);
        } else if (n < small.length) {
          buffer = small;
        }
      }
    } catch (error) {
      if (this.#state === "closed") return;
      if (error instanceof FrameError) {
        this.replyError(null, error, {
          close: { reason: "protocol_error", error },
        });
      } else {
        this.#finish({ reason: "io_error", error });
      }
    }
  }

  async #write(): Promise<void> {
    this.#queued = false;
    if (this.#state === "closed") return;
    this.#writing = true;
    try {
      while (this.#output.length > 0 && !this.#isClosed()) {
        const bytes = this.#output.take();
        // Most writes take every byte: awaiting the first one here spares the
        // hot path writeAll's extra promise.
        const written = await this.#conn.write(bytes);
        if (written < bytes.length) {
          await writeAll(this.#conn, bytes.subarray(written));
        }
      }
    } catch (error) {
      this.#finish({ reason: "io_error", error });
    } finally {
      this.#writing = false;
      // The write settled: the runtime no longer reads the buffer.
      this.#output.release();
    }
    if (this.#state === "closing") this.#finish(this.#info!);
  }

  #isClosed(): boolean {
    return this.#state === "closed";
  }

  #finish(info: CloseInfo): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    clearTimeout(this.#closeTimer);
    const final = this.#info ?? info;
    // Release and grant first, then close: after a burst of disconnects the
    // grants do not wait behind every close syscall.
    this.#events.onClose(this, final);
    try {
      this.#conn.close();
    } catch {
      // Already closed by the runtime after a failed read or write.
    }
  }
}
