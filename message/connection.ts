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
  type Message,
} from "../protocol/frame.ts";
import { exactId, mayBeInexact } from "./exact_id.ts";
import { writeAll } from "./io.ts";
import { FrameClock } from "./frame_clock.ts";
import { PeerOutput } from "./peer_output.ts";
import { ReadBacklog } from "./read_backlog.ts";
import { TickBatch } from "./tick_batch.ts";
import {
  type CloseInfo,
  type CloseReason,
  type CodedError,
  type ConnectionEvents,
  type ConnectionOptions,
  DEFAULT_MAX_OUTPUT_BYTES,
  errorReply,
  type ReplyErrorOptions,
} from "./connection_types.ts";

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
  readonly #output: PeerOutput;
  /** How long a frame may take to arrive, in ms, if it is timed. */
  readonly #frameTimeout: number | undefined;
  /** Made by the first read that ends mid-frame: most peers send whole ones. */
  #frameClock: FrameClock | undefined = undefined;
  /** From a pause for output over the cap until its frames are dispatched. */
  #backlog: ReadBacklog | null = null;
  #writing = false;
  /** Whether this connection is in the list the next flush writes. */
  #queued = false;
  #state: "open" | "closing" | "closed" = "open";
  #info: CloseInfo | null = null;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #reading: Promise<void>;
  #writer: Promise<void> = WRITTEN;

  /** Connections with frames queued in this tick: each writes them at once. */
  static readonly #unflushed = new TickBatch<Connection>((connection) => {
    connection.#writer = connection.#write();
  });

  /**
   * Wraps a socket and starts reading from it.
   *
   * @param conn The socket; the connection owns and closes it.
   * @param events Where messages and the close go.
   * @param options Frame and output limits, and the shared output budget.
   */
  constructor(
    conn: Deno.Conn,
    events: ConnectionEvents,
    options: ConnectionOptions = {},
  ) {
    this.#conn = conn;
    this.remoteAddr = conn.remoteAddr as Deno.NetAddr;
    this.#events = events;
    this.#output = new PeerOutput(
      options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES,
      options.budget,
    );
    // Only a server times frames: a client that did would drop its own
    // locks when a stopped server resumes mid-frame.
    this.#frameTimeout = options.frameTimeout;
    this.#decoder = new FrameDecoder(
      (payload) => this.#frame(payload),
      { maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES },
    );
    this.#reading = this.#read();
  }

  /**
   * Whether a frame whose payload is not a JSON object (invalid UTF-8 or JSON,
   * an empty payload, an array) is answered with an error reply and skipped,
   * instead of closing the connection. The framing itself is intact, so the
   * next frame can still be read: the lock server sets it on connections that
   * speak the legacy protocol, whose PHP server ignored such frames.
   */
  skipsBadPayloads = false;

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
    return this.#output.pendingBytes;
  }

  /**
   * Queues one message for the peer; frames queued in the same tick leave in
   * one write. Past the output cap (`maxOutputBytes`, or 64 KiB while the
   * server's output budget is spent) a connection that holds no state is
   * closed with reason `output_overflow`; one that does is no longer read
   * until its output is written.
   *
   * @param message A JSON-encodable object.
   * @returns `false` when the connection is closing and nothing was queued.
   */
  send(message: object): boolean {
    if (this.#state !== "open") return false;
    if (this.#output.append(message) && !this.#overflowed()) return false;
    this.#schedule();
    return true;
  }

  /**
   * Queues a notice that describes current state (a queue position, a count
   * of waiters): until it is written, a later notice with the same key
   * replaces it. Notices take no room in the output cap, since each key holds
   * at most one: however long the peer does not read, they never close it. A
   * notice leaves when the socket next takes bytes, after what was sent before
   * then: it may follow messages sent after it.
   *
   * @param key What the notice is about (the lock server: a request).
   * @param message The notice.
   * @returns `false` when the connection is closing and nothing was queued.
   */
  notify(key: unknown, message: object): boolean {
    if (this.#state !== "open") return false;
    this.#output.notify(key, message);
    this.#schedule();
    return true;
  }

  /**
   * Drops the notice of a key not yet written, once it no longer says
   * anything true (the request it described was granted or withdrawn).
   *
   * @param key The key given to {@linkcode Connection.notify}.
   */
  forget(key: unknown): void {
    this.#output.forget(key);
  }

  #schedule(): void {
    if (!this.#writing && !this.#queued) {
      this.#queued = true;
      Connection.#unflushed.add(this);
    }
  }

  /** Output passed the cap: pauses reading if closing would cost state. */
  #overflowed(): boolean {
    if (this.#events.holdsState?.(this) !== true) {
      this.#finish({ reason: "output_overflow" });
      return false;
    }
    (this.#backlog ??= new ReadBacklog()).pause();
    return true;
  }

  #frame(payload: Uint8Array): void {
    this.#frameClock?.finished();
    if (this.#state !== "open") return;
    // Paused mid-read: the rest of the read waits, as requests, not replies.
    if (this.#backlog !== null) this.#backlog.hold(payload);
    else this.#dispatch(payload);
  }

  #dispatch(payload: Uint8Array): void {
    let message: Message;
    try {
      message = decodeMessage(payload);
    } catch (error) {
      if (!this.skipsBadPayloads || !(error instanceof FrameError)) throw error;
      this.replyError(null, error);
      return;
    }
    if (mayBeInexact(message.id)) message.id = exactId(payload);
    this.#events.onMessage(message, this);
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
    const reply = errorReply(message, error, options.result);
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
        if (this.#state !== "open") return;
        const partial = this.#decoder.partial;
        if (partial && this.#frameTimeout !== undefined) {
          this.#frameClock ??= this.#newFrameClock(this.#frameTimeout);
        }
        this.#frameClock?.read(partial);
        if (n === small.length && buffer === small) {
          buffer = new Uint8Array(LARGE_READ_BYTES);
        } else if (n < small.length) {
          buffer = small;
        }
        for (let backlog = this.#backlog; backlog; backlog = this.#backlog) {
          if (backlog.paused) await backlog.resumed;
          if (this.#state !== "open") return;
          let payload: Uint8Array | undefined;
          while (!backlog.paused && (payload = backlog.next()) !== undefined) {
            this.#dispatch(payload);
            if (this.#state !== "open") return;
          }
          if (!backlog.paused) this.#backlog = null;
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
      while (!this.#isClosed()) {
        const bytes = this.#output.take();
        if (bytes === null) break;
        // Most writes take every byte: awaiting the first one here spares the
        // hot path writeAll's extra promise.
        const written = await this.#conn.write(bytes);
        if (written < bytes.length) {
          await writeAll(this.#conn, bytes.subarray(written));
        }
        if (this.#output.written()) this.#backlog?.resume();
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

  #newFrameClock(frameTimeout: number): FrameClock {
    return new FrameClock(frameTimeout, () => {
      if (!this.#decoder.partial || this.#state !== "open") return;
      if (this.#events.holdsState?.(this) === true) return;
      this.replyError(null, {
        code: "frame_timeout",
        message: `Frame not finished within ${frameTimeout} ms`,
      }, { close: { reason: "protocol_error" } });
    });
  }

  #isClosed(): boolean {
    return this.#state === "closed";
  }

  #finish(info: CloseInfo): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    clearTimeout(this.#closeTimer);
    this.#frameClock?.stop();
    this.#output.drop();
    this.#backlog?.resume();
    this.#backlog = null;
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
